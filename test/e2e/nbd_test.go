package e2e

import (
	"bufio"
	"io"
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

// startServeNBD runs rewind serve-nbd on a unix socket until the test ends
// and returns the socket.
func startServeNBD(t *testing.T, repo, machine, volume string, extra ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	cmd := exec.Command(h.Binary(t), append([]string{"serve-nbd", "--repo", repo, "--machine", machine, "--volume", volume, "--listen", sock}, extra...)...)
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("serve-nbd did not stop on SIGTERM")
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, "serving") {
		t.Fatalf("serve-nbd printed %q (%v): %s", line, err, stderr.String())
	}
	go io.Copy(io.Discard, out)
	return sock
}

// A point served over NBD is identical to its restore; with --writable,
// writes through NBD are read back but change nothing in the repository.
func TestServeNBD(t *testing.T) {
	testenv.NeedTool(t, "qemu-img")
	testenv.NeedTool(t, "qemu-io")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "web1")
	img := filepath.Join(dir, "disk.img")
	h.Image(t, img, 40<<20+512, 5)
	mustBackup(t, s, tok, "web1", "root", img)
	raw := filepath.Join(dir, "restored.img")
	if r := restore(t, repo, "web1", "root", "latest", raw); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	sum := h.SHA256(t, raw)

	ro := startServeNBD(t, repo, "web1", "root")
	uri := "nbd+unix:///?socket=" + ro
	if o, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", uri, raw).CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare %s %s: %v\n%s", uri, raw, err, o)
	}
	if o, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k", uri).CombinedOutput(); err == nil && !strings.Contains(string(o), "rror") {
		t.Errorf("a write to a read-only export succeeded: %s", o)
	}

	rw := startServeNBD(t, repo, "web1", "root", "--writable", "--scratch", t.TempDir())
	uri = "nbd+unix:///web1/root?socket=" + rw
	o, err := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 4095 70000", "-c", "read -P 0x5a 4095 70000", "-c", "write -z 1048576 65536", "-c", "read -P 0 1048576 65536", uri).CombinedOutput()
	if err != nil || strings.Contains(string(o), "rror") || strings.Contains(string(o), "fail") {
		t.Fatalf("qemu-io through the writable export: %v\n%s", err, o)
	}
	if o, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", uri, raw).CombinedOutput(); err == nil {
		t.Errorf("the writable export still equals the restore after writes: %s", o)
	}
	if r := h.Run(t, nil, "check", "--repo", repo, "--read-data"); r.Code != 0 {
		t.Errorf("check --read-data after writes through NBD: exit %d: %s", r.Code, r.Stderr)
	}
	again := filepath.Join(dir, "again.img")
	if r := restore(t, repo, "web1", "root", "latest", again); r.Code != 0 || h.SHA256(t, again) != sum {
		t.Errorf("a restore after writes through NBD differs from the one before (exit %d)", r.Code)
	}
	os.Remove(again)
}
