package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/repository/pack"
	"github.com/rewind-cdp/rewind/tools/imagegen"
)

// testServer runs a Server over TLS on loopback; h2 selects HTTP/2.
func testServer(t testing.TB, h2 bool) (*Server, *repository.Repo, string, *tls.Config) {
	t.Helper()
	ctx := context.Background()
	repo, err := repository.Init(ctx, filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	srv, url, cfg := testServerOn(t, h2, repo)
	return srv, repo, url, cfg
}

// testServerOn serves an open repository (closed when the test ends).
func testServerOn(t testing.TB, h2 bool, repo *repository.Repo) (*Server, string, *tls.Config) {
	t.Helper()
	ctx := context.Background()
	srv, err := NewServer(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.EnableHTTP2 = h2
	hs.Config.HTTP2 = http2Config()
	hs.StartTLS()
	t.Cleanup(func() {
		hs.Close()
		srv.Close(ctx)
		repo.Close()
	})
	pool := x509.NewCertPool()
	pool.AddCert(hs.Certificate())
	cfg := &tls.Config{RootCAs: pool}
	if !h2 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	return srv, hs.URL, cfg
}

func addMachine(t testing.TB, repo *repository.Repo, name string) string {
	t.Helper()
	tok := NewToken()
	if _, err := repo.Catalog.AddMachine(context.Background(), name, HashToken(tok)); err != nil {
		t.Fatal(err)
	}
	return tok
}

func benchImage(b *testing.B, size int64) []byte {
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if err := imagegen.Write(buf, size, 42); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkFirstBackup measures a first (full) backup of a 256 MiB mixed
// image through the real protocol on loopback, over HTTP/2 and HTTP/1.1.
func BenchmarkFirstBackup(b *testing.B) {
	img := benchImage(b, 256<<20)
	for _, proto := range []struct {
		name string
		h2   bool
	}{{"h2", true}, {"http1", false}} {
		b.Run(proto.name, func(b *testing.B) {
			b.SetBytes(int64(len(img)))
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				_, repo, url, cfg := testServer(b, proto.h2)
				tok := addMachine(b, repo, "m")
				c, err := NewClient(url, tok, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if !proto.h2 {
					tr := c.hc.Transport.(*http.Transport)
					tr.ForceAttemptHTTP2 = false
					tr.MaxIdleConnsPerHost = 16 // one connection per batch in flight
				}
				b.StartTimer()
				if _, err := c.Backup(context.Background(), BackupOptions{Machine: "m", Volume: "v", Source: bytes.NewReader(img), Size: int64(len(img))}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFirstBackupHash is BenchmarkFirstBackup (HTTP/2) with the
// repository hashing blocks under SHA-256 and under BLAKE3, in the same
// run; it also reports the CPU time (user+system, client and server
// together: they share this process) per GB of image.
func BenchmarkFirstBackupHash(b *testing.B) {
	img := benchImage(b, 256<<20)
	for _, name := range []string{"sha256", "blake3"} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(img)))
			var cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				repo := hashRepo(b, name)
				_, url, cfg := testServerOn(b, true, repo)
				tok := addMachine(b, repo, "m")
				c, err := NewClient(url, tok, cfg)
				if err != nil {
					b.Fatal(err)
				}
				before := cpuTime()
				b.StartTimer()
				if _, err := c.Backup(context.Background(), BackupOptions{Machine: "m", Volume: "v", Source: bytes.NewReader(img), Size: int64(len(img))}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				cpu += cpuTime() - before
				b.StartTimer()
			}
			b.ReportMetric(cpu.Seconds()/float64(b.N)/(float64(len(img))/1e9), "cpu-s/GB")
		})
	}
}

// hashRepo makes a repository whose blocks are hashed with the named
// algorithm.
func hashRepo(tb testing.TB, name string) *repository.Repo {
	tb.Helper()
	ctx := context.Background()
	dir := filepath.Join(tb.TempDir(), "repo")
	repo, err := repository.Init(ctx, dir)
	if err != nil {
		tb.Fatal(err)
	}
	if name == repository.DefaultHash {
		return repo
	}
	repo.Close()
	p := filepath.Join(dir, "config.json")
	cfg, _ := os.ReadFile(p)
	cfg = bytes.Replace(cfg, []byte(`"hash": "`+repository.DefaultHash+`"`), []byte(`"hash": "`+name+`"`), 1)
	if err := os.WriteFile(p, cfg, 0o600); err != nil {
		tb.Fatal(err)
	}
	if repo, err = repository.Open(ctx, dir); err != nil {
		tb.Fatal(err)
	}
	if got := pack.HashName(repo.Hash()); got != name {
		tb.Fatalf("repository hashes with %s, want %s", got, name)
	}
	return repo
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
