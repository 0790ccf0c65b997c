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
//
// Readers pin the blocks they copy from (acquire, then release), so that
// the buffer of an evicted block can be reused for the next miss: decoding
// into recycled memory instead of a fresh 64 KiB allocation per block saves
// the page faults and zeroing that made up half of a sequential read's CPU.
type blockCache struct {
	repo *repository.Repo
	max  int64

	mu       sync.Mutex
	used     int64
	items    map[int64]*list.Element
	lru      list.List // front: most recent; values *cacheItem
	inflight map[int64]*fill
	free     [][]byte // buffers of evicted, unpinned blocks

	hits, misses, reused, dropped int64
}

// maxFree bounds the recycled buffers kept beyond the cache's bound.
const maxFree = 64

type cacheItem struct {
	id     int64
	data   []byte
	refs   int  // pins: readers copying from data
	cached bool // in items and counted in used
}

type fill struct {
	done    chan struct{}
	waiters int // pins taken for the callers waiting on it (c.mu)
	it      *cacheItem
	err     error
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

// acquire returns the chunk's block pinned: its data stays valid (and
// must not be modified) until release.
func (c *blockCache) acquire(ctx context.Context, ref catalog.ChunkRef) (*cacheItem, error) {
	c.mu.Lock()
	if el, ok := c.items[ref.ID]; ok {
		c.lru.MoveToFront(el)
		c.hits++
		it := el.Value.(*cacheItem)
		it.refs++
		c.mu.Unlock()
		return it, nil
	}
	if f, ok := c.inflight[ref.ID]; ok {
		f.waiters++
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.it, f.err
		case <-ctx.Done():
			// The pin taken for this caller is dropped when the fill ends.
			go func() {
				<-f.done
				if f.it != nil {
					c.release(f.it)
				}
			}()
			return nil, ctx.Err()
		}
	}
	f := &fill{done: make(chan struct{})}
	c.inflight[ref.ID] = f
	c.misses++
	var buf []byte
	if n := len(c.free); n > 0 {
		buf, c.free = c.free[n-1], c.free[:n-1]
		c.reused++
	}
	c.mu.Unlock()

	// The read is not cancelled with one caller's context: others may
	// wait for it.
	data, err := c.repo.ReadChunk(context.WithoutCancel(ctx), ref, buf)

	c.mu.Lock()
	delete(c.inflight, ref.ID)
	if err == nil {
		it := &cacheItem{id: ref.ID, data: data, refs: 1 + f.waiters}
		if int64(cap(data)) <= c.max {
			it.cached = true
			c.items[ref.ID] = c.lru.PushFront(it)
			c.used += int64(cap(data))
			c.trim()
		}
		f.it = it
	} else {
		f.err = err
		c.recycle(buf)
	}
	c.mu.Unlock()
	close(f.done)
	return f.it, f.err
}

// release unpins a block from acquire.
func (c *blockCache) release(it *cacheItem) {
	c.mu.Lock()
	it.refs--
	if it.refs == 0 && !it.cached {
		c.recycle(it.data)
		it.data = nil
	}
	c.mu.Unlock()
}

// drop removes a block from the cache (a reader that will not need it
// again says so); its buffer is recycled once nobody holds it.
func (c *blockCache) drop(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[id]
	if !ok {
		return
	}
	it := el.Value.(*cacheItem)
	c.lru.Remove(el)
	delete(c.items, id)
	it.cached = false
	c.used -= int64(cap(it.data))
	c.dropped++
	if it.refs == 0 {
		c.recycle(it.data)
		it.data = nil
	}
}

// recycle keeps a buffer nobody uses any more for the next miss (c.mu held).
func (c *blockCache) recycle(b []byte) {
	if cap(b) > 0 && len(c.free) < maxFree {
		c.free = append(c.free, b[:0])
	}
}

