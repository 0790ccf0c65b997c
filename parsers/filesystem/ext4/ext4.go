// Package ext4 reads ext2, ext3 and ext4 volumes (block maps and extents,
// linear and htree directories, inline data, fast and slow symlinks, 64bit,
// meta_bg, metadata_csum volumes) from an io.ReaderAt, read-only.
package ext4

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

const (
	superOff   = 1024
	magic      = 0xEF53
	rootIno    = 2
	maxDirSize = 1 << 30

	incompatFiletype   = 0x2
	incompatMetaBG     = 0x10
	incompatExtents    = 0x40
	incompat64bit      = 0x80
	incompatInlineData = 0x8000
	roCompatSparse     = 0x1
	roCompatHugeFile   = 0x8

	flagIndex      = 0x1000
	flagHugeFile   = 0x40000
	flagExtents    = 0x80000
	flagInlineData = 0x10000000
)

const name = "ext4"

// FS is an open ext2/3/4 volume.
type FS struct {
	r           io.ReaderAt
	size        int64
	bs          int64
	blocks      uint64
	inodes      uint32
	ipg, bpg    uint32
	inodeSize   uint32
	firstData   uint32
	groups      uint32
	descSize    uint32
	incompat    uint32
	roCompat    uint32
	firstMetaBG uint32
	label       string
	kind        string
	inodeTables []uint64
	dirs        *filesystem.Cache[uint32, *dir]
}

type dirent struct {
	name string
	ino  uint32
	typ  uint8
}

type dir struct {
	ents  []dirent
	index map[string]int
}

// Probe reports whether r holds an ext2/3/4 superblock.
func Probe(r io.ReaderAt, size int64) bool {
	b := make([]byte, 2)
	if size < superOff+1024 {
		return false
	}
	if _, err := r.ReadAt(b, superOff+56); err != nil {
		return false
	}
	return binary.LittleEndian.Uint16(b) == magic
}

