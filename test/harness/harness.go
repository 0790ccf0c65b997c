// Package harness runs the real rewind binary for end-to-end tests: it
// builds the binary once, starts servers as child processes on loopback
// (stopping them, by PID, when the test ends), runs commands and makes
// deterministic volume images.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/test/testenv"
	"github.com/rewind-cdp/rewind/tools/imagegen"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/rewind once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rewind-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "rewind")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/rewind")
		cmd.Dir = testenv.ModuleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Result is what a command printed and how it exited.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs rewind with args and the extra environment, and returns its
// output and exit code (a failure to start fails the test).
func Run(t testing.TB, env []string, args ...string) Result {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := Result{Stdout: so.String(), Stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run rewind %v: %v", args, err)
	}
	return r
}

// MustRun is Run that fails the test unless the command exits 0.
func MustRun(t testing.TB, env []string, args ...string) Result {
	t.Helper()
	r := Run(t, env, args...)
	if r.Code != 0 {
		t.Fatalf("rewind %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// Server is a rewind server child process.
type Server struct {
	Repo string
	Addr string
	URL  string
	CA   string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

var listenRe = regexp.MustCompile(`rewind server listening"? addr=(\S+)`)

// StartServer starts `rewind server` on repo, listening on addr
// ("127.0.0.1:0" for any free port), with any extra flags, and waits until
// it accepts connections. The server is stopped when the test ends.
func StartServer(t testing.TB, repo, addr string, extra ...string) *Server {
	t.Helper()
	cmd := exec.Command(Binary(t), append([]string{"server", "--repo", repo, "--listen", addr}, extra...)...)
	s := &Server{Repo: repo, CA: filepath.Join(repo, "server.crt"), cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	go func() {
		cmd.Wait()
		pw.Close()
		close(s.done)
	}()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			s.log.Write([]byte(line + "\n"))
			if m := listenRe.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { s.Stop(t) })
	select {
	case a := <-found:
		s.Addr = a
		s.URL = "https://" + a
	case <-s.done:
		t.Fatalf("server exited before listening:\n%s", s.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not start listening in 30 s:\n%s", s.log.String())
	}
	return s
}

// Log returns what the server printed so far.
func (s *Server) Log() string { return s.log.String() }

// Kill9 kills the server with SIGKILL and waits for it to exit.
func (s *Server) Kill9(t testing.TB) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// Stop stops the server with SIGTERM (SIGKILL after 20 s) and waits.
func (s *Server) Stop(t testing.TB) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Errorf("server did not stop on SIGTERM within 20 s; killing it")
		s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	}
}

// AddMachine registers a machine and returns its token.
func AddMachine(t testing.TB, repo, name string) string {
	t.Helper()
	r := MustRun(t, nil, "machine", "add", name, "--repo", repo)
	return strings.TrimSpace(r.Stdout)
}

// Backup backs image up as machine/volume and returns the JSON summary.
func (s *Server) Backup(t testing.TB, token, machine, volume, image string, extra ...string) Result {
	t.Helper()
	a := append([]string{"backup", "--server", s.URL, "--ca", s.CA, "--token", token, "--machine", machine, "--volume", volume, "--json"}, extra...)
	return Run(t, nil, append(a, image)...)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Image writes a deterministic volume image of size bytes (see imagegen).
func Image(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	if err := imagegen.Create(path, size, seed); err != nil {
		t.Fatal(err)
	}
}

// Mutate overwrites about fraction of the image's 64 KiB blocks with new
// pseudo-random data, chosen by seed.
func Mutate(t testing.TB, path string, fraction float64, seed uint64) {
	t.Helper()
	if _, err := imagegen.Mutate(path, 64<<10, fraction, seed); err != nil {
		t.Fatal(err)
	}
}

// SHA256 returns the hex sha256 of a file.
func SHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// DirSize sums the sizes of the files under dir.
func DirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// TreeDigest hashes the names, sizes and contents of every file under dir,
// to prove a command changed nothing. SQLite's shared-memory index
// (*-shm), which every reader of a WAL database updates, is left out.
func TreeDigest(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || strings.HasSuffix(p, "-shm") {
			return nil
		}
		fmt.Fprintf(h, "%s %d\n", p, info.Size())
		if b, err := os.ReadFile(p); err == nil {
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

// WithTimeout returns a context that ends with the test or after d.
func WithTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
