package e2e

import (
	"bufio"
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

// agentProc is a running `rewind agent protect`.
type agentProc struct {
	cmd   *exec.Cmd
	loop  string
	spool string
	done  chan struct{}
	log   *os.File
}

func startAgent(t *testing.T, s *h.Server, token, machine, volume, image, spool string, extra ...string) *agentProc {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.Binary(t), append([]string{"agent", "protect", "--server", s.URL, "--ca", s.CA, "--token", token,
		"--machine", machine, "--volume", volume, "--image", image, "--spool", spool}, extra...)...)
	cmd.Stderr = logf
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{cmd: cmd, spool: spool, done: make(chan struct{}), log: logf}
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
	case a.loop = <-line:
	case <-a.done:
		t.Fatalf("agent exited before serving the volume:\n%s", a.logText())
	case <-time.After(60 * time.Second):
		t.Fatalf("agent did not print its loop device in 60 s:\n%s", a.logText())
	}
	if !strings.HasPrefix(a.loop, "/dev/loop") {
		t.Fatalf("agent printed %q, want a loop device", a.loop)
	}
	return a
}

func (a *agentProc) logText() string {
	b, _ := os.ReadFile(a.log.Name())
	return string(b)
}

// stop stops the agent with SIGTERM and makes sure nothing is left
// attached or mounted, whatever happened.
func (a *agentProc) stop(t *testing.T) {
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
	if a.loop != "" {
		exec.Command("losetup", "--detach", a.loop).Run() // only if still attached
	}
	exec.Command("umount", "-l", filepath.Join(a.spool, "shim")).Run()
}

func (a *agentProc) kill9() {
	a.cmd.Process.Kill()
	<-a.done
}

// flushDevice makes a block device flush its write cache (fsync).
func flushDevice(t *testing.T, dev string) {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", dev, err)
	}
}

func mustCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mountAt(t *testing.T, fstype, dev, dir string, opts string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	args := []string{"-o", opts, dev, dir}
	if fstype != "" {
		args = append([]string{"-t", fstype}, args...)
	}
	mustCmd(t, "mount", args...)
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
}

// manifest maps every path under dir to its content hash, symlink target
// or "dir".
func manifest(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatalf("walk %s: %v", p, err)
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." || strings.HasPrefix(rel, "lost+found") || strings.HasPrefix(rel, "$") || strings.HasPrefix(rel, "System Volume Information") {
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			m[rel] = "symlink:" + target
		case d.IsDir():
			m[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("read %s: %v", p, err)
			}
			s := sha256.Sum256(b)
			m[rel] = hex.EncodeToString(s[:])
		}
		return nil
	})
	return m
}

