// Package s3test runs a real S3 server for tests: versitygw with a posix
// backend in a temporary directory, on a free port of 127.0.0.1, stopped
// by PID when the test ends. Outside CI a missing versitygw skips the
// test; with CI=true it fails it.
package s3test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository/packstore"
)

// Credentials of the test server.
const (
	AccessKey = "rewindtest"
	SecretKey = "rewindtestsecret"
)

// Server is a running versitygw.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Dir      string // the posix backend: bucket directories with one file per object
	cmd      *exec.Cmd
	done     chan struct{}
	mu       sync.Mutex
	log      bytes.Buffer
}

// Binary finds versitygw in $PATH, $GOBIN or ~/go/bin.
func Binary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw not found in $PATH, $GOBIN or ~/go/bin (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)")
}

// Start starts versitygw for the test, or skips the test (fails it in CI)
// when versitygw is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := t.TempDir()
	for try := 0; ; try++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), Dir: dir, done: make(chan struct{})}
		s.cmd = exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", fmt.Sprintf("127.0.0.1:%d", port), "posix", dir)
		s.cmd.Stdout, s.cmd.Stderr = s, s
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("start versitygw: %v", err)
		}
		go func() { s.cmd.Wait(); close(s.done) }()
		t.Cleanup(func() { s.stop() })
		if s.wait(port, 30*time.Second) {
			return s
		}
		s.stop()
		if try == 2 {
			t.Fatalf("versitygw did not listen on 127.0.0.1:%d:\n%s", port, s.Log())
		}
	}
}

// Write collects the server's output.
func (s *Server) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.Write(p)
}

// Log returns what the server printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

func (s *Server) wait(port int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return false
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// stop stops the server by its PID: SIGTERM, SIGKILL after 10 s.
func (s *Server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.done
	}
}

// Options returns store options for s3://bucket/prefix on this server.
func (s *Server) Options(bucket, prefix string) packstore.Options {
	return packstore.Options{
		Location:  packstore.Location{URL: "s3://" + bucket + "/" + strings.Trim(prefix, "/"), Endpoint: s.Endpoint},
		AccessKey: AccessKey, SecretKey: SecretKey,
	}
}

// ObjectPath is the file in which the posix backend keeps an object.
func (s *Server) ObjectPath(bucket, key string) string {
	return filepath.Join(s.Dir, bucket, filepath.FromSlash(key))
}

// Env is the environment that gives rewind the server's credentials.
func (s *Server) Env() []string {
	return []string{packstore.EnvAccessKey + "=" + AccessKey, packstore.EnvSecretKey + "=" + SecretKey}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
