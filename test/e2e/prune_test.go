package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	h "github.com/rewind-cdp/rewind/test/harness"
)

// Prune thins a machine's points by its policy while another machine backs
// up and a reader exports: no backup or read fails, the kept point
// restores exactly, the dropped points' chunks are freed, and check
// --read-data stays clean.
func TestPruneBesideIngestAndReaders(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tokA := h.AddMachine(t, repo, "web1")
	tokB := h.AddMachine(t, repo, "db1")
	img := filepath.Join(dir, "a.img")
	h.Image(t, img, 16<<20, 41)
	for i := range 6 {
		if i > 0 {
			h.Mutate(t, img, 0.2, uint64(50+i))
		}
		mustBackup(t, s, tokA, "web1", "root", img)
	}
	latest := h.SHA256(t, img)
	h.MustRun(t, nil, "retention", "set", "--repo", repo, "--machine", "web1", "--keep-hourly", "1")
	if out := h.MustRun(t, nil, "retention", "show", "--repo", repo).Stdout; !strings.Contains(out, "web1") || !strings.Contains(out, "1 hours") {
		t.Errorf("retention show: %q", out)
	}
	dry := h.MustRun(t, nil, "prune", "--repo", repo, "--dry-run").Stdout
	if !strings.Contains(dry, "web1/root: keeps 1 points, would drop 5") {
		t.Errorf("prune --dry-run: %q", dry)
	}

	imgB := filepath.Join(dir, "b.img")
	h.Image(t, imgB, 8<<20, 42)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 100)
	wg.Add(2)
	go func() { // ingest of another machine
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h.Mutate(t, imgB, 0.1, uint64(i))
			if r := s.Backup(t, tokB, "db1", "data", imgB); r.Code != 0 {
				errs <- "backup during prune: " + r.Stderr
			}
		}
	}()
	go func() { // a reader of the point that stays
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			out := filepath.Join(dir, fmt.Sprintf("read%d.img", i%2))
			r := h.Run(t, nil, "export", "--repo", repo, "--machine", "web1", "--volume", "root", "--format", "raw", "--out", out, "--force")
			if r.Code != 0 {
				errs <- "read during prune: " + r.Stderr
			} else if h.SHA256(t, out) != latest {
				errs <- "read during prune returned different data"
			}
		}
	}()
	var res struct {
		Volumes []struct {
			Dropped []int64 `json:"dropped"`
		} `json:"volumes"`
		Chunks     int64 `json:"chunks_freed"`
		FreedBytes int64 `json:"stored_bytes_freed"`
	}
	r := h.MustRun(t, nil, "prune", "--repo", repo, "--json")
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || len(res.Volumes) != 1 || len(res.Volumes[0].Dropped) != 5 {
		t.Fatalf("prune --json printed %q (%v); want 5 points of web1/root dropped", r.Stdout, err)
	}
	if res.Chunks == 0 || res.FreedBytes == 0 {
		t.Errorf("prune freed %d chunks, %d bytes; the dropped points held data of their own", res.Chunks, res.FreedBytes)
	}
	t.Logf("prune freed %d chunks, %d stored bytes", res.Chunks, res.FreedBytes)
	var ps []struct {
		Machine string `json:"machine"`
	}
	json.Unmarshal([]byte(h.MustRun(t, nil, "points", "--repo", repo, "--machine", "web1", "--json").Stdout), &ps)
	if len(ps) != 1 {
		t.Errorf("web1 has %d points after the prune, want 1", len(ps))
	}
	out := filepath.Join(dir, "kept.img")
	if r := restore(t, repo, "web1", "root", "latest", out); r.Code != 0 || h.SHA256(t, out) != latest {
		t.Errorf("the kept point does not restore exactly (exit %d)", r.Code)
	}
	if r := h.Run(t, nil, "check", "--repo", repo, "--read-data"); r.Code != 0 {
		t.Errorf("check --read-data after prune: exit %d: %s", r.Code, r.Stderr)
	}
	// Quiet now: four more points of web1, each with data of its own, then
	// a prune drops the three older ones (and the one kept before): the
	// packs shrink by what those points alone held.
	for i := range 4 {
		h.Mutate(t, img, 0.2, uint64(70+i))
		mustBackup(t, s, tokA, "web1", "root", img)
	}
	latest = h.SHA256(t, img)
	before := h.DirSize(t, filepath.Join(repo, "packs"))
	r = h.MustRun(t, nil, "prune", "--repo", repo, "--json", "--rewrite-dead", "0.05")
	res.FreedBytes = 0
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatal(err)
	}
	after := h.DirSize(t, filepath.Join(repo, "packs"))
	t.Logf("second prune: freed %d stored bytes of chunks; packs %d -> %d bytes (-%d)", res.FreedBytes, before, after, before-after)
	if shrink := before - after; float64(shrink) < 0.9*float64(res.FreedBytes) || res.FreedBytes == 0 {
		t.Errorf("packs shrank by %d bytes; the dropped points alone held %d", shrink, res.FreedBytes)
	}
	if r := restore(t, repo, "web1", "root", "latest", out+"2"); r.Code != 0 || h.SHA256(t, out+"2") != latest {
		t.Errorf("the kept point does not restore exactly after compaction (exit %d)", r.Code)
	}
	if r := h.Run(t, nil, "check", "--repo", repo, "--read-data"); r.Code != 0 {
		t.Errorf("check --read-data after compaction: exit %d: %s", r.Code, r.Stderr)
	}
	if r := h.Run(t, nil, "retention", "set", "--repo", repo, "--machine", "nosuch", "--keep-daily", "7"); r.Code != 1 {
		t.Errorf("retention for an unknown machine: exit %d", r.Code)
	}
	if r := h.Run(t, nil, "retention", "set", "--repo", repo, "--machine", "web1"); r.Code != 2 {
		t.Errorf("retention without a rule: exit %d", r.Code)
	}
}

