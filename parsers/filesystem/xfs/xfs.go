// Package xfs reads XFS volumes from an io.ReaderAt, read-only: directory
// walking comes from github.com/masahiro331/go-xfs-filesystem (wrapped so its
// panics become errors); inode cores, symlinks and file extents are decoded
// here so that times, owners, link counts, inode numbers and random-access
// reads are exact.
package xfs

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	xfslib "github.com/masahiro331/go-xfs-filesystem/xfs"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

const name = "xfs"

// FS is an open XFS volume. The library seeks a shared reader, so calls
// into it hold mu.
type FS struct {
	mu    sync.Mutex
	lib   *xfslib.FileSystem
	r     io.ReaderAt
	size  int64
	sb    xfslib.SuperBlock
	label string
	dirs  *filesystem.Cache[string, *dir]
}

type dirent struct {
	name string
	ino  uint64
}

type dir struct {
	ents  []dirent
	index map[string]int
}

// Probe reports whether r starts with an XFS superblock.
func Probe(r io.ReaderAt, size int64) bool {
	b := make([]byte, 4)
	if _, err := r.ReadAt(b, 0); err != nil {
		return false
	}
	return string(b) == "XFSB"
}

func recoverErr(op, p string, err *error) {
	if r := recover(); r != nil {
		*err = &filesystem.Error{FS: name, Op: op, Path: p, Off: -1, Err: fmt.Errorf("%w: %v", filesystem.ErrCorrupt, r)}
	}
}

// Open parses the superblock and the allocation group headers.
func Open(ctx context.Context, r io.ReaderAt, size int64) (f *FS, err error) {
	defer recoverErr("open volume", "", &err)
	if !Probe(r, size) {
		return nil, filesystem.Corrupt(name, "read superblock", 0, "no XFSB signature")
	}
	if err := checkSuper(r, size); err != nil {
		return nil, err
	}
	lib, err := xfslib.NewFS(*io.NewSectionReader(r, 0, size), nil)
	if err != nil {
		return nil, &filesystem.Error{FS: name, Op: "read superblock", Off: 0, Err: fmt.Errorf("%w: %v", filesystem.ErrCorrupt, err)}
	}
	sb := lib.PrimaryAG.SuperBlock
	if sb.BlockSize < 512 || sb.BlockSize > 65536 || sb.Inodesize < 256 && sb.Inodesize != 0 && sb.Inodesize < 128 || sb.Inodesize > 2048 {
		return nil, filesystem.Corrupt(name, "read superblock", 0, "block size %d, inode size %d", sb.BlockSize, sb.Inodesize)
	}
	f = &FS{lib: lib, r: r, size: size, sb: sb, label: strings.TrimRight(string(sb.Fname[:]), "\x00"),
		dirs: filesystem.NewCache[string, *dir](1 << 20)}
	if _, err := f.inode(sb.Rootino); err != nil {
		return nil, err
	}
	return f, nil
}

// checkSuper validates the superblock fields the library trusts (it parses
// one header per allocation group, so a corrupt AG count would make it loop
// for ages) before handing the volume over.
func checkSuper(r io.ReaderAt, size int64) error {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return &filesystem.Error{FS: name, Op: "read superblock", Off: 0, Err: err}
	}
	be := binary.BigEndian
	bs := int64(be.Uint32(b[4:]))
	agblocks := int64(be.Uint32(b[84:]))
	agcount := int64(be.Uint32(b[88:]))
	sect := int64(be.Uint16(b[102:]))
	isz := int64(be.Uint16(b[104:]))
	pow2 := func(v, lo, hi int64) bool { return v >= lo && v <= hi && v&(v-1) == 0 }
	switch {
	case !pow2(bs, 512, 65536), !pow2(sect, 512, 32768), !pow2(isz, 256, 2048):
		return filesystem.Corrupt(name, "read superblock", 4, "block size %d, sector size %d, inode size %d", bs, sect, isz)
	case agblocks < 5 || agcount < 1 || (agcount-1)*agblocks*bs >= size:
		return filesystem.Corrupt(name, "read superblock", 84, "%d allocation groups of %d blocks on %d bytes", agcount, agblocks, size)
	case int(b[124]) == 0 || int(b[124]) > 31 || int64(1)<<b[124] < agblocks: // agblklog
		return filesystem.Corrupt(name, "read superblock", 124, "agblklog %d for %d blocks", b[124], agblocks)
	}
	return nil
}

