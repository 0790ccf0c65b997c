// Package ntfs reads NTFS volumes from an io.ReaderAt, read-only, as a
// filesystem.FS: an adapter over www.velocidex.com/golang/go-ntfs that adds
// hard links, sparse ranges, symlinks/junctions (reparse points) and turns
// any panic of the library into an error for that one call.
package ntfs

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode/utf16"

	ntfsparser "www.velocidex.com/golang/go-ntfs/parser"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

const (
	rootMFT       = 5
	attrFileName  = 48
	attrData      = 128
	attrIndexRoot = 144
	attrReparse   = 0xC0
	attrStdInfo   = 16

	tagSymlink    = 0xA000000C
	tagMountPoint = 0xA0000003
	tagLxSymlink  = 0xA000001D

	siReadOnly = 0x1
	siSystem   = 0x4
	siReparse  = 0x400
)

const name = "ntfs"

// FS is an open NTFS volume. The library is not safe for concurrent use, so
// every call holds mu.
type FS struct {
	mu    sync.Mutex
	ntfs  *ntfsparser.NTFSContext
	size  int64
	label string
	dirs  *filesystem.Cache[uint64, *dir]
	nodes *filesystem.Cache[uint64, *node]
}

type dirent struct {
	name string
	mft  uint64
}

type dir struct {
	ents  []dirent
	index map[string]int
	fold  map[string]int
}

// node is what we keep of one MFT record.
type node struct {
	mft     uint64
	isDir   bool
	size    int64
	init    int64
	nlink   uint32
	siFlags uint32
	target  string // symlink or junction target
	isLink  bool
	e       filesystem.Entry
}

// Probe reports whether r starts with an NTFS boot sector.
func Probe(r io.ReaderAt, size int64) bool {
	b := make([]byte, 11)
	if _, err := r.ReadAt(b, 0); err != nil {
		return false
	}
	return string(b[3:11]) == "NTFS    "
}

func recoverErr(op, path string, err *error) {
	if r := recover(); r != nil {
		*err = &filesystem.Error{FS: name, Op: op, Path: path, Off: -1, Err: fmt.Errorf("%w: %v", filesystem.ErrCorrupt, r)}
	}
}

// Open reads the boot sector and bootstraps the MFT.
func Open(ctx context.Context, r io.ReaderAt, size int64) (f *FS, err error) {
	defer recoverErr("open volume", "", &err)
	if !Probe(r, size) {
		return nil, filesystem.Corrupt(name, "read boot sector", 3, "no NTFS signature")
	}
	pr, err := ntfsparser.NewPagedReader(&bounded{r, size}, 4096, 4096)
	if err != nil {
		return nil, &filesystem.Error{FS: name, Op: "open volume", Off: 0, Err: err}
	}
	nc, err := ntfsparser.GetNTFSContext(pr, 0)
	if err != nil {
		return nil, &filesystem.Error{FS: name, Op: "read boot sector", Off: 0, Err: fmt.Errorf("%w: %v", filesystem.ErrCorrupt, err)}
	}
	f = &FS{ntfs: nc, size: size, dirs: filesystem.NewCache[uint64, *dir](1 << 20), nodes: filesystem.NewCache[uint64, *node](1 << 18)}
	if vol, err := nc.GetMFT(3); err == nil {
		for _, a := range vol.EnumerateAttributes(nc) {
			if a.Type().Value == 0x60 && a.DataSize() < 512 { // $VOLUME_NAME
				b := make([]byte, a.DataSize())
				n, _ := a.Data(nc).ReadAt(b, 0)
				f.label = decodeUTF16(b[:n])
			}
		}
	}
	if _, err := f.node(rootMFT); err != nil {
		return nil, err
	}
	return f, nil
}

// bounded keeps the library from reading past the volume.
type bounded struct {
	r    io.ReaderAt
	size int64
}

