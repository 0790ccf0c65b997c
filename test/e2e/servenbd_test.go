package e2e

import (
	"bufio"
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

// serveNBD starts `rewind serve-nbd` and returns the URL it prints; it is
// stopped (SIGTERM) by the returned function and when the test ends.
func serveNBD(t *testing.T, args ...string) (string, func()) {
	t.Helper()
	cmd := exec.Command(h.Binary(t), append([]string{"serve-nbd", "--listen", "127.0.0.1:0"}, args...)...)
	logf, _ := os.Create(filepath.Join(t.TempDir(), "serve-nbd.log"))
	cmd.Stderr = logf
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("serve-nbd did not stop on SIGTERM")
			cmd.Process.Kill()
			<-done
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			b, _ := os.ReadFile(logf.Name())
			t.Errorf("serve-nbd exited %d: %s", code, b)
		}
	}
	t.Cleanup(stop)
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- strings.TrimSpace(sc.Text())
		}
		for sc.Scan() {
		}
	}()
	select {
	case u := <-line:
		return u, stop
	case <-done:
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("serve-nbd exited: %s", b)
	case <-time.After(30 * time.Second):
		t.Fatal("serve-nbd printed no URL in 30 s")
	}
	return "", stop
}

// A point served over NBD reads back identical to what was backed up;
// with --writable, writes land in an overlay and the repository does not
// change.
func TestServeNBD(t *testing.T) {
	testenv.NeedTool(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	token := h.AddMachine(t, repo, "web1")
	img := filepath.Join(dir, "vol.img")
	h.Image(t, img, 48<<20+4096, 11)
	if r := s.Backup(t, token, "web1", "root", img); r.Code != 0 {
		t.Fatalf("backup: %s", r.Stderr)
	}
	first := filepath.Join(dir, "first.img")
	mustCmd(t, "cp", img, first)
	h.Mutate(t, img, 0.2, 12)
	if r := s.Backup(t, token, "web1", "root", img); r.Code != 0 {
		t.Fatalf("backup: %s", r.Stderr)
	}
	s.Stop(t)
	digest := h.TreeDigest(t, repo)

	// Both points, read through the export by qemu-img.
	for _, c := range []struct{ at, want string }{{"1", first}, {"latest", img}} {
		url, stop := serveNBD(t, "--repo", repo, "--machine", "web1", "--volume", "root", "--at", c.at)
		if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", url, c.want).CombinedOutput(); err != nil {
			t.Errorf("point %s served over NBD differs from the image backed up: %v\n%s", c.at, err, out)
		}
		// Read-only: a write fails.
		out, _ := exec.Command("qemu-io", "-f", "raw", url, "-c", "write -P 0x42 0 4096").CombinedOutput()
		if !strings.Contains(string(out), "failed") && !strings.Contains(string(out), "read-only") && !strings.Contains(string(out), "Permission") {
			t.Errorf("a write to the read-only export did not fail: %s", out)
		}
		stop()
	}

	// Copy-on-write: writes read back, the rest is the point, and the
	// repository is untouched.
	url, stop := serveNBD(t, "--repo", repo, "--machine", "web1", "--volume", "root", "--writable")
	mustCmd(t, "qemu-io", "-f", "raw", url, "-c", "write -P 0x42 1000 70000", "-c", "write -z 1M 64k", "-c", "discard 2M 64k",
		"-c", "read -P 0x42 1000 70000", "-c", "read -P 0 1M 64k")
	got := filepath.Join(dir, "got.img")
	mustCmd(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, got)
	stop()
	want, _ := os.ReadFile(img)
	copy(want[1000:], strings.Repeat("\x42", 70000))
	clear(want[1<<20 : 1<<20+64<<10])
	clear(want[2<<20 : 2<<20+64<<10])
	if b, _ := os.ReadFile(got); string(b) != string(want) {
		t.Error("the writable export does not read back its writes over the point")
	}
	if h.TreeDigest(t, repo) != digest {
		t.Error("serving a point changed the repository")
	}
}
