//go:build linux

package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// isMounted reports whether dir is a mount point (per /proc/self/mountinfo).
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 && fs[4] == dir {
			return true
		}
	}
	return false
}

// mountProc is a running `rewind mount`.
type mountProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited is closed
}

// wait waits up to d for the process to exit.
func (m *mountProc) wait(d time.Duration) (error, bool) {
	select {
	case <-m.exited:
		return m.err, true
	case <-time.After(d):
		return nil, false
	}
}

// startMount runs `rewind mount` in the background and waits for the
// mount; t.Cleanup stops the process and unmounts whatever is left.
func startMount(t *testing.T, mnt string, args ...string) *mountProc {
	t.Helper()
	cmd := exec.Command(h.Binary(t), append([]string{"mount", mnt}, args...)...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "mount.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf // a file: Wait does not wait for a copy
	stderr := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &mountProc{cmd: cmd, exited: make(chan struct{})}
	go func() { m.err = cmd.Wait(); close(m.exited) }()
	t.Cleanup(func() {
		if _, ok := m.wait(0); !ok {
			cmd.Process.Signal(syscall.SIGTERM)
			if _, ok := m.wait(10 * time.Second); !ok {
				cmd.Process.Kill()
				syscall.Unmount(mnt, syscall.MNT_DETACH)
				if _, ok := m.wait(10 * time.Second); !ok {
					t.Errorf("rewind mount (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
				}
			}
		}
		if isMounted(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		logf.Close()
		if t.Failed() {
			t.Logf("rewind mount's output:\n%s", stderr())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !isMounted(t, mnt) {
		if err, ok := m.wait(0); ok {
			t.Fatalf("rewind mount exited: %v\n%s", err, stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("not mounted after 20 s:\n%s", stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

// The mount command serves the repository while the server ingests: new
// points appear, typed times resolve, the audit log records opens, and
// SIGTERM unmounts and exits 0.
func TestMountWhileIngesting(t *testing.T) {
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "mkfs.ext4")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "web1")
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	img := filepath.Join(dir, "disk.img")
	mkfs := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(src, "motd"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img, "16M").CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v %s", err, out)
		}
	}
	mkfs("first\n")
	first := mustBackup(t, s, tok, "web1", "root", img)

	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	audit := filepath.Join(dir, "audit.jsonl")
	m := startMount(t, mnt, "--repo", repo, "--audit-log", audit)
	vol := filepath.Join(mnt, "web1", "root")
	if b, err := os.ReadFile(filepath.Join(vol, "latest", "files", "motd")); err != nil || string(b) != "first\n" {
		t.Fatalf("latest/files/motd = %q %v", b, err)
	}

	time.Sleep(50 * time.Millisecond)
	mkfs("second\n")
	second := mustBackup(t, s, tok, "web1", "root", img)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(vol, "latest", "files", "motd"))
		if err == nil && string(b) == "second\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the point backed up while mounted did not appear: latest/files/motd = %q %v", b, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// the first point by a typed time between the two
	t1, _ := time.Parse(time.RFC3339Nano, first.Point.Time)
	t2, _ := time.Parse(time.RFC3339Nano, second.Point.Time)
	between := t1.Add(t2.Sub(t1) / 2).UTC().Format(time.RFC3339Nano)
	if b, err := os.ReadFile(filepath.Join(vol, between, "files", "motd")); err != nil || string(b) != "first\n" {
		t.Errorf("%s/files/motd = %q %v, want the first point's", between, b, err)
	}

	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err, ok := m.wait(15 * time.Second); !ok {
		t.Fatal("rewind mount still runs 15 s after SIGTERM")
	} else if err != nil {
		t.Errorf("rewind mount after SIGTERM: %v", err)
	}
	if isMounted(t, mnt) {
		t.Error("still mounted after rewind mount exited")
	}

	b, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	opens := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r struct {
			Op, Machine, Volume, Point, Path string
			PID                              int
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if r.Op == "open" && strings.HasSuffix(r.Path, "/files/motd") && r.Machine == "web1" && r.Volume == "root" && r.Point != "" && r.PID > 0 {
			opens++
		}
	}
	if opens < 3 {
		t.Errorf("audit log has %d opens of motd, want 3:\n%s", opens, b)
	}
}

// rewind umount ends a one-point mount, whose root is the file system.
func TestMountOnePointAndUmount(t *testing.T) { forEachPackStore(t, testMountOnePointAndUmount) }

func testMountOnePointAndUmount(t *testing.T, ps *packStore) {
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "mkfs.ext4")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0", ps.args...)
	tok := h.AddMachine(t, repo, "web1")
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("web1\n"), 0o644)
	img := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	mustBackup(t, s, tok, "web1", "root", img)
	s.Stop(t) // seals the pack: with packs on S3 the mount reads the object
	ps.mustBeInStore(t, repo)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	m := startMount(t, mnt, "--repo", repo, "--machine", "web1", "--volume", "root", "--at", "latest")
	if b, err := os.ReadFile(filepath.Join(mnt, "etc", "hostname")); err != nil || string(b) != "web1\n" {
		t.Errorf("etc/hostname at the mount root = %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); err == nil {
		t.Error("wrote a file into a read-only mount")
	}
	h.MustRun(t, nil, "umount", mnt)
	if err, ok := m.wait(15 * time.Second); !ok {
		t.Fatal("rewind mount still runs 15 s after rewind umount")
	} else if err != nil {
		t.Errorf("rewind mount after rewind umount: %v", err)
	}
	if r := h.Run(t, nil, "umount", mnt); r.Code != 1 || !strings.Contains(r.Stderr, "not mounted") {
		t.Errorf("umount of an unmounted directory: exit %d %s", r.Code, r.Stderr)
	}
	if r := h.Run(t, nil, "mount", mnt, "--repo", repo, "--at", "-1h"); r.Code != 2 {
		t.Errorf("mount --at without --machine: exit %d, want 2", r.Code)
	}
}