// Type returns "xfs".
func (f *FS) Type() string { return name }

// Label returns the volume label.
func (f *FS) Label() string { return f.label }

// inode is a decoded on-disk inode.
type inode struct {
	ino    uint64
	raw    []byte
	mode   uint16
	format uint8
	size   int64
	nlink  uint32
	fork   []byte // data fork
	e      filesystem.Entry
}

func (f *FS) inode(ino uint64) (*inode, error) {
	off := int64(f.sb.InodeAbsOffset(ino))
	isz := int64(f.sb.Inodesize)
	if off < 0 || off+isz > f.size {
		return nil, filesystem.Corrupt(name, fmt.Sprintf("read inode %d", ino), off, "beyond end of volume")
	}
	raw := make([]byte, isz)
	if _, err := f.r.ReadAt(raw, off); err != nil && err != io.EOF {
		return nil, &filesystem.Error{FS: name, Op: fmt.Sprintf("read inode %d", ino), Off: off, Err: err}
	}
	be := binary.BigEndian
	if string(raw[:2]) != "IN" {
		return nil, filesystem.Corrupt(name, fmt.Sprintf("read inode %d", ino), off, "bad inode magic %q", raw[:2])
	}
	in := &inode{ino: ino, raw: raw, mode: be.Uint16(raw[2:]), format: raw[5]}
	ver := raw[4]
	in.nlink = be.Uint32(raw[16:])
	if ver == 1 {
		in.nlink = uint32(be.Uint16(raw[6:]))
	}
	in.size = int64(be.Uint64(raw[56:]))
	if in.size < 0 {
		return nil, filesystem.Corrupt(name, fmt.Sprintf("read inode %d", ino), off, "size %d", in.size)
	}
	core := 100
	var flags2 uint64
	if ver >= 3 {
		core = 176
		flags2 = be.Uint64(raw[120:])
	}
	forkEnd := len(raw)
	if fo := int(raw[82]); fo != 0 {
		forkEnd = core + fo*8
	}
	if forkEnd > len(raw) || forkEnd < core {
		return nil, filesystem.Corrupt(name, fmt.Sprintf("read inode %d", ino), off, "fork offset %d", raw[82])
	}
	in.fork = raw[core:forkEnd]
	ts := func(o int) time.Time {
		if flags2&(1<<3) != 0 { // bigtime: ns since 1901-12-13T20:45:52Z
			v := be.Uint64(raw[o:])
			return filesystem.Unix(int64(v/1e9)-(1<<31), int64(v%1e9))
		}
		return filesystem.Unix(int64(int32(be.Uint32(raw[o:]))), int64(be.Uint32(raw[o+4:])%1e9))
	}
	in.e = filesystem.Entry{
		Ino: ino, Mode: filesystem.UnixMode(uint32(in.mode)), Size: in.size, Nlink: in.nlink,
		UID: be.Uint32(raw[8:]), GID: be.Uint32(raw[12:]),
		Atime: ts(32), Mtime: ts(40), Ctime: ts(48),
	}
	if ver >= 3 {
		in.e.Btime = ts(144)
	}
	if in.e.Mode.IsDir() {
		in.e.Size = 0
	}
	return in, nil
}

type extent struct {
	lblk, n, pblk uint64
	unwritten     bool
}

