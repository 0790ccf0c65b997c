package repository

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// ReadAhead reads a point for one consumer that moves forward through the
// volume (an export, a stream to stdout): the blocks after the last one
// read are fetched, decompressed and verified in parallel, so the
// consumer finds them ready. Reads elsewhere still work, only without the
// head start. It is an io.ReaderAt.
type ReadAhead struct {
	pr      *PointReader
	ctx     context.Context
	window  int64
	workers chan struct{}

	mu      sync.Mutex
	pending map[int64]*aheadBlock
	next    int64    // first block not yet scheduled
	free    [][]byte // buffers of blocks the consumer has moved past
}

type aheadBlock struct {
	done chan struct{}
	data []byte
	err  error
}

// ReadAhead returns a reader that keeps up to window blocks (default 64)
// in flight on as many workers as there are CPUs. ctx bounds the
// background work.
func (pr *PointReader) ReadAhead(ctx context.Context, window int) *ReadAhead {
	if window <= 0 {
		window = 64
	}
	return &ReadAhead{pr: pr, ctx: ctx, window: int64(window), workers: make(chan struct{}, runtime.NumCPU()), pending: map[int64]*aheadBlock{}}
}

// Size is the volume's size at the point.
func (ra *ReadAhead) Size() int64 { return ra.pr.Size() }

// schedule starts fetching blk unless it is in flight; ra.mu is held.
func (ra *ReadAhead) schedule(blk int64) *aheadBlock {
	if b, ok := ra.pending[blk]; ok {
		return b
	}
	b := &aheadBlock{done: make(chan struct{})}
	ra.pending[blk] = b
	var buf []byte
	if n := len(ra.free); n > 0 {
		buf, ra.free = ra.free[n-1], ra.free[:n-1]
	}
	go func() {
		defer close(b.done)
		select {
		case ra.workers <- struct{}{}:
		case <-ra.ctx.Done():
			b.err = ra.ctx.Err()
			return
		}
		// Decoding into a recycled buffer saves a fresh allocation (and
		// its page faults) per block.
		b.data, b.err = ra.pr.ReadBlock(ra.ctx, blk, buf)
		<-ra.workers
	}()
	return b
}

// block returns block blk and schedules the window after it.
func (ra *ReadAhead) block(ctx context.Context, blk int64) ([]byte, error) {
	ra.mu.Lock()
	b := ra.schedule(blk)
	for k, old := range ra.pending {
		if k < blk { // the consumer has moved past it
			delete(ra.pending, k)
			select {
			case <-old.done:
				if old.data != nil && len(ra.free) < int(ra.window) {
					ra.free = append(ra.free, old.data[:0])
				}
			default: // still being read: its buffer goes with it
			}
		}
	}
	if ra.next <= blk {
		ra.next = blk + 1
	}
	for last := min(blk+ra.window, ra.pr.blocks()); ra.next < last; ra.next++ {
		ra.schedule(ra.next)
	}
	ra.mu.Unlock()
	select {
	case <-b.done:
		return b.data, b.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ReadAt reads the volume at the point.
func (ra *ReadAhead) ReadAt(p []byte, off int64) (int, error) {
	return ra.ReadAtContext(ra.ctx, p, off)
}

// ReadAtContext is ReadAt with a context.
func (ra *ReadAhead) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	size := ra.pr.Size()
	bs := ra.pr.point.BlockSize
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= size {
			return n, io.EOF
		}
		blk := pos / bs
		data, err := ra.block(ctx, blk)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], data[pos-blk*bs:])
	}
	return n, nil
}
