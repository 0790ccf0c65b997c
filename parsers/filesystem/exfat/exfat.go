// Package exfat reads exFAT volumes from an io.ReaderAt, read-only, written
// from Microsoft's published exFAT file system specification: boot sector,
// FAT chains and contiguous (NoFatChain) allocations, directory entry sets
// with checksums, UTC offsets and valid data length.
package exfat

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

const (
	name        = "exfat"
	rootIno     = 1
	maxDirBytes = 256 << 20
	attrRO      = 0x01
	attrDir     = 0x10
	fatPage     = 32 << 10
)

// FS is an open exFAT volume.
type FS struct {
	r           io.ReaderAt
	size        int64
	sectorSize  int64
	clusterSize int64
	fatOff      int64
	fatLen      int64
	heapOff     int64
	clusters    uint32
	rootClus    uint32
	serial      uint32
	label       string

	mu    sync.Mutex
	pages map[int64][]byte
	dirs  *filesystem.Cache[int64, *dir]
}

type node struct {
	name    string
	attr    uint16
	first   uint32
	noChain bool
	size    int64 // DataLength
	valid   int64 // ValidDataLength
	off     int64 // byte offset of the File entry
	mtime   time.Time
	atime   time.Time
	btime   time.Time
	damaged error
	isRoot  bool
}

type dir struct {
	ents  []node
	index map[string]int
	fold  map[string]int
}

// Probe reports whether r starts with an exFAT boot sector.
func Probe(r io.ReaderAt, size int64) bool {
	b := make([]byte, 11)
	if _, err := r.ReadAt(b, 0); err != nil {
		return false
	}
	return string(b[3:11]) == "EXFAT   "
}

// Open reads the boot sector and the root directory.
func Open(ctx context.Context, r io.ReaderAt, size int64) (*FS, error) {
	b := make([]byte, 512)
	if size < 512*24 {
		return nil, filesystem.Corrupt(name, "read boot sector", 0, "volume of %d bytes", size)
	}
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, &filesystem.Error{FS: name, Op: "read boot sector", Off: 0, Err: err}
	}
	if string(b[3:11]) != "EXFAT   " || b[510] != 0x55 || b[511] != 0xAA {
		return nil, filesystem.Corrupt(name, "read boot sector", 3, "no exFAT signature")
	}
	le := binary.LittleEndian
	bps, spc := uint(b[108]), uint(b[109])
	if bps < 9 || bps > 12 || bps+spc > 25 {
		return nil, filesystem.Corrupt(name, "read boot sector", 108, "sector shift %d, cluster shift %d", bps, spc)
	}
	f := &FS{r: r, size: size, sectorSize: 1 << bps, clusterSize: 1 << (bps + spc),
		pages: map[int64][]byte{}, dirs: filesystem.NewCache[int64, *dir](1 << 20)}
	f.fatOff = int64(le.Uint32(b[80:])) << bps
	f.fatLen = int64(le.Uint32(b[84:])) << bps
	f.heapOff = int64(le.Uint32(b[88:])) << bps
	f.clusters = le.Uint32(b[92:])
	f.rootClus = le.Uint32(b[96:])
	f.serial = le.Uint32(b[100:])
	if f.fatOff < 24<<bps || f.fatOff+f.fatLen > size || int64(f.clusters+2)*4 > f.fatLen || f.heapOff < f.fatOff+f.fatLen || f.clusters > 0xFFFFFFF5 {
		return nil, filesystem.Corrupt(name, "read boot sector", 80, "FAT at %d+%d, heap at %d, %d clusters", f.fatOff, f.fatLen, f.heapOff, f.clusters)
	}
	if f.rootClus < 2 || f.rootClus > f.clusters+1 {
		return nil, filesystem.Corrupt(name, "read boot sector", 96, "root cluster %d", f.rootClus)
	}
	if _, err := f.readDir(ctx, f.rootNode()); err != nil {
		return nil, err
	}
	return f, nil
}

// Type returns "exfat".
func (f *FS) Type() string { return name }

// Label returns the volume label.
func (f *FS) Label() string { return f.label }

// Serial returns the volume serial number.
func (f *FS) Serial() uint32 { return f.serial }

func (f *FS) rootNode() node {
	return node{name: "/", attr: attrDir, first: f.rootClus, size: -1, off: -32, isRoot: true}
}

