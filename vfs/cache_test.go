package vfs_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/vfstest"
)

// TestCacheRecycling reads a disk image from many goroutines at random
// offsets and sequentially through a cache of a few blocks, so that
// evicted blocks' buffers are reused for new misses all the time: every
// byte must still be the image's (a buffer recycled while a reader copies
// from it would show another block's data).
func TestCacheRecycling(t *testing.T) {
	ctx := context.Background()
	work := t.TempDir()
	img := filepath.Join(work, "disk.img")
	r := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 48*repository.DefaultBlockSize+1234)
	for i := range data {
		if (i/4096)%3 == 0 {
			data[i] = byte(r.Uint32()) // incompressible runs
		} else {
			data[i] = byte(i / 4096) // compressible, distinct per 4 KiB
		}
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	repo, err := repository.Init(ctx, filepath.Join(work, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	p := vfstest.StoreImage(t, repo, "m", "v", img)
	tree, err := vfs.New(ctx, repo, vfs.Options{Location: time.UTC, CacheSize: 4 * repository.DefaultBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	ps, err := repo.Catalog.Points(ctx, "m", "v")
	if err != nil || len(ps) != 1 {
		t.Fatalf("points: %v %v", ps, err)
	}
	a, err := tree.Walk(ctx, fmt.Sprintf("/m/v/%s/%s", vfs.PointNames(ps)[0], vfs.DiskImg))
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != p.Size {
		t.Fatalf("disk.img is %d bytes, want %d", a.Size, p.Size)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := tree.Open(ctx, a.Ino, false)
			if err != nil {
				errs <- err
				return
			}
			defer h.Close()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			buf := make([]byte, 200_000)
			for i := range 150 {
				var off int64
				if g%2 == 0 {
					off = r.Int64N(int64(len(data)))
				} else {
					off = int64(i) * 100_000 % int64(len(data)) // sequential: read-ahead runs
				}
				n := r.IntN(len(buf)) + 1
				k, err := h.Read(ctx, buf[:n], off)
				if err != nil {
					errs <- fmt.Errorf("read %d at %d: %w", n, off, err)
					return
				}
				want := data[off:min(off+int64(n), int64(len(data)))]
				if k != len(want) || !bytes.Equal(buf[:k], want) {
					errs <- fmt.Errorf("read %d at %d: got %d bytes differing from the image", n, off, k)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := tree.Stats()
	t.Logf("cache: %+v", st)
	if st.Reused == 0 {
		t.Errorf("no miss reused an evicted block's buffer: %+v", st)
	}
	if st.Bytes > st.Max {
		t.Errorf("cache holds %d bytes, bound %d", st.Bytes, st.Max)
	}
}