// extents decodes an extent-format data fork.
func (f *FS) extents(in *inode) ([]extent, error) {
	nrec := len(in.fork) / 16
	if n := int(binary.BigEndian.Uint32(in.raw[76:])); n < nrec {
		nrec = n
	}
	out := make([]extent, 0, nrec)
	for i := 0; i < nrec; i++ {
		hi := binary.BigEndian.Uint64(in.fork[i*16:])
		lo := binary.BigEndian.Uint64(in.fork[i*16+8:])
		e := extent{
			unwritten: hi>>63 != 0,
			lblk:      (hi >> 9) & (1<<54 - 1),
			pblk:      (hi&0x1FF)<<43 | lo>>21,
			n:         lo & (1<<21 - 1),
		}
		agno := e.pblk >> f.sb.Agblklog
		agbno := e.pblk & (1<<f.sb.Agblklog - 1)
		e.pblk = agno*uint64(f.sb.Agblocks) + agbno
		if e.n == 0 || int64((e.pblk+e.n)*uint64(f.sb.BlockSize)) > f.size {
			return nil, filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), -1, "extent %d+%d beyond volume", e.pblk, e.n)
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lblk < out[j].lblk })
	return out, nil
}

func entryInode(de fs.DirEntry) (uint64, bool) {
	// The library keeps the inode number unexported: read it by reflection
	// (the version is pinned in go.mod).
	v := reflect.ValueOf(de)
	for v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return 0, false
	}
	fi := v.FieldByName("FileInfo")
	if !fi.IsValid() {
		return 0, false
	}
	ip := fi.FieldByName("inode")
	if !ip.IsValid() || ip.IsNil() {
		return 0, false
	}
	ino := ip.Elem().FieldByName("inodeCore").FieldByName("Ino")
	if !ino.IsValid() || ino.Kind() != reflect.Uint64 {
		return 0, false
	}
	return ino.Uint(), true
}

// readDir lists a directory path through the library (cached by path).
func (f *FS) readDir(p string) (d *dir, err error) {
	p = filesystem.Clean(p)
	if d, ok := f.dirs.Get(p); ok {
		return d, nil
	}
	defer recoverErr("readdir", p, &err)
	f.mu.Lock()
	des, err := f.lib.ReadDir(strings.TrimPrefix(p, "/"))
	f.mu.Unlock()
	if err != nil {
		return nil, &filesystem.Error{FS: name, Op: "readdir", Path: p, Off: -1, Err: mapErr(err)}
	}
	d = &dir{index: map[string]int{}}
	for _, de := range des {
		ino, ok := entryInode(de)
		if !ok {
			return nil, filesystem.Corrupt(name, "readdir "+p, -1, "entry %q without inode", de.Name())
		}
		if _, dup := d.index[de.Name()]; dup {
			continue
		}
		d.index[de.Name()] = len(d.ents)
		d.ents = append(d.ents, dirent{de.Name(), ino})
	}
	f.dirs.Put(p, d, len(d.ents)+1)
	return d, nil
}

func mapErr(err error) error {
	if strings.Contains(err.Error(), "not exist") {
		return fmt.Errorf("%w: %v", filesystem.ErrNotExist, err)
	}
	return fmt.Errorf("%w: %v", filesystem.ErrCorrupt, err)
}

func (f *FS) lookup(ctx context.Context, p string) (*inode, string, error) {
	parts := filesystem.Split(p)
	if len(parts) == 0 {
		in, err := f.inode(f.sb.Rootino)
		return in, "/", err
	}
	parent := "/" + strings.Join(parts[:len(parts)-1], "/")
	if len(parts) > 1 {
		pin, _, err := f.lookup(ctx, parent)
		if err != nil {
			return nil, "", err
		}
		if !pin.e.Mode.IsDir() {
			return nil, "", &filesystem.Error{FS: name, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotDir}
		}
	}
	d, err := f.readDir(parent)
	if err != nil {
		return nil, "", err
	}
	base := parts[len(parts)-1]
	i, ok := d.index[base]
	if !ok {
		return nil, "", &filesystem.Error{FS: name, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotExist}
	}
	in, err := f.inode(d.ents[i].ino)
	return in, base, err
}

