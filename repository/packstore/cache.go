package packstore

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// SegmentSize is the unit of ranged reads and of the cache: a pack object
// is read in aligned segments of this many bytes (the last one shorter).
const SegmentSize = 1 << 20

// Cache keeps recently read pack segments in memory, up to a bound in
// bytes, evicting the least recently used. Concurrent reads of a segment
// that is not cached fetch it once. Safe for concurrent use.
type Cache struct {
	max int64

	mu       sync.Mutex
	used     int64
	lru      *list.List // of *segment, most recent first
	segs     map[segKey]*list.Element
	inflight map[segKey]*fetch

	hits, misses atomic.Int64
}

type segKey struct {
	name string
	seg  int64
}

type segment struct {
	key  segKey
	data []byte
}

type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

// NewCache returns a cache of at most max bytes (0: nothing is kept).
func NewCache(max int64) *Cache {
	return &Cache{max: max, lru: list.New(), segs: map[segKey]*list.Element{}, inflight: map[segKey]*fetch{}}
}

// Stats returns the cache's hits and misses so far.
func (c *Cache) Stats() (hits, misses int64) { return c.hits.Load(), c.misses.Load() }

// Used returns the bytes held.
func (c *Cache) Used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// get returns segment seg of name, calling load once when it is neither
// cached nor being loaded. The returned slice must not be modified.
func (c *Cache) get(name string, seg int64, load func() ([]byte, error)) ([]byte, error) {
	k := segKey{name, seg}
	c.mu.Lock()
	if e, ok := c.segs[k]; ok {
		c.lru.MoveToFront(e)
		c.mu.Unlock()
		c.hits.Add(1)
		return e.Value.(*segment).data, nil
	}
	if f, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		<-f.done
		c.hits.Add(1)
		return f.data, f.err
	}
	f := &fetch{done: make(chan struct{})}
	c.inflight[k] = f
	c.mu.Unlock()
	c.misses.Add(1)

	f.data, f.err = load()

	c.mu.Lock()
	delete(c.inflight, k)
	if f.err == nil && int64(len(f.data)) <= c.max {
		if _, ok := c.segs[k]; !ok {
			c.segs[k] = c.lru.PushFront(&segment{k, f.data})
			c.used += int64(len(f.data))
			for c.used > c.max {
				e := c.lru.Back()
				s := e.Value.(*segment)
				c.lru.Remove(e)
				delete(c.segs, s.key)
				c.used -= int64(len(s.data))
			}
		}
	}
	c.mu.Unlock()
	close(f.done)
	return f.data, f.err
}

// prefetch starts loading segment seg of name in the background unless it
// is cached or being loaded.
func (c *Cache) prefetch(name string, seg int64, load func() ([]byte, error)) {
	k := segKey{name, seg}
	c.mu.Lock()
	_, cached := c.segs[k]
	_, loading := c.inflight[k]
	c.mu.Unlock()
	if cached || loading || c.max == 0 {
		return
	}
	go c.get(name, seg, load)
}

// Forget drops every cached segment of name.
func (c *Cache) Forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; {
		next := e.Next()
		if s := e.Value.(*segment); s.key.name == name {
			c.lru.Remove(e)
			delete(c.segs, s.key)
			c.used -= int64(len(s.data))
		}
		e = next
	}
}