// Open reads the superblock and group descriptors of the volume.
func Open(ctx context.Context, r io.ReaderAt, size int64) (*FS, error) {
	sb := make([]byte, 1024)
	if size < superOff+1024 {
		return nil, filesystem.Corrupt(name, "read superblock", superOff, "volume of %d bytes is too small", size)
	}
	if _, err := r.ReadAt(sb, superOff); err != nil {
		return nil, &filesystem.Error{FS: name, Op: "read superblock", Off: superOff, Err: err}
	}
	le := binary.LittleEndian
	if le.Uint16(sb[56:]) != magic {
		return nil, filesystem.Corrupt(name, "read superblock", superOff+56, "bad magic %#x", le.Uint16(sb[56:]))
	}
	f := &FS{r: r, size: size, dirs: filesystem.NewCache[uint32, *dir](1 << 20)}
	f.inodes = le.Uint32(sb[0:])
	f.blocks = uint64(le.Uint32(sb[4:]))
	f.firstData = le.Uint32(sb[20:])
	logbs := le.Uint32(sb[24:])
	if logbs > 6 {
		return nil, filesystem.Corrupt(name, "read superblock", superOff+24, "block size 2^(10+%d)", logbs)
	}
	f.bs = 1024 << logbs
	f.bpg = le.Uint32(sb[32:])
	f.ipg = le.Uint32(sb[40:])
	rev := le.Uint32(sb[76:])
	f.inodeSize = 128
	if rev >= 1 {
		f.inodeSize = uint32(le.Uint16(sb[88:]))
		f.incompat = le.Uint32(sb[96:])
		f.roCompat = le.Uint32(sb[100:])
	}
	if f.inodeSize < 128 || f.inodeSize > uint32(f.bs) || f.inodeSize&(f.inodeSize-1) != 0 {
		return nil, filesystem.Corrupt(name, "read superblock", superOff+88, "inode size %d", f.inodeSize)
	}
	f.label = strings.TrimRight(string(sb[120:136]), "\x00")
	f.descSize = 32
	if f.incompat&incompat64bit != 0 {
		f.blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		f.descSize = uint32(le.Uint16(sb[0xFE:]))
		if f.descSize < 32 || f.descSize > 1024 || f.descSize&(f.descSize-1) != 0 {
			return nil, filesystem.Corrupt(name, "read superblock", superOff+0xFE, "group descriptor size %d", f.descSize)
		}
	}
	f.firstMetaBG = le.Uint32(sb[0x104:])
	if f.bpg == 0 || f.ipg == 0 || f.blocks == 0 || f.blocks <= uint64(f.firstData) {
		return nil, filesystem.Corrupt(name, "read superblock", superOff, "blocks %d, blocks per group %d, inodes per group %d", f.blocks, f.bpg, f.ipg)
	}
	groups := (f.blocks - uint64(f.firstData) + uint64(f.bpg) - 1) / uint64(f.bpg)
	if groups == 0 || groups > uint64(size/f.bs)+1 || groups*uint64(f.ipg) > 1<<32 {
		return nil, filesystem.Corrupt(name, "read superblock", superOff, "%d block groups for a %d-byte volume", groups, size)
	}
	f.groups = uint32(groups)
	switch {
	case f.incompat&(incompatExtents|incompat64bit|incompatInlineData) != 0:
		f.kind = "ext4"
	case le.Uint32(sb[92:])&0x4 != 0: // has_journal
		f.kind = "ext3"
	default:
		f.kind = "ext2"
	}
	if err := f.readGroups(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

func hasSuper(g uint32, sparse bool) bool {
	if g <= 1 || !sparse {
		return true
	}
	for _, b := range []uint32{3, 5, 7} {
		n := b
		for n < g {
			n *= b
		}
		if n == g {
			return true
		}
	}
	return false
}

// descBlock returns the block holding group descriptor g.
func (f *FS) descBlock(g uint32) uint64 {
	perBlock := uint32(f.bs) / f.descSize
	mbg := g / perBlock
	if f.incompat&incompatMetaBG == 0 || mbg < f.firstMetaBG {
		return uint64(f.firstData) + 1 + uint64(g/perBlock)
	}
	first := mbg * perBlock
	b := uint64(first)*uint64(f.bpg) + uint64(f.firstData)
	if hasSuper(first, f.roCompat&roCompatSparse != 0) {
		b++
	}
	return b
}

func (f *FS) readGroups(ctx context.Context) error {
	f.inodeTables = make([]uint64, f.groups)
	buf := make([]byte, f.bs)
	cur := uint64(1<<64 - 1)
	perBlock := uint32(f.bs) / f.descSize
	for g := uint32(0); g < f.groups; g++ {
		if g%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		blk := f.descBlock(g)
		if blk != cur {
			if err := f.readBlock(blk, buf); err != nil {
				return &filesystem.Error{FS: name, Op: "read group descriptors", Off: int64(blk) * f.bs, Err: err}
			}
			cur = blk
		}
		d := buf[(g%perBlock)*f.descSize:]
		t := uint64(binary.LittleEndian.Uint32(d[8:]))
		if f.descSize >= 64 {
			t |= uint64(binary.LittleEndian.Uint32(d[0x28:])) << 32
		}
		f.inodeTables[g] = t
	}
	return nil
}

func (f *FS) readBlock(blk uint64, buf []byte) error {
	if blk >= f.blocks || int64(blk) < 0 || int64(blk)*f.bs+int64(len(buf)) > f.size {
		return fmt.Errorf("%w: block %d beyond end of volume", filesystem.ErrCorrupt, blk)
	}
	_, err := f.r.ReadAt(buf, int64(blk)*f.bs)
	if err == io.EOF {
		err = nil
	}
	return err
}

// Type returns "ext2", "ext3" or "ext4".
func (f *FS) Type() string { return f.kind }

// Label returns the volume name.
func (f *FS) Label() string { return f.label }

// BlockSize returns the file system block size.
func (f *FS) BlockSize() int64 { return f.bs }

type inode struct {
	ino    uint32
	raw    []byte
	mode   uint16
	size   int64
	flags  uint32
	nlink  uint16
	blocks uint64
	acl    uint64
}

func (f *FS) readInode(ino uint32) (*inode, error) {
	if ino == 0 || ino > f.inodes || (ino-1)/f.ipg >= f.groups {
		return nil, filesystem.Corrupt(name, "read inode", -1, "inode number %d out of range", ino)
	}
	g, idx := (ino-1)/f.ipg, (ino-1)%f.ipg
	tbl := f.inodeTables[g]
	off := int64(tbl)*f.bs + int64(idx)*int64(f.inodeSize)
	if tbl == 0 || tbl >= f.blocks || off < 0 || off+int64(f.inodeSize) > f.size {
		return nil, filesystem.Corrupt(name, "read inode", off, "inode %d: inode table block %d out of range", ino, tbl)
	}
	raw := make([]byte, f.inodeSize)
	if _, err := f.r.ReadAt(raw, off); err != nil && err != io.EOF {
		return nil, &filesystem.Error{FS: name, Op: fmt.Sprintf("read inode %d", ino), Off: off, Err: err}
	}
	le := binary.LittleEndian
	in := &inode{ino: ino, raw: raw}
	in.mode = le.Uint16(raw[0:])
	in.size = int64(uint64(le.Uint32(raw[4:])) | uint64(le.Uint32(raw[108:]))<<32)
	in.flags = le.Uint32(raw[32:])
	in.nlink = le.Uint16(raw[26:])
	in.blocks = uint64(le.Uint32(raw[28:])) | uint64(le.Uint16(raw[116:]))<<32
	in.acl = uint64(le.Uint32(raw[104:])) | uint64(le.Uint16(raw[118:]))<<32
	if in.size < 0 {
		return nil, filesystem.Corrupt(name, "read inode", off, "inode %d: size %d", ino, in.size)
	}
	return in, nil
}

func (in *inode) isDir() bool     { return in.mode&0xF000 == 0x4000 }
func (in *inode) isSymlink() bool { return in.mode&0xF000 == 0xA000 }

func (f *FS) time(raw []byte, off, extraOff int) (t timeT) {
	sec := int64(int32(binary.LittleEndian.Uint32(raw[off:])))
	var nsec int64
	if len(raw) >= 132 && extraOff+4 <= 128+int(binary.LittleEndian.Uint16(raw[128:])) && extraOff+4 <= len(raw) {
		x := binary.LittleEndian.Uint32(raw[extraOff:])
		sec += int64(x&3) << 32
		nsec = int64(x >> 2)
		if nsec > 999999999 {
			nsec = 0
		}
	}
	return timeT{sec, nsec, true}
}

type timeT struct {
	sec, nsec int64
	ok        bool
}

func (f *FS) entry(in *inode, nm string) filesystem.Entry {
	le := binary.LittleEndian
	r := in.raw
	e := filesystem.Entry{
		Name:  nm,
		Ino:   uint64(in.ino),
		Mode:  filesystem.UnixMode(uint32(in.mode)),
		Size:  in.size,
		Nlink: uint32(in.nlink),
		UID:   uint32(le.Uint16(r[2:])) | uint32(le.Uint16(r[120:]))<<16,
		GID:   uint32(le.Uint16(r[24:])) | uint32(le.Uint16(r[122:]))<<16,
	}
	a, c, m := f.time(r, 8, 140), f.time(r, 12, 132), f.time(r, 16, 136)
	e.Atime = filesystem.Unix(a.sec, a.nsec)
	e.Ctime = filesystem.Unix(c.sec, c.nsec)
	e.Mtime = filesystem.Unix(m.sec, m.nsec)
	if len(r) >= 152 && 128+int(le.Uint16(r[128:])) >= 152 {
		b := f.time(r, 144, 148)
		e.Btime = filesystem.Unix(b.sec, b.nsec)
	}
	return e
}

// extent maps logical blocks [lblk, lblk+n) to physical blocks from pblk;
// pblk 0 with uninit means zeros.
type extent struct {
	lblk   uint64
	n      uint64
	pblk   uint64
	uninit bool
}

// mapping returns the allocated extents of an inode, sorted by logical block.
func (f *FS) mapping(ctx context.Context, in *inode) ([]extent, error) {
	nblk := (uint64(in.size) + uint64(f.bs) - 1) / uint64(f.bs)
	var out []extent
	var err error
	seen := map[uint64]bool{} // metadata blocks visited: a block used twice is a loop
	if in.flags&flagExtents != 0 {
		err = f.walkExtents(ctx, in, in.raw[40:100], 0, nblk, &out, seen)
	} else {
		err = f.walkBlockMap(ctx, in, nblk, &out, seen)
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lblk < out[j].lblk })
	for i := 1; i < len(out); i++ {
		if out[i].lblk < out[i-1].lblk+out[i-1].n {
			return nil, filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), -1, "overlapping extents at logical block %d", out[i].lblk)
		}
	}
	return out, nil
}

