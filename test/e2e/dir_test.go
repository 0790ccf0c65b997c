package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// dirAgent is a running `rewind agent protect-dir`.
type dirAgent struct {
	cmd         *exec.Cmd
	mnt, spool  string
	done        chan struct{}
	log         *os.File
	stopped     bool
	stopTimeout time.Duration
}

func startDirAgent(t *testing.T, s *h.Server, token, volume, data, mnt, spool string, extra ...string) *dirAgent {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.Binary(t), append([]string{"agent", "protect-dir", "--server", s.URL, "--ca", s.CA, "--token", token,
		"--machine", "host", "--volume", volume, "--dir", data, "--mount", mnt, "--spool", spool}, extra...)...)
	cmd.Stderr = logf
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &dirAgent{cmd: cmd, mnt: mnt, spool: spool, done: make(chan struct{}), log: logf}
	go func() { cmd.Wait(); close(a.done) }()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- strings.TrimSpace(sc.Text())
		}
		for sc.Scan() {
		}
	}()
	t.Cleanup(func() { a.stop(t) })
	select {
	case got := <-line:
		if got != mnt {
			t.Fatalf("agent printed %q, want the mount point %s", got, mnt)
		}
	case <-a.done:
		t.Fatalf("agent exited before serving the directory:\n%s", a.logText())
	case <-time.After(60 * time.Second):
		t.Fatalf("agent did not print its mount point in 60 s:\n%s", a.logText())
	}
	return a
}

func (a *dirAgent) logText() string {
	b, _ := os.ReadFile(a.log.Name())
	return string(b)
}

// stop stops the agent with SIGTERM and makes sure nothing stays mounted.
func (a *dirAgent) stop(t *testing.T) {
	select {
	case <-a.done:
	default:
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(60 * time.Second):
			t.Errorf("agent did not stop on SIGTERM in 60 s; killing it")
			a.cmd.Process.Kill()
			<-a.done
		}
	}
	exec.Command("umount", "-l", a.mnt).Run() // only if still mounted
}

// kill9 kills the agent; its mount stays (dead) until umount -l.
func (a *dirAgent) kill9() {
	a.cmd.Process.Kill()
	<-a.done
}

// dirStatus is the part of `rewind agent status --json` the tests read.
type dirStatus struct {
	State       string    `json:"state"`
	Updated     time.Time `json:"updated"`
	Kind        string    `json:"kind"`
	LagSeconds  float64   `json:"lag_seconds"`
	AckedSeq    uint64    `json:"acked_seq"`
	JournalNext uint64    `json:"journal_next"`
	Gaps        []struct {
		Reason string  `json:"reason"`
		To     *string `json:"to"`
	} `json:"gaps"`
}

func (a *dirAgent) status(t *testing.T) dirStatus {
	t.Helper()
	var st []dirStatus
	out := h.MustRun(t, nil, "agent", "status", "--spool", a.spool, "--json").Stdout
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
		t.Fatalf("agent status: %v\n%s", err, out)
	}
	return st[0]
}

