package vdisk

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"
)

// WriteOptions tune the writers. The zero value is valid.
type WriteOptions struct {
	// Progress, when set, is called with the number of source bytes
	// done after each block.
	Progress func(done int64)
	// BlockSize is the allocation unit: VHD block (default 2 MiB), VHDX
	// block (default 32 MiB, 1–256 MiB), qcow2 cluster (default 64 KiB),
	// VMDK grain (default 64 KiB). A power of two.
	BlockSize int64
	// Compress writes qcow2 clusters compressed (deflate).
	Compress bool
	// Level is the deflate level for compressed output (default 1).
	Level int
	// UniqueID identifies the new disk (zero: derived from the source size).
	UniqueID [16]byte
	// Time stamps the new disk (zero: the format's epoch).
	Time time.Time
	// ExtentName is the file name a VMDK's embedded descriptor gives its
	// own extent (default "disk.vmdk").
	ExtentName string
}

func (o *WriteOptions) blockSize(def, lo, hi int64) (int64, error) {
	bs := def
	if o != nil && o.BlockSize != 0 {
		bs = o.BlockSize
	}
	if bs < lo || bs > hi || bs&(bs-1) != 0 {
		return 0, fmt.Errorf("vdisk: block size %d: want a power of two in [%d, %d]", bs, lo, hi)
	}
	return bs, nil
}

func (o *WriteOptions) id(size int64) [16]byte {
	v := &ViewOptions{}
	if o != nil {
		v.UniqueID = o.UniqueID
	}
	return v.id(size)
}

func (o *WriteOptions) level() int {
	if o == nil || o.Level == 0 {
		return 1
	}
	return o.Level
}

func (o *WriteOptions) extentName() string {
	if o == nil || o.ExtentName == "" {
		return "disk.vmdk"
	}
	return o.ExtentName
}

// writer is the state every format writer shares: a sticky error, the
// output position, and block reads from the source.
type writer struct {
	ctx    context.Context
	format string
	w      io.Writer   // streaming output, or nil
	wa     io.WriterAt // positioned output, or nil
	pos    int64       // bytes written so far (streaming)
	err    error
	src    io.ReaderAt
	size   int64 // source bytes
	opt    *WriteOptions
}

func newWriter(ctx context.Context, format string, src io.ReaderAt, size int64, opt *WriteOptions) *writer {
	return &writer{ctx: ctx, format: format, src: src, size: size, opt: opt}
}

func (w *writer) fail(what string, err error) {
	if w.err == nil && err != nil {
		w.err = &Error{Format: w.format, Offset: -1, What: what, Err: err}
	}
}

// write appends p to a streaming output.
func (w *writer) write(p []byte) {
	if w.err != nil {
		return
	}
	n, err := w.w.Write(p)
	w.pos += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = &Error{Format: w.format, Offset: w.pos, What: "writing output", Err: err}
	}
}

// writeAt writes p at off of a positioned output.
func (w *writer) writeAt(p []byte, off int64) {
	if w.err != nil {
		return
	}
	if _, err := w.wa.WriteAt(p, off); err != nil {
		w.err = &Error{Format: w.format, Offset: off, What: "writing output", Err: err}
	}
}

// read fills buf from the source at off, zero-filling past its end, and
// checks for cancellation.
func (w *writer) read(buf []byte, off int64) {
	if w.err != nil {
		return
	}
	if err := w.ctx.Err(); err != nil {
		w.err = err
		return
	}
	n := 0
	if off < w.size {
		k := min(int64(len(buf)), w.size-off)
		m, err := w.src.ReadAt(buf[:k], off)
		if int64(m) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			w.err = &Error{Format: w.format, Offset: off, What: "reading source disk", Err: err}
			return
		}
		n = int(k)
	}
	clear(buf[n:])
}

func (w *writer) progress(done int64) {
	if w.opt != nil && w.opt.Progress != nil && w.err == nil {
		w.opt.Progress(min(done, w.size))
	}
}

var zeroBlock = make([]byte, 64<<10)

// isZero reports whether b is all zero bytes.
func isZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:k], zeroBlock[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}

func writeZeros(w *writer, n int64) {
	for n > 0 && w.err == nil {
		k := min(n, int64(len(zeroBlock)))
		w.write(zeroBlock[:k])
		n -= k
	}
}

// verify re-opens what was written when the output can be read back (an
// *os.File opened read-write) and checks the virtual size; an output that
// cannot be read is not verified.
func verify(out any, total, want int64, open func(io.ReaderAt, int64) (Disk, error)) error {
	ra, ok := out.(io.ReaderAt)
	if !ok {
		return nil
	}
	var probe [1]byte
	if _, err := ra.ReadAt(probe[:], 0); err != nil {
		return nil // write-only output
	}
	d, err := open(ra, total)
	if err != nil {
		return fmt.Errorf("vdisk: verifying written image: %w", err)
	}
	if d.Size() != want {
		return fmt.Errorf("vdisk: verifying written image: virtual size %d, want %d", d.Size(), want)
	}
	return nil
}

func sectorAlign(n int64) int64 { return (n + 511) &^ 511 }
