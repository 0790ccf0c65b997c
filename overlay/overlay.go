// Package overlay is a copy-on-write layer over a read-only disk: writes
// land in a sparse scratch file, whole 4 KiB granules at a time, and reads
// take written granules from there and everything else from the disk
// below, which is never written. It lets a hypervisor boot, or a database
// server attach and recover, a point in time without changing the backup.
package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Base is the read-only disk below an overlay.
type Base interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// Granule is the copy-on-write unit.
const Granule = 4096

// ErrNoSpace is returned for writes past the end of the disk.
var ErrNoSpace = errors.New("write past the end of the disk")

// Overlay is a writable view of a read-only disk. It is safe for
// concurrent use.
type Overlay struct {
	base Base
	size int64
	f    *os.File

	mu    sync.RWMutex
	dirty []uint64 // one bit per granule
}

// New creates the scratch file at path (replacing any file there) for a
// disk of size bytes.
func New(base Base, size int64, path string) (*Overlay, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("overlay scratch file: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("overlay scratch file %s: %w", path, err)
	}
	n := (size + Granule - 1) / Granule
	return &Overlay{base: base, size: size, f: f, dirty: make([]uint64, (n+63)/64)}, nil
}

func (o *Overlay) isDirty(g int64) bool { return o.dirty[g/64]&(1<<(g%64)) != 0 }
func (o *Overlay) mark(g int64)         { o.dirty[g/64] |= 1 << (g % 64) }

// Size is the disk's size.
func (o *Overlay) Size() int64 { return o.size }

// Written reports how many bytes of the disk have been written.
func (o *Overlay) Written() int64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var n int64
	for g := int64(0); g*Granule < o.size; g++ {
		if o.isDirty(g) {
			n += min(Granule, o.size-g*Granule)
		}
	}
	return n
}

// ReadAt reads the disk as written so far.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	return o.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads runs of written granules from the scratch file and
// the rest from the disk below.
func (o *Overlay) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	if off >= o.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), o.size)
	o.mu.RLock()
	defer o.mu.RUnlock()
	for pos := off; pos < end; {
		d := o.isDirty(pos / Granule)
		runEnd := min((pos/Granule+1)*Granule, end)
		for runEnd < end && o.isDirty(runEnd/Granule) == d {
			runEnd = min(runEnd+Granule, end)
		}
		buf := p[pos-off : runEnd-off]
		var err error
		if d {
			_, err = o.f.ReadAt(buf, pos)
		} else {
			_, err = o.base.ReadAtContext(ctx, buf, pos)
		}
		if err != nil && err != io.EOF {
			return int(pos - off), err
		}
		pos = runEnd
	}
	if end-off < int64(len(p)) {
		return int(end - off), io.EOF
	}
	return len(p), nil
}

// WriteAt writes to the overlay.
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) {
	return o.WriteAtContext(context.Background(), p, off)
}

// WriteAtContext writes p at off, first copying the unwritten parts of
// partly covered granules from the disk below.
func (o *Overlay) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > o.size {
		return 0, fmt.Errorf("write of %d bytes at %d on a disk of %d bytes: %w", len(p), off, o.size, ErrNoSpace)
	}
	if len(p) == 0 {
		return 0, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	end := off + int64(len(p))
	for _, g := range []int64{off / Granule, (end - 1) / Granule} {
		gs, ge := g*Granule, min((g+1)*Granule, o.size)
		if o.isDirty(g) || (off <= gs && end >= ge) {
			continue
		}
		buf := make([]byte, ge-gs)
		if _, err := o.base.ReadAtContext(ctx, buf, gs); err != nil && err != io.EOF {
			return 0, err
		}
		if _, err := o.f.WriteAt(buf, gs); err != nil {
			return 0, fmt.Errorf("overlay scratch file: %w", err)
		}
		o.mark(g)
	}
	if _, err := o.f.WriteAt(p, off); err != nil {
		return 0, fmt.Errorf("overlay scratch file: %w", err)
	}
	for g := off / Granule; g <= (end-1)/Granule; g++ {
		o.mark(g)
	}
	return len(p), nil
}

// Zero makes [off, off+n) read as zeros.
func (o *Overlay) Zero(ctx context.Context, off, n int64) error {
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := o.WriteAtContext(ctx, zero[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Sync flushes the scratch file.
func (o *Overlay) Sync() error { return o.f.Sync() }

// Close closes and removes the scratch file: the writes are gone.
func (o *Overlay) Close() error {
	name := o.f.Name()
	err := o.f.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return err
}
