package vfs

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
)

// ctxReaderAt is what the disk files are built on.
type ctxReaderAt interface {
	io.ReaderAt
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// granule is the copy-on-write unit of an overlay.
const granule = 4096

// overlay is a copy-on-write layer over a read-only disk: writes go to a
// sparse scratch file, whole granules at a time, and reads take written
// granules from there and everything else from the disk below. The
// repository is never written. The overlay lives as long as the mount.
type overlay struct {
	base ctxReaderAt
	size int64
	f    *os.File

	mu    sync.RWMutex
	dirty []uint64 // one bit per granule
}

func newOverlay(base ctxReaderAt, size int64, path string) (*overlay, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("overlay scratch file: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("overlay scratch file %s: %w", path, err)
	}
	n := (size + granule - 1) / granule
	return &overlay{base: base, size: size, f: f, dirty: make([]uint64, (n+63)/64)}, nil
}

func (o *overlay) isDirty(g int64) bool { return o.dirty[g/64]&(1<<(g%64)) != 0 }

func (o *overlay) Size() int64 { return o.size }

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	return o.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads runs of written granules from the scratch file and
// the rest from the disk below.
func (o *overlay) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off >= o.size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), o.size)
	o.mu.RLock()
	defer o.mu.RUnlock()
	pos := off
	for pos < end {
		g := pos / granule
		d := o.isDirty(g)
		runEnd := min((g+1)*granule, end)
		for runEnd < end && o.isDirty(runEnd/granule) == d {
			runEnd = min(runEnd+granule, end)
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

// WriteAtContext writes to the scratch file, first copying the parts of
// partly written granules from the disk below.
func (o *overlay) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > o.size {
		return 0, fmt.Errorf("write of %d bytes at %d on a disk of %d: %w", len(p), off, o.size, ErrNoSpace)
	}
	if len(p) == 0 {
		return 0, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	end := off + int64(len(p))
	for _, g := range []int64{off / granule, (end - 1) / granule} {
		gs, ge := g*granule, min((g+1)*granule, o.size)
		if o.isDirty(g) || (off <= gs && end >= ge) {
			continue
		}
		buf := make([]byte, ge-gs)
		if _, err := o.base.ReadAtContext(ctx, buf, gs); err != nil && err != io.EOF {
			return 0, err
		}
		if _, err := o.f.WriteAt(buf, gs); err != nil {
			return 0, fmt.Errorf("overlay: %w", err)
		}
		o.dirty[g/64] |= 1 << (g % 64)
	}
	if _, err := o.f.WriteAt(p, off); err != nil {
		return 0, fmt.Errorf("overlay: %w", err)
	}
	for g := off / granule; g <= (end-1)/granule; g++ {
		o.dirty[g/64] |= 1 << (g % 64)
	}
	return len(p), nil
}

func (o *overlay) sync() error { return o.f.Sync() }

func (o *overlay) close() error {
	name := o.f.Name()
	err := o.f.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return err
}
