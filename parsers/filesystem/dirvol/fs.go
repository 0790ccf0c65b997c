package dirvol

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

// FS is a directory volume opened for reading. It implements
// filesystem.FS; Manifest gives the entries themselves (for restore).
type FS struct {
	r        io.ReaderAt
	size     int64
	m        *Manifest
	byPath   map[string]int   // path → index in m.Entries
	children map[string][]int // directory path → children, by name
	nlink    map[int64]uint32 // slot → paths sharing it
}

var _ filesystem.FS = (*FS)(nil)

// Open reads the manifest of the address space r (size bytes) and checks
// that its entries form a tree: unique paths, every parent a directory.
func Open(ctx context.Context, r io.ReaderAt, size int64) (*FS, error) {
	m, err := Read(r, size)
	if err != nil {
		return nil, err
	}
	f := &FS{r: r, size: size, m: m, byPath: make(map[string]int, len(m.Entries)), children: map[string][]int{}, nlink: map[int64]uint32{}}
	for i, e := range m.Entries {
		if _, dup := f.byPath[e.Path]; dup {
			return nil, &FormatError{HeaderSize, fmt.Sprintf("path %q is listed twice", e.Path)}
		}
		f.byPath[e.Path] = i
		if e.Type == File {
			f.nlink[e.Slot]++
		}
	}
	if i, ok := f.byPath[""]; ok && m.Entries[i].Type != Dir {
		return nil, &FormatError{HeaderSize, "the root is not a directory"}
	}
	for i, e := range m.Entries {
		if e.Path == "" {
			continue
		}
		dir := parent(e.Path)
		if dir != "" {
			j, ok := f.byPath[dir]
			if !ok || m.Entries[j].Type != Dir {
				return nil, &FormatError{HeaderSize, fmt.Sprintf("%q: its parent %q is not a directory in the manifest", e.Path, dir)}
			}
		}
		f.children[dir] = append(f.children[dir], i)
	}
	for _, c := range f.children {
		sort.Slice(c, func(a, b int) bool { return m.Entries[c[a]].Path < m.Entries[c[b]].Path })
	}
	return f, nil
}