// Root returns the root directory's entry.
func (f *FS) Root(ctx context.Context) (filesystem.Entry, error) { return f.Stat(ctx, "/") }

// Stat returns the entry for a path.
func (f *FS) Stat(ctx context.Context, p string) (e filesystem.Entry, err error) {
	defer recoverErr("stat", p, &err)
	in, base, err := f.lookup(ctx, p)
	if err != nil {
		return e, err
	}
	e = in.e
	e.Name = base
	return e, nil
}

// ReadDir lists a directory.
func (f *FS) ReadDir(ctx context.Context, p string) (out []filesystem.Entry, err error) {
	defer recoverErr("readdir", p, &err)
	in, _, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if !in.e.Mode.IsDir() {
		return nil, &filesystem.Error{FS: name, Op: "readdir", Path: p, Off: -1, Err: filesystem.ErrNotDir}
	}
	d, err := f.readDir(p)
	if err != nil {
		return nil, err
	}
	out = make([]filesystem.Entry, 0, len(d.ents))
	for i, de := range d.ents {
		if i%256 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c, err := f.inode(de.ino)
		if err != nil {
			out = append(out, filesystem.Entry{Name: de.name, Ino: de.ino, Nlink: 1})
			continue
		}
		e := c.e
		e.Name = de.name
		out = append(out, e)
	}
	return out, nil
}

// Readlink returns a symbolic link's target (inline or in extents).
func (f *FS) Readlink(ctx context.Context, p string) (t string, err error) {
	defer recoverErr("readlink", p, &err)
	in, _, err := f.lookup(ctx, p)
	if err != nil {
		return "", err
	}
	if in.e.Mode&os.ModeSymlink == 0 {
		return "", &filesystem.Error{FS: name, Op: "readlink", Path: p, Off: -1, Err: filesystem.ErrNotSymlink}
	}
	if in.size > 1024 {
		return "", filesystem.Corrupt(name, "readlink "+p, -1, "target of %d bytes", in.size)
	}
	if in.format == 1 { // local
		if int(in.size) > len(in.fork) {
			return "", filesystem.Corrupt(name, "readlink "+p, -1, "inline target of %d bytes", in.size)
		}
		return string(in.fork[:in.size]), nil
	}
	fl, err := f.openInode(in, p)
	if err != nil {
		return "", err
	}
	b := make([]byte, in.size)
	n, err := fl.ReadAtContext(ctx, b, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	b = b[:n]
	// v5 remote symlink blocks start with a 56-byte header "XSLM".
	if len(b) >= 56 && string(b[:4]) == "XSLM" {
		full := make([]byte, in.size+56)
		n, _ = fl.readRaw(full, 0)
		b = full[56:n]
	}
	return string(b), nil
}

// Open opens a regular file.
func (f *FS) Open(ctx context.Context, p string) (fl filesystem.File, err error) {
	defer recoverErr("open", p, &err)
	in, _, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if in.e.Mode.IsDir() {
		return nil, &filesystem.Error{FS: name, Op: "open", Path: p, Off: -1, Err: filesystem.ErrIsDir}
	}
	return f.openInode(in, p)
}

func (f *FS) openInode(in *inode, p string) (*file, error) {
	fl := &file{f: f, in: in, path: p}
	switch in.format {
	case 2: // extents
		ext, err := f.extents(in)
		if err != nil {
			return nil, err
		}
		fl.ext = ext
	case 3: // B+tree: let the library map the blocks, read sequentially
		fl.btree = true
	case 1:
		if in.size > int64(len(in.fork)) {
			return nil, filesystem.Corrupt(name, "open "+p, -1, "local data of %d bytes", in.size)
		}
		fl.local = in.fork[:in.size]
	default:
		if in.size > 0 {
			return nil, filesystem.Corrupt(name, "open "+p, -1, "data fork format %d", in.format)
		}
	}
	return fl, nil
}

type file struct {
	f     *FS
	in    *inode
	path  string
	ext   []extent
	local []byte
	btree bool
}

func (fl *file) Size() int64 { return fl.in.size }

func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	return fl.ReadAtContext(context.Background(), p, off)
}

