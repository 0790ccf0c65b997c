package vfs

import (
	"bufio"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// DefaultAppCacheSize bounds the disk space of generated application files
// (sql/, ese/ ...) kept for reading.
const DefaultAppCacheSize = 1 << 30

// genCache keeps generated files (table exports) in temporary files on
// disk, least recently used dropped first once their total passes max;
// memory holds only their names and sizes. Sizes are remembered for good
// (a few bytes each), so a dropped file is generated again only when it is
// opened, and must come out the same size. Failures are remembered too:
// points never change, and a damaged table is not read again on every stat.
type genCache struct {
	dir     string // "" until the first file; then owned when own
	parent  string
	own     bool
	max     int64
	mu      sync.Mutex
	used    int64
	items   map[string]*list.Element // of *genItem
	lru     list.List
	sizes   map[string]int64
	failed  map[string]error
	running map[string]*genCall
	closed  bool
}

type genItem struct {
	key  string
	path string
	size int64
}

type genCall struct {
	done chan struct{}
	err  error
}

func newGenCache(parent string, max int64) *genCache {
	if max <= 0 {
		max = DefaultAppCacheSize
	}
	return &genCache{parent: parent, max: max, items: map[string]*list.Element{}, sizes: map[string]int64{}, failed: map[string]error{}, running: map[string]*genCall{}}
}

// size returns the size of key's content, generating it when unknown.
func (c *genCache) size(ctx context.Context, key string, gen func(context.Context, io.Writer) error) (int64, error) {
	c.mu.Lock()
	s, ok := c.sizes[key]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	fl, s, err := c.open(ctx, key, gen)
	if err != nil {
		return 0, err
	}
	fl.Close()
	return s, nil
}

// open returns an open copy of key's content (the caller closes it),
// generating it when it is not cached. A copy dropped from the cache stays
// readable through the files already open on it.
func (c *genCache) open(ctx context.Context, key string, gen func(context.Context, io.Writer) error) (*os.File, int64, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, 0, errors.New("application file cache: closed")
		}
		if err, ok := c.failed[key]; ok {
			c.mu.Unlock()
			return nil, 0, err
		}
		if el, ok := c.items[key]; ok {
			c.lru.MoveToFront(el)
			it := el.Value.(*genItem)
			fl, err := os.Open(it.path)
			c.mu.Unlock()
			if err != nil {
				return nil, 0, fmt.Errorf("application file cache: %w", err)
			}
			return fl, it.size, nil
		}
		if call, ok := c.running[key]; ok {
			c.mu.Unlock()
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
			if call.err != nil {
				return nil, 0, call.err
			}
			continue // cached now (or dropped already: generate again)
		}
		call := &genCall{done: make(chan struct{})}
		c.running[key] = call
		c.mu.Unlock()
		fl, size, err := c.generate(context.WithoutCancel(ctx), key, gen)
		c.mu.Lock()
		delete(c.running, key)
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			c.failed[key] = err
		}
		call.err = err
		close(call.done)
		c.mu.Unlock()
		return fl, size, err
	}
}

func (c *genCache) generate(ctx context.Context, key string, gen func(context.Context, io.Writer) error) (*os.File, int64, error) {
	dir, err := c.tempDir()
	if err != nil {
		return nil, 0, err
	}
	fl, err := os.CreateTemp(dir, "gen-*")
	if err != nil {
		return nil, 0, fmt.Errorf("application file cache: %w", err)
	}
	fail := func(err error) (*os.File, int64, error) {
		fl.Close()
		os.Remove(fl.Name())
		return nil, 0, err
	}
	bw := bufio.NewWriterSize(fl, 256<<10)
	if err := gen(ctx, bw); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(fmt.Errorf("application file cache: %w", err))
	}
	size, err := fl.Seek(0, io.SeekCurrent)
	if err != nil {
		return fail(fmt.Errorf("application file cache: %w", err))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.sizes[key]; ok && old != size {
		fl.Close()
		os.Remove(fl.Name())
		return nil, 0, fmt.Errorf("generated again, the content is %d bytes instead of %d: %w", size, old, errAppDamaged)
	}
	if c.closed {
		return fail(errors.New("application file cache: closed"))
	}
	c.sizes[key] = size
	c.items[key] = c.lru.PushFront(&genItem{key: key, path: fl.Name(), size: size})
	c.used += size
	for c.used > c.max && c.lru.Len() > 1 {
		el := c.lru.Back()
		it := el.Value.(*genItem)
		c.lru.Remove(el)
		delete(c.items, it.key)
		c.used -= it.size
		os.Remove(it.path) // open copies stay readable (on Windows removal waits for them)
	}
	return fl, size, nil
}

func (c *genCache) tempDir() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir != "" {
		return c.dir, nil
	}
	if c.parent != "" {
		if err := os.MkdirAll(c.parent, 0o700); err != nil {
			return "", fmt.Errorf("application file cache: %w", err)
		}
	}
	d, err := os.MkdirTemp(c.parent, "rewind-apps-")
	if err != nil {
		return "", fmt.Errorf("application file cache: %w", err)
	}
	c.dir, c.own = d, true
	return d, nil
}

// close deletes the cached files.
func (c *genCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.items, c.used = map[string]*list.Element{}, 0
	c.lru.Init()
	if c.own {
		c.own = false
		return os.RemoveAll(c.dir)
	}
	return nil
}