func (f *FS) fatEntry(c uint32) (uint32, error) {
	off := int64(c) * 4
	if off+4 > f.fatLen {
		return 0, filesystem.Corrupt(name, "read FAT", f.fatOff+off, "cluster %d beyond FAT", c)
	}
	pg := off / fatPage
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pages[pg]
	if !ok {
		p = make([]byte, min(fatPage, f.fatLen-pg*fatPage))
		at := f.fatOff + pg*fatPage
		if _, err := f.r.ReadAt(p, at); err != nil && err != io.EOF {
			return 0, &filesystem.Error{FS: name, Op: "read FAT", Off: at, Err: err}
		}
		if len(f.pages) > 256 {
			f.pages = map[int64][]byte{}
		}
		f.pages[pg] = p
	}
	return binary.LittleEndian.Uint32(p[off-pg*fatPage:]), nil
}

type run struct {
	first uint32
	n     int64
}

// runs returns the clusters of an allocation covering want bytes (want < 0:
// follow the FAT chain to its end, bounded by maxDirBytes).
func (f *FS) runs(n node, want int64) ([]run, error) {
	if want == 0 {
		return nil, nil
	}
	if n.first < 2 || n.first > f.clusters+1 {
		return nil, filesystem.Corrupt(name, "map "+n.name, n.off, "first cluster %d", n.first)
	}
	need := (want + f.clusterSize - 1) / f.clusterSize
	if n.noChain {
		if int64(n.first)+need > int64(f.clusters)+2 {
			return nil, filesystem.Corrupt(name, "map "+n.name, n.off, "contiguous run %d+%d beyond heap", n.first, need)
		}
		return []run{{n.first, need}}, nil
	}
	limit := need
	if want < 0 {
		limit = min(maxDirBytes/f.clusterSize, int64(f.clusters))
	}
	if limit > int64(f.clusters) {
		return nil, filesystem.Corrupt(name, "map "+n.name, n.off, "%d clusters on a volume of %d", need, f.clusters)
	}
	var out []run
	c := n.first
	for got := int64(0); got < limit; got++ {
		if c < 2 || c > f.clusters+1 {
			if want < 0 && c >= 0xFFFFFFF8 {
				return out, nil
			}
			return out, filesystem.Corrupt(name, "map "+n.name, n.off, "cluster chain reaches %#x after %d clusters", c, got)
		}
		if k := len(out); k > 0 && out[k-1].first+uint32(out[k-1].n) == c {
			out[k-1].n++
		} else {
			out = append(out, run{c, 1})
		}
		nx, err := f.fatEntry(c)
		if err != nil {
			return out, err
		}
		c = nx
	}
	return out, nil
}

func (f *FS) clusterOff(c uint32) int64 { return f.heapOff + int64(c-2)*f.clusterSize }

