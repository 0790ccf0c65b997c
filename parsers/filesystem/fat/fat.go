// Package fat reads FAT12, FAT16 and FAT32 volumes with VFAT long file
// names from an io.ReaderAt, read-only.
package fat

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

	"golang.org/x/text/encoding/charmap"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

const (
	attrReadOnly = 0x01
	attrVolume   = 0x08
	attrDir      = 0x10
	attrLFN      = 0x0F
	rootIno      = 1
	maxDirBytes  = 65536 * 32
	fatPage      = 32 << 10
)

// FS is an open FAT volume.
type FS struct {
	r           io.ReaderAt
	size        int64
	kind        string // fat12, fat16, fat32
	bps         int64
	clusterSize int64
	fatOff      int64 // byte offset of the first FAT
	fatSize     int64 // bytes of one FAT
	rootOff     int64 // FAT12/16 fixed root directory
	rootLen     int64
	rootClus    uint32
	dataOff     int64
	clusters    uint32 // count of data clusters
	label       string
	volID       uint32

	mu    sync.Mutex
	pages map[int64][]byte
	dirs  *filesystem.Cache[int64, *dir]
}

type node struct {
	name    string
	short   string
	attr    uint8
	cluster uint32
	size    uint32
	off     int64 // byte offset of the short entry: the inode number is off/32
	mtime   time.Time
	atime   time.Time
	btime   time.Time
}

type dir struct {
	ents  []node
	index map[string]int
	fold  map[string]int
}

// Probe reports whether r starts with a FAT boot sector.
func Probe(r io.ReaderAt, size int64) bool {
	_, err := parseBoot(r, size)
	return err == nil
}

func parseBoot(r io.ReaderAt, size int64) (*FS, error) {
	b := make([]byte, 512)
	if size < 512 {
		return nil, filesystem.Corrupt("fat", "read boot sector", 0, "volume of %d bytes", size)
	}
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, &filesystem.Error{FS: "fat", Op: "read boot sector", Off: 0, Err: err}
	}
	le := binary.LittleEndian
	bad := func(off int64, f string, a ...any) error {
		return filesystem.Corrupt("fat", "read boot sector", off, f, a...)
	}
	if b[0] != 0xEB && b[0] != 0xE9 {
		return nil, bad(0, "no jump instruction")
	}
	if string(b[3:11]) == "NTFS    " || string(b[3:11]) == "EXFAT   " {
		return nil, bad(3, "OEM name %q", b[3:11])
	}
	bps := int64(le.Uint16(b[11:]))
	spc := int64(b[13])
	res := int64(le.Uint16(b[14:]))
	nfats := int64(b[16])
	rootEnt := int64(le.Uint16(b[17:]))
	tot := int64(le.Uint16(b[19:]))
	if tot == 0 {
		tot = int64(le.Uint32(b[32:]))
	}
	fatSz := int64(le.Uint16(b[22:]))
	if fatSz == 0 {
		fatSz = int64(le.Uint32(b[36:]))
	}
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 {
		return nil, bad(11, "bytes per sector %d", bps)
	}
	if spc == 0 || spc&(spc-1) != 0 || res == 0 || nfats == 0 || nfats > 4 || fatSz == 0 || tot == 0 {
		return nil, bad(13, "sectors per cluster %d, reserved %d, FATs %d, FAT size %d, total %d", spc, res, nfats, fatSz, tot)
	}
	rootSecs := (rootEnt*32 + bps - 1) / bps
	dataSec := tot - res - nfats*fatSz - rootSecs
	if dataSec <= 0 {
		return nil, bad(19, "no data sectors")
	}
	f := &FS{r: r, size: size, bps: bps, clusterSize: bps * spc,
		fatOff: res * bps, fatSize: fatSz * bps,
		rootOff: (res + nfats*fatSz) * bps, rootLen: rootEnt * 32,
		dataOff: (res + nfats*fatSz + rootSecs) * bps,
		pages:   map[int64][]byte{}, dirs: filesystem.NewCache[int64, *dir](1 << 20)}
	nc := dataSec / spc
	if nc > 0x0FFFFFF5 {
		return nil, bad(32, "%d clusters", nc)
	}
	f.clusters = uint32(nc)
	labelOff := 43
	switch {
	case nc < 4085:
		f.kind = "fat12"
	case nc < 65525:
		f.kind = "fat16"
	default:
		f.kind = "fat32"
		f.rootClus = le.Uint32(b[44:])
		labelOff = 71
		if rootEnt != 0 {
			return nil, bad(17, "FAT32 with %d fixed root entries", rootEnt)
		}
	}
	if f.kind != "fat32" && rootEnt == 0 {
		return nil, bad(17, "no root directory entries")
	}
	need := int64(2)
	if f.kind == "fat12" {
		need = 1
	} else if f.kind == "fat32" {
		need = 4
	}
	if int64(nc+2)*need > f.fatSize*2 && f.kind != "fat12" || (f.kind == "fat12" && (int64(nc+2)*3+1)/2 > f.fatSize) {
		return nil, bad(22, "FAT of %d bytes too small for %d clusters", f.fatSize, nc)
	}
	if b[labelOff-5] == 0x29 || b[labelOff-5] == 0x28 {
		f.volID = le.Uint32(b[labelOff-4:])
		l := strings.TrimRight(string(b[labelOff:labelOff+11]), " ")
		if l != "NO NAME" {
			f.label = l
		}
	}
	return f, nil
}