func (f *FS) walkExtents(ctx context.Context, in *inode, node []byte, depth int, nblk uint64, out *[]extent, seen map[uint64]bool) error {
	le := binary.LittleEndian
	if len(node) < 12 || le.Uint16(node[0:]) != 0xF30A {
		return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), -1, "bad extent header")
	}
	n := int(le.Uint16(node[2:]))
	d := int(le.Uint16(node[6:]))
	if 12+n*12 > len(node) || d > 5 || depth > 5 {
		return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), -1, "extent node with %d entries, depth %d", n, d)
	}
	for i := 0; i < n; i++ {
		e := node[12+i*12:]
		lblk := uint64(le.Uint32(e[0:]))
		if d == 0 {
			l := uint64(le.Uint16(e[4:]))
			uninit := false
			if l > 32768 {
				l -= 32768
				uninit = true
			}
			p := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if l == 0 || lblk >= nblk {
				continue
			}
			if lblk+l > nblk {
				l = nblk - lblk
			}
			if !uninit && (p == 0 || p+l > f.blocks || p+l < p) {
				return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), -1, "extent to blocks %d+%d beyond volume", p, l)
			}
			if uint64(len(*out)) > nblk || uint64(len(*out)) > f.blocks {
				return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), -1, "more extents than blocks")
			}
			*out = append(*out, extent{lblk, l, p, uninit})
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		p := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		if seen[p] {
			return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), int64(p)*f.bs, "extent node block %d used twice", p)
		}
		seen[p] = true
		buf := make([]byte, f.bs)
		if err := f.readBlock(p, buf); err != nil {
			return &filesystem.Error{FS: name, Op: fmt.Sprintf("map inode %d", in.ino), Off: int64(p) * f.bs, Err: err}
		}
		if int(le.Uint16(buf[6:])) != d-1 {
			return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), int64(p)*f.bs, "extent node depth %d under depth %d", le.Uint16(buf[6:]), d)
		}
		if err := f.walkExtents(ctx, in, buf, depth+1, nblk, out, seen); err != nil {
			return err
		}
	}
	return nil
}