func diffManifests(want, got map[string]string) []string {
	var d []string
	for k, v := range want {
		if got[k] != v {
			d = append(d, fmt.Sprintf("%s: want %.20s, got %.20s", k, v, got[k]))
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

// workload runs one deterministic phase of file activity in dir and
// returns the paths it touched.
func workload(t *testing.T, dir string, phase int, r *rand.Rand) map[string]bool {
	t.Helper()
	touched := map[string]bool{}
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	write := func(rel string, b []byte, sync bool) {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(b)
		if sync {
			f.Sync()
		}
		f.Close()
		touched[rel] = true
	}
	name := func(i int) string { return fmt.Sprintf("d%02d/file-%04d.dat", i%20, i) }
	switch phase {
	case 0: // create ~1000 files of 0–64 KiB, some symlinks
		for i := range 1000 {
			write(name(i), data(r.IntN(64<<10)), i%100 == 0)
		}
		for i := range 10 {
			l := fmt.Sprintf("links/link-%d", i)
			os.MkdirAll(filepath.Join(dir, "links"), 0o755)
			os.Symlink("../"+name(i), filepath.Join(dir, l))
			touched[l] = true
		}
	case 1: // modify in place
		for i := 0; i < 1000; i += 5 {
			f, err := os.OpenFile(filepath.Join(dir, name(i)), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(data(1000), int64(r.IntN(4096)))
			f.Close()
			touched[name(i)] = true
		}
	case 2: // one 200 MiB file, fsynced
		f, err := os.Create(filepath.Join(dir, "big.bin"))
		if err != nil {
			t.Fatal(err)
		}
		chunk := data(1 << 20)
		for i := range 200 {
			chunk[0] = byte(i)
			if _, err := f.Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
		f.Sync()
		f.Close()
		touched["big.bin"] = true
	case 3: // truncate
		for i := 1; i < 1000; i += 10 {
			os.Truncate(filepath.Join(dir, name(i)), int64(r.IntN(100)))
			touched[name(i)] = true
		}
	case 4: // delete
		for i := 2; i < 1000; i += 10 {
			os.Remove(filepath.Join(dir, name(i)))
			touched[name(i)] = true
		}
	case 5: // rename
		for i := 3; i < 1000; i += 10 {
			to := fmt.Sprintf("renamed/%04d.dat", i)
			os.MkdirAll(filepath.Join(dir, "renamed"), 0o755)
			os.Rename(filepath.Join(dir, name(i)), filepath.Join(dir, to))
			touched[name(i)], touched[to] = true, true
		}
	case 6: // rewrite the middle of the big file
		f, _ := os.OpenFile(filepath.Join(dir, "big.bin"), os.O_WRONLY, 0)
		f.WriteAt(data(3<<20), 50<<20)
		f.Close()
		touched["big.bin"] = true
	case 7: // new files and appends
		for i := 1000; i < 1100; i++ {
			write(name(i), data(r.IntN(16<<10)), false)
		}
		for i := 4; i < 1000; i += 25 {
			f, _ := os.OpenFile(filepath.Join(dir, name(i)), os.O_WRONLY|os.O_APPEND, 0)
			if f != nil {
				f.Write(data(5000))
				f.Close()
				touched[name(i)] = true
			}
		}
	case 8: // delete the big file
		os.Remove(filepath.Join(dir, "big.bin"))
		touched["big.bin"] = true
	default: // many small overwrites
		for i := 5; i < 1000; i += 7 {
			write(name(i), data(r.IntN(8<<10)), i%70 == 5)
		}
	}
	return touched
}

type moment struct {
	at       time.Time
	manifest map[string]string
	touched  map[string]bool // by the phase that ended here
}

func TestAgentCapturesEveryMomentExactly(t *testing.T) {
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "losetup", "mount", "umount")
	for _, fsys := range []struct {
		name, mkfs, fstype, mountOpts string
		mkfsArgs                      []string
		fsck                          bool
	}{
		{name: "ext4", mkfs: "mkfs.ext4", mkfsArgs: []string{"-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"}, mountOpts: "noatime", fsck: true},
		{name: "ntfs", mkfs: "mkntfs", mkfsArgs: []string{"-q", "-F", "-f"}, fstype: "ntfs-3g", mountOpts: "noatime"},
	} {
		t.Run(fsys.name, func(t *testing.T) {
			testenv.NeedTool(t, fsys.mkfs)
			if fsys.fstype != "" {
				testenv.NeedTool(t, fsys.fstype)
			}
			if fsys.fsck {
				testenv.NeedTool(t, "e2fsck")
			}
			dir := t.TempDir()
			repo := filepath.Join(dir, "repo")
			s := h.StartServer(t, repo, "127.0.0.1:0")
			tok := h.AddMachine(t, repo, "host")
			img := filepath.Join(dir, "vol.img")
			if err := os.Truncate(img, 0); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			f, _ := os.Create(img)
			f.Truncate(512 << 20)
			f.Close()
			mustCmd(t, fsys.mkfs, append(fsys.mkfsArgs, img)...)

			a := startAgent(t, s, tok, "host", fsys.name, img, filepath.Join(dir, "spool"))
			mnt := filepath.Join(dir, "mnt")
			mountAt(t, fsys.fstype, a.loop, mnt, fsys.mountOpts)

			r := rand.New(rand.NewPCG(7, 7))
			var moments []moment
			for phase := range 10 {
				touched := workload(t, mnt, phase, r)
				syscall.Sync()
				// sync(2) writes ntfs-3g's dirty pages of the loop device
				// but sends it no cache flush; an fsync of the device does,
				// as an application's fsync would: a flush point then holds
				// the moment, however late a timed cut comes on a busy machine.
				flushDevice(t, a.loop)
				time.Sleep(1500 * time.Millisecond) // timed cuts of these writes happen now
				moments = append(moments, moment{at: time.Now(), manifest: manifest(t, mnt), touched: touched})
			}
			mustCmd(t, "umount", mnt)
			a.stop(t)
			if strings.Contains(a.logText(), "level=ERROR") {
				t.Errorf("agent logged errors:\n%s", a.logText())
			}

			check := func(what string, want map[string]string, img string) {
				t.Helper()
				if fsys.fsck {
					fsckClean(t, what, img)
				}
				m := filepath.Join(dir, "check")
				// Read-write: mounting a restored copy replays its journal.
				mountAt(t, fsys.fstype, img, m, "loop")
				got := manifest(t, m)
				mustCmd(t, "umount", m)
				if d := diffManifests(want, got); len(d) > 0 {
					t.Errorf("%s differs from the volume at that moment in %d paths, e.g. %v", what, len(d), d[:min(5, len(d))])
				}
			}
			for i, m := range moments {
				out := filepath.Join(dir, fmt.Sprintf("moment-%d.img", i))
				res := h.MustRun(t, nil, "restore", "--repo", repo, "--machine", "host", "--volume", fsys.name,
					"--at", m.at.UTC().Format(time.RFC3339Nano), "--to", out)
				check(fmt.Sprintf("moment %d (%s)", i, strings.TrimSpace(res.Stderr)), m.manifest, out)
				os.Remove(out)
			}

			// Crash-consistent points (cut between flushes) need at most
			// journal recovery, and files synced before them are intact.
			var ps []struct {
				ID   int64  `json:"id"`
				Time string `json:"time"`
				Kind string `json:"kind"`
			}
			json.Unmarshal([]byte(h.MustRun(t, nil, "points", "--repo", repo, "--json").Stdout), &ps)
			kinds := map[string]int{}
			for _, p := range ps {
				kinds[p.Kind]++
			}
			t.Logf("%d points: %v", len(ps), kinds)
			if kinds["flush"] == 0 {
				t.Error("no flush points")
			}
			if !fsys.fsck {
				return
			}
			checked := 0
			for _, p := range ps {
				if p.Kind != "crash" || checked == 4 {
					continue
				}
				pt, _ := time.Parse(time.RFC3339Nano, p.Time)
				var before *moment
				for i := range moments {
					if !moments[i].at.After(pt) {
						before = &moments[i]
					}
				}
				out := filepath.Join(dir, fmt.Sprintf("crash-%d.img", p.ID))
				h.MustRun(t, nil, "restore", "--repo", repo, "--machine", "host", "--volume", fsys.name, "--at", fmt.Sprint(p.ID), "--to", out)
				fix, err := exec.Command("e2fsck", "-fy", out).CombinedOutput()
				if code := exitCode(err); code > 1 {
					t.Errorf("crash point %d: e2fsck -fy exit %d\n%s", p.ID, code, fix)
				}
				if bad := nonJournalRepairs(string(fix)); len(bad) > 0 {
					t.Errorf("crash point %d needed repairs beyond journal recovery: %v", p.ID, bad)
				}
				if before != nil {
					m := filepath.Join(dir, "crash")
					mountAt(t, "", out, m, "loop")
					got := manifest(t, m)
					mustCmd(t, "umount", m)
					for path, sum := range before.manifest {
						if later := touchedAfter(moments, pt, path); !later && got[path] != sum {
							t.Errorf("crash point %d: %s, synced before it, is %.20s, want %.20s", p.ID, path, got[path], sum)
						}
					}
				}
				os.Remove(out)
				checked++
			}
		})
	}
}

// fsckClean replays the ext4 journal of a restored image (as mounting it
// would; `e2fsck -n` skips that, and metadata a flush made durable may
// still be only in the journal) and then requires `e2fsck -fn` to find
// nothing.
func fsckClean(t *testing.T, what, img string) {
	t.Helper()
	if o, err := exec.Command("e2fsck", "-E", "journal_only", "-p", img).CombinedOutput(); exitCode(err) > 1 {
		t.Errorf("%s: journal replay: %v\n%s", what, err, o)
	}
	if o, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("%s: e2fsck -fn: %v\n%s", what, err, o)
	}
}

// touchedAfter reports whether any phase that ended after t touched path.
func touchedAfter(ms []moment, t time.Time, path string) bool {
	for _, m := range ms {
		if m.at.After(t) && m.touched[path] {
			return true
		}
	}
	return false
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// nonJournalRepairs returns the e2fsck output lines that report a repair
// other than replaying the journal. The superblock's free block and inode
// totals are not kept current on disk while ext4 is mounted (the kernel
// recomputes them from the journaled group descriptors), so correcting
// them is not a repair of damage; per-group counts are.
func nonJournalRepairs(out string) []string {
	var bad []string
	benignFix := false
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		summary := (strings.HasPrefix(l, "Free blocks count wrong (") || strings.HasPrefix(l, "Free inodes count wrong (")) && !strings.Contains(l, "group")
		switch {
		case summary:
			benignFix = true
			continue
		case l == "Fix? yes" && benignFix:
		case l == "", strings.HasPrefix(l, "Pass "), strings.Contains(l, "recovering journal"), strings.Contains(l, ": clean,"),
			strings.Contains(l, " files ("), strings.Contains(l, "FILE SYSTEM WAS MODIFIED"), strings.HasPrefix(l, "e2fsck "):
		default:
			bad = append(bad, l)
		}
		benignFix = false
	}
	return bad
}

// kill -9 of the agent mid-workload: after a restart nothing acknowledged
// is lost, the agent reports the gap, re-compares the volume with the
// server, and every moment after it is exact again.
func TestAgentRecoversFromKill9(t *testing.T) {
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "losetup", "mount", "umount", "mkfs.ext4", "e2fsck")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "host")
	img := filepath.Join(dir, "vol.img")
	f, _ := os.Create(img)
	f.Truncate(256 << 20)
	f.Close()
	mustCmd(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img)
	spoolDir := filepath.Join(dir, "spool")
	mnt := filepath.Join(dir, "mnt")
	r := rand.New(rand.NewPCG(9, 9))

	a := startAgent(t, s, tok, "host", "v", img, spoolDir)
	mountAt(t, "", a.loop, mnt, "noatime")
	var moments []moment
	for phase := range 2 {
		workload(t, mnt, phase, r)
		syscall.Sync()
		time.Sleep(1500 * time.Millisecond)
		moments = append(moments, moment{at: time.Now(), manifest: manifest(t, mnt)})
	}
	// Writes in flight when the agent dies: they fail, as on a dead disk.
	go func() {
		for i := range 200 {
			os.WriteFile(filepath.Join(mnt, fmt.Sprintf("inflight-%d", i)), make([]byte, 8192), 0o644)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	a.kill9()
	exec.Command("umount", "-l", mnt).Run()
	exec.Command("losetup", "--detach", a.loop).Run()

	// What was acknowledged before the crash is all there.
	for i, m := range moments {
		out := filepath.Join(dir, fmt.Sprintf("before-%d.img", i))
		h.MustRun(t, nil, "restore", "--repo", repo, "--machine", "host", "--volume", "v", "--at", m.at.UTC().Format(time.RFC3339Nano), "--to", out)
		mp := filepath.Join(dir, "chk")
		mountAt(t, "", out, mp, "loop")
		if d := diffManifests(m.manifest, manifest(t, mp)); len(d) > 0 {
			t.Errorf("moment %d acknowledged before the crash differs: %v", i, d[:min(5, len(d))])
		}
		mustCmd(t, "umount", mp)
		os.Remove(out)
	}

	// Restart: the unclean stop is noticed, reported and repaired.
	// The volume itself lost its in-flight writes, as after a power cut.
	if o, err := exec.Command("e2fsck", "-fy", img).CombinedOutput(); exitCode(err) > 1 {
		t.Fatalf("e2fsck -fy of the volume after the crash: %v\n%s", err, o)
	}
	a2 := startAgent(t, s, tok, "host", "v", img, spoolDir)
	if !strings.Contains(a2.logText(), "did not stop cleanly") {
		time.Sleep(time.Second)
	}
	if !strings.Contains(a2.logText(), "did not stop cleanly") {
		t.Errorf("the restarted agent did not notice the unclean stop:\n%s", a2.logText())
	}
	mountAt(t, "", a2.loop, mnt, "noatime")
	workload(t, mnt, 3, r)
	syscall.Sync()
	time.Sleep(1500 * time.Millisecond)
	last := moment{at: time.Now(), manifest: manifest(t, mnt)}
	var st []struct {
		State string `json:"state"`
		Gaps  []struct {
			Reason string  `json:"reason"`
			To     *string `json:"to"`
		} `json:"gaps"`
	}
	json.Unmarshal([]byte(h.MustRun(t, nil, "agent", "status", "--spool", spoolDir, "--json").Stdout), &st)
	if len(st) != 1 || len(st[0].Gaps) != 1 || st[0].Gaps[0].To == nil || !strings.Contains(st[0].Gaps[0].Reason, "unclean") {
		t.Errorf("agent status does not report the repaired gap: %+v", st)
	}
	mustCmd(t, "umount", mnt)
	a2.stop(t)

	out := filepath.Join(dir, "after.img")
	h.MustRun(t, nil, "restore", "--repo", repo, "--machine", "host", "--volume", "v", "--at", last.at.UTC().Format(time.RFC3339Nano), "--to", out)
	fsckClean(t, "point after the repair", out)
	mp := filepath.Join(dir, "chk2")
	mountAt(t, "", out, mp, "loop")
	if d := diffManifests(last.manifest, manifest(t, mp)); len(d) > 0 {
		t.Errorf("moment after the repair differs: %v", d[:min(5, len(d))])
	}
}

// runMoments runs workload phases, each followed by sync and a moment.
func runMoments(t *testing.T, mnt string, r *rand.Rand, phases ...int) []moment {
	t.Helper()
	var ms []moment
	for _, p := range phases {
		touched := workload(t, mnt, p, r)
		syscall.Sync()
		time.Sleep(1500 * time.Millisecond)
		ms = append(ms, moment{at: time.Now(), manifest: manifest(t, mnt), touched: touched})
	}
	return ms
}

func checkMoments(t *testing.T, repo, dir, volume string, ms []moment) {
	t.Helper()
	for i, m := range ms {
		out := filepath.Join(dir, fmt.Sprintf("m-%d.img", i))
		res := h.MustRun(t, nil, "restore", "--repo", repo, "--machine", "host", "--volume", volume, "--at", m.at.UTC().Format(time.RFC3339Nano), "--to", out)
		t.Logf("moment %d at %s: %s", i, m.at.UTC().Format(time.RFC3339Nano), strings.TrimSpace(res.Stderr))
		fsckClean(t, fmt.Sprintf("moment %d", i), out)
		mp := filepath.Join(dir, "chk")
		mountAt(t, "", out, mp, "loop")
		if d := diffManifests(m.manifest, manifest(t, mp)); len(d) > 0 {
			t.Errorf("moment %d differs in %d paths: %v", i, len(d), d[:min(5, len(d))])
		}
		mustCmd(t, "umount", mp)
		os.Remove(out)
	}
	if t.Failed() {
		t.Logf("points:\n%s", h.MustRun(t, nil, "points", "--repo", repo).Stdout)
	}
}

func newExt4(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	mustCmd(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", path)
}

// agentSetup is a server with machine "host" and an ext4 volume image.
type agentSetup struct {
	dir, repo, img, spool, mnt string
	server                     *h.Server
	token                      string
}

func newAgentSetup(t *testing.T, size int64) agentSetup {
	t.Helper()
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "losetup", "mount", "umount", "mkfs.ext4", "e2fsck")
	dir := t.TempDir()
	a := agentSetup{dir: dir, repo: filepath.Join(dir, "repo"), img: filepath.Join(dir, "vol.img"),
		spool: filepath.Join(dir, "spool"), mnt: filepath.Join(dir, "mnt")}
	a.server = h.StartServer(t, a.repo, "127.0.0.1:0")
	a.token = h.AddMachine(t, a.repo, "host")
	newExt4(t, a.img, size)
	return a
}

// protect starts an agent on the volume and mounts its filesystem.
func (a agentSetup) protect(t *testing.T, extra ...string) *agentProc {
	t.Helper()
	p := startAgent(t, a.server, a.token, "host", "v", a.img, a.spool, extra...)
	mountAt(t, "", p.loop, a.mnt, "noatime")
	return p
}

// The server stopped for 60 s during the workload: the spool keeps every
// change, and after the restart every moment inside the outage is exact.
func TestAgentOutageKeepsEveryMoment(t *testing.T) {
	e := newAgentSetup(t, 512<<20)
	s, repo, dir, mnt := e.server, e.repo, e.dir, e.mnt
	a := e.protect(t)
	r := rand.New(rand.NewPCG(3, 3))
	ms := runMoments(t, mnt, r, 0)

	s.Stop(t)
	down := time.Now()
	ms = append(ms, runMoments(t, mnt, r, 1, 2, 3, 9)...)
	for time.Since(down) < 60*time.Second {
		time.Sleep(time.Second)
	}
	var st []struct {
		State      string  `json:"state"`
		LagSeconds float64 `json:"lag_seconds"`
		SpoolBytes int64   `json:"spool_bytes"`
	}
	json.Unmarshal([]byte(h.MustRun(t, nil, "agent", "status", "--spool", e.spool, "--json").Stdout), &st)
	if len(st) != 1 || st[0].State != "outage" || st[0].LagSeconds < 30 || st[0].SpoolBytes < 100<<20 {
		t.Errorf("during the outage agent status says %+v; want outage, lag ≥ 30 s, the changes in the spool", st)
	}
	h.StartServer(t, repo, s.Addr)
	ms = append(ms, runMoments(t, mnt, r, 4, 5)...)
	mustCmd(t, "umount", mnt)
	a.stop(t)
	checkMoments(t, repo, dir, "v", ms)
}

// A spool too small for the outage: the agent falls back to remembering
// changed blocks, reports the gap, re-sends those blocks when the server is
// back, and is exact again from then on.
func TestAgentSpoolOverflowResynchronises(t *testing.T) {
	e := newAgentSetup(t, 512<<20)
	s, repo, dir, mnt, spoolDir := e.server, e.repo, e.dir, e.mnt, e.spool
	a := e.protect(t, "--spool-limit", "8388608")
	r := rand.New(rand.NewPCG(4, 4))
	ms := runMoments(t, mnt, r, 0)

	s.Stop(t)
	runMoments(t, mnt, r, 2) // 200 MiB: far past the 8 MiB spool
	h.StartServer(t, repo, s.Addr)
	deadline := time.Now().Add(90 * time.Second)
	var st []struct {
		State string `json:"state"`
		Gaps  []struct {
			Reason string  `json:"reason"`
			To     *string `json:"to"`
		} `json:"gaps"`
	}
	// Every gap (the spool may overflow again while it catches up) is
	// reported and closed.
	allClosed := func() bool {
		if len(st) != 1 || len(st[0].Gaps) == 0 {
			return false
		}
		for _, g := range st[0].Gaps {
			if g.To == nil || !strings.Contains(g.Reason, "spool full") {
				return false
			}
		}
		return true
	}
	for time.Now().Before(deadline) {
		st = nil
		json.Unmarshal([]byte(h.MustRun(t, nil, "agent", "status", "--spool", spoolDir, "--json").Stdout), &st)
		if allClosed() {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !allClosed() {
		t.Fatalf("agent status does not show the overflow gap closed: %+v\n%s", st, a.logText())
	}
	ms = append(ms, runMoments(t, mnt, r, 6, 7)...)
	mustCmd(t, "umount", mnt)
	a.stop(t)
	checkMoments(t, repo, dir, "v", ms)
	if t.Failed() {
		t.Logf("agent log:\n%s", a.logText())
	}
}

// An agent stopped cleanly with everything acknowledged, then started
// again, goes on capturing: journal numbering continues where it was.
func TestAgentRestartAfterCleanStop(t *testing.T) {
	e := newAgentSetup(t, 128<<20)
	r := rand.New(rand.NewPCG(5, 5))
	var ms []moment
	for run := range 3 {
		a := e.protect(t)
		ms = append(ms, runMoments(t, e.mnt, r, []int{0, 9, 3}[run])...)
		mustCmd(t, "umount", e.mnt)
		a.stop(t)
	}
	checkMoments(t, e.repo, e.dir, "v", ms)
}

// A bookmark freezes the filesystem around a labelled point: restored, it
// is clean without even replaying the journal, and holds exactly the files
// of that moment.
func TestAgentBookmarkIsApplicationConsistent(t *testing.T) {
	e := newAgentSetup(t, 256<<20)
	a := e.protect(t)
	r := rand.New(rand.NewPCG(8, 8))
	workload(t, e.mnt, 0, r)
	// An unreachable SQL Server: no freeze, no bookmark, exit 1 naming it.
	bad := h.Run(t, nil, "bookmark", "--machine", "host", "--volume", "v", "--label", "never",
		"--spool", e.spool, "--mount", e.mnt, "--mssql", "sqlserver://sa:pw@127.0.0.1:1?dial+timeout=2")
	if bad.Code != 1 || !strings.Contains(bad.Stderr, "127.0.0.1:1") {
		t.Errorf("bookmark with an unreachable SQL Server: exit %d, stderr %q; want exit 1 naming the server", bad.Code, bad.Stderr)
	}
	res := h.MustRun(t, nil, "bookmark", "--machine", "host", "--volume", "v", "--label", "before upgrade",
		"--spool", e.spool, "--mount", e.mnt, "--json")
	want := manifest(t, e.mnt)
	var bp struct {
		ID    int64  `json:"id"`
		Kind  string `json:"kind"`
		Label string `json:"label"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &bp); err != nil || bp.ID == 0 {
		t.Fatalf("bookmark --json printed %q: %v", res.Stdout, err)
	}
	workload(t, e.mnt, 1, r) // changes after the bookmark
	syscall.Sync()
	mustCmd(t, "umount", e.mnt)
	a.stop(t)

	var ps []struct {
		ID    int64  `json:"id"`
		Kind  string `json:"kind"`
		Label string `json:"label"`
	}
	json.Unmarshal([]byte(h.MustRun(t, nil, "points", "--repo", e.repo, "--json").Stdout), &ps)
	found := false
	for _, p := range ps {
		if p.ID == bp.ID {
			found = p.Kind == "bookmark" && p.Label == "before upgrade"
		}
		if p.Label == "never" {
			t.Errorf("a bookmark was taken although SQL Server could not be checkpointed: %+v", p)
		}
	}
	if !found {
		t.Errorf("point %d is not listed as a bookmark labelled \"before upgrade\": %+v", bp.ID, ps)
	}
	out := filepath.Join(e.dir, "bookmark.img")
	h.MustRun(t, nil, "restore", "--repo", e.repo, "--machine", "host", "--volume", "v", "--at", fmt.Sprint(bp.ID), "--to", out)
	if o, err := exec.Command("e2fsck", "-fn", out).CombinedOutput(); err != nil {
		t.Errorf("bookmark point: e2fsck -fn without journal replay: %v\n%s", err, o)
	}
	mp := filepath.Join(e.dir, "chk")
	mountAt(t, "", out, mp, "ro,loop")
	if d := diffManifests(want, manifest(t, mp)); len(d) > 0 {
		t.Errorf("bookmark point differs from the volume when it was taken: %v", d[:min(5, len(d))])
	}
}
