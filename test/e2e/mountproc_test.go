package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	h "github.com/rewind-cdp/rewind/test/harness"
)

// mountProc is a running `rewind mount`.
type mountProc struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	log  string // file holding what it printed
}

// startMount runs `rewind mount DIR args...` and waits until it says it
// has mounted. The test's cleanup stops it (SIGTERM, which unmounts) and
// makes sure nothing stays mounted, also when the test failed.
func startMount(t *testing.T, dir string, args ...string) *mountProc {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &mountProc{dir: dir, done: make(chan struct{}), log: filepath.Join(t.TempDir(), "mount.log")}
	logf, err := os.Create(m.log)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(h.Binary(t), append([]string{"mount", dir}, args...)...)
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	mounted := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if !once && strings.HasPrefix(sc.Text(), "mounted ") {
				once = true
				close(mounted)
			}
		}
		io.Copy(logf, stderr)
	}()
	go func() { <-copied; m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() { m.stop(t) })
	select {
	case <-mounted:
	case <-m.done:
		t.Fatalf("rewind mount exited before mounting:\n%s", m.logText())
	case <-time.After(60 * time.Second):
		t.Fatalf("rewind mount did not mount in 60 s:\n%s", m.logText())
	}
	return m
}

// logText is what the mount printed so far.
func (m *mountProc) logText() string {
	b, _ := os.ReadFile(m.log)
	return string(b)
}

// stop unmounts with SIGTERM and waits for the process; if it hangs it is
// killed and the mount point detached.
func (m *mountProc) stop(t *testing.T) {
	select {
	case <-m.done:
	default:
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			t.Errorf("rewind mount did not exit 30 s after SIGTERM; killing it")
			m.cmd.Process.Kill()
			<-m.done
		}
	}
	if isMountPoint(m.dir) {
		t.Errorf("%s still mounted after rewind mount exited; detaching it", m.dir)
		syscall.Unmount(m.dir, syscall.MNT_DETACH)
	}
}