// Open reads the boot sector and the volume label.
func Open(ctx context.Context, r io.ReaderAt, size int64) (*FS, error) {
	f, err := parseBoot(r, size)
	if err != nil {
		return nil, err
	}
	// Reading the root finds the label entry; a damaged root is reported
	// when it is listed.
	_, _ = f.readDir(ctx, 0, true)
	return f, nil
}

// Type returns "fat12", "fat16" or "fat32".
func (f *FS) Type() string { return f.kind }

// Label returns the volume label (root directory label entry first, then
// the boot sector's).
func (f *FS) Label() string { return f.label }

// VolumeID returns the volume serial number.
func (f *FS) VolumeID() uint32 { return f.volID }

// ClusterSize returns the bytes per cluster.
func (f *FS) ClusterSize() int64 { return f.clusterSize }

// next returns the FAT entry for cluster c.
func (f *FS) next(c uint32) (uint32, error) {
	var off int64
	switch f.kind {
	case "fat12":
		off = int64(c) + int64(c)/2
	case "fat16":
		off = int64(c) * 2
	default:
		off = int64(c) * 4
	}
	if off+4 > f.fatSize+2 {
		return 0, filesystem.Corrupt(f.kind, "read FAT", f.fatOff+off, "cluster %d beyond FAT", c)
	}
	var v [4]byte
	for i := int64(0); i < 4 && off+i < f.fatSize; i++ {
		b, err := f.fatByte(off + i)
		if err != nil {
			return 0, err
		}
		v[i] = b
	}
	x := binary.LittleEndian.Uint32(v[:])
	switch f.kind {
	case "fat12":
		if c&1 == 1 {
			x >>= 4
		}
		x &= 0xFFF
		if x >= 0xFF7 {
			x |= 0x0FFFF000
		}
	case "fat16":
		x &= 0xFFFF
		if x >= 0xFFF7 {
			x |= 0x0FFF0000
		}
	default:
		x &= 0x0FFFFFFF
	}
	return x, nil
}

func (f *FS) fatByte(off int64) (byte, error) {
	pg := off / fatPage
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pages[pg]
	if !ok {
		n := min(fatPage, f.fatSize-pg*fatPage)
		p = make([]byte, n)
		at := f.fatOff + pg*fatPage
		if _, err := f.r.ReadAt(p, at); err != nil && err != io.EOF {
			return 0, &filesystem.Error{FS: f.kind, Op: "read FAT", Off: at, Err: err}
		}
		if len(f.pages) > 256 {
			f.pages = map[int64][]byte{}
		}
		f.pages[pg] = p
	}
	if off-pg*fatPage >= int64(len(p)) {
		return 0, nil
	}
	return p[off-pg*fatPage], nil
}

type run struct {
	first uint32 // first cluster
	n     int64  // clusters
}