// settle waits until everything journaled is in a point on the server
// (after changes stopped), as the status reports it.
func (a *dirAgent) settle(t *testing.T) {
	t.Helper()
	start := time.Now()
	time.Sleep(700 * time.Millisecond) // longer than the half-second cut
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := a.status(t)
		// The status is rewritten every second: only one taken after the
		// changes counts.
		if st.Updated.After(start) && st.State == "streaming" && st.LagSeconds == 0 && st.AckedSeq+1 >= st.JournalNext {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not catch up in 60 s: %+v\n%s", st, a.logText())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// dirEntry is the reference of one path: type, permissions, size, mtime,
// content hash, symlink target, and the first path sharing its inode.
type dirEntry struct {
	Mode   fs.FileMode
	Size   int64 // files only
	Mtime  int64 // ns
	SHA256 string
	Target string
	Link   string
}

func dirManifest(t *testing.T, root string) map[string]dirEntry {
	t.Helper()
	m := map[string]dirEntry{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := dirEntry{Mode: fi.Mode(), Mtime: fi.ModTime().UnixNano()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Target, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			e.SHA256, e.Size = hex.EncodeToString(s[:]), fi.Size()
			st := fi.Sys().(*syscall.Stat_t)
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					e.Link = first
				} else {
					inodes[st.Ino] = rel
				}
			}
		}
		m[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("manifest of %s: %v", root, err)
	}
	return m
}

func diffDirManifests(want, got map[string]dirEntry) []string {
	var d []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			d = append(d, k+": missing")
		case g != w:
			d = append(d, fmt.Sprintf("%s: got %+v, want %+v", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			d = append(d, k+": unexpected")
		}
	}
	sort.Strings(d)
	return d
}

// dirWorkload runs one phase of file activity through the mount.
func dirWorkload(t *testing.T, dir string, phase int, r *rand.Rand) {
	t.Helper()
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel string, b []byte, sync bool) {
		t.Helper()
		p := filepath.Join(dir, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		f, err := os.Create(p)
		must(err)
		_, err = f.Write(b)
		must(err)
		if sync {
			must(f.Sync())
		}
		must(f.Close())
	}
	name := func(i int) string { return fmt.Sprintf("d%02d/file-%04d.dat", i%20, i) }
	p := func(rel string) string { return filepath.Join(dir, rel) }
	switch phase {
	case 0: // ~1000 new files, symlinks, a hard link, modes, a sparse file
		for i := range 1000 {
			write(name(i), data(r.IntN(32<<10)), i%100 == 0)
		}
		must(os.MkdirAll(p("links"), 0o750))
		for i := range 10 {
			must(os.Symlink("../"+name(i), p(fmt.Sprintf("links/link-%d", i))))
		}
		must(os.Link(p(name(11)), p("links/hard-11")))
		must(os.Chmod(p(name(12)), 0o600))
		must(os.Chmod(p(name(13)), 0o4755))
		f, err := os.Create(p("sparse.bin"))
		must(err)
		_, err = f.WriteAt([]byte("tail"), 9<<20)
		must(err)
		must(f.Close())
	case 1: // in-place changes, one 50 MiB file (fsynced), times set
		for i := 0; i < 1000; i += 5 {
			f, err := os.OpenFile(p(name(i)), os.O_WRONLY, 0)
			must(err)
			_, err = f.WriteAt(data(1000), int64(r.IntN(4096)))
			must(err)
			must(f.Close())
		}
		f, err := os.Create(p("big.bin"))
		must(err)
		chunk := data(1 << 20)
		for i := range 50 {
			chunk[0] = byte(i)
			_, err := f.Write(chunk)
			must(err)
		}
		must(f.Sync())
		must(f.Close())
		old := time.Date(2020, 1, 2, 3, 4, 5, 600, time.UTC)
		must(os.Chtimes(p(name(20)), old, old))
	case 2: // truncate (shrink and grow), delete, rename files and a directory
		for i := 1; i < 1000; i += 10 {
			must(os.Truncate(p(name(i)), int64(r.IntN(100))))
		}
		must(os.Truncate(p(name(31)), 200<<10)) // grows over a hole
		for i := 2; i < 1000; i += 10 {
			must(os.Remove(p(name(i))))
		}
		must(os.MkdirAll(p("renamed"), 0o755))
		for i := 3; i < 1000; i += 10 {
			must(os.Rename(p(name(i)), p(fmt.Sprintf("renamed/%04d.dat", i))))
		}
		must(os.Rename(p("d19"), p("renamed/d19-moved")))
	case 3: // rewrite inside the big file, appends, new files, replace by rename
		f, err := os.OpenFile(p("big.bin"), os.O_WRONLY, 0)
		must(err)
		_, err = f.WriteAt(data(3<<20), 20<<20)
		must(err)
		must(f.Sync())
		must(f.Close())
		for i := 4; i < 1000; i += 25 {
			if i%20 == 19 {
				continue // moved with d19
			}
			f, err := os.OpenFile(p(name(i)), os.O_WRONLY|os.O_APPEND, 0)
			must(err)
			_, err = f.Write(data(5000))
			must(err)
			must(f.Close())
		}
		for i := 1000; i < 1100; i++ {
			write(name(i), data(r.IntN(16<<10)), false)
		}
		write("replace.tmp", data(7000), true)
		must(os.Rename(p("replace.tmp"), p(name(5))))
	case 4: // delete the big file and a directory, overwrite many files
		must(os.Remove(p("big.bin")))
		must(os.RemoveAll(p("links")))
		for i := 6; i < 1000; i += 7 {
			if _, err := os.Stat(p(name(i))); err == nil {
				write(name(i), data(r.IntN(8<<10)), i%70 == 6)
			}
		}
	default: // new files, overwrites
		write(fmt.Sprintf("phase-%d/new.dat", phase), data(100<<10), true)
		for i := 8; i < 1000; i += 9 {
			if _, err := os.Stat(p(name(i))); err == nil {
				write(name(i), data(r.IntN(8<<10)), i%70 == 6)
			}
		}
	}
}

type dirMoment struct {
	at       time.Time
	manifest map[string]dirEntry
}

// dirSetup is a server with machine "host" and a data directory holding a
// small tree before it is protected (the seeding case).
type dirSetup struct {
	dir, repo, data, mnt, spool string
	server                      *h.Server
	token                       string
}

func newDirSetup(t *testing.T) dirSetup {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "umount")
	dir := t.TempDir()
	d := dirSetup{dir: dir, repo: filepath.Join(dir, "repo"), data: filepath.Join(dir, "data"),
		mnt: filepath.Join(dir, "mnt"), spool: filepath.Join(dir, "spool")}
	d.server = h.StartServer(t, d.repo, "127.0.0.1:0")
	d.token = h.AddMachine(t, d.repo, "host")
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 30 {
		p := filepath.Join(d.data, fmt.Sprintf("seed/s%02d", i%4), fmt.Sprintf("f%d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		b := make([]byte, r.IntN(300<<10))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("s00/f0", filepath.Join(d.data, "seed/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(d.data, "seed/s01/f1"), filepath.Join(d.data, "seed/hard")); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d dirSetup) restoreAt(t *testing.T, at string, to string) {
	t.Helper()
	res := h.MustRun(t, nil, "restore", "--repo", d.repo, "--machine", "host", "--volume", "data", "--at", at, "--to-dir", to)
	t.Logf("%s", strings.TrimSpace(res.Stdout))
}

// Every moment of a workload through the mount (creates, in-place writes,
// a 50 MiB file, truncates, deletes, renames, fsyncs) is restored exactly
// by the newest point at or before it: contents, sizes, modes, mtimes,
// symlinks and hard links.
func TestDirShimCapturesEveryMomentExactly(t *testing.T) {
	d := newDirSetup(t)
	a := startDirAgent(t, d.server, d.token, "data", d.data, d.mnt, d.spool)
	a.settle(t)
	moments := []dirMoment{{at: time.Now(), manifest: dirManifest(t, d.data)}} // the seeded tree
	r := rand.New(rand.NewPCG(7, 7))
	for phase := range 5 {
		t0 := time.Now()
		dirWorkload(t, d.mnt, phase, r)
		t1 := time.Now()
		syscall.Sync()
		a.settle(t)
		t.Logf("phase %d: workload %s, settle %s", phase, t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
		moments = append(moments, dirMoment{at: time.Now(), manifest: dirManifest(t, d.data)})
	}
	if got := dirManifest(t, d.mnt); len(diffDirManifests(moments[len(moments)-1].manifest, got)) > 0 {
		t.Fatalf("the mount does not show the data directory: %v", diffDirManifests(moments[len(moments)-1].manifest, got)[:1])
	}
	st := a.status(t)
	if st.Kind != "dir" || len(st.Gaps) != 0 {
		t.Errorf("status: %+v", st)
	}
	ts := time.Now()
	a.stop(t)
	t.Logf("stop took %s", time.Since(ts).Round(time.Millisecond))
	if strings.Contains(a.logText(), "level=ERROR") {
		t.Errorf("agent logged errors:\n%s", a.logText())
	}
	for i, m := range moments {
		out := filepath.Join(d.dir, fmt.Sprintf("moment-%d", i))
		d.restoreAt(t, m.at.UTC().Format(time.RFC3339Nano), out)
		if diff := diffDirManifests(m.manifest, dirManifest(t, out)); len(diff) > 0 {
			t.Errorf("moment %d differs in %d paths, e.g. %v", i, len(diff), diff[:min(5, len(diff))])
		}
		if i < len(moments)-1 {
			os.RemoveAll(out)
		}
	}
	// Holes stay holes: the 9 MiB sparse file takes a few blocks.
	out := filepath.Join(d.dir, fmt.Sprintf("moment-%d", len(moments)-1))
	var st2 syscall.Stat_t
	if err := syscall.Stat(filepath.Join(out, "sparse.bin"), &st2); err != nil || st2.Size != 9<<20+4 || st2.Blocks*512 > 1<<20 {
		t.Errorf("restored sparse.bin: size %d, %d bytes allocated (%v)", st2.Size, st2.Blocks*512, err)
	}

	// A directory volume is not a disk, and a directory restore needs an
	// empty target unless --force.
	res := h.Run(t, nil, "restore", "--repo", d.repo, "--machine", "host", "--volume", "data", "--to", filepath.Join(d.dir, "x.img"))
	if res.Code != 1 || !strings.Contains(res.Stderr, "--to-dir") {
		t.Errorf("raw restore of a directory volume: exit %d, %s", res.Code, res.Stderr)
	}
	res = h.Run(t, nil, "restore", "--repo", d.repo, "--machine", "host", "--volume", "data", "--to-dir", out)
	if res.Code != 1 || !strings.Contains(res.Stderr, "not empty") {
		t.Errorf("restore into a non-empty directory: exit %d, %s", res.Code, res.Stderr)
	}
	h.MustRun(t, nil, "restore", "--repo", d.repo, "--machine", "host", "--volume", "data", "--to-dir", out, "--force")
	if diff := diffDirManifests(moments[len(moments)-1].manifest, dirManifest(t, out)); len(diff) > 0 {
		t.Errorf("restore --force differs: %v", diff[:min(5, len(diff))])
	}

	// A clean restart compares nothing it need not, and keeps capturing.
	ts = time.Now()
	a2 := startDirAgent(t, d.server, d.token, "data", d.data, d.mnt, d.spool)
	a2.settle(t)
	t.Logf("restart took %s", time.Since(ts).Round(time.Millisecond))
	if strings.Contains(a2.logText(), "did not stop cleanly") {
		t.Errorf("a clean stop was taken for an unclean one:\n%s", a2.logText())
	}
	dirWorkload(t, d.mnt, 9, r)
	syscall.Sync()
	a2.settle(t)
	last := dirMoment{at: time.Now(), manifest: dirManifest(t, d.data)}
	a2.stop(t)
	out = filepath.Join(d.dir, "after-restart")
	d.restoreAt(t, last.at.UTC().Format(time.RFC3339Nano), out)
	if diff := diffDirManifests(last.manifest, dirManifest(t, out)); len(diff) > 0 {
		t.Errorf("after a clean restart, the moment differs: %v", diff[:min(5, len(diff))])
	}
}

// kill -9 of the agent mid-workload: every write whose fsync returned is
// on the server after the restart, which reports the gap and closes it by
// comparing every file.
func TestDirShimRecoversFromKill9(t *testing.T) {
	d := newDirSetup(t)
	a := startDirAgent(t, d.server, d.token, "data", d.data, d.mnt, d.spool)
	a.settle(t)

	// A writer fsyncs file after file until the agent dies under it.
	type synced struct {
		rel string
		sum [32]byte
	}
	done := make(chan []synced)
	stop := make(chan struct{})
	go func() {
		var ok []synced
		r := rand.New(rand.NewPCG(3, 4))
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- ok
				return
			default:
			}
			rel := fmt.Sprintf("w%d/f%05d", i%8, i)
			b := make([]byte, 1000+r.IntN(64<<10))
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			p := filepath.Join(d.mnt, rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			f, err := os.Create(p)
			if err != nil {
				continue
			}
			_, werr := f.Write(b)
			serr := f.Sync()
			f.Close()
			if werr == nil && serr == nil {
				ok = append(ok, synced{rel, sha256.Sum256(b)})
			}
		}
	}()
	time.Sleep(2 * time.Second)
	a.kill9()
	close(stop) // the writer fails on the dead mount until it sees this
	ok := <-done
	exec.Command("umount", "-l", d.mnt).Run()
	if len(ok) < 20 {
		t.Fatalf("only %d files were fsynced before the kill", len(ok))
	}
	t.Logf("%d files fsynced before kill -9", len(ok))

	a2 := startDirAgent(t, d.server, d.token, "data", d.data, d.mnt, d.spool)
	a2.settle(t)
	if !strings.Contains(a2.logText(), "did not stop cleanly") {
		t.Errorf("the restarted agent did not notice the unclean stop:\n%s", a2.logText())
	}
	st := a2.status(t)
	if len(st.Gaps) != 1 || st.Gaps[0].To == nil || !strings.Contains(st.Gaps[0].Reason, "unclean") {
		t.Errorf("agent status does not report the closed gap: %+v", st)
	}
	want := dirManifest(t, d.data)
	at := time.Now()
	a2.stop(t)

	out := filepath.Join(d.dir, "after")
	d.restoreAt(t, at.UTC().Format(time.RFC3339Nano), out)
	for _, s := range ok {
		b, err := os.ReadFile(filepath.Join(out, s.rel))
		if sum := sha256.Sum256(b); err != nil || !bytes.Equal(sum[:], s.sum[:]) {
			t.Errorf("fsynced %s lost or changed after kill -9 (%v)", s.rel, err)
		}
	}
	if diff := diffDirManifests(want, dirManifest(t, out)); len(diff) > 0 {
		t.Errorf("the point after the repair differs from the directory: %v", diff[:min(5, len(diff))])
	}
}

// The server stopped while far more changes than the spool holds are made
// (a 50 MiB file, renames, deletes): the agent marks changed blocks,
// reports the gap, re-sends them when the server is back, closes the gap,
// and the moments before and after the outage are exact.
func TestDirShimSpoolOverflowResynchronises(t *testing.T) {
	d := newDirSetup(t)
	a := startDirAgent(t, d.server, d.token, "data", d.data, d.mnt, d.spool, "--spool-limit", "2097152")
	a.settle(t)
	r := rand.New(rand.NewPCG(8, 8))
	dirWorkload(t, d.mnt, 0, r)
	a.settle(t)
	before := dirMoment{at: time.Now(), manifest: dirManifest(t, d.data)}

	d.server.Stop(t)
	dirWorkload(t, d.mnt, 1, r) // 50 MiB: far past the 2 MiB spool
	dirWorkload(t, d.mnt, 2, r)
	h.StartServer(t, d.repo, d.server.Addr)
	deadline := time.Now().Add(90 * time.Second)
	closed := func(st dirStatus) bool {
		if len(st.Gaps) == 0 {
			return false
		}
		for _, g := range st.Gaps {
			if g.To == nil || !strings.Contains(g.Reason, "spool full") {
				return false
			}
		}
		return true
	}
	for st := a.status(t); !closed(st); st = a.status(t) {
		if time.Now().After(deadline) {
			t.Fatalf("agent status does not show the overflow gap closed: %+v\n%s", st, a.logText())
		}
		time.Sleep(500 * time.Millisecond)
	}
	dirWorkload(t, d.mnt, 3, r)
	syscall.Sync()
	a.settle(t)
	after := dirMoment{at: time.Now(), manifest: dirManifest(t, d.data)}
	a.stop(t)
	for i, m := range []dirMoment{before, after} {
		out := filepath.Join(d.dir, fmt.Sprintf("m-%d", i))
		d.restoreAt(t, m.at.UTC().Format(time.RFC3339Nano), out)
		if diff := diffDirManifests(m.manifest, dirManifest(t, out)); len(diff) > 0 {
			t.Errorf("moment %d differs in %d paths, e.g. %v", i, len(diff), diff[:min(5, len(diff))])
		}
	}
	if t.Failed() {
		t.Logf("agent log:\n%s", a.logText())
	}
}
