package nbd

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
)

// overlayBlock is the copy-on-write granularity.
const overlayBlock = 4096

// Overlay is a writable Backend over a read-only base: what is written
// lands in a scratch file, and reads return the scratch file's blocks where
// they were written and the base elsewhere. The base is never written.
type Overlay struct {
	base    io.ReaderAt
	size    int64
	scratch *os.File

	mu      sync.RWMutex
	written []uint64 // bit per overlayBlock: the block is in scratch
}

var _ Backend = (*Overlay)(nil)

// NewOverlay makes an overlay of size bytes of base, keeping writes in
// scratch (an empty file; it grows sparse up to size).
func NewOverlay(base io.ReaderAt, size int64, scratch *os.File) *Overlay {
	n := (size + overlayBlock - 1) / overlayBlock
	return &Overlay{base: base, size: size, scratch: scratch, written: make([]uint64, (n+63)/64)}
}

func (o *Overlay) Size() int64    { return o.size }
func (o *Overlay) ReadOnly() bool { return false }

func (o *Overlay) isWritten(b int64) bool { return o.written[b/64]&(1<<(b%64)) != 0 }
func (o *Overlay) mark(b int64)           { o.written[b/64] |= 1 << (b % 64) }

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ReadAt reads runs of blocks from the scratch file or the base.
func (o *Overlay) ReadAt(ctx context.Context, p []byte, off int64) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	for len(p) > 0 {
		b := off / overlayBlock
		in := o.isWritten(b)
		// Extend the run while blocks share the state.
		end := (b + 1) * overlayBlock
		for end < off+int64(len(p)) && o.isWritten(end/overlayBlock) == in {
			end += overlayBlock
		}
		n := min(int64(len(p)), end-off)
		var err error
		if in {
			err = readFull(o.scratch, p[:n], off)
		} else {
			err = readFull(o.base, p[:n], off)
		}
		if err != nil {
			return fmt.Errorf("overlay read %d bytes at %d: %w", n, off, err)
		}
		p, off = p[n:], off+n
	}
	return nil
}

// WriteAt writes into the scratch file; a block written in part for the
// first time is filled from the base first.
func (o *Overlay) WriteAt(ctx context.Context, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	end := off + int64(len(p))
	var blk [overlayBlock]byte
	for _, b := range []int64{off / overlayBlock, (end - 1) / overlayBlock} {
		bs, be := b*overlayBlock, min((b+1)*overlayBlock, o.size)
		partial := off > bs || end < be
		if !partial || o.isWritten(b) {
			continue
		}
		if err := readFull(o.base, blk[:be-bs], bs); err != nil {
			return fmt.Errorf("overlay: read base block at %d: %w", bs, err)
		}
		if _, err := o.scratch.WriteAt(blk[:be-bs], bs); err != nil {
			return fmt.Errorf("overlay: scratch write at %d: %w", bs, err)
		}
		o.mark(b)
	}
	if _, err := o.scratch.WriteAt(p, off); err != nil {
		return fmt.Errorf("overlay: scratch write at %d: %w", off, err)
	}
	for b := off / overlayBlock; b*overlayBlock < end; b++ {
		o.mark(b)
	}
	return nil
}

// Zero writes zeros into the overlay.
func (o *Overlay) Zero(ctx context.Context, off, n int64) error {
	z := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(z)))
		if err := o.WriteAt(ctx, z[:c], off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// Trim zeroes the range (reads after a trim may return anything; zeros
// keep the overlay simple).
func (o *Overlay) Trim(ctx context.Context, off, n int64) error { return o.Zero(ctx, off, n) }

// Flush does nothing: the scratch file is thrown away with the overlay.
func (o *Overlay) Flush(ctx context.Context) error { return nil }