// chain follows the FAT from cluster c for at most max clusters.
func (f *FS) chain(c uint32, max int64) ([]run, error) {
	var out []run
	seen := int64(0)
	for c >= 2 && c < 0x0FFFFFF7 && seen < max {
		if seen > int64(f.clusters) {
			return out, filesystem.Corrupt(f.kind, "follow cluster chain", -1, "loop: chain longer than the volume")
		}
		if c > f.clusters+1 {
			return out, filesystem.Corrupt(f.kind, "follow cluster chain", -1, "cluster %d beyond %d clusters", c, f.clusters)
		}
		if k := len(out); k > 0 && out[k-1].first+uint32(out[k-1].n) == c {
			out[k-1].n++
		} else {
			out = append(out, run{c, 1})
		}
		seen++
		nx, err := f.next(c)
		if err != nil {
			return out, err
		}
		if nx == 0 || nx == 1 || nx == 0x0FFFFFF7 {
			return out, filesystem.Corrupt(f.kind, "follow cluster chain", -1, "cluster %d is followed by %#x", c, nx)
		}
		c = nx
	}
	return out, nil
}

func (f *FS) clusterOff(c uint32) int64 { return f.dataOff + int64(c-2)*f.clusterSize }

// readDir parses a directory starting at cluster c (c 0 = root).
func (f *FS) readDir(ctx context.Context, c uint32, root bool) (*dir, error) {
	key := int64(c)
	if root {
		key = -1
	}
	if d, ok := f.dirs.Get(key); ok {
		return d, nil
	}
	var raw []byte
	var offs []int64 // byte offset of each 32-byte slot
	if root && f.kind != "fat32" {
		raw = make([]byte, f.rootLen)
		if _, err := f.r.ReadAt(raw, f.rootOff); err != nil && err != io.EOF {
			return nil, &filesystem.Error{FS: f.kind, Op: "read root directory", Off: f.rootOff, Err: err}
		}
		for i := int64(0); i < f.rootLen/32; i++ {
			offs = append(offs, f.rootOff+i*32)
		}
	} else {
		if root {
			c = f.rootClus
		}
		runs, err := f.chain(c, maxDirBytes/f.clusterSize+1)
		if err != nil && len(runs) == 0 {
			return nil, err
		}
		for _, r := range runs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			off := f.clusterOff(r.first)
			b := make([]byte, r.n*f.clusterSize)
			if off+int64(len(b)) > f.size {
				return nil, filesystem.Corrupt(f.kind, "read directory", off, "beyond end of volume")
			}
			if _, err := f.r.ReadAt(b, off); err != nil && err != io.EOF {
				return nil, &filesystem.Error{FS: f.kind, Op: "read directory", Off: off, Err: err}
			}
			raw = append(raw, b...)
			for i := int64(0); i < int64(len(b))/32; i++ {
				offs = append(offs, off+i*32)
			}
		}
	}
	d := &dir{index: map[string]int{}, fold: map[string]int{}}
	var lfn []uint16
	var lfnSum uint8
	lfnNext := -1
	for i := 0; i+32 <= len(raw); i += 32 {
		e := raw[i : i+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 {
			lfn, lfnNext = nil, -1
			continue
		}
		attr := e[11]
		if attr&0x3F == attrLFN {
			ord := int(e[0] & 0x1F)
			if e[0]&0x40 != 0 {
				lfn, lfnSum, lfnNext = make([]uint16, 13*ord), e[13], ord
			}
			if ord != lfnNext || ord == 0 || e[13] != lfnSum || lfn == nil {
				lfn, lfnNext = nil, -1
				continue
			}
			part := lfn[(ord-1)*13:]
			for j := 0; j < 5; j++ {
				part[j] = binary.LittleEndian.Uint16(e[1+2*j:])
			}
			for j := 0; j < 6; j++ {
				part[5+j] = binary.LittleEndian.Uint16(e[14+2*j:])
			}
			for j := 0; j < 2; j++ {
				part[11+j] = binary.LittleEndian.Uint16(e[28+2*j:])
			}
			lfnNext = ord - 1
			continue
		}
		if attr&attrVolume != 0 {
			if root && attr&attrDir == 0 {
				f.label = strings.TrimRight(oem(e[:11]), " ")
			}
			lfn, lfnNext = nil, -1
			continue
		}
		short := shortName(e)
		nm := short
		if lfn != nil && lfnNext == 0 && checksum(e[:11]) == lfnSum {
			u := lfn
			for k, ch := range u {
				if ch == 0 {
					u = u[:k]
					break
				}
			}
			nm = string(utf16.Decode(u))
		}
		lfn, lfnNext = nil, -1
		if nm == "." || nm == ".." || nm == "" {
			continue
		}
		le := binary.LittleEndian
		n := node{
			name: nm, short: short, attr: attr, off: offs[i/32],
			cluster: uint32(le.Uint16(e[26:])),
			size:    le.Uint32(e[28:]),
			mtime:   dosTime(le.Uint16(e[24:]), le.Uint16(e[22:]), 0),
			atime:   dosTime(le.Uint16(e[18:]), 0, 0),
			btime:   dosTime(le.Uint16(e[16:]), le.Uint16(e[14:]), e[13]),
		}
		if f.kind == "fat32" {
			n.cluster |= uint32(le.Uint16(e[20:])) << 16
		}
		if _, dup := d.index[nm]; dup {
			continue
		}
		d.index[nm] = len(d.ents)
		d.fold[strings.ToLower(nm)] = len(d.ents)
		if _, ok := d.fold[strings.ToLower(short)]; !ok {
			d.fold[strings.ToLower(short)] = len(d.ents) // 8.3 alias
		}
		d.ents = append(d.ents, n)
	}
	f.dirs.Put(key, d, len(d.ents)+1)
	return d, nil
}

