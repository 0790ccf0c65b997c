package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository"
)

func addPeer(t testing.TB, repo *repository.Repo, name string) string {
	t.Helper()
	tok := NewToken()
	if _, err := repo.Catalog.AddPeer(context.Background(), name, HashToken(tok)); err != nil {
		t.Fatal(err)
	}
	return tok
}

// sourceWithPoints backs up len(images) points of machine/root into a new
// source repository and returns it.
func sourceWithPoints(t *testing.T, machine string, images [][]byte) *repository.Repo {
	t.Helper()
	_, repo, url, cfg := testServer(t, true)
	c, _ := NewClient(url, addMachine(t, repo, machine), cfg)
	for _, img := range images {
		if _, err := c.Backup(context.Background(), BackupOptions{Machine: machine, Volume: "root", Source: bytes.NewReader(img), Size: int64(len(img)), BlockSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

func testImages(n, size int) [][]byte {
	var out [][]byte
	img := make([]byte, size)
	for i := range img {
		img[i] = byte(i*7/4093 + i%13)
	}
	for k := range n {
		// Each point changes a few blocks, one to zeros.
		for j := range 3 {
			off := ((k*5 + j*11) % (size / 4096)) * 4096
			for i := off; i < off+4096; i++ {
				img[i] = byte(k*31 + j + i)
			}
		}
		zero := ((k * 3) % (size / 4096)) * 4096
		clear(img[zero : zero+4096])
		out = append(out, bytes.Clone(img))
	}
	return out
}

func pointSums(t *testing.T, repo *repository.Repo, machine string) map[int64][32]byte {
	t.Helper()
	ctx := context.Background()
	ps, err := repo.Catalog.Points(ctx, machine, "root")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64][32]byte{}
	for _, p := range ps {
		buf := make([]byte, p.Size)
		if _, err := repo.OpenPoint(p).ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		out[p.Time.UnixNano()] = sha256.Sum256(buf)
	}
	return out
}

func TestReplicateCopiesEveryPointOnce(t *testing.T) {
	imgs := testImages(3, 64*4096+100)
	src := sourceWithPoints(t, "web1", imgs)
	_, dst, url, cfg := testServer(t, true)
	c, _ := NewClient(url, addPeer(t, dst, "siteA"), cfg)
	ctx := context.Background()
	res, err := c.Replicate(ctx, src, ReplicateOptions{Target: url, Once: true})
	if err != nil {
		t.Fatal(err)
	}
	want := pointSums(t, src, "web1")
	if res.Points != 3 || len(want) != 3 {
		t.Fatalf("replicated %d points of %d", res.Points, len(want))
	}
	got := pointSums(t, dst, "web1")
	if len(got) != len(want) {
		t.Fatalf("replica holds %d points, want %d", len(got), len(want))
	}
	for tm, sum := range want {
		if got[tm] != sum {
			t.Errorf("point at %d differs on the replica", tm)
		}
	}
	// Labels and kinds travel.
	sp, _ := src.Catalog.Points(ctx, "web1", "root")
	dp, _ := dst.Catalog.Points(ctx, "web1", "root")
	for i := range sp {
		if sp[i].Kind != dp[i].Kind || sp[i].Label != dp[i].Label || !sp[i].Time.Equal(dp[i].Time) {
			t.Errorf("point %d: source %v/%q/%s, replica %v/%q/%s", i, sp[i].Kind, sp[i].Label, sp[i].Time, dp[i].Kind, dp[i].Label, dp[i].Time)
		}
	}
	// Again: nothing sent, nothing duplicated.
	res, err = c.Replicate(ctx, src, ReplicateOptions{Target: url, Once: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Points != 0 || res.BlocksSent != 0 {
		t.Fatalf("second run sent %d points, %d blocks", res.Points, res.BlocksSent)
	}
	if got := pointSums(t, dst, "web1"); len(got) != 3 {
		t.Fatalf("replica holds %d points after a second run", len(got))
	}
	st, err := src.Catalog.Replication(ctx)
	if err != nil || len(st) != 1 || st[0].PointID != sp[2].ID {
		t.Fatalf("replication state %+v, %v: want point %d acknowledged", st, err, sp[2].ID)
	}
	if n, _ := src.Catalog.UnsentBytes(ctx, st[0].VolumeID, st[0].PointID); n != 0 {
		t.Fatalf("%d bytes unsent after replicating everything", n)
	}
}

// A replication token replicates, nothing else; a machine token cannot
// replicate; names never mix between local machines and peers.
func TestReplicationTokens(t *testing.T) {
	ctx := context.Background()
	src := sourceWithPoints(t, "web1", testImages(1, 8*4096))
	_, dst, url, cfg := testServer(t, true)
	local := addMachine(t, dst, "local1")
	peerA := addPeer(t, dst, "siteA")

	// A machine token cannot replicate.
	mc, _ := NewClient(url, local, cfg)
	_, err := mc.Replicate(ctx, src, ReplicateOptions{Target: url, Once: true})
	var se *ServerError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden {
		t.Fatalf("replicating with a machine token: %v, want 403", err)
	}
	// A replication token cannot back up, not even a machine it replicates.
	pc, _ := NewClient(url, peerA, cfg)
	img := make([]byte, 8192)
	for _, m := range []string{"local1", "web1", "new"} {
		_, err = pc.Backup(ctx, BackupOptions{Machine: m, Volume: "root", Source: bytes.NewReader(img), Size: 8192, RetryFor: time.Millisecond})
		if !errors.As(err, &se) || se.Status != http.StatusForbidden {
			t.Fatalf("backup of %s with a replication token: %v, want 403", m, err)
		}
	}
	// An unknown token is refused.
	bad, _ := NewClient(url, NewToken(), cfg)
	if _, err = bad.Replicate(ctx, src, ReplicateOptions{Target: url, Once: true}); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Fatalf("unknown token: %v, want 401", err)
	}
	// Peer A replicates web1.
	if _, err := pc.Replicate(ctx, src, ReplicateOptions{Target: url, Once: true}); err != nil {
		t.Fatal(err)
	}
	// Peer B may not write peer A's web1.
	pb, _ := NewClient(url, addPeer(t, dst, "siteB"), cfg)
	_, err = pb.Replicate(ctx, src, ReplicateOptions{Target: url + "/b", Once: true})
	if !errors.As(err, &se) || se.Status != http.StatusConflict || !strings.Contains(err.Error(), "siteA") {
		t.Fatalf("peer B writing peer A's machine: %v, want 409 naming siteA", err)
	}
	// A source machine named like a local machine of the target is refused.
	src2 := sourceWithPoints(t, "local1", testImages(1, 8*4096))
	_, err = pc.Replicate(ctx, src2, ReplicateOptions{Target: url, Once: true})
	if !errors.As(err, &se) || se.Status != http.StatusConflict || !strings.Contains(err.Error(), "locally") {
		t.Fatalf("replicating over a local machine: %v, want 409", err)
	}
	if ps, _ := dst.Catalog.Points(ctx, "local1", ""); len(ps) != 0 {
		t.Fatalf("the local machine got %d points", len(ps))
	}
	// A replication token cannot use a machine's agent session.
	lc, _ := NewClient(url, local, cfg)
	var br beginResponse
	if err := lc.postJSON(ctx, "/v1/sessions", beginRequest{Machine: "local1", Volume: "v", Size: 4096, BlockSize: 4096}, &br); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.commit(ctx, br.Session); !errors.As(err, &se) || se.Status != http.StatusForbidden {
		t.Fatalf("peer committing a machine's session: %v, want 403", err)
	}
}

// flaky drops every n-th blocks request after the server handled it (the
// answer is lost, as when the connection breaks), and counts them.
type flaky struct {
	h       http.Handler
	n       int64
	calls   atomic.Int64
	dropped atomic.Int64
	bytes   atomic.Int64 // blocks request bodies received
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/blocks") {
		f.bytes.Add(r.ContentLength)
	}
	if !strings.HasSuffix(r.URL.Path, "/blocks") || f.calls.Add(1)%f.n != 0 {
		f.h.ServeHTTP(w, r)
		return
	}
	f.h.ServeHTTP(httptest.NewRecorder(), r)
	f.dropped.Add(1)
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "dropped", http.StatusServiceUnavailable)
		return
	}
	conn, _, _ := hj.Hijack()
	conn.Close()
}

// Interrupted replication resumes: every point arrives exactly, and
// blocks that arrived are not sent again.
func TestReplicateResumesWithoutResending(t *testing.T) {
	ctx := context.Background()
	imgs := testImages(4, 256*4096)
	src := sourceWithPoints(t, "web1", imgs)
	dst, err := repository.Init(ctx, t.TempDir()+"/dst")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{h: srv.Handler(), n: 2}
	hs := httptest.NewUnstartedServer(f) // HTTP/1.1: a dropped answer closes one connection
	hs.StartTLS()
	t.Cleanup(func() { hs.Close(); srv.Close(ctx); dst.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(hs.Certificate())
	c, _ := NewClient(hs.URL, addPeer(t, dst, "siteA"), &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	res, err := c.Replicate(ctx, src, ReplicateOptions{Target: hs.URL, Once: true, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if f.dropped.Load() == 0 || res.Retries == 0 {
		t.Fatalf("no answer was dropped (%d) or retried (%d): the test tests nothing", f.dropped.Load(), res.Retries)
	}
	want, got := pointSums(t, src, "web1"), pointSums(t, dst, "web1")
	if len(got) != len(want) {
		t.Fatalf("replica holds %d points, want %d", len(got), len(want))
	}
	for tm, sum := range want {
		if got[tm] != sum {
			t.Errorf("point at %d differs on the replica", tm)
		}
	}
	// What a replication that never sends a block twice sends: every
	// distinct stored block of the source once.
	vol, _ := src.Catalog.Volume(ctx, "web1", "root")
	ps, _ := src.Catalog.Points(ctx, "web1", "root")
	seen := map[[32]byte]bool{}
	var unique, blocks int64
	for _, p := range ps {
		cbs, err := src.Catalog.ChangedBlocks(ctx, vol.ID, 0, p.ID, 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, cb := range cbs {
			if cb.Chunk.ID != 0 && !seen[cb.Chunk.Hash] {
				seen[cb.Chunk.Hash] = true
				unique += int64(cb.Chunk.CLen)
				blocks++
			}
		}
	}
	t.Logf("received %d bytes of blocks requests for %d unique stored bytes in %d blocks; %d answers dropped, %d retries",
		f.bytes.Load(), unique, blocks, f.dropped.Load(), res.Retries)
	if want := unique + blocks*blockHeaderSize; f.bytes.Load() != want || res.BytesSent > unique {
		t.Fatalf("the replica received %d bytes of blocks (%d counted sent), want %d: blocks were sent again", f.bytes.Load(), res.BytesSent, want)
	}
}

// A backlog larger than one pass lists is replicated whole by --once, in
// several passes.
func TestReplicateBacklogInPasses(t *testing.T) {
	defer func(n int) { passPoints = n }(passPoints)
	passPoints = 2
	src := sourceWithPoints(t, "web1", testImages(5, 16*4096))
	_, dst, url, cfg := testServer(t, true)
	c, _ := NewClient(url, addPeer(t, dst, "siteA"), cfg)
	res, err := c.Replicate(context.Background(), src, ReplicateOptions{Target: url, Once: true})
	if err != nil {
		t.Fatal(err)
	}
	want, got := pointSums(t, src, "web1"), pointSums(t, dst, "web1")
	if res.Points != 5 || len(got) != 5 {
		t.Fatalf("replicated %d points, replica holds %d, want 5", res.Points, len(got))
	}
	for tm, sum := range want {
		if got[tm] != sum {
			t.Errorf("point at %d differs on the replica", tm)
		}
	}
}

// A source that hashes with SHA-256 (made before BLAKE3 became the default)
// replicates into a BLAKE3 repository: its blocks keep their hash, verified
// under it, and every point reads back exactly on the replica.
func TestReplicateAcrossHashAlgorithms(t *testing.T) {
	ctx := context.Background()
	src := hashRepo(t, "sha256")
	_, surl, scfg := testServerOn(t, true, src)
	sc, _ := NewClient(surl, addMachine(t, src, "web1"), scfg)
	for _, img := range testImages(2, 32*4096) {
		if _, err := sc.Backup(ctx, BackupOptions{Machine: "web1", Volume: "root", Source: bytes.NewReader(img), Size: int64(len(img)), BlockSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	_, dst, url, cfg := testServer(t, true)
	if dst.Hash() == src.Hash() {
		t.Fatalf("both repositories hash with id %d", dst.Hash())
	}
	c, _ := NewClient(url, addPeer(t, dst, "siteA"), cfg)
	if _, err := c.Replicate(ctx, src, ReplicateOptions{Target: url, Once: true}); err != nil {
		t.Fatal(err)
	}
	want, got := pointSums(t, src, "web1"), pointSums(t, dst, "web1")
	if len(got) != 2 || len(want) != 2 {
		t.Fatalf("replica holds %d points of %d", len(got), len(want))
	}
	for tm, sum := range want {
		if got[tm] != sum {
			t.Errorf("point at %d differs on the replica", tm)
		}
	}
}