func parent(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// Manifest returns the volume's manifest (do not modify it).
func (f *FS) Manifest() *Manifest { return f.m }

// Type is "dirvol".
func (f *FS) Type() string { return "dirvol" }

// Label is empty: a directory volume has none.
func (f *FS) Label() string { return "" }

func key(name string) string { return strings.TrimPrefix(filesystem.Clean(name), "/") }

func (f *FS) lookup(op, name string) (int, Entry, error) {
	k := key(name)
	i, ok := f.byPath[k]
	if !ok {
		if k == "" {
			return -1, Entry{Type: Dir, Mode: 0o755}, nil // a manifest without a root entry
		}
		return 0, Entry{}, &filesystem.Error{FS: "dirvol", Op: op, Path: name, Off: -1, Err: filesystem.ErrNotExist}
	}
	return i, f.m.Entries[i], nil
}

func (f *FS) entry(i int, e Entry) filesystem.Entry {
	out := filesystem.Entry{Name: path.Base("/" + e.Path), UID: e.UID, GID: e.GID, Mtime: e.MtimeTime(), Nlink: 1}
	switch e.Type {
	case File:
		out.Mode = filesystem.UnixMode(0o100000 | e.Mode)
		out.Size = e.Size
		out.Ino = uint64(e.Slot)
		out.Nlink = f.nlink[e.Slot]
	case Dir:
		out.Mode = filesystem.UnixMode(0o040000 | e.Mode)
		out.Ino = uint64(MaxSlots) + uint64(i+1) // below MaxSlots are files
		out.Nlink = 2
		for _, c := range f.children[e.Path] {
			if f.m.Entries[c].Type == Dir {
				out.Nlink++
			}
		}
	case Symlink:
		out.Mode = filesystem.UnixMode(0o120000 | e.Mode)
		out.Size = int64(len(e.Target))
		out.Ino = uint64(MaxSlots) + uint64(i+1)
	}
	return out
}

// Root returns the root directory.
func (f *FS) Root(ctx context.Context) (filesystem.Entry, error) { return f.Stat(ctx, "/") }

// Stat returns one entry; symlinks are not followed.
func (f *FS) Stat(ctx context.Context, name string) (filesystem.Entry, error) {
	i, e, err := f.lookup("stat", name)
	if err != nil {
		return filesystem.Entry{}, err
	}
	return f.entry(i, e), nil
}

// ReadDir lists a directory, by name.
func (f *FS) ReadDir(ctx context.Context, name string) ([]filesystem.Entry, error) {
	_, e, err := f.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if e.Type != Dir {
		return nil, &filesystem.Error{FS: "dirvol", Op: "readdir", Path: name, Off: -1, Err: filesystem.ErrNotDir}
	}
	kids := f.children[e.Path]
	out := make([]filesystem.Entry, 0, len(kids))
	for _, c := range kids {
		out = append(out, f.entry(c, f.m.Entries[c]))
	}
	return out, nil
}

// Readlink returns a symlink's target.
func (f *FS) Readlink(ctx context.Context, name string) (string, error) {
	_, e, err := f.lookup("readlink", name)
	if err != nil {
		return "", err
	}
	if e.Type != Symlink {
		return "", &filesystem.Error{FS: "dirvol", Op: "readlink", Path: name, Off: -1, Err: filesystem.ErrNotSymlink}
	}
	return e.Target, nil
}

// Open opens a regular file.
func (f *FS) Open(ctx context.Context, name string) (filesystem.File, error) {
	_, e, err := f.lookup("open", name)
	if err != nil {
		return nil, err
	}
	if e.Type == Dir {
		return nil, &filesystem.Error{FS: "dirvol", Op: "open", Path: name, Off: -1, Err: filesystem.ErrIsDir}
	}
	if e.Type != File {
		return nil, &filesystem.Error{FS: "dirvol", Op: "open", Path: name, Off: -1, Err: filesystem.ErrUnsupported}
	}
	if Addr(e.Slot, e.Size) > f.size {
		return nil, &filesystem.Error{FS: "dirvol", Op: "open", Path: name, Off: Addr(e.Slot, 0), Err: fmt.Errorf("%w: slot %d lies past the %d-byte address space", filesystem.ErrCorrupt, e.Slot, f.size)}
	}
	return &file{r: f.r, base: Addr(e.Slot, 0), size: e.Size, path: name}, nil
}

// contextReaderAt is implemented by readers that can be cancelled (the
// repository's point reader).
type contextReaderAt interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

type file struct {
	r    io.ReaderAt
	base int64
	size int64
	path string
}

func (fl *file) Size() int64 { return fl.size }

func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	return fl.ReadAtContext(context.Background(), p, off)
}

func (fl *file) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &filesystem.Error{FS: "dirvol", Op: "read", Path: fl.path, Off: -1, Err: fmt.Errorf("negative offset %d", off)}
	}
	if off >= fl.size {
		return 0, io.EOF
	}
	want := p
	if rem := fl.size - off; int64(len(want)) > rem {
		want = want[:rem]
	}
	var n int
	var err error
	if cr, ok := fl.r.(contextReaderAt); ok {
		n, err = cr.ReadAtContext(ctx, want, fl.base+off)
	} else {
		n, err = fl.r.ReadAt(want, fl.base+off)
	}
	if n == len(want) {
		err = nil
		if len(want) < len(p) {
			err = io.EOF
		}
		return n, err
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, &filesystem.Error{FS: "dirvol", Op: "read", Path: fl.path, Off: fl.base + off + int64(n), Err: err}
}

// DataRanges is the whole file: holes are not recorded in the manifest
// (they read as zeros, and a restore leaves zero blocks as holes).
func (fl *file) DataRanges(ctx context.Context) ([]filesystem.Range, error) {
	if fl.size == 0 {
		return nil, nil
	}
	return []filesystem.Range{{Off: 0, Len: fl.size}}, nil
}

// FileMode returns the os.FileMode of an entry (type and permissions).
func FileMode(e Entry) os.FileMode {
	switch e.Type {
	case Dir:
		return filesystem.UnixMode(0o040000 | e.Mode)
	case Symlink:
		return filesystem.UnixMode(0o120000 | e.Mode)
	}
	return filesystem.UnixMode(0o100000 | e.Mode)
}
