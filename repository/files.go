package repository

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/rewind-cdp/rewind/repository/pack"
)

// fileCache keeps a bounded number of pack files (or pack objects of a
// store) open for reading.
type fileCache struct {
	mu    sync.Mutex
	max   int
	open  map[string]*cachedFile
	clock uint64
}

type cachedFile struct {
	f    *os.File // nil for an object of a store
	r    *pack.Reader
	used uint64
}

func newFileCache(max int) *fileCache {
	return &fileCache{max: max, open: map[string]*cachedFile{}}
}

// reader returns a pack reader for path. Its size is left open: packs
// being written only grow, and a read past the real end of the file fails
// as damage. When the file is missing and remote is set, the reader reads
// what remote opens (a sealed pack in a store, whose size is known).
func (c *fileCache) reader(path, name string, remote func() (io.ReaderAt, int64, error)) (*pack.Reader, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock++
	if cf, ok := c.open[path]; ok {
		cf.used = c.clock
		return cf.r, nil
	}
	var cf *cachedFile
	f, err := os.Open(path)
	switch {
	case err == nil:
		cf = &cachedFile{f: f, r: pack.NewReader(f, 1<<62, name)}
	case errors.Is(err, fs.ErrNotExist) && remote != nil:
		// A store's open is a network round trip: other packs' readers
		// go on meanwhile.
		c.mu.Unlock()
		ra, size, err := remote()
		c.mu.Lock()
		if err != nil {
			return nil, err
		}
		if cf, ok := c.open[path]; ok { // opened meanwhile
			cf.used = c.clock
			return cf.r, nil
		}
		cf = &cachedFile{r: pack.NewReader(ra, size, name)}
	default:
		return nil, fmt.Errorf("open pack %s: %w", name, err)
	}
	if len(c.open) >= c.max {
		var oldest string
		var least uint64 = ^uint64(0)
		for p, cf := range c.open {
			if cf.used < least {
				oldest, least = p, cf.used
			}
		}
		// Readers handed out earlier may still use the evicted file; it is
		// closed by the finalizer of *os.File once unreferenced.
		delete(c.open, oldest)
	}
	cf.used = c.clock
	c.open[path] = cf
	return cf.r, nil
}

func (c *fileCache) forget(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cf, ok := c.open[path]; ok {
		if cf.f != nil {
			cf.f.Close()
		}
		delete(c.open, path)
	}
}

// drop forgets path without closing it: readers handed out earlier may
// still use it (the finalizer of *os.File closes it).
func (c *fileCache) drop(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.open, path)
}

func (c *fileCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, cf := range c.open {
		if cf.f != nil {
			cf.f.Close()
		}
		delete(c.open, p)
	}
}
