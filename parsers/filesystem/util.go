package filesystem

import (
	"os"
	"sync"
	"time"
)

// UnixMode converts a POSIX st_mode (type and permission bits) to an
// os.FileMode.
func UnixMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	switch m & 0o170000 {
	case 0o040000:
		mode |= os.ModeDir
	case 0o120000:
		mode |= os.ModeSymlink
	case 0o020000:
		mode |= os.ModeDevice | os.ModeCharDevice
	case 0o060000:
		mode |= os.ModeDevice
	case 0o010000:
		mode |= os.ModeNamedPipe
	case 0o140000:
		mode |= os.ModeSocket
	}
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// Unix returns the time for seconds and nanoseconds since the Unix epoch,
// in UTC.
func Unix(sec int64, nsec int64) time.Time { return time.Unix(sec, nsec).UTC() }

// Cache is a small bounded map used by readers for parsed directories: when
// it holds more than max weight it is emptied (directories are re-read on
// demand), so memory stays bounded whatever the volume holds.
type Cache[K comparable, V any] struct {
	mu     sync.Mutex
	m      map[K]V
	w      map[K]int
	weight int
	max    int
}

// NewCache makes a cache holding up to max weight units.
func NewCache[K comparable, V any](max int) *Cache[K, V] {
	return &Cache[K, V]{m: map[K]V{}, w: map[K]int{}, max: max}
}

// Get returns the value cached for k.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

// Put stores v for k with the given weight.
func (c *Cache[K, V]) Put(k K, v V, weight int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.w[k]; ok {
		c.weight -= old
	}
	if c.weight+weight > c.max {
		c.m, c.w, c.weight = map[K]V{}, map[K]int{}, 0
	}
	c.m[k], c.w[k] = v, weight
	c.weight += weight
}
