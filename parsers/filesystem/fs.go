// Package filesystem defines the read-only interface every file system
// reader in its subpackages implements (ext2/3/4, NTFS, FAT, exFAT, XFS), the
// errors they return, and helpers shared by the readers: path splitting,
// symlink resolution and a panic-proof wrapper.
package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"
)

// Entry describes one file, directory or link.
type Entry struct {
	Name  string      // base name ("/" for the root)
	Ino   uint64      // stable inode / MFT number: hard links share it
	Mode  os.FileMode // type bits plus permission bits
	Size  int64       // bytes (for symlinks: length of the target)
	Nlink uint32      // link count (1 where the file system has none)
	UID   uint32
	GID   uint32
	Mtime time.Time
	Atime time.Time // zero when the file system does not keep it
	Ctime time.Time // inode change time, zero when absent
	Btime time.Time // creation time, zero when absent
}

// IsDir reports whether e is a directory.
func (e Entry) IsDir() bool { return e.Mode.IsDir() }

// Range is a byte range [Off, Off+Len).
type Range struct {
	Off, Len int64
}

// File is an open regular file. ReadAt (io.ReaderAt) uses a background
// context; ReadAtContext lets the caller cancel. Holes read as zeros.
type File interface {
	io.ReaderAt
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	Size() int64
	// DataRanges lists the ranges that hold data; everything else in
	// [0, Size) is a hole. Readers that cannot tell return one range
	// covering the whole file.
	DataRanges(ctx context.Context) ([]Range, error)
}

// FS is a read-only file system. Paths are slash-separated and relative to
// the root ("", "/" and "." are the root); symbolic links inside a path are
// not followed (the kernel resolves them above a FUSE layer; see Resolve).
type FS interface {
	// Type names the file system ("ext4", "ntfs", "fat32", "exfat", "xfs", ...).
	Type() string
	// Label is the volume label, "" when none.
	Label() string
	Root(ctx context.Context) (Entry, error)
	Stat(ctx context.Context, name string) (Entry, error)
	// ReadDir lists a directory without "." and "..", in on-disk order.
	ReadDir(ctx context.Context, name string) ([]Entry, error)
	Readlink(ctx context.Context, name string) (string, error)
	Open(ctx context.Context, name string) (File, error)
}

// Errors readers wrap; io/fs errors are used so callers can map them to
// ENOENT, ENOTDIR, EINVAL and EIO.
var (
	ErrNotExist    = fs.ErrNotExist
	ErrNotDir      = errors.New("not a directory")
	ErrIsDir       = errors.New("is a directory")
	ErrNotSymlink  = errors.New("not a symbolic link")
	ErrCorrupt     = errors.New("corrupt file system structure")
	ErrUnknown     = errors.New("no known file system")
	ErrLoop        = errors.New("too many levels of symbolic links")
	ErrUnsupported = errors.New("unsupported feature")
)

// Error tells which file system, what operation, which path and at which
// byte offset of the volume something failed (Off is -1 when unknown).
type Error struct {
	FS   string
	Op   string
	Path string
	Off  int64
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.FS)
	b.WriteString(": ")
	b.WriteString(e.Op)
	if e.Path != "" {
		b.WriteString(" ")
		b.WriteString(e.Path)
	}
	if e.Off >= 0 {
		fmt.Fprintf(&b, " at offset %d", e.Off)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}
func (e *Error) Unwrap() error { return e.Err }

// Corrupt builds an *Error wrapping ErrCorrupt with a detail message.
func Corrupt(fsname, op string, off int64, format string, args ...any) error {
	return &Error{FS: fsname, Op: op, Off: off, Err: fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))}
}

// Split cleans a path and returns its components (none for the root).
func Split(name string) []string {
	name = path.Clean("/" + strings.ReplaceAll(name, "\\", "/"))
	if name == "/" {
		return nil
	}
	return strings.Split(name[1:], "/")
}

// Clean returns the canonical "/a/b" form of a path.
func Clean(name string) string { return path.Clean("/" + name) }

// Resolve follows symbolic links in every component of name (like
// realpath inside the volume) and returns the final path and its entry.
// Absolute link targets are taken relative to the volume root.
func Resolve(ctx context.Context, f FS, name string) (string, Entry, error) {
	todo := Split(name)
	var done []string
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		if c == ".." {
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		if c == "." || c == "" {
			continue
		}
		p := "/" + strings.Join(append(done, c), "/")
		e, err := f.Stat(ctx, p)
		if err != nil {
			return p, Entry{}, err
		}
		if e.Mode&os.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		if hops++; hops > 40 {
			return p, Entry{}, &Error{FS: f.Type(), Op: "resolve", Path: name, Off: -1, Err: ErrLoop}
		}
		t, err := f.Readlink(ctx, p)
		if err != nil {
			return p, Entry{}, err
		}
		if strings.HasPrefix(t, "/") {
			done = nil
		}
		todo = append(strings.Split(t, "/"), todo...)
	}
	p := "/" + strings.Join(done, "/")
	e, err := f.Stat(ctx, p)
	return p, e, err
}

// ReadFile reads a whole file (for tests and small files).
func ReadFile(ctx context.Context, f FS, name string) ([]byte, error) {
	fl, err := f.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	b := make([]byte, fl.Size())
	n, err := fl.ReadAtContext(ctx, b, 0)
	if err == io.EOF && int64(n) == fl.Size() {
		err = nil
	}
	return b[:n], err
}
