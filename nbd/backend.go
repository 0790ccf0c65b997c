package nbd

import (
	"context"
	"fmt"
	"io"
	"os"
)

// FileBackend serves a file or block device.
type FileBackend struct {
	F        *os.File
	Bytes    int64
	Readonly bool
}

// OpenFile opens path as a backend (read-only unless writable).
func OpenFile(path string, writable bool) (*FileBackend, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("size of %s: %w", path, err)
	}
	return &FileBackend{F: f, Bytes: size, Readonly: !writable}, nil
}

var _ Backend = (*FileBackend)(nil)

func (b *FileBackend) Size() int64    { return b.Bytes }
func (b *FileBackend) ReadOnly() bool { return b.Readonly }

func (b *FileBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	_, err := b.F.ReadAt(p, off)
	if err == io.EOF {
		clear(p) // a short file reads as zeros to its advertised size
		err = nil
	}
	return err
}

func (b *FileBackend) WriteAt(ctx context.Context, p []byte, off int64) error {
	_, err := b.F.WriteAt(p, off)
	return err
}

// Trim punches a hole where the file system can, else does nothing.
func (b *FileBackend) Trim(ctx context.Context, off, n int64) error {
	punchHole(b.F, off, n)
	return nil
}

// Zero punches a hole, or writes zeros where that is not possible.
func (b *FileBackend) Zero(ctx context.Context, off, n int64) error {
	if punchHole(b.F, off, n) == nil {
		return nil
	}
	return WriteZeros(ctx, b.F, off, n)
}

func (b *FileBackend) Flush(ctx context.Context) error { return b.F.Sync() }

// Close closes the file.
func (b *FileBackend) Close() error { return b.F.Close() }

// WriteZeros writes n zero bytes at off, a MiB at a time.
func WriteZeros(ctx context.Context, w io.WriterAt, off, n int64) error {
	z := make([]byte, min(n, 1<<20))
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := min(n, int64(len(z)))
		if _, err := w.WriteAt(z[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// ReaderBackend serves an io.ReaderAt read-only.
type ReaderBackend struct {
	R     io.ReaderAt
	Bytes int64
}

var _ Backend = ReaderBackend{}

func (b ReaderBackend) Size() int64    { return b.Bytes }
func (b ReaderBackend) ReadOnly() bool { return true }
func (b ReaderBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	n, err := b.R.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return err
}
func (ReaderBackend) WriteAt(context.Context, []byte, int64) error { return ErrReadOnly }
func (ReaderBackend) Trim(context.Context, int64, int64) error     { return ErrReadOnly }
func (ReaderBackend) Zero(context.Context, int64, int64) error     { return ErrReadOnly }
func (ReaderBackend) Flush(context.Context) error                  { return nil }