func (f *FS) readDir(ctx context.Context, dn node) (*dir, error) {
	if d, ok := f.dirs.Get(dn.off); ok {
		return d, nil
	}
	if dn.size > maxDirBytes {
		return nil, filesystem.Corrupt(name, "readdir "+dn.name, dn.off, "directory of %d bytes", dn.size)
	}
	rs, err := f.runs(dn, dn.size)
	if err != nil {
		return nil, err
	}
	var raw []byte
	var offs []int64
	for _, r := range rs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		off := f.clusterOff(r.first)
		b := make([]byte, r.n*f.clusterSize)
		if off+int64(len(b)) > f.size {
			return nil, filesystem.Corrupt(name, "readdir "+dn.name, off, "beyond end of volume")
		}
		if _, err := f.r.ReadAt(b, off); err != nil && err != io.EOF {
			return nil, &filesystem.Error{FS: name, Op: "readdir " + dn.name, Off: off, Err: err}
		}
		raw = append(raw, b...)
		for i := int64(0); i < int64(len(b))/32; i++ {
			offs = append(offs, off+i*32)
		}
	}
	if dn.size >= 0 && int64(len(raw)) > dn.size {
		raw = raw[:dn.size]
	}
	le := binary.LittleEndian
	d := &dir{index: map[string]int{}, fold: map[string]int{}}
	for i := 0; i+32 <= len(raw); i += 32 {
		e := raw[i : i+32]
		t := e[0]
		if t == 0 {
			break
		}
		if t == 0x83 && dn.isRoot {
			cnt := min(int(e[1]), 11)
			f.label = decodeUTF16(e[2 : 2+2*cnt])
			continue
		}
		if t != 0x85 {
			continue
		}
		sec := int(e[1])
		n := node{off: offs[i/32], attr: le.Uint16(e[4:])}
		if sec < 2 || sec > 18 || i+32*(sec+1) > len(raw) {
			n.damaged = filesystem.Corrupt(name, "read entry set", n.off, "%d secondary entries", sec)
			continue // no name to list it under
		}
		set := raw[i : i+32*(sec+1)]
		var sum uint16
		for j, c := range set {
			if j == 2 || j == 3 {
				continue
			}
			sum = (sum<<15 | sum>>1) + uint16(c)
		}
		st := set[32:64]
		if st[0] != 0xC0 {
			continue
		}
		nameLen := int(st[3])
		var u []uint16
		for k := 2; k <= sec && len(u) < nameLen; k++ {
			fe := set[32*k : 32*k+32]
			if fe[0] != 0xC1 {
				break
			}
			for j := 0; j < 15 && len(u) < nameLen; j++ {
				u = append(u, le.Uint16(fe[2+2*j:]))
			}
		}
		n.name = string(utf16.Decode(u))
		if n.name == "" || len(u) != nameLen {
			continue
		}
		if sum != le.Uint16(e[2:]) {
			n.damaged = filesystem.Corrupt(name, "read entry set "+n.name, n.off, "set checksum %#04x, want %#04x", sum, le.Uint16(e[2:]))
		}
		n.noChain = st[1]&2 != 0
		n.valid = int64(le.Uint64(st[8:]))
		n.first = le.Uint32(st[20:])
		n.size = int64(le.Uint64(st[24:]))
		if n.size < 0 || n.valid < 0 || n.valid > n.size {
			n.damaged = filesystem.Corrupt(name, "read entry set "+n.name, n.off, "data length %d, valid %d", n.size, n.valid)
			n.size, n.valid = 0, 0
		}
		n.btime = stamp(le.Uint32(e[8:]), e[20], e[22])
		n.mtime = stamp(le.Uint32(e[12:]), e[21], e[23])
		n.atime = stamp(le.Uint32(e[16:]), 0, e[24])
		if _, dup := d.index[n.name]; dup {
			continue
		}
		d.index[n.name] = len(d.ents)
		d.fold[strings.ToLower(n.name)] = len(d.ents)
		d.ents = append(d.ents, n)
		i += 32 * sec
	}
	f.dirs.Put(dn.off, d, len(d.ents)+1)
	return d, nil
}

