package filesystem

import (
	"context"
	"fmt"
	"runtime/debug"
)

// Safe wraps f so that a panic inside any method (typically in a third-party
// library meeting corrupted input) becomes an error wrapping ErrCorrupt for
// that call, while the rest of the file system stays usable.
func Safe(f FS) FS {
	if s, ok := f.(*safeFS); ok {
		return s
	}
	return &safeFS{f}
}

type safeFS struct{ f FS }

func catch(fsname, op, name string, err *error) {
	if r := recover(); r != nil {
		*err = &Error{FS: fsname, Op: op, Path: name, Off: -1,
			Err: fmt.Errorf("%w: reader panicked: %v\n%s", ErrCorrupt, r, firstLines(debug.Stack(), 12))}
	}
}

func firstLines(b []byte, n int) string {
	for i, c := range b {
		if c == '\n' {
			if n--; n == 0 {
				return string(b[:i])
			}
		}
	}
	return string(b)
}

func (s *safeFS) Type() string  { return s.f.Type() }
func (s *safeFS) Label() string { return s.f.Label() }
func (s *safeFS) Root(ctx context.Context) (e Entry, err error) {
	defer catch(s.f.Type(), "root", "/", &err)
	return s.f.Root(ctx)
}
func (s *safeFS) Stat(ctx context.Context, name string) (e Entry, err error) {
	defer catch(s.f.Type(), "stat", name, &err)
	return s.f.Stat(ctx, name)
}
func (s *safeFS) ReadDir(ctx context.Context, name string) (es []Entry, err error) {
	defer catch(s.f.Type(), "readdir", name, &err)
	return s.f.ReadDir(ctx, name)
}
func (s *safeFS) Readlink(ctx context.Context, name string) (t string, err error) {
	defer catch(s.f.Type(), "readlink", name, &err)
	return s.f.Readlink(ctx, name)
}
func (s *safeFS) Open(ctx context.Context, name string) (fl File, err error) {
	defer catch(s.f.Type(), "open", name, &err)
	fl, err = s.f.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return &safeFile{f: fl, fs: s.f.Type(), name: name}, nil
}

type safeFile struct {
	f    File
	fs   string
	name string
}

func (s *safeFile) Size() int64 { return s.f.Size() }
func (s *safeFile) ReadAt(p []byte, off int64) (n int, err error) {
	return s.ReadAtContext(context.Background(), p, off)
}
func (s *safeFile) ReadAtContext(ctx context.Context, p []byte, off int64) (n int, err error) {
	defer catch(s.fs, "read", s.name, &err)
	return s.f.ReadAtContext(ctx, p, off)
}
func (s *safeFile) DataRanges(ctx context.Context) (r []Range, err error) {
	defer catch(s.fs, "data ranges", s.name, &err)
	return s.f.DataRanges(ctx)
}
