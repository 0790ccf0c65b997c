package vfs

import (
	"container/list"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
)

// blockCache keeps decompressed, verified blocks, keyed by chunk id: a
// chunk is stored once however many points and volumes share it, so the
// cache is shared by every point of the mount. It is bounded in bytes and
// evicts the least recently used block. Concurrent misses of one chunk
// decode it once.
type blockCache struct {
	repo *repository.Repo
	max  int64

	mu       sync.Mutex
	used     int64
	items    map[int64]*list.Element
	lru      list.List // front: most recent; values *cacheItem
	inflight map[int64]*fill

	hits, misses int64
}

type cacheItem struct {
	id   int64
	data []byte
}

type fill struct {
	done chan struct{}
	data []byte
	err  error
}

func newBlockCache(repo *repository.Repo, max int64) *blockCache {
	return &blockCache{repo: repo, max: max, items: map[int64]*list.Element{}, inflight: map[int64]*fill{}}
}

// has reports whether the chunk is cached or being read.
func (c *blockCache) has(id int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[id]
	_, busy := c.inflight[id]
	return ok || busy
}

// get returns the chunk's data (shared: callers must not modify it).
func (c *blockCache) get(ctx context.Context, ref catalog.ChunkRef) ([]byte, error) {
	c.mu.Lock()
	if el, ok := c.items[ref.ID]; ok {
		c.lru.MoveToFront(el)
		c.hits++
		c.mu.Unlock()
		return el.Value.(*cacheItem).data, nil
	}
	if f, ok := c.inflight[ref.ID]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.data, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &fill{done: make(chan struct{})}
	c.inflight[ref.ID] = f
	c.misses++
	c.mu.Unlock()

	// The read is not cancelled with one caller's context: others may
	// wait for it.
	f.data, f.err = c.repo.ReadChunk(context.WithoutCancel(ctx), ref, nil)

	c.mu.Lock()
	delete(c.inflight, ref.ID)
	if f.err == nil && int64(len(f.data)) <= c.max {
		c.items[ref.ID] = c.lru.PushFront(&cacheItem{id: ref.ID, data: f.data})
		c.used += int64(len(f.data))
		c.trim()
	}
	c.mu.Unlock()
	close(f.done)
	return f.data, f.err
}

// trim evicts least recently used blocks down to the bound (c.mu held).
func (c *blockCache) trim() {
	for c.used > c.max {
		el := c.lru.Back()
		it := el.Value.(*cacheItem)
		c.lru.Remove(el)
		delete(c.items, it.id)
		c.used -= int64(len(it.data))
	}
}

// CacheStats are the block cache's counters.
type CacheStats struct {
	Bytes, Max    int64
	Blocks        int
	Hits, Misses  int64
	ReadAheadRuns int64
}

// readAheadMax is the most blocks one sequential stream reads ahead.
const readAheadMax = 64

// blockReader reads a volume at a point through the shared cache and reads
// ahead when reads are sequential.
type blockReader struct {
	pr    *repository.PointReader
	p     catalog.Point
	cache *blockCache
	sem   chan struct{} // bounds read-ahead goroutines of the whole mount
	log   func(err error)

	wmu     sync.Mutex
	windows map[int64]*windowLoad

	mu     sync.Mutex
	next   int64 // block a sequential stream reads next
	window int64
	ahead  int64 // blocks [next, ahead) were already queued
	runs   *atomic.Int64
}

func (b *blockReader) Size() int64 { return b.p.Size }

func (b *blockReader) ReadAt(p []byte, off int64) (int, error) {
	return b.ReadAtContext(context.Background(), p, off)
}

// mapWindow is how many blocks repository.PointReader resolves per
// catalog visit.
const mapWindow = 1024

type windowLoad struct {
	once sync.Once
}

// block resolves where a block is stored. The first caller of each window
// of the block map loads it while concurrent callers (read-ahead and the
// reads it runs ahead of) wait, instead of all asking the catalog.
func (b *blockReader) block(ctx context.Context, blk int64) (catalog.ChunkRef, error) {
	w := blk / mapWindow
	b.wmu.Lock()
	if b.windows == nil {
		b.windows = map[int64]*windowLoad{}
	}
	l := b.windows[w]
	if l == nil {
		l = &windowLoad{}
		b.windows[w] = l
	}
	b.wmu.Unlock()
	var ref catalog.ChunkRef
	var err error
	done := false
	l.once.Do(func() {
		ref, err = b.pr.Block(ctx, blk)
		done = true
	})
	if done {
		return ref, err
	}
	return b.pr.Block(ctx, blk)
}

func (b *blockReader) blockData(ctx context.Context, blk int64) ([]byte, error) {
	ref, err := b.block(ctx, blk)
	if err != nil {
		return nil, err
	}
	if ref.ID == 0 {
		return nil, nil // a zero block
	}
	data, err := b.cache.get(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("%s/%s point %d, block %d: %w", b.p.Machine, b.p.Volume, b.p.ID, blk, err)
	}
	return data, nil
}

// ReadAtContext reads the volume; zero blocks read as zeros.
func (b *blockReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d: %w", off, ErrInvalid)
	}
	if off >= b.p.Size {
		return 0, io.EOF
	}
	bs := b.p.BlockSize
	end := min(off+int64(len(p)), b.p.Size)
	first, last := off/bs, (end-1)/bs
	b.readAhead(ctx, first, last)
	n := 0
	for blk := first; blk <= last; blk++ {
		pos := off + int64(n)
		data, err := b.blockData(ctx, blk)
		if err != nil {
			return n, err
		}
		in := pos - blk*bs
		k := int(min(bs-in, end-pos))
		if data == nil {
			clear(p[n : n+k])
		} else {
			if int64(len(data)) < in+int64(k) {
				return n, fmt.Errorf("%s/%s point %d, block %d: %d bytes stored, %d expected", b.p.Machine, b.p.Volume, b.p.ID, blk, len(data), in+int64(k))
			}
			copy(p[n:n+k], data[in:])
		}
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readAhead notices sequential reads and queues the blocks after them.
func (b *blockReader) readAhead(ctx context.Context, first, last int64) {
	b.mu.Lock()
	if first != b.next && first != b.next-1 && !(first >= b.next && first < b.ahead) {
		// not sequential: start over
		b.window = 0
		b.ahead = 0
		b.next = last + 1
		b.mu.Unlock()
		return
	}
	b.next = last + 1
	if b.window == 0 {
		b.window = 4
	} else if b.window < readAheadMax {
		b.window *= 2
	}
	total := (b.p.Size + b.p.BlockSize - 1) / b.p.BlockSize
	from := max(b.ahead, last+1)
	to := min(last+1+b.window, total)
	if from >= to {
		b.mu.Unlock()
		return
	}
	b.ahead = to
	b.runs.Add(1)
	b.mu.Unlock()

	// One goroutine per run queues the blocks; the mount-wide semaphore
	// bounds how many are read at once.
	bg := context.WithoutCancel(ctx)
	go func() {
		cctx, cancel := context.WithTimeout(bg, time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for blk := from; blk < to; blk++ {
			ref, err := b.block(cctx, blk)
			if err != nil || ref.ID == 0 || b.cache.has(ref.ID) {
				continue
			}
			select {
			case b.sem <- struct{}{}:
			case <-cctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-b.sem; wg.Done() }()
				if _, err := b.cache.get(cctx, ref); err != nil && b.log != nil {
					b.log(err)
				}
			}()
		}
		wg.Wait()
	}()
}
