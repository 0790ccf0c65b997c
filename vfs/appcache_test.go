package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func readCached(t *testing.T, c *genCache, key string, gen func(context.Context, io.Writer) error) (string, error) {
	t.Helper()
	fl, size, err := c.open(context.Background(), key, gen)
	if err != nil {
		return "", err
	}
	defer fl.Close()
	b := make([]byte, size)
	if _, err := fl.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return string(b), nil
}

// The cache generates a file once for concurrent readers, drops the least
// recently used past its bound (open copies stay readable), generates a
// dropped file again, refuses a file that comes out different, and
// remembers failures.
func TestGenCache(t *testing.T) {
	dir := t.TempDir()
	c := newGenCache(dir, 10)
	var calls atomic.Int64
	gen := func(s string) func(context.Context, io.Writer) error {
		return func(ctx context.Context, w io.Writer) error {
			calls.Add(1)
			_, err := io.WriteString(w, s)
			return err
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := readCached(t, c, "a", gen("aaaaaa")); err != nil || s != "aaaaaa" {
				t.Errorf("a = %q %v", s, err)
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("8 concurrent opens generated %d times, want 1", n)
	}
	held, _, err := c.open(context.Background(), "a", gen("aaaaaa"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// b pushes a out (6 + 6 > 10)
	if s, err := readCached(t, c, "b", gen("bbbbbb")); err != nil || s != "bbbbbb" {
		t.Errorf("b = %q %v", s, err)
	}
	if fs, _ := filepath.Glob(filepath.Join(dir, "*", "gen-*")); len(fs) != 1 {
		t.Errorf("%d files cached, want 1 (bound 10 bytes)", len(fs))
	}
	buf := make([]byte, 6)
	if _, err := held.ReadAt(buf, 0); err != nil || string(buf) != "aaaaaa" {
		t.Errorf("an open copy of a dropped file reads %q %v", buf, err)
	}
	// the size is remembered without generating
	calls.Store(0)
	if n, err := c.size(context.Background(), "a", gen("aaaaaa")); err != nil || n != 6 || calls.Load() != 0 {
		t.Errorf("size of a = %d %v after %d generations", n, err, calls.Load())
	}
	// generated again when opened
	if s, err := readCached(t, c, "a", gen("aaaaaa")); err != nil || s != "aaaaaa" || calls.Load() != 1 {
		t.Errorf("a again = %q %v after %d generations", s, err, calls.Load())
	}
	// a file that comes out different is an I/O error
	readCached(t, c, "b2", gen("x"))
	readCached(t, c, "c", gen("cccccccccc")) // drops b2
	if _, err := readCached(t, c, "b2", gen("xy")); !errors.Is(err, errAppDamaged) || ErrnoOf(err) != EIO {
		t.Errorf("a changed file: %v, want EIO", err)
	}
	// failures are kept (points never change): not generated again
	boom := errors.New("boom")
	if _, err := readCached(t, c, "d", func(context.Context, io.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("failing generation: %v", err)
	}
	calls.Store(0)
	if _, err := readCached(t, c, "d", gen("dd")); !errors.Is(err, boom) || calls.Load() != 0 {
		t.Errorf("d after a failure: %v after %d generations, want the failure again and none", err, calls.Load())
	}
	if _, err := c.size(context.Background(), "d", gen("dd")); !errors.Is(err, boom) {
		t.Errorf("size of d after a failure: %v", err)
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Errorf("close left %v", es)
	}
	if _, err := readCached(t, c, "e", gen("e")); err == nil || !strings.Contains(fmt.Sprint(err), "closed") {
		t.Errorf("open after close: %v", err)
	}
}