func (fl *file) ReadAtContext(ctx context.Context, p []byte, off int64) (n int, err error) {
	defer recoverErr("read", fl.path, &err)
	if off < 0 {
		return 0, &filesystem.Error{FS: name, Op: "read " + fl.path, Off: off, Err: fmt.Errorf("negative offset")}
	}
	if off >= fl.in.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(len(p)) > fl.in.size-off {
		p = p[:fl.in.size-off]
	}
	if fl.btree {
		n, err = fl.readBtree(ctx, p, off)
	} else if fl.local != nil {
		n = copy(p, fl.local[off:])
	} else {
		n, err = fl.readRaw(p, off)
	}
	if err != nil {
		return n, err
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// readRaw reads through the extent map, zero-filling holes and unwritten
// extents.
func (fl *file) readRaw(p []byte, off int64) (int, error) {
	bs := int64(fl.f.sb.BlockSize)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		lb := uint64(pos / bs)
		i := sort.Search(len(fl.ext), func(i int) bool { return fl.ext[i].lblk+fl.ext[i].n > lb })
		if i == len(fl.ext) || fl.ext[i].lblk > lb {
			end := int64(len(p)) + off
			if i < len(fl.ext) {
				end = min(end, int64(fl.ext[i].lblk)*bs)
			}
			clear(p[n : end-off])
			n = int(end - off)
			continue
		}
		e := fl.ext[i]
		k := min(int64(len(p)-n), int64(e.lblk+e.n)*bs-pos)
		if e.unwritten {
			clear(p[n : n+int(k)])
		} else {
			phys := int64(e.pblk+(lb-e.lblk))*bs + pos%bs
			m, err := fl.f.r.ReadAt(p[n:n+int(k)], phys)
			if err != nil && !(err == io.EOF && m == int(k)) {
				return n + m, &filesystem.Error{FS: name, Op: "read " + fl.path, Off: phys, Err: err}
			}
		}
		n += int(k)
	}
	return n, nil
}

// readBtree reads a B+tree-mapped file sequentially through the library.
func (fl *file) readBtree(ctx context.Context, p []byte, off int64) (int, error) {
	fl.f.mu.Lock()
	defer fl.f.mu.Unlock()
	h, err := fl.f.lib.Open(strings.TrimPrefix(filesystem.Clean(fl.path), "/"))
	if err != nil {
		return 0, &filesystem.Error{FS: name, Op: "open " + fl.path, Off: -1, Err: mapErr(err)}
	}
	defer h.Close()
	if _, err := io.CopyN(io.Discard, h, off); err != nil {
		return 0, &filesystem.Error{FS: name, Op: "read " + fl.path, Off: off, Err: err}
	}
	n, err := io.ReadFull(h, p)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return n, err
}

func (fl *file) DataRanges(ctx context.Context) ([]filesystem.Range, error) {
	if fl.ext == nil {
		if fl.in.size == 0 {
			return nil, nil
		}
		return []filesystem.Range{{Off: 0, Len: fl.in.size}}, nil
	}
	bs := int64(fl.f.sb.BlockSize)
	var out []filesystem.Range
	for _, e := range fl.ext {
		if e.unwritten {
			continue
		}
		r := filesystem.Range{Off: int64(e.lblk) * bs, Len: int64(e.n) * bs}
		if r.Off >= fl.in.size {
			continue
		}
		r.Len = min(r.Len, fl.in.size-r.Off)
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == r.Off {
			out[k-1].Len += r.Len
			continue
		}
		out = append(out, r)
	}
	return out, nil
}