func (f *FS) walkBlockMap(ctx context.Context, in *inode, nblk uint64, out *[]extent, seen map[uint64]bool) error {
	le := binary.LittleEndian
	per := uint64(f.bs / 4)
	add := func(l, p uint64) error {
		if p >= f.blocks {
			return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), -1, "block pointer %d beyond volume", p)
		}
		if k := len(*out); k > 0 {
			last := &(*out)[k-1]
			if last.lblk+last.n == l && last.pblk+last.n == p {
				last.n++
				return nil
			}
		}
		if uint64(len(*out)) >= f.blocks {
			return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), -1, "more runs than volume blocks")
		}
		*out = append(*out, extent{l, 1, p, false})
		return nil
	}
	var walk func(p uint64, level int, base uint64) error
	walk = func(p uint64, level int, base uint64) error {
		if base >= nblk {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if seen[p] {
			return filesystem.Corrupt(name, fmt.Sprintf("map inode %d", in.ino), int64(p)*f.bs, "indirect block %d used twice", p)
		}
		seen[p] = true
		buf := make([]byte, f.bs)
		if err := f.readBlock(p, buf); err != nil {
			return &filesystem.Error{FS: name, Op: fmt.Sprintf("map inode %d", in.ino), Off: int64(p) * f.bs, Err: err}
		}
		span := uint64(1)
		for i := 0; i < level; i++ {
			span *= per
		}
		for i := uint64(0); i < per; i++ {
			q := uint64(le.Uint32(buf[i*4:]))
			l := base + i*span
			if l >= nblk {
				break
			}
			if q == 0 {
				continue
			}
			var err error
			if level == 0 {
				err = add(l, q)
			} else {
				err = walk(q, level-1, l)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	for i := uint64(0); i < 12 && i < nblk; i++ {
		if q := uint64(le.Uint32(in.raw[40+i*4:])); q != 0 {
			if err := add(i, q); err != nil {
				return err
			}
		}
	}
	base := uint64(12)
	span := per
	for level := 0; level < 3; level++ {
		if q := uint64(le.Uint32(in.raw[88+level*4:])); q != 0 {
			if err := walk(q, level, base); err != nil {
				return err
			}
		}
		base += span
		span *= per
	}
	return nil
}

// inlineData returns the data of an inline-data inode: i_block then the
// system.data extended attribute in the inode body.
func (f *FS) inlineData(in *inode) ([]byte, error) {
	data := append([]byte(nil), in.raw[40:100]...)
	if v, ok := inodeXattr(in.raw, 7, "data"); ok {
		data = append(data, v...)
	}
	// Past the inline bytes the file reads as zeros (as the kernel does).
	return data[:min(int64(len(data)), in.size)], nil
}

// inodeXattr finds an extended attribute stored in the inode body.
func inodeXattr(raw []byte, index uint8, attr string) ([]byte, bool) {
	le := binary.LittleEndian
	if len(raw) <= 132 {
		return nil, false
	}
	start := 128 + int(le.Uint16(raw[128:]))
	if start+4 > len(raw) || le.Uint32(raw[start:]) != 0xEA020000 {
		return nil, false
	}
	base := start + 4
	p := base
	for p+16 <= len(raw) {
		if le.Uint32(raw[p:]) == 0 {
			break
		}
		nl := int(raw[p])
		idx := raw[p+1]
		voff := int(le.Uint16(raw[p+2:]))
		vsize := int(le.Uint32(raw[p+8:]))
		if p+16+nl > len(raw) {
			break
		}
		nm := string(raw[p+16 : p+16+nl])
		if idx == index && nm == attr {
			if base+voff+vsize > len(raw) || vsize < 0 || voff < 0 {
				return nil, false
			}
			return raw[base+voff : base+voff+vsize], true
		}
		p += (16 + nl + 3) &^ 3
	}
	return nil, false
}

// file is an open ext inode's data.
type file struct {
	f      *FS
	in     *inode
	ext    []extent
	inline []byte
}

func (f *FS) openInode(ctx context.Context, in *inode) (*file, error) {
	fl := &file{f: f, in: in}
	if in.flags&flagInlineData != 0 {
		d, err := f.inlineData(in)
		if err != nil {
			return nil, err
		}
		fl.inline = d
		return fl, nil
	}
	if in.isSymlink() && f.fastSymlink(in) {
		if in.size > 60 {
			return nil, filesystem.Corrupt(name, "read symlink", -1, "inode %d: fast symlink of %d bytes", in.ino, in.size)
		}
		fl.inline = in.raw[40 : 40+in.size]
		return fl, nil
	}
	ext, err := f.mapping(ctx, in)
	if err != nil {
		return nil, err
	}
	fl.ext = ext
	return fl, nil
}

func (f *FS) fastSymlink(in *inode) bool {
	if in.size >= 60 || in.flags&(flagExtents|flagInlineData) != 0 {
		return false
	}
	b := in.blocks
	if in.acl != 0 {
		sect := uint64(f.bs / 512)
		if b >= sect {
			b -= sect
		}
	}
	return b == 0
}

func (fl *file) Size() int64 { return fl.in.size }

func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	return fl.ReadAtContext(context.Background(), p, off)
}

func (fl *file) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &filesystem.Error{FS: name, Op: "read", Off: off, Err: fmt.Errorf("negative offset")}
	}
	size := fl.in.size
	if off >= size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > size-off {
		p = p[:size-off]
	}
	if fl.inline != nil || (len(fl.ext) == 0 && fl.in.flags&flagInlineData != 0) {
		n := 0
		if off < int64(len(fl.inline)) {
			n = copy(p, fl.inline[off:])
		}
		clear(p[n:])
		n = len(p)
		if n < want {
			return n, io.EOF
		}
		return n, nil
	}
	bs := fl.f.bs
	n := 0
	for n < len(p) {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		pos := off + int64(n)
		lblk := uint64(pos / bs)
		i := sort.Search(len(fl.ext), func(i int) bool { return fl.ext[i].lblk+fl.ext[i].n > lblk })
		if i == len(fl.ext) || fl.ext[i].lblk > lblk {
			// hole up to the next extent
			end := size
			if i < len(fl.ext) {
				end = int64(fl.ext[i].lblk) * bs
			}
			k := min(int64(len(p)-n), end-pos)
			clear(p[n : n+int(k)])
			n += int(k)
			continue
		}
		e := fl.ext[i]
		end := int64(e.lblk+e.n) * bs
		k := min(int64(len(p)-n), end-pos)
		if e.uninit {
			clear(p[n : n+int(k)])
		} else {
			phys := int64(e.pblk+(lblk-e.lblk))*bs + pos%bs
			if phys+k > fl.f.size {
				return n, filesystem.Corrupt(name, fmt.Sprintf("read inode %d", fl.in.ino), phys, "data beyond end of volume")
			}
			m, err := fl.f.r.ReadAt(p[n:n+int(k)], phys)
			if err != nil && !(err == io.EOF && m == int(k)) {
				return n + m, &filesystem.Error{FS: name, Op: fmt.Sprintf("read inode %d", fl.in.ino), Off: phys, Err: err}
			}
		}
		n += int(k)
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

func (fl *file) DataRanges(ctx context.Context) ([]filesystem.Range, error) {
	if fl.ext == nil {
		if fl.in.size == 0 {
			return nil, nil
		}
		return []filesystem.Range{{Off: 0, Len: fl.in.size}}, nil
	}
	var out []filesystem.Range
	bs := fl.f.bs
	for _, e := range fl.ext {
		if e.uninit {
			continue
		}
		r := filesystem.Range{Off: int64(e.lblk) * bs, Len: int64(e.n) * bs}
		if r.Off+r.Len > fl.in.size {
			r.Len = fl.in.size - r.Off
		}
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == r.Off {
			out[k-1].Len += r.Len
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// readDir parses the entries of directory inode in (cached).
func (f *FS) readDir(ctx context.Context, in *inode) (*dir, error) {
	if d, ok := f.dirs.Get(in.ino); ok {
		return d, nil
	}
	if !in.isDir() {
		return nil, &filesystem.Error{FS: name, Op: "readdir", Path: fmt.Sprintf("inode %d", in.ino), Off: -1, Err: filesystem.ErrNotDir}
	}
	if in.size > maxDirSize {
		return nil, filesystem.Corrupt(name, "readdir", -1, "directory inode %d of %d bytes", in.ino, in.size)
	}
	fl, err := f.openInode(ctx, in)
	if err != nil {
		return nil, err
	}
	d := &dir{index: map[string]int{}}
	if in.flags&flagInlineData != 0 {
		// 4-byte parent inode, then entries in the rest of i_block and in system.data.
		if len(fl.inline) < 4 {
			return nil, filesystem.Corrupt(name, "readdir", -1, "inline directory inode %d too short", in.ino)
		}
		main := fl.inline[4:min(len(fl.inline), 60)]
		if err := f.parseDirBlock(d, main, in.ino, -1); err != nil {
			return nil, err
		}
		if len(fl.inline) > 60 {
			if err := f.parseDirBlock(d, fl.inline[60:], in.ino, -1); err != nil {
				return nil, err
			}
		}
	} else {
		// Only allocated blocks hold entries: walk the extents, not the
		// (possibly huge, corrupt) size.
		buf := make([]byte, f.bs)
		for _, e := range fl.ext {
			for b := e.lblk; b < e.lblk+e.n; b++ {
				off := int64(b) * f.bs
				if off >= in.size {
					break
				}
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				n, err := fl.ReadAtContext(ctx, buf, off)
				if err != nil && err != io.EOF {
					return nil, err
				}
				if err := f.parseDirBlock(d, buf[:n], in.ino, off); err != nil {
					return nil, err
				}
				if len(d.ents) > 1<<24 {
					return nil, filesystem.Corrupt(name, "readdir", off, "directory inode %d with over %d entries", in.ino, 1<<24)
				}
			}
		}
	}
	f.dirs.Put(in.ino, d, len(d.ents)+1)
	return d, nil
}

func (f *FS) parseDirBlock(d *dir, b []byte, ino uint32, off int64) error {
	le := binary.LittleEndian
	for p := 0; p+8 <= len(b); {
		child := le.Uint32(b[p:])
		rl := int(le.Uint16(b[p+4:]))
		nl := int(b[p+6])
		typ := b[p+7]
		if f.incompat&incompatFiletype == 0 {
			nl = int(le.Uint16(b[p+6:]))
			typ = 0
		}
		if rl < 8 || p+rl > len(b) || 8+nl > rl {
			if child == 0 && rl == 0 && off < 0 {
				return nil // inline directory padding
			}
			return filesystem.Corrupt(name, fmt.Sprintf("readdir inode %d", ino), off, "bad entry at %d: rec_len %d name_len %d", p, rl, nl)
		}
		if child != 0 && nl > 0 {
			nm := string(b[p+8 : p+8+nl])
			if nm != "." && nm != ".." {
				if _, dup := d.index[nm]; !dup {
					d.index[nm] = len(d.ents)
					d.ents = append(d.ents, dirent{nm, child, typ})
				}
			}
		}
		p += rl
	}
	return nil
}

// lookup walks a path to its inode.
func (f *FS) lookup(ctx context.Context, p string) (*inode, string, error) {
	in, err := f.readInode(rootIno)
	if err != nil {
		return nil, "", err
	}
	base := "/"
	for _, c := range filesystem.Split(p) {
		d, err := f.readDir(ctx, in)
		if err != nil {
			if in.isDir() {
				return nil, "", err
			}
			return nil, "", &filesystem.Error{FS: name, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotDir}
		}
		i, ok := d.index[c]
		if !ok {
			return nil, "", &filesystem.Error{FS: name, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotExist}
		}
		if in, err = f.readInode(d.ents[i].ino); err != nil {
			return nil, "", err
		}
		base = c
	}
	return in, base, nil
}

// Root returns the root directory's entry.
func (f *FS) Root(ctx context.Context) (filesystem.Entry, error) { return f.Stat(ctx, "/") }

// Stat returns the entry for a path.
func (f *FS) Stat(ctx context.Context, p string) (filesystem.Entry, error) {
	in, base, err := f.lookup(ctx, p)
	if err != nil {
		return filesystem.Entry{}, err
	}
	return f.entry(in, base), nil
}

// ReadDir lists a directory.
func (f *FS) ReadDir(ctx context.Context, p string) ([]filesystem.Entry, error) {
	in, _, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	d, err := f.readDir(ctx, in)
	if err != nil {
		return nil, err
	}
	out := make([]filesystem.Entry, 0, len(d.ents))
	for i, de := range d.ents {
		if i%256 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		ci, err := f.readInode(de.ino)
		if err != nil {
			// keep the entry visible; opening it reports the error
			out = append(out, filesystem.Entry{Name: de.name, Ino: uint64(de.ino), Mode: direntMode(de.typ), Nlink: 1})
			continue
		}
		out = append(out, f.entry(ci, de.name))
	}
	return out, nil
}

func direntMode(t uint8) os.FileMode {
	switch t {
	case 2:
		return os.ModeDir
	case 7:
		return os.ModeSymlink
	}
	return 0
}

// Readlink returns a symbolic link's target.
func (f *FS) Readlink(ctx context.Context, p string) (string, error) {
	in, _, err := f.lookup(ctx, p)
	if err != nil {
		return "", err
	}
	if !in.isSymlink() {
		return "", &filesystem.Error{FS: name, Op: "readlink", Path: p, Off: -1, Err: filesystem.ErrNotSymlink}
	}
	if in.size > 1<<16 {
		return "", filesystem.Corrupt(name, "readlink "+p, -1, "target of %d bytes", in.size)
	}
	fl, err := f.openInode(ctx, in)
	if err != nil {
		return "", err
	}
	b := make([]byte, in.size)
	n, err := fl.ReadAtContext(ctx, b, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	return string(bytes.TrimRight(b[:n], "\x00")), nil
}

// Open opens a regular file (or any non-directory inode's data).
func (f *FS) Open(ctx context.Context, p string) (filesystem.File, error) {
	in, _, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if in.isDir() {
		return nil, &filesystem.Error{FS: name, Op: "open", Path: p, Off: -1, Err: filesystem.ErrIsDir}
	}
	return f.openInode(ctx, in)
}
