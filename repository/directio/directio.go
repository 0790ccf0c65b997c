// Package directio writes files around the page cache (O_DIRECT): data
// written once and not read back soon (pack files, restored volumes, the
// capture spool) costs a copy into the page cache and, on a virtual
// machine whose memory is not yet touched, page faults several times
// dearer than the copy. It gives page-aligned buffers, a file writer that
// sends aligned writes directly and the rest through the page cache, and
// an Appender that gathers appends into runs written that way.
package directio

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Align is the offset, length and memory alignment of direct writes.
const Align = 4096

// AlignedBuf returns an empty buffer of capacity n whose first byte is
// page-aligned.
func AlignedBuf(n int) []byte {
	b := make([]byte, n+Align)
	skip := (Align - int(uintptr(unsafe.Pointer(unsafe.SliceData(b))))%Align) % Align
	return b[skip : skip : skip+n]
}

// Aligned reports whether a write of b at off can go directly.
func Aligned(b []byte, off int64) bool {
	return off%Align == 0 && len(b)%Align == 0 && len(b) > 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align == 0
}

// Open opens path for direct writes, or returns nil where the file system
// (or the platform) does not support them.
func Open(path string) *os.File { return openDirect(path) }

// IsUnsupported reports whether err from a direct write means the file
// system refuses direct I/O for it (EINVAL), so the write should go
// through the page cache instead.
func IsUnsupported(err error) bool { return errors.Is(err, syscall.EINVAL) }

// WriterAt writes through f, sending writes that are aligned in offset,
// length and memory through a second, direct descriptor of the same file.
// The kernel keeps the two coherent. It is safe for concurrent use when f
// is.
type WriterAt struct {
	f      *os.File
	direct atomic.Pointer[os.File] // nil once direct writes are off
}

// NewWriterAt returns a WriterAt over f, whose file is at path; direct
// writes are used where the file system allows them.
func NewWriterAt(f *os.File, path string) *WriterAt {
	w := &WriterAt{f: f}
	if d := Open(path); d != nil {
		w.direct.Store(d)
	}
	return w
}

// WriteAt writes b at off.
func (w *WriterAt) WriteAt(b []byte, off int64) (int, error) {
	if d := w.direct.Load(); d != nil && Aligned(b, off) {
		n, err := d.WriteAt(b, off)
		if err == nil || !IsUnsupported(err) {
			return n, err
		}
		if w.direct.CompareAndSwap(d, nil) {
			d.Close()
		}
	}
	return w.f.WriteAt(b, off)
}

// Close closes the direct descriptor (not f).
func (w *WriterAt) Close() error {
	if d := w.direct.Swap(nil); d != nil {
		return d.Close()
	}
	return nil
}