// Prune with compaction while an agent captures a live file system and a
// mount reads the repository: the agent reports no error and no gap, its
// last point equals the volume, the mount never fails a read of a kept
// point, the kept points restore exactly and check --read-data is clean.
func TestPruneDuringCaptureAndMount(t *testing.T) {
	e := newAgentSetup(t, 128<<20)
	repo, dir := e.repo, e.dir
	tokWeb := h.AddMachine(t, repo, "web1")
	img := filepath.Join(dir, "web1.img")
	h.Image(t, img, 16<<20, 61)
	for i := range 6 {
		if i > 0 {
			h.Mutate(t, img, 0.2, uint64(80+i))
		}
		mustBackup(t, e.server, tokWeb, "web1", "root", img)
	}
	latest := h.SHA256(t, img)
	h.MustRun(t, nil, "retention", "set", "--repo", repo, "--machine", "web1", "--keep-hourly", "1")

	a := e.protect(t)
	view := filepath.Join(dir, "view")
	os.Mkdir(view, 0o755)
	startMount(t, view, "--repo", repo)
	disk := filepath.Join(view, "web1", "root", "latest", "disk.img")
	if got := h.SHA256(t, disk); got != latest {
		t.Fatalf("disk.img through the mount before the prune: %s, want %s", got, latest)
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 100)
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	var writes, reads atomic.Int64
	wg.Add(2)
	go func() { // the protected file system at work
		defer wg.Done()
		r := rand.New(rand.NewPCG(9, 9))
		for i := 0; !stopped(); i++ {
			writes.Add(1)
			b := make([]byte, 64<<10+r.IntN(512<<10)) // 100 files of at most 576 KiB fit the volume
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			p := filepath.Join(e.mnt, fmt.Sprintf("f%03d", i%100))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				errs <- "write on the protected volume: " + err.Error()
				return
			}
			if i%10 == 0 {
				mustCmd(t, "sync", "-f", p)
			}
		}
	}()
	go func() { // a reader of the kept point through the mount
		defer wg.Done()
		for !stopped() {
			reads.Add(1)
			if _, err := os.ReadDir(filepath.Join(view, "host", "v")); err != nil {
				errs <- "listing host/v through the mount during the prune: " + err.Error()
			}
			if got := h.SHA256(t, disk); got != latest {
				errs <- "disk.img through the mount during the prune: " + got
			}
		}
	}()
	time.Sleep(2 * time.Second) // capture is under way
	r := h.MustRun(t, nil, "prune", "--repo", repo, "--json", "--rewrite-dead", "0.05")
	time.Sleep(2 * time.Second) // and goes on after the prune
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	t.Logf("around the prune: %d files written on the protected volume, %d reads of disk.img through the mount; prune: %s", writes.Load(), reads.Load(), r.Stdout)
	if writes.Load() < 10 || reads.Load() < 2 {
		t.Errorf("the prune did not run beside capture and reads (%d writes, %d reads)", writes.Load(), reads.Load())
	}
	var res struct {
		Volumes []struct {
			Dropped []int64 `json:"dropped"`
		} `json:"volumes"`
		FreedBytes int64 `json:"stored_bytes_freed"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || len(res.Volumes) != 1 || len(res.Volumes[0].Dropped) != 5 || res.FreedBytes == 0 {
		t.Errorf("prune --json printed %q (%v); want 5 points of web1/root dropped and bytes freed", r.Stdout, err)
	}

	mustCmd(t, "umount", e.mnt)
	var st []struct {
		State string `json:"state"`
		Gaps  []any  `json:"gaps"`
	}
	json.Unmarshal([]byte(h.MustRun(t, nil, "agent", "status", "--spool", e.spool, "--json").Stdout), &st)
	a.stop(t)
	if len(st) != 1 || len(st[0].Gaps) != 0 {
		t.Errorf("agent status after the prune: %+v; want one volume and no gap", st)
	}
	if strings.Contains(strings.ToLower(a.logText()), "level=error") {
		t.Errorf("the agent logged errors during the prune:\n%s", a.logText())
	}
	if r := restore(t, repo, "host", "v", "latest", filepath.Join(dir, "host.img")); r.Code != 0 {
		t.Errorf("restore of the captured volume: exit %d: %s", r.Code, r.Stderr)
	} else if got, want := h.SHA256(t, filepath.Join(dir, "host.img")), h.SHA256(t, e.img); got != want {
		t.Errorf("the captured volume's last point differs from the volume")
	}
	if r := restore(t, repo, "web1", "root", "latest", filepath.Join(dir, "kept.img")); r.Code != 0 || h.SHA256(t, filepath.Join(dir, "kept.img")) != latest {
		t.Errorf("the kept point does not restore exactly (exit %d)", r.Code)
	}
	if r := h.Run(t, nil, "check", "--repo", repo, "--read-data"); r.Code != 0 {
		t.Errorf("check --read-data after the prune: exit %d: %s", r.Code, r.Stderr)
	}
}
