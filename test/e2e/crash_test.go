package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository/pack"
	h "github.com/rewind-cdp/rewind/test/harness"
)

// kill -9 of the server in the middle of a 512 MiB backup: after restart
// check --read-data is clean, the backup completes by itself, and every
// point the client was told was stored restores exactly.
func TestServerKilledMidBackup(t *testing.T) { forEachPackStore(t, testServerKilledMidBackup) }

func testServerKilledMidBackup(t *testing.T, ps *packStore) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0", ps.args...)
	tok := h.AddMachine(t, repo, "db1")

	small := filepath.Join(dir, "small.img")
	h.Image(t, small, 8<<20, 11)
	before := mustBackup(t, s, tok, "db1", "boot", small)

	img := filepath.Join(dir, "big.img")
	h.Image(t, img, 512<<20, 12)
	want := h.SHA256(t, img)

	cmd := exec.Command(h.Binary(t), "backup", "--server", s.URL, "--ca", s.CA, "--token", tok,
		"--machine", "db1", "--volume", "data", "--json", "--retry-for", "3m", img)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})

	// Kill the server once a good part of the backup has reached it.
	deadline := time.Now().Add(60 * time.Second)
	for ps.packBytes(t, repo) < 150<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("backup made no progress in 60 s; server log:\n%s", s.Log())
		}
		select {
		case err := <-done:
			t.Fatalf("backup finished before the server could be killed (%v); make the image bigger", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.Kill9(t)
	time.Sleep(500 * time.Millisecond)   // the client sees the server gone and retries
	s2 := h.StartServer(t, repo, s.Addr) // the pack store is recorded in the repository

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("backup after the server restart: %v\nstderr: %s\nserver log:\n%s", err, se.String(), s2.Log())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("backup did not finish after the server restart; stderr: %s", se.String())
	}
	var sum struct {
		Point   struct{ ID int64 } `json:"point"`
		Resumed bool               `json:"resumed"`
		Retries int                `json:"retries"`
	}
	if err := json.Unmarshal(so.Bytes(), &sum); err != nil {
		t.Fatalf("backup summary %q: %v", so.String(), err)
	}
	t.Logf("backup completed after %d retries (resumed: %v)", sum.Retries, sum.Resumed)
	if sum.Retries == 0 {
		t.Error("the backup never noticed the server was killed")
	}
	if !strings.Contains(s2.Log(), "recovered pack") && !strings.Contains(s2.Log(), "resumed=true") {
		t.Logf("note: the restart found nothing to recover or resume; server log:\n%s", s2.Log())
	}

	r := h.Run(t, nil, "check", "--repo", repo, "--read-data")
	if r.Code != 0 {
		t.Fatalf("check --read-data after the crash: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	out := filepath.Join(dir, "data.out")
	if r := restore(t, repo, "db1", "data", strconv.FormatInt(sum.Point.ID, 10), out); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	if h.SHA256(t, out) != want {
		t.Error("the backup completed across the crash does not restore exactly")
	}
	out2 := filepath.Join(dir, "boot.out")
	if r := restore(t, repo, "db1", "boot", strconv.FormatInt(before.Point.ID, 10), out2); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	if h.SHA256(t, out2) != h.SHA256(t, small) {
		t.Error("a point stored before the crash does not restore exactly")
	}
}

// One flipped byte in a pack: check --read-data exits 1 naming the pack
// and the affected points; a restore of an affected point fails with a
// clear error, never with wrong data.
func TestFlippedByteIsFoundAndNeverRestored(t *testing.T) {
	forEachPackStore(t, testFlippedByteIsFoundAndNeverRestored)
}

func testFlippedByteIsFoundAndNeverRestored(t *testing.T, ps *packStore) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0", ps.args...)
	tok := h.AddMachine(t, repo, "web1")
	img := filepath.Join(dir, "disk.img")
	h.Image(t, img, 16<<20, 21)
	p1 := mustBackup(t, s, tok, "web1", "root", img)
	h.Mutate(t, img, 0.1, 22)
	p2 := mustBackup(t, s, tok, "web1", "root", img)
	s.Stop(t)
	ps.mustBeInStore(t, repo)

	if r := h.Run(t, nil, "check", "--repo", repo, "--read-data"); r.Code != 0 {
		t.Fatalf("check before the damage: %s%s", r.Stdout, r.Stderr)
	}
	// Flip one byte inside the data of the first block of the first pack,
	// which the first point needs.
	matches, _ := filepath.Glob(filepath.Join(ps.root(repo), "packs", "*", "*.pack"))
	if len(matches) == 0 {
		t.Fatal("no pack files")
	}
	victim := matches[0]
	for _, m := range matches {
		if filepath.Base(m) < filepath.Base(victim) {
			victim = m
		}
	}
	raw, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	at := pack.HeaderSize + pack.EntryHeaderSize + 7
	raw[at] ^= 0x01
	if err := os.WriteFile(victim, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(ps.root(repo), victim)

	chk := h.Run(t, nil, "check", "--repo", repo, "--read-data")
	if chk.Code != 1 {
		t.Fatalf("check --read-data on a damaged pack: exit %d, want 1\n%s", chk.Code, chk.Stdout)
	}
	if !strings.Contains(chk.Stdout, "damaged: pack "+rel) {
		t.Errorf("check does not name the damaged pack %s:\n%s", rel, chk.Stdout)
	}
	affected := func(id int64) bool {
		return regexp.MustCompile(`affected: web1/root point ` + strconv.FormatInt(id, 10) + ` `).MatchString(chk.Stdout)
	}
	if !affected(p1.Point.ID) {
		t.Errorf("check does not name affected point %d:\n%s", p1.Point.ID, chk.Stdout)
	}
	t.Logf("check output:\n%s", chk.Stdout)

	out := filepath.Join(dir, "out.img")
	r := restore(t, repo, "web1", "root", strconv.FormatInt(p1.Point.ID, 10), out)
	if r.Code != 1 || !strings.Contains(r.Stderr, rel) {
		t.Errorf("restore of a damaged point: exit %d, stderr %q; want exit 1 naming %s", r.Code, r.Stderr, rel)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed restore left a target file behind")
	}
	if _, err := os.Stat(out + ".rewind-partial"); err == nil {
		t.Error("a failed restore left a partial file behind")
	}
	// A point check does not list must restore exactly; one it lists must fail.
	out2 := filepath.Join(dir, "out2.img")
	r2 := restore(t, repo, "web1", "root", strconv.FormatInt(p2.Point.ID, 10), out2)
	listed := affected(p2.Point.ID)
	switch {
	case listed && r2.Code == 0:
		t.Errorf("point %d is listed as affected but restored", p2.Point.ID)
	case !listed && r2.Code != 0:
		t.Errorf("point %d is not listed as affected but fails to restore: %s", p2.Point.ID, r2.Stderr)
	case !listed && h.SHA256(t, out2) != h.SHA256(t, img):
		t.Errorf("point %d restored wrong data", p2.Point.ID)
	}
}