// trim evicts least recently used blocks down to the bound (c.mu held).
// A pinned block leaves the cache at once; its buffer is recycled when the
// last reader releases it.
func (c *blockCache) trim() {
	for c.used > c.max {
		el := c.lru.Back()
		it := el.Value.(*cacheItem)
		c.lru.Remove(el)
		delete(c.items, it.id)
		it.cached = false
		c.used -= int64(cap(it.data))
		if it.refs == 0 {
			c.recycle(it.data)
			it.data = nil
		}
	}
}

// CacheStats are the block cache's counters.
type CacheStats struct {
	Bytes, Max    int64
	Blocks        int
	Hits, Misses  int64
	Reused        int64 // misses decoded into a recycled buffer
	Dropped       int64 // blocks a sequential stream had moved past
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

// pinBlock returns block blk pinned (release it), or nil for a zero block.
func (b *blockReader) pinBlock(ctx context.Context, blk int64) (*cacheItem, error) {
	ref, err := b.block(ctx, blk)
	if err != nil {
		return nil, err
	}
	if ref.ID == 0 {
		return nil, nil // a zero block
	}
	it, err := b.cache.acquire(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("%s/%s point %d, block %d: %w", b.p.Machine, b.p.Volume, b.p.ID, blk, err)
	}
	return it, nil
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
	// A long stream of large reads is the kernel filling its page cache,
	// which keeps the data from then on: the blocks it has moved past
	// leave the cache at once, so that a big file read does not push
	// everything else out and its buffers are recycled (not fresh memory).
	dropBehind := b.readAhead(ctx, first, last) && int64(len(p)) >= bs
	n := 0
	for blk := first; blk <= last; blk++ {
		pos := off + int64(n)
		it, err := b.pinBlock(ctx, blk)
		if err != nil {
			return n, err
		}
		in := pos - blk*bs
		k := int(min(bs-in, end-pos))
		if it == nil {
			clear(p[n : n+k])
		} else {
			stored := len(it.data)
			if int64(stored) >= in+int64(k) {
				copy(p[n:n+k], it.data[in:])
			}
			b.cache.release(it)
			if int64(stored) < in+int64(k) {
				return n, fmt.Errorf("%s/%s point %d, block %d: %d bytes stored, %d expected", b.p.Machine, b.p.Volume, b.p.ID, blk, stored, in+int64(k))
			}
		}
		if dropBehind && in+int64(k) == bs && blk > 0 {
			// The block before: parallel requests of the kernel may still
			// be reading the end of this one.
			if ref, err := b.block(ctx, blk-1); err == nil && ref.ID != 0 {
				b.cache.drop(ref.ID)
			}
		}
		n += k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readAhead notices sequential reads and queues the blocks after them. It
// reports whether the reads are a long sequential stream (read-ahead at
// its widest).
func (b *blockReader) readAhead(ctx context.Context, first, last int64) bool {
	b.mu.Lock()
	// Kernels issue read-ahead requests in parallel, so a sequential
	// stream may arrive a little out of order: anything between just
	// behind the stream and the blocks already queued continues it.
	near := first >= b.next-b.window-2 && first <= max(b.ahead, b.next)
	if !(first == b.next || first == b.next-1 || (b.window > 0 && near)) {
		// not sequential: start over
		b.window = 0
		b.ahead = 0
		b.next = last + 1
		b.mu.Unlock()
		return false
	}
	b.next = max(b.next, last+1)
	if b.window == 0 {
		b.window = 4
	} else if b.window < readAheadMax {
		b.window *= 2
	}
	total := (b.p.Size + b.p.BlockSize - 1) / b.p.BlockSize
	from := max(b.ahead, b.next)
	to := min(b.next+b.window, total)
	long := b.window >= readAheadMax
	if from >= to {
		b.mu.Unlock()
		return long
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
				it, err := b.cache.acquire(cctx, ref)
				if err != nil {
					if b.log != nil {
						b.log(err)
					}
					return
				}
				b.cache.release(it)
			}()
		}
		wg.Wait()
	}()
	return long
}