func checksum(n []byte) uint8 {
	var s uint8
	for _, c := range n {
		s = (s&1)<<7 + s>>1 + c
	}
	return s
}

var cp437 = charmap.CodePage437.NewDecoder()

func oem(b []byte) string {
	b = append([]byte(nil), b...)
	if len(b) > 0 && b[0] == 0x05 {
		b[0] = 0xE5
	}
	for _, c := range b {
		if c >= 0x80 {
			s, err := cp437.Bytes(b)
			if err == nil {
				return string(s)
			}
			break
		}
	}
	return string(b)
}

func shortName(e []byte) string {
	base := strings.TrimRight(oem(e[:8]), " ")
	ext := strings.TrimRight(oem(e[8:11]), " ")
	if e[12]&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if e[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext != "" {
		return base + "." + ext
	}
	return base
}

func dosTime(d, t uint16, tenth uint8) time.Time {
	if d == 0 {
		return time.Time{}
	}
	day := int(d & 0x1F)
	mon := time.Month(d >> 5 & 0xF)
	yr := int(d>>9) + 1980
	sec := int(t&0x1F) * 2
	ms := 0
	if tenth < 200 {
		sec += int(tenth) / 100
		ms = int(tenth) % 100 * 10
	}
	return time.Date(yr, mon, day, int(t>>11), int(t>>5&0x3F), sec, ms*1e6, time.UTC)
}

func (f *FS) rootNode() node {
	return node{name: "/", attr: attrDir, cluster: 0, off: -32}
}

// lookup walks a path; names match exactly, then ignoring case.
func (f *FS) lookup(ctx context.Context, p string) (node, error) {
	n := f.rootNode()
	for _, c := range filesystem.Split(p) {
		if n.attr&attrDir == 0 {
			return node{}, &filesystem.Error{FS: f.kind, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotDir}
		}
		d, err := f.dirOf(ctx, n)
		if err != nil {
			return node{}, err
		}
		i, ok := d.index[c]
		if !ok {
			i, ok = d.fold[strings.ToLower(c)]
		}
		if !ok {
			return node{}, &filesystem.Error{FS: f.kind, Op: "lookup", Path: p, Off: -1, Err: filesystem.ErrNotExist}
		}
		n = d.ents[i]
	}
	return n, nil
}

func (f *FS) dirOf(ctx context.Context, n node) (*dir, error) {
	if n.off == -32 {
		return f.readDir(ctx, 0, true)
	}
	if n.cluster == 0 {
		// ".." style pointer to the root, or an empty directory
		return &dir{index: map[string]int{}, fold: map[string]int{}}, nil
	}
	return f.readDir(ctx, n.cluster, false)
}

func (f *FS) entry(n node) filesystem.Entry {
	e := filesystem.Entry{Name: n.name, Ino: uint64(n.off/32 + 1), Nlink: 1, Mtime: n.mtime, Atime: n.atime, Btime: n.btime}
	if n.off == -32 {
		e.Ino = rootIno
	}
	if n.attr&attrDir != 0 {
		e.Mode = os.ModeDir | 0o755
		e.Nlink = 2
	} else {
		e.Mode = 0o644
		e.Size = int64(n.size)
	}
	if n.attr&attrReadOnly != 0 {
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
		return nil, &filesystem.Error{FS: f.kind, Op: "readdir", Path: p, Off: -1, Err: filesystem.ErrNotDir}
	}
	d, err := f.dirOf(ctx, n)
	if err != nil {
		return nil, err
	}
	out := make([]filesystem.Entry, len(d.ents))
	for i, c := range d.ents {
		out[i] = f.entry(c)
	}
	return out, nil
}

// Readlink fails: FAT has no symbolic links.
func (f *FS) Readlink(ctx context.Context, p string) (string, error) {
	if _, err := f.lookup(ctx, p); err != nil {
		return "", err
	}
	return "", &filesystem.Error{FS: f.kind, Op: "readlink", Path: p, Off: -1, Err: filesystem.ErrNotSymlink}
}

// Open opens a file.
func (f *FS) Open(ctx context.Context, p string) (filesystem.File, error) {
	n, err := f.lookup(ctx, p)
	if err != nil {
		return nil, err
	}
	if n.attr&attrDir != 0 {
		return nil, &filesystem.Error{FS: f.kind, Op: "open", Path: p, Off: -1, Err: filesystem.ErrIsDir}
	}
	size := int64(n.size)
	need := (size + f.clusterSize - 1) / f.clusterSize
	var runs []run
	if need > 0 {
		runs, err = f.chain(n.cluster, need)
		if err == nil && int64(countClusters(runs)) < need {
			err = filesystem.Corrupt(f.kind, "open", n.off, "cluster chain of %d clusters for %d bytes", countClusters(runs), size)
		}
		if err != nil {
			return nil, &filesystem.Error{FS: f.kind, Op: "open", Path: p, Off: n.off, Err: err}
		}
	}
	return &file{f: f, size: size, runs: runs, path: p}, nil
}

func countClusters(r []run) int64 {
	var n int64
	for _, x := range r {
		n += x.n
	}
	return n
}

type file struct {
	f    *FS
	size int64
	runs []run
	path string
}

func (fl *file) Size() int64 { return fl.size }

func (fl *file) ReadAt(p []byte, off int64) (int, error) {
	return fl.ReadAtContext(context.Background(), p, off)
}

func (fl *file) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &filesystem.Error{FS: fl.f.kind, Op: "read", Path: fl.path, Off: off, Err: fmt.Errorf("negative offset")}
	}
	if off >= fl.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(len(p)) > fl.size-off {
		p = p[:fl.size-off]
	}
	cs := fl.f.clusterSize
	n := 0
	pos := int64(0) // file offset of the current run
	for _, r := range fl.runs {
		rl := r.n * cs
		if off+int64(n) >= pos+rl {
			pos += rl
			continue
		}
		if n >= len(p) {
			break
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		in := off + int64(n) - pos
		k := min(int64(len(p)-n), rl-in)
		phys := fl.f.clusterOff(r.first) + in
		if phys+k > fl.f.size {
			return n, filesystem.Corrupt(fl.f.kind, "read "+fl.path, phys, "data beyond end of volume")
		}
		m, err := fl.f.r.ReadAt(p[n:n+int(k)], phys)
		if err != nil && !(err == io.EOF && m == int(k)) {
			return n + m, &filesystem.Error{FS: fl.f.kind, Op: "read " + fl.path, Off: phys, Err: err}
		}
		n += int(k)
		pos += rl
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

func (fl *file) DataRanges(ctx context.Context) ([]filesystem.Range, error) {
	if fl.size == 0 {
		return nil, nil
	}
	return []filesystem.Range{{Off: 0, Len: fl.size}}, nil
}
