package packstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, c := range []struct{ in, bucket, prefix string }{
		{"s3://b/p", "b", "p"}, {"s3://bucket/a/b/", "bucket", "a/b"}, {"s3://bucket", "bucket", ""},
	} {
		b, p, err := ParseURL(c.in)
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", c.in, b, p, err, c.bucket, c.prefix)
		}
	}
	for _, bad := range []string{"", "http://b/p", "s3:///p", "/tmp/x", "s3//b"} {
		if _, _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		}
	}
}

func TestLocationRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := ReadLocation(dir); ok || err != nil {
		t.Fatalf("a directory without %s: ok %v err %v", LocationFile, ok, err)
	}
	want := Location{URL: "s3://b/p", Endpoint: "http://127.0.0.1:1", Region: "r", Insecure: true}
	if err := WriteLocation(dir, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ReadLocation(dir)
	if !ok || err != nil || got != want {
		t.Fatalf("read back %+v %v %v, want %+v", got, ok, err, want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, LocationFile))
	if bytes.Contains(b, []byte("secret")) || bytes.Contains(b, []byte("key")) {
		t.Errorf("%s holds credentials: %s", LocationFile, b)
	}
	os.WriteFile(filepath.Join(dir, LocationFile), []byte(`{"url":"ftp://x"}`), 0o600)
	if _, _, err := ReadLocation(dir); err == nil {
		t.Error("a location with a bad URL was accepted")
	}
}

func TestCacheBoundsAndEvictsLeastRecent(t *testing.T) {
	c := NewCache(3 * SegmentSize)
	var loads atomic.Int64
	load := func(seg int64) func() ([]byte, error) {
		return func() ([]byte, error) {
			loads.Add(1)
			return bytes.Repeat([]byte{byte(seg)}, SegmentSize), nil
		}
	}
	for seg := range int64(3) {
		if b, err := c.get("p", seg, load(seg)); err != nil || b[0] != byte(seg) {
			t.Fatalf("segment %d: %v", seg, err)
		}
	}
	c.get("p", 0, load(0)) // 0 becomes the most recent; 1 the least
	c.get("p", 3, load(3)) // evicts 1
	if c.Used() != 3*SegmentSize {
		t.Errorf("cache holds %d bytes, bound %d", c.Used(), 3*SegmentSize)
	}
	before := loads.Load()
	c.get("p", 0, load(0))
	c.get("p", 2, load(2))
	if loads.Load() != before {
		t.Error("recently used segments were evicted")
	}
	c.get("p", 1, load(1))
	if loads.Load() != before+1 {
		t.Error("the least recently used segment was kept")
	}
	c.Forget("p")
	if c.Used() != 0 {
		t.Errorf("Forget left %d bytes", c.Used())
	}
}

func TestCacheLoadsOnceForConcurrentReaders(t *testing.T) {
	c := NewCache(8 * SegmentSize)
	var loads atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.get("p", 5, func() ([]byte, error) {
				loads.Add(1)
				<-release
				return []byte("x"), nil
			})
		}()
	}
	close(release)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Errorf("8 concurrent readers loaded the segment %d times", n)
	}
}

func TestCacheDoesNotKeepErrors(t *testing.T) {
	c := NewCache(SegmentSize)
	boom := errors.New("boom")
	if _, err := c.get("p", 0, func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	if b, err := c.get("p", 0, func() ([]byte, error) { return []byte("ok"), nil }); err != nil || string(b) != "ok" {
		t.Fatalf("a failed load was cached: %q %v", b, err)
	}
}

func TestDirStore(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d := Dir{Root: root}
	name := "packs/01/0000000000000001.pack"
	if _, _, err := d.Open(ctx, name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open of a missing pack: %v", err)
	}
	os.MkdirAll(filepath.Join(root, "packs", "01"), 0o700)
	os.WriteFile(filepath.Join(root, filepath.FromSlash(name)), []byte("pack"), 0o600)
	ra, size, err := d.Open(ctx, name)
	if err != nil || size != 4 {
		t.Fatalf("open: %v size %d", err, size)
	}
	buf := make([]byte, 4)
	if _, err := ra.ReadAt(buf, 0); err != nil || string(buf) != "pack" {
		t.Fatalf("read %q %v", buf, err)
	}
	var listed []string
	d.List(ctx, func(n string, size int64) { listed = append(listed, fmt.Sprint(n, size)) })
	if len(listed) != 1 || listed[0] != name+"4" {
		t.Errorf("listed %v", listed)
	}
	if err := d.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, name); err != nil {
		t.Errorf("deleting a missing pack: %v", err)
	}
}
