package vdisk

import (
	"errors"
	"fmt"
	"io"
)

// ErrCorrupt is wrapped by every error about a malformed container.
var ErrCorrupt = errors.New("malformed container")

// ErrUnsupported is wrapped by errors about valid but unsupported features.
var ErrUnsupported = errors.New("unsupported feature")

// Error describes what failed, in which format and at which byte offset of
// the container file (Offset < 0 when no offset applies).
type Error struct {
	Format string
	Offset int64
	What   string
	Err    error
}

func (e *Error) Error() string {
	s := "vdisk: " + e.Format + ": " + e.What
	if e.Offset >= 0 {
		s += fmt.Sprintf(" at offset %d (0x%x)", e.Offset, e.Offset)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// corrupt builds an *Error wrapping ErrCorrupt.
func corrupt(format string, off int64, what string, a ...any) error {
	return &Error{Format: format, Offset: off, What: fmt.Sprintf(what, a...), Err: ErrCorrupt}
}

func unsupported(format string, off int64, what string, a ...any) error {
	return &Error{Format: format, Offset: off, What: fmt.Sprintf(what, a...), Err: ErrUnsupported}
}

func ioErr(format string, off int64, what string, err error) error {
	return &Error{Format: format, Offset: off, What: what, Err: err}
}

// readAt fills p from r at off; a short read is an error naming the offset.
func readAt(format string, r io.ReaderAt, p []byte, off int64, what string) error {
	if off < 0 {
		return corrupt(format, off, "negative offset reading %s", what)
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return ioErr(format, off, "reading "+what, err)
}

// clampRead prepares a ReadAt of p at off on a disk of the given size: it
// returns how many bytes may be read and the error to return after them.
func clampRead(p []byte, off, size int64) (int, error) {
	if off < 0 {
		return 0, errors.New("vdisk: negative offset")
	}
	if off >= size {
		return 0, io.EOF
	}
	if int64(len(p)) > size-off {
		return int(size - off), io.EOF
	}
	return len(p), nil
}

func zero(p []byte) { clear(p) }
