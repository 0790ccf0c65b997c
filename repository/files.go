package repository

import (
	"fmt"
	"os"
	"sync"

	"github.com/rewind-cdp/rewind/repository/pack"
)

// fileCache keeps a bounded number of pack files open for reading.
type fileCache struct {
	mu    sync.Mutex
	max   int
	open  map[string]*cachedFile
	clock uint64
}

type cachedFile struct {
	f    *os.File
	r    *pack.Reader
	used uint64
}

func newFileCache(max int) *fileCache {
	return &fileCache{max: max, open: map[string]*cachedFile{}}
}

// reader returns a pack reader for path. Its size is left open: packs
// being written only grow, and a read past the real end of the file fails
// as damage.
func (c *fileCache) reader(path, name string) (*pack.Reader, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock++
	if cf, ok := c.open[path]; ok {
		cf.used = c.clock
		return cf.r, nil
	}
	f, err := os.Open(path)
	if err != nil {
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
	cf := &cachedFile{f: f, r: pack.NewReader(f, 1<<62, name), used: c.clock}
	c.open[path] = cf
	return cf.r, nil
}

func (c *fileCache) forget(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cf, ok := c.open[path]; ok {
		cf.f.Close()
		delete(c.open, path)
	}
}

func (c *fileCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, cf := range c.open {
		cf.f.Close()
		delete(c.open, p)
	}
}