func (b *bounded) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= b.size {
		return 0, io.EOF
	}
	if int64(len(p)) > b.size-off {
		n, err := b.r.ReadAt(p[:b.size-off], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return b.r.ReadAt(p, off)
}

func decodeUTF16(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// Type returns "ntfs".
func (f *FS) Type() string { return name }

// Label returns the volume label.
func (f *FS) Label() string { return f.label }

// node loads what we need of MFT record id (mu held by the caller or at Open).
func (f *FS) node(id uint64) (*node, error) {
	if n, ok := f.nodes.Get(id); ok {
		return n, nil
	}
	nc := f.ntfs
	m, err := nc.GetMFT(int64(id))
	if err != nil {
		return nil, &filesystem.Error{FS: name, Op: fmt.Sprintf("read MFT record %d", id), Off: -1, Err: fmt.Errorf("%w: %v", filesystem.ErrCorrupt, err)}
	}
	if !m.Magic().IsValid() {
		return nil, filesystem.Corrupt(name, fmt.Sprintf("read MFT record %d", id), -1, "bad record signature")
	}
	n := &node{mft: id, isDir: m.Flags().IsSet("DIRECTORY")}
	var si *ntfsparser.STANDARD_INFORMATION
	dataSeen := false
	for _, a := range m.EnumerateAttributes(nc) {
		switch a.Type().Value {
		case attrStdInfo:
			si = nc.Profile.STANDARD_INFORMATION(a.Data(nc), 0)
			n.siFlags = uint32(si.Flags().Value)
		case attrFileName:
			fn := nc.Profile.FILE_NAME(a.Data(nc), 0)
			if fn.NameType().Value != 2 { // not a DOS-only alias
				n.nlink++
			}
		case attrData:
			if a.Name() != "" || dataSeen || (!a.IsResident() && a.Runlist_vcn_start() != 0) {
				continue
			}
			dataSeen = true
			n.size = a.DataSize()
			n.init = n.size
			if !a.IsResident() {
				n.init = int64(a.Initialized_size())
			}
		case attrReparse:
			if a.DataSize() > 16<<10 {
				continue
			}
			b := make([]byte, a.DataSize())
			k, _ := a.Data(nc).ReadAt(b, 0)
			if t, ok := parseReparse(b[:k]); ok {
				n.target, n.isLink = t, true
			}
		}
	}
	if !n.isDir && !n.isLink && n.siFlags&siSystem != 0 && n.size > 8 && n.size <= 8+2*4096 && n.size == n.init {
		// ntfs-3g (and Services for Unix) store symlinks as system files
		// holding "IntxLNK\x01" and the UTF-16 target.
		if rr, err := ntfsparser.OpenStream(nc, m, attrData, ntfsparser.WILDCARD_STREAM_ID, ""); err == nil {
			b := make([]byte, n.size)
			k, _ := rr.ReadAt(b, 0)
			if k == len(b) && string(b[:8]) == "IntxLNK\x01" {
				n.target, n.isLink = decodeUTF16(b[8:]), true
			}
		}
	}
	if n.size < 0 || n.init < 0 || n.init > n.size {
		n.init = max(0, min(n.init, n.size))
	}
	if n.size < 0 {
		return nil, filesystem.Corrupt(name, fmt.Sprintf("read MFT record %d", id), -1, "data size %d", n.size)
	}
	if n.nlink == 0 {
		n.nlink = 1
	}
	e := filesystem.Entry{Ino: id, Nlink: n.nlink, Size: n.size, Mode: 0o644}
	if si != nil {
		e.Mtime = si.File_altered_time().Time
		e.Atime = si.File_accessed_time().Time
		e.Ctime = si.Mft_altered_time().Time
		e.Btime = si.Create_time().Time
	}
	switch {
	case n.isLink:
		e.Mode = os.ModeSymlink | 0o777
		e.Size = int64(len(n.target))
	case n.isDir:
		e.Mode = os.ModeDir | 0o755
		e.Size = 0
	}
	if n.siFlags&siReadOnly != 0 && !n.isLink {
		e.Mode &^= 0o222
	}
	n.e = e
	f.nodes.Put(id, n, 1)
	return n, nil
}

// parseReparse decodes symlink, junction and WSL symlink reparse data.
func parseReparse(b []byte) (string, bool) {
	if len(b) < 8 {
		return "", false
	}
	le := binary.LittleEndian
	tag := le.Uint32(b)
	body := b[8:]
	switch tag {
	case tagLxSymlink:
		if len(body) < 4 {
			return "", false
		}
		return string(body[4:]), true
	case tagSymlink, tagMountPoint:
		hdr := 8
		if tag == tagSymlink {
			hdr = 12
		}
		if len(body) < hdr {
			return "", false
		}
		subOff, subLen := int(le.Uint16(body[0:])), int(le.Uint16(body[2:]))
		prOff, prLen := int(le.Uint16(body[4:])), int(le.Uint16(body[6:]))
		buf := body[hdr:]
		pick := func(o, l int) string {
			if o+l > len(buf) || l == 0 {
				return ""
			}
			return decodeUTF16(buf[o : o+l])
		}
		t := pick(prOff, prLen)
		if t == "" {
			t = strings.TrimPrefix(pick(subOff, subLen), `\??\`)
		}
		if t == "" {
			return "", false
		}
		return strings.ReplaceAll(t, `\`, "/"), true
	}
	return "", false
}

// isMetafile reports names Windows hides at the root: the NTFS metafiles.
func isMetafile(parent uint64, nm string, mft uint64) bool {
	return parent == rootMFT && mft < 27 && strings.HasPrefix(nm, "$")
}

func (f *FS) readDir(ctx context.Context, id uint64) (d *dir, err error) {
	if d, ok := f.dirs.Get(id); ok {
		return d, nil
	}
	defer recoverErr("readdir", fmt.Sprintf("MFT record %d", id), &err)
	nc := f.ntfs
	m, err := nc.GetMFT(int64(id))
	if err != nil {
		return nil, &filesystem.Error{FS: name, Op: fmt.Sprintf("read MFT record %d", id), Off: -1, Err: err}
	}
	d = &dir{index: map[string]int{}, fold: map[string]int{}}
	for i, rec := range m.Dir(nc) {
		if i%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		fn := rec.File()
		if fn.NameType().Value == 2 { // DOS 8.3 alias
			continue
		}
		nm := fn.Name()
		ref := rec.MftReference()
		if nm == "" || nm == "." || ref == id || isMetafile(id, nm, ref) {
			continue
		}
		if _, dup := d.index[nm]; dup {
			continue
		}
		d.index[nm] = len(d.ents)
		d.fold[strings.ToLower(nm)] = len(d.ents)
		d.ents = append(d.ents, dirent{nm, ref})
	}
	f.dirs.Put(id, d, len(d.ents)+1)
	return d, nil
}

func (f *FS) lookup(ctx context.Context, p string) (*node, string, error) {
	n, err := f.node(rootMFT)
	if err != nil {
		return nil, "", err
	}
	base := "/"
	for _, c := range filesystem.Split(p) {
		if !n.isDir || n.isLink {
			return nil, "", &filesystem.Error{FS: name, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotDir}
		}
		d, err := f.readDir(ctx, n.mft)
		if err != nil {
			return nil, "", err
		}
		i, ok := d.index[c]
		if !ok {
			i, ok = d.fold[strings.ToLower(c)]
		}
		if !ok {
			return nil, "", &filesystem.Error{FS: name, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotExist}
		}
		if n, err = f.node(d.ents[i].mft); err != nil {
			return nil, "", err
		}
		base = d.ents[i].name
	}
	return n, base, nil
}

// Root returns the root directory's entry.
func (f *FS) Root(ctx context.Context) (filesystem.Entry, error) { return f.Stat(ctx, "/") }

// Stat returns the entry for a path.
func (f *FS) Stat(ctx context.Context, p string) (e filesystem.Entry, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer recoverErr("stat", p, &err)
	n, base, err := f.lookup(ctx, p)
	if err != nil {
		return e, err
	}
	e = n.e
	e.Name = base
	return e, nil
}

// ReadDir lists a directory; a child whose MFT record is damaged is listed
// with what the index knows, and reports its error when opened.
func (f *FS) ReadDir(ctx context.Context, p string) (out []filesystem.Entry, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer recoverErr("readdir", p, &err)
	n, _, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if !n.isDir || n.isLink {
		return nil, &filesystem.Error{FS: name, Op: "readdir", Path: p, Off: -1, Err: filesystem.ErrNotDir}
	}
	d, err := f.readDir(ctx, n.mft)
	if err != nil {
		return nil, err
	}
	out = make([]filesystem.Entry, 0, len(d.ents))
	for i, de := range d.ents {
		if i%256 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c, err := f.safeNode(de.mft)
		if err != nil {
			out = append(out, filesystem.Entry{Name: de.name, Ino: de.mft, Nlink: 1})
			continue
		}
		e := c.e
		e.Name = de.name
		out = append(out, e)
	}
	return out, nil
}

func (f *FS) safeNode(id uint64) (n *node, err error) {
	defer recoverErr("stat", fmt.Sprintf("MFT record %d", id), &err)
	return f.node(id)
}

// Readlink returns the target of a symlink or junction, with '/'
// separators.
func (f *FS) Readlink(ctx context.Context, p string) (t string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer recoverErr("readlink", p, &err)
	n, _, err := f.lookup(ctx, p)
	if err != nil {
		return "", err
	}
	if !n.isLink {
		return "", &filesystem.Error{FS: name, Op: "readlink", Path: p, Off: -1, Err: filesystem.ErrNotSymlink}
	}
	return n.target, nil
}

// Open opens the unnamed $DATA stream of a file.
func (f *FS) Open(ctx context.Context, p string) (fl filesystem.File, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer recoverErr("open", p, &err)
	n, _, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if n.isDir {
		return nil, &filesystem.Error{FS: name, Op: "open", Path: p, Off: -1, Err: filesystem.ErrIsDir}
	}
	if n.size == 0 {
		return &file{f: f, n: n, path: p}, nil
	}
	m, err := f.ntfs.GetMFT(int64(n.mft))
	if err != nil {
		return nil, &filesystem.Error{FS: name, Op: "open", Path: p, Off: -1, Err: err}
	}
	rr, err := ntfsparser.OpenStream(f.ntfs, m, attrData, ntfsparser.WILDCARD_STREAM_ID, "")
	if err != nil {
		return nil, &filesystem.Error{FS: name, Op: "open", Path: p, Off: -1, Err: fmt.Errorf("%w: no data stream: %v", filesystem.ErrCorrupt, err)}
	}
	return &file{f: f, n: n, rr: rr, path: p}, nil
}

type file struct {
	f    *FS
	n    *node
	rr   ntfsparser.RangeReaderAt
	path string
}

func (fl *file) Size() int64 { return fl.n.size }

func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	return fl.ReadAtContext(context.Background(), p, off)
}

func (fl *file) ReadAtContext(ctx context.Context, p []byte, off int64) (n int, err error) {
	if off < 0 {
		return 0, &filesystem.Error{FS: name, Op: "read " + fl.path, Off: off, Err: fmt.Errorf("negative offset")}
	}
	if off >= fl.n.size {
		return 0, io.EOF
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	want := len(p)
	if int64(len(p)) > fl.n.size-off {
		p = p[:fl.n.size-off]
	}
	fl.f.mu.Lock()
	defer fl.f.mu.Unlock()
	defer recoverErr("read", fl.path, &err)
	// Data past the initialized size reads as zeros.
	valid := len(p)
	if off+int64(valid) > fl.n.init {
		valid = int(max(0, fl.n.init-off))
	}
	for n < valid {
		m, err := fl.rr.ReadAt(p[n:valid], off+int64(n))
		n += m
		if err != nil && err != io.EOF {
			return n, &filesystem.Error{FS: name, Op: "read " + fl.path, Off: off + int64(n), Err: err}
		}
		if m == 0 {
			if n < valid {
				return n, filesystem.Corrupt(name, "read "+fl.path, off+int64(n), "stream ends before its size")
			}
			break
		}
	}
	clear(p[valid:])
	n = len(p)
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

func (fl *file) DataRanges(ctx context.Context) (out []filesystem.Range, err error) {
	if fl.rr == nil {
		return nil, nil
	}
	fl.f.mu.Lock()
	defer fl.f.mu.Unlock()
	defer recoverErr("data ranges", fl.path, &err)
	for _, r := range fl.rr.Ranges() {
		if r.IsSparse || r.Offset >= fl.n.init {
			continue
		}
		l := min(r.Length, fl.n.init-r.Offset)
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == r.Offset {
			out[k-1].Len += l
			continue
		}
		out = append(out, filesystem.Range{Off: r.Offset, Len: l})
	}
	return out, nil
}
