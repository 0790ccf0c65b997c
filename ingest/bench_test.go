package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/repository"
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
	return srv, repo, hs.URL, cfg
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