func decodeUTF16(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// stamp decodes an exFAT timestamp with its 10 ms increment and UTC offset.
func stamp(ts uint32, ms10 uint8, utcOff uint8) time.Time {
	if ts == 0 {
		return time.Time{}
	}
	sec := int(ts&0x1F) * 2
	ns := 0
	if ms10 < 200 {
		sec += int(ms10) / 100
		ns = int(ms10) % 100 * 10 * 1e6
	}
	t := time.Date(int(ts>>25)+1980, time.Month(ts>>21&0xF), int(ts>>16&0x1F), int(ts>>11&0x1F), int(ts>>5&0x3F), sec, ns, time.UTC)
	if utcOff&0x80 != 0 {
		off := int(int8(utcOff<<1) >> 1) // 7-bit signed, 15-minute units
		t = t.Add(-time.Duration(off) * 15 * time.Minute)
	}
	return t
}

func (f *FS) lookup(ctx context.Context, p string) (node, error) {
	n := f.rootNode()
	for _, c := range filesystem.Split(p) {
		if n.attr&attrDir == 0 {
			return node{}, &filesystem.Error{FS: name, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotDir}
		}
		if n.damaged != nil {
			return node{}, n.damaged
		}
		d, err := f.readDir(ctx, n)
		if err != nil {
			return node{}, err
		}
		i, ok := d.index[c]
		if !ok {
			i, ok = d.fold[strings.ToLower(c)]
		}
		if !ok {
			return node{}, &filesystem.Error{FS: name, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotExist}
		}
		n = d.ents[i]
	}
	return n, nil
}

func (f *FS) entry(n node) filesystem.Entry {
	e := filesystem.Entry{Name: n.name, Ino: uint64(n.off/32 + 1), Nlink: 1, Mtime: n.mtime, Atime: n.atime, Btime: n.btime, Mode: 0o644, Size: n.size}
	if n.isRoot {
		e.Ino, e.Size = rootIno, 0
	}
	if n.attr&attrDir != 0 {
		e.Mode, e.Size, e.Nlink = os.ModeDir|0o755, 0, 2
	}
	if n.attr&attrRO != 0 {
		e.Mode &^= 0o222
	}
	return e
}

// Root returns the root directory's entry.
func (f *FS) Root(ctx context.Context) (filesystem.Entry, error) { return f.Stat(ctx, "/") }

// Stat returns the entry for a path.
func (f *FS) Stat(ctx context.Context, p string) (filesystem.Entry, error) {
	n, err := f.lookup(ctx, p)
	if err != nil {
		return filesystem.Entry{}, err
	}
	return f.entry(n), nil
}

// ReadDir lists a directory.
func (f *FS) ReadDir(ctx context.Context, p string) ([]filesystem.Entry, error) {
	n, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if n.attr&attrDir == 0 {
		return nil, &filesystem.Error{FS: name, Op: "readdir", Path: p, Off: -1, Err: filesystem.ErrNotDir}
	}
	if n.damaged != nil {
		return nil, n.damaged
	}
	d, err := f.readDir(ctx, n)
	if err != nil {
		return nil, err
	}
	out := make([]filesystem.Entry, len(d.ents))
	for i, c := range d.ents {
		out[i] = f.entry(c)
	}
	return out, nil
}

// Readlink fails: exFAT has no symbolic links.
func (f *FS) Readlink(ctx context.Context, p string) (string, error) {
	if _, err := f.lookup(ctx, p); err != nil {
		return "", err
	}
	return "", &filesystem.Error{FS: name, Op: "readlink", Path: p, Off: -1, Err: filesystem.ErrNotSymlink}
}

// Open opens a file.
func (f *FS) Open(ctx context.Context, p string) (filesystem.File, error) {
	n, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if n.attr&attrDir != 0 {
		return nil, &filesystem.Error{FS: name, Op: "open", Path: p, Off: -1, Err: filesystem.ErrIsDir}
	}
	if n.damaged != nil {
		return nil, n.damaged
	}
	rs, err := f.runs(n, n.valid)
	if err != nil {
		return nil, err
	}
	return &file{f: f, n: n, runs: rs, path: p}, nil
}

type file struct {
	f    *FS
	n    node
	runs []run
	path string
}

func (fl *file) Size() int64 { return fl.n.size }

func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	return fl.ReadAtContext(context.Background(), p, off)
}

func (fl *file) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &filesystem.Error{FS: name, Op: "read " + fl.path, Off: off, Err: fmt.Errorf("negative offset")}
	}
	if off >= fl.n.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(len(p)) > fl.n.size-off {
		p = p[:fl.n.size-off]
	}
	valid := int(max(0, min(int64(len(p)), fl.n.valid-off)))
	cs := fl.f.clusterSize
	n := 0
	pos := int64(0)
	for _, r := range fl.runs {
		if n >= valid {
			break
		}
		rl := r.n * cs
		if off+int64(n) >= pos+rl {
			pos += rl
			continue
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		in := off + int64(n) - pos
		k := min(int64(valid-n), rl-in)
		phys := fl.f.clusterOff(r.first) + in
		if phys+k > fl.f.size {
			return n, filesystem.Corrupt(name, "read "+fl.path, phys, "data beyond end of volume")
		}
		m, err := fl.f.r.ReadAt(p[n:n+int(k)], phys)
		if err != nil && !(err == io.EOF && m == int(k)) {
			return n + m, &filesystem.Error{FS: name, Op: "read " + fl.path, Off: phys, Err: err}
		}
		n += int(k)
		pos += rl
	}
	if n < valid {
		return n, filesystem.Corrupt(name, "read "+fl.path, off+int64(n), "allocation shorter than valid data")
	}
	clear(p[valid:]) // past ValidDataLength reads as zeros
	n = len(p)
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

func (fl *file) DataRanges(ctx context.Context) ([]filesystem.Range, error) {
	if fl.n.valid == 0 {
		return nil, nil
	}
	return []filesystem.Range{{Off: 0, Len: fl.n.valid}}, nil
}
