package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	h "github.com/rewind-cdp/rewind/test/harness"
)

type replSummary struct {
	Points     int   `json:"points"`
	Skipped    int   `json:"skipped"`
	BlocksSent int64 `json:"blocks_sent"`
	BytesSent  int64 `json:"bytes_sent"`
	WireBytes  int64 `json:"wire_bytes"`
	Retries    int   `json:"retries"`
}

func parseRepl(t *testing.T, r h.Result) replSummary {
	t.Helper()
	if r.Code != 0 {
		t.Fatalf("replicate: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	var s replSummary
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
		t.Fatalf("replicate --json printed %q: %v", r.Stdout, err)
	}
	return s
}

func replicaPoints(t *testing.T, repo string) []pointJSONE2E {
	t.Helper()
	r := h.MustRun(t, nil, "points", "--repo", repo, "--json")
	var ps []pointJSONE2E
	if err := json.Unmarshal([]byte(r.Stdout), &ps); err != nil {
		t.Fatalf("points --json: %v", err)
	}
	return ps
}

type pointJSONE2E struct {
	ID      int64  `json:"id"`
	Machine string `json:"machine"`
	Time    string `json:"time"`
	Kind    string `json:"kind"`
	Label   string `json:"label"`
}

// Two servers on loopback: three points replicate and restore exactly from
// the replica; a second run sends nothing and duplicates nothing; the
// replica killed in the middle of replicating three more points is
// restarted, replication resumes, every point restores exactly, and what
// was sent is about the new unique bytes.
func TestReplicationBetweenTwoServers(t *testing.T) {
	dir := t.TempDir()
	srcRepo, dstRepo := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	src := h.StartServer(t, srcRepo, "127.0.0.1:0")
	dst := h.StartServer(t, dstRepo, "127.0.0.1:0")
	tok := h.AddMachine(t, srcRepo, "web1")
	peerTok := strings.TrimSpace(h.MustRun(t, nil, "peer", "add", "siteA", "--repo", dstRepo).Stdout)
	if !strings.HasPrefix(peerTok, "rwd_") || strings.Contains(peerTok, "\n") {
		t.Fatalf("peer add printed %q, want a token alone", peerTok)
	}
	replicate := func(extra ...string) h.Result {
		return h.Run(t, nil, append([]string{"replicate", "--once", "--json", "--repo", srcRepo, "--to", dst.URL, "--ca", dst.CA, "--token", peerTok}, extra...)...)
	}

	img := filepath.Join(dir, "disk.img")
	h.Image(t, img, 32<<20+4321, 7)
	sums := map[string]string{} // point time → sha256
	backup := func(mutate float64, seed uint64) backupSummary {
		if mutate > 0 {
			h.Mutate(t, img, mutate, seed)
		}
		b := mustBackup(t, src, tok, "web1", "root", img)
		sums[b.Point.Time] = h.SHA256(t, img)
		return b
	}
	for i := range 3 {
		backup(0.05*float64(min(i, 1)), uint64(i+1))
	}
	// A local machine of the replica stays apart; the source cannot write it.
	h.AddMachine(t, dstRepo, "db1")

	s1 := parseRepl(t, replicate())
	if s1.Points != 3 {
		t.Fatalf("first replication sent %d points, want 3", s1.Points)
	}
	round := 0
	checkReplica := func(want int) {
		t.Helper()
		round++
		ps := replicaPoints(t, dstRepo)
		var web1 []pointJSONE2E
		for _, p := range ps {
			if p.Machine == "web1" {
				web1 = append(web1, p)
			}
		}
		if len(web1) != want || len(sums) != want {
			t.Fatalf("replica holds %d points of web1, want %d (source %d)", len(web1), want, len(sums))
		}
		for i, p := range web1 {
			if _, ok := sums[p.Time]; !ok {
				t.Fatalf("replica point %d has time %s, which no source point has", p.ID, p.Time)
			}
			out := filepath.Join(dir, "restored-"+strconv.Itoa(round)+"-"+strconv.Itoa(i))
			r := restore(t, dstRepo, "web1", "root", p.Time, out)
			if r.Code != 0 {
				t.Fatalf("restore of %s from the replica: %s", p.Time, r.Stderr)
			}
			if got := h.SHA256(t, out); got != sums[p.Time] {
				t.Errorf("point %s restored from the replica with sha256 %s, want %s", p.Time, got, sums[p.Time])
			}
			os.Remove(out)
		}
	}
	checkReplica(3)

	s2 := parseRepl(t, replicate())
	if s2.Points != 0 || s2.BlocksSent != 0 || s2.BytesSent != 0 {
		t.Fatalf("second replication sent %+v, want nothing", s2)
	}
	checkReplica(3)

	// Status: nothing unsent, no lag.
	var st []struct {
		Machine     string  `json:"machine"`
		LagSeconds  float64 `json:"lag_seconds"`
		UnsentBytes int64   `json:"unsent_bytes"`
		LastPoint   int64   `json:"last_point"`
	}
	if err := json.Unmarshal([]byte(h.MustRun(t, nil, "replicate", "status", "--json", "--repo", srcRepo).Stdout), &st); err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].Machine != "web1" || st[0].LagSeconds != 0 || st[0].UnsentBytes != 0 || st[0].LastPoint == 0 {
		t.Fatalf("replicate status %+v, want web1 with no lag and nothing unsent", st)
	}

	// Three more points with much new data.
	var newUnique int64
	for i := range 3 {
		newUnique += backup(0.25, uint64(10+i)).BytesNew
	}
	if err := json.Unmarshal([]byte(h.MustRun(t, nil, "replicate", "status", "--json", "--repo", srcRepo).Stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st[0].LagSeconds <= 0 || st[0].UnsentBytes < newUnique*9/10 {
		t.Fatalf("status after 3 new points %+v: want a lag and about %d bytes unsent", st, newUnique)
	}
	// Replicate them slowly, kill the replica in the middle, restart it.
	cmd := exec.Command(h.Binary(t), "replicate", "--once", "--json", "--repo", srcRepo, "--to", dst.URL, "--ca", dst.CA, "--token", peerTok,
		"--bwlimit", "8MB/s", "--workers", "1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, exited := make(chan error, 1), make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	time.Sleep(time.Duration(float64(newUnique)/8e6*0.4*float64(time.Second)) + 500*time.Millisecond)
	addr := dst.Addr
	dst.Kill9(t)
	time.Sleep(time.Second)
	dst = h.StartServer(t, dstRepo, addr)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("replicate after the replica restarted: %v\n%s", err, errb.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("replicate did not finish in 3 minutes:\n%s", errb.String())
	}
	var s3 replSummary
	if err := json.Unmarshal(out.Bytes(), &s3); err != nil {
		t.Fatalf("replicate --json printed %q: %v\n%s", out.String(), err, errb.String())
	}
	t.Logf("after the cut: %d points, %d retries; sent %d stored bytes (%d on the wire) for %d new unique bytes (%.3fx)",
		s3.Points, s3.Retries, s3.BytesSent, s3.WireBytes, newUnique, float64(s3.WireBytes)/float64(newUnique))
	if s3.Retries == 0 {
		t.Fatalf("replicate never retried: the replica was not killed in the middle (%+v)", s3)
	}
	// Resent at most what was in flight (a 2 MiB request) and not yet
	// durable on the replica (its 4 MiB flush window), plus offers.
	if s3.WireBytes > newUnique+8<<20 || s3.WireBytes < newUnique*9/10 {
		t.Fatalf("sent %d bytes on the wire for %d new unique bytes: want about the same (+8 MiB at most)", s3.WireBytes, newUnique)
	}
	checkReplica(6)
	// The replica's own machine is untouched and apart.
	if ps := replicaPoints(t, dstRepo); len(ps) != 6 {
		t.Fatalf("replica holds %d points in all, want 6", len(ps))
	}
	if r := h.Run(t, nil, "check", "--repo", dstRepo); r.Code != 0 {
		t.Fatalf("check of the replica: %s%s", r.Stdout, r.Stderr)
	}
}
