package vfs

import (
	"context"
	"errors"
	"io/fs"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

// Errno is an error number an adapter returns to its kernel interface. The
// values are the Linux ones; adapters for other systems translate them.
type Errno int

// The error numbers the tree uses.
const (
	OK      Errno = 0
	EPERM   Errno = 1
	ENOENT  Errno = 2
	EINTR   Errno = 4
	EIO     Errno = 5
	EACCES  Errno = 13
	ENOTDIR Errno = 20
	EISDIR  Errno = 21
	EINVAL  Errno = 22
	ENOSPC  Errno = 28
	EROFS   Errno = 30
)

// Errors the tree returns (wrapped with what failed). Anything else — a
// damaged file system, a damaged pack, a catalog error — is EIO.
var (
	ErrNotExist = fs.ErrNotExist
	ErrNotDir   = filesystem.ErrNotDir
	ErrIsDir    = filesystem.ErrIsDir
	ErrReadOnly = errors.New("read-only: backups never change")
	ErrInvalid  = errors.New("invalid argument")
	ErrNoSpace  = errors.New("write past the end of the disk")
	ErrNotLink  = filesystem.ErrNotSymlink
)

// ErrnoOf maps an error returned by the tree to its error number.
func ErrnoOf(err error) Errno {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, fs.ErrNotExist):
		return ENOENT
	case errors.Is(err, filesystem.ErrNotDir):
		return ENOTDIR
	case errors.Is(err, filesystem.ErrIsDir):
		return EISDIR
	case errors.Is(err, ErrReadOnly):
		return EROFS
	case errors.Is(err, ErrInvalid), errors.Is(err, filesystem.ErrNotSymlink):
		return EINVAL
	case errors.Is(err, ErrNoSpace):
		return ENOSPC
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return EINTR
	}
	return EIO
}

// Caller identifies the process behind a request, for the audit log.
type Caller struct {
	UID, GID uint32
	PID      uint32
}

type callerKey struct{}

// WithCaller returns ctx carrying the caller of a request; adapters set it
// from their kernel request header.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerOf returns the caller set by WithCaller (zero when none).
func CallerOf(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}
