package vdisk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zlib"
)

const (
	vmdkMagic        = 0x564d444b // "KDMV" little-endian
	vmdkGDAtEnd      = 0xFFFFFFFFFFFFFFFF
	vmdkFlagNL       = 1 << 0
	vmdkFlagRGD      = 1 << 1
	vmdkFlagZeroGTE  = 1 << 2
	vmdkFlagCompress = 1 << 16
	vmdkFlagMarkers  = 1 << 17
	vmdkMarkerEOS    = 0
	vmdkMarkerGT     = 1
	vmdkMarkerGD     = 2
	vmdkMarkerFooter = 3
	vmdkGTCacheMax   = 256
	vmdkMaxGrain     = 1 << 20 // bytes; the specification allows up to 128 KiB in practice
	vmdkDescMax      = 1 << 20
)

// VMDKHeader is the sparse extent header (SparseExtentHeader).
type VMDKHeader struct {
	Version          uint32
	Flags            uint32
	Capacity         uint64 // sectors
	GrainSize        uint64 // sectors
	DescriptorOffset uint64 // sectors
	DescriptorSize   uint64 // sectors
	NumGTEsPerGT     uint32
	RGDOffset        uint64
	GDOffset         uint64
	OverHead         uint64
	UncleanShutdown  uint8
	CompressAlgo     uint16
}

func parseVMDKHeader(b []byte, off int64) (VMDKHeader, error) {
	var h VMDKHeader
	le := binary.LittleEndian
	if len(b) < 512 || le.Uint32(b) != vmdkMagic {
		return h, corrupt("vmdk", off, "no sparse extent magic \"KDMV\"")
	}
	h.Version = le.Uint32(b[4:])
	h.Flags = le.Uint32(b[8:])
	h.Capacity = le.Uint64(b[12:])
	h.GrainSize = le.Uint64(b[20:])
	h.DescriptorOffset = le.Uint64(b[28:])
	h.DescriptorSize = le.Uint64(b[36:])
	h.NumGTEsPerGT = le.Uint32(b[44:])
	h.RGDOffset = le.Uint64(b[48:])
	h.GDOffset = le.Uint64(b[56:])
	h.OverHead = le.Uint64(b[64:])
	h.UncleanShutdown = b[72]
	h.CompressAlgo = le.Uint16(b[77:])
	return h, nil
}

func (h *VMDKHeader) marshal() []byte {
	b := make([]byte, 512)
	le := binary.LittleEndian
	le.PutUint32(b, vmdkMagic)
	le.PutUint32(b[4:], h.Version)
	le.PutUint32(b[8:], h.Flags)
	le.PutUint64(b[12:], h.Capacity)
	le.PutUint64(b[20:], h.GrainSize)
	le.PutUint64(b[28:], h.DescriptorOffset)
	le.PutUint64(b[36:], h.DescriptorSize)
	le.PutUint32(b[44:], h.NumGTEsPerGT)
	le.PutUint64(b[48:], h.RGDOffset)
	le.PutUint64(b[56:], h.GDOffset)
	le.PutUint64(b[64:], h.OverHead)
	b[72] = h.UncleanShutdown
	b[73], b[74], b[75], b[76] = '\n', ' ', '\r', '\n'
	le.PutUint16(b[77:], h.CompressAlgo)
	return b
}

// VMDKSparse reads one hosted sparse extent: monolithicSparse,
// streamOptimized, or a twoGbMaxExtentSparse piece.
type VMDKSparse struct {
	r          io.ReaderAt
	fileSize   int64
	Header     VMDKHeader
	Descriptor []byte // embedded descriptor text, if any
	size       int64
	grain      int64 // bytes
	gd         []uint32
	gdOff      int64

	mu  sync.Mutex
	gts map[uint32][]uint32
}

// OpenVMDKSparse opens a sparse VMDK extent of fileSize bytes.
func OpenVMDKSparse(r io.ReaderAt, fileSize int64) (*VMDKSparse, error) {
	b := make([]byte, 512)
	if err := readAt("vmdk", r, b, 0, "header"); err != nil {
		return nil, err
	}
	h, err := parseVMDKHeader(b, 0)
	if err != nil {
		return nil, err
	}
	if h.Version < 1 || h.Version > 3 {
		return nil, unsupported("vmdk", 4, "sparse extent version %d", h.Version)
	}
	if h.GDOffset == vmdkGDAtEnd {
		// streamOptimized: the real header is the footer before the EOS marker.
		foff := fileSize - 1024
		if foff < 512 {
			return nil, corrupt("vmdk", 56, "grain directory at end but file of %d bytes has no footer", fileSize)
		}
		if err := readAt("vmdk", r, b, foff, "footer"); err != nil {
			return nil, err
		}
		f, err := parseVMDKHeader(b, foff)
		if err != nil {
			return nil, err
		}
		if f.GDOffset == vmdkGDAtEnd {
			return nil, corrupt("vmdk", foff+56, "footer has no grain directory offset")
		}
		h.GDOffset = f.GDOffset
		h.RGDOffset = f.RGDOffset
	}
	if h.Flags&vmdkFlagCompress != 0 && h.CompressAlgo != 1 {
		return nil, unsupported("vmdk", 77, "compression algorithm %d", h.CompressAlgo)
	}
	if h.GrainSize < 1 || h.GrainSize*512 > vmdkMaxGrain || h.GrainSize&(h.GrainSize-1) != 0 {
		return nil, corrupt("vmdk", 20, "grain size %d sectors", h.GrainSize)
	}
	if h.NumGTEsPerGT < 1 || h.NumGTEsPerGT > 1<<16 {
		return nil, corrupt("vmdk", 44, "%d entries per grain table", h.NumGTEsPerGT)
	}
	if h.Capacity > 1<<52 {
		return nil, corrupt("vmdk", 12, "capacity %d sectors", h.Capacity)
	}
	v := &VMDKSparse{r: r, fileSize: fileSize, Header: h, size: int64(h.Capacity) * 512, grain: int64(h.GrainSize) * 512}
	if h.DescriptorOffset > 0 && h.DescriptorSize > 0 {
		doff := int64(h.DescriptorOffset) * 512
		dlen := int64(h.DescriptorSize) * 512
		if h.DescriptorOffset < uint64(fileSize) && h.DescriptorSize <= vmdkDescMax/512 && doff+dlen <= fileSize {
			d := make([]byte, dlen)
			if err := readAt("vmdk", r, d, doff, "embedded descriptor"); err != nil {
				return nil, err
			}
			if i := bytes.IndexByte(d, 0); i >= 0 {
				d = d[:i]
			}
			v.Descriptor = d
		}
	}
	perGT := int64(h.NumGTEsPerGT) * v.grain
	ngt := (v.size + perGT - 1) / perGT
	if ngt > 0 {
		v.gdOff = int64(h.GDOffset) * 512
		if h.GDOffset > uint64(fileSize) || v.gdOff+ngt*4 > fileSize {
			return nil, corrupt("vmdk", 56, "grain directory at sector %d (%d entries) beyond file of %d bytes", h.GDOffset, ngt, fileSize)
		}
		raw := make([]byte, ngt*4)
		if err := readAt("vmdk", r, raw, v.gdOff, "grain directory"); err != nil {
			return nil, err
		}
		v.gd = make([]uint32, ngt)
		for i := range v.gd {
			v.gd[i] = binary.LittleEndian.Uint32(raw[i*4:])
		}
	}
	v.gts = make(map[uint32][]uint32)
	return v, nil
}

// Size is the virtual size of the extent in bytes.
func (v *VMDKSparse) Size() int64 { return v.size }

func (v *VMDKSparse) gt(gdi int64) ([]uint32, error) {
	sec := v.gd[gdi]
	v.mu.Lock()
	t, ok := v.gts[sec]
	v.mu.Unlock()
	if ok {
		return t, nil
	}
	n := int64(v.Header.NumGTEsPerGT)
	off := int64(sec) * 512
	if off+n*4 > v.fileSize {
		return nil, corrupt("vmdk", v.gdOff+gdi*4, "grain table at sector %d beyond file", sec)
	}
	raw := make([]byte, n*4)
	if err := readAt("vmdk", v.r, raw, off, "grain table"); err != nil {
		return nil, err
	}
	t = make([]uint32, n)
	for i := range t {
		t[i] = binary.LittleEndian.Uint32(raw[i*4:])
	}
	v.mu.Lock()
	if len(v.gts) >= vmdkGTCacheMax {
		clear(v.gts)
	}
	v.gts[sec] = t
	v.mu.Unlock()
	return t, nil
}

// ReadAt reads virtual disk bytes; unallocated grains read as zeros.
func (v *VMDKSparse) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, v.size)
	p = p[:n]
	for len(p) > 0 {
		gi := off / v.grain
		in := off % v.grain
		chunk := min(int64(len(p)), v.grain-in)
		if err := v.readGrain(p[:chunk], gi, in); err != nil {
			return 0, err
		}
		p = p[chunk:]
		off += chunk
	}
	return n, eof
}

func (v *VMDKSparse) readGrain(p []byte, gi, in int64) error {
	per := int64(v.Header.NumGTEsPerGT)
	gdi := gi / per
	if v.gd[gdi] == 0 {
		zero(p)
		return nil
	}
	t, err := v.gt(gdi)
	if err != nil {
		return err
	}
	sec := t[gi%per]
	if sec <= 1 { // 0: unallocated, 1: zeroed grain
		zero(p)
		return nil
	}
	off := int64(sec) * 512
	if off >= v.fileSize {
		return corrupt("vmdk", int64(v.gd[gdi])*512+(gi%per)*4, "grain %d at sector %d beyond file", gi, sec)
	}
	if v.Header.Flags&vmdkFlagCompress == 0 {
		return readAt("vmdk", v.r, p, off+in, "grain")
	}
	var hdr [12]byte
	if err := readAt("vmdk", v.r, hdr[:], off, "compressed grain header"); err != nil {
		return err
	}
	clen := int64(binary.LittleEndian.Uint32(hdr[8:]))
	if clen == 0 || clen > 2*v.grain+1024 || off+12+clen > v.fileSize {
		return corrupt("vmdk", off+8, "compressed grain of %d bytes", clen)
	}
	cd := make([]byte, clen)
	if err := readAt("vmdk", v.r, cd, off+12, "compressed grain"); err != nil {
		return err
	}
	zr, err := zlib.NewReader(bytes.NewReader(cd))
	if err != nil {
		return ioErr("vmdk", off+12, "inflating grain", err)
	}
	defer zr.Close()
	g := make([]byte, v.grain)
	k, err := io.ReadFull(zr, g)
	if err != nil && err != io.ErrUnexpectedEOF {
		return ioErr("vmdk", off+12, "inflating grain", err)
	}
	if int64(k) < in+int64(len(p)) {
		// a short final grain: the rest reads as zeros
		clear(g[k:])
	}
	copy(p, g[in:])
	return nil
}

// VMDKExtent is one line of a descriptor's extent description.
type VMDKExtent struct {
	Access  string // RW, RDONLY, NOACCESS
	Sectors int64
	Type    string // FLAT, SPARSE, ZERO, VMFS, ...
	File    string
	Offset  int64 // sectors, FLAT only
}

// VMDKDescriptor is a parsed text descriptor.
type VMDKDescriptor struct {
	CreateType string
	CID        string
	ParentCID  string
	Extents    []VMDKExtent
	DDB        map[string]string
}

// ParseVMDKDescriptor parses descriptor text.
func ParseVMDKDescriptor(b []byte) (*VMDKDescriptor, error) {
	if len(b) > vmdkDescMax {
		return nil, corrupt("vmdk", 0, "descriptor of %d bytes", len(b))
	}
	d := &VMDKDescriptor{DDB: map[string]string{}}
	off := int64(0)
	for _, line := range strings.SplitAfter(string(b), "\n") {
		lineOff := off
		off += int64(len(line))
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		switch f := strings.Fields(line); {
		case len(f) >= 4 && (f[0] == "RW" || f[0] == "RDONLY" || f[0] == "NOACCESS"):
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || n <= 0 {
				return nil, corrupt("vmdk", lineOff, "extent size %q", f[1])
			}
			e := VMDKExtent{Access: f[0], Sectors: n, Type: f[2]}
			rest := afterFields(line, 3)
			if e.Type != "ZERO" {
				if len(rest) < 2 || rest[0] != '"' {
					return nil, corrupt("vmdk", lineOff, "extent file name not quoted")
				}
				end := strings.IndexByte(rest[1:], '"')
				if end < 0 {
					return nil, corrupt("vmdk", lineOff, "extent file name not closed")
				}
				e.File = rest[1 : 1+end]
				if tail := strings.Fields(rest[2+end:]); len(tail) > 0 {
					o, err := strconv.ParseInt(tail[0], 10, 64)
					if err != nil || o < 0 {
						return nil, corrupt("vmdk", lineOff, "extent offset %q", tail[0])
					}
					e.Offset = o
				}
			}
			d.Extents = append(d.Extents, e)
		case strings.Contains(line, "="):
			k, val, _ := strings.Cut(line, "=")
			k = strings.TrimSpace(k)
			val = strings.Trim(strings.TrimSpace(val), "\"")
			switch {
			case k == "createType":
				d.CreateType = val
			case k == "CID":
				d.CID = val
			case k == "parentCID":
				d.ParentCID = val
			case strings.HasPrefix(k, "ddb."):
				d.DDB[k] = val
			}
		}
	}
	if len(d.Extents) == 0 {
		return nil, corrupt("vmdk", 0, "descriptor has no extents")
	}
	return d, nil
}

// ExtentOpener opens an extent file named by a descriptor.
type ExtentOpener func(name string) (io.ReaderAt, int64, error)

// VMDKDescribed reads a disk made of a text descriptor and its extents
// (monolithicFlat, twoGbMaxExtentFlat/Sparse, vmfs).
type VMDKDescribed struct {
	Descriptor *VMDKDescriptor
	parts      []vmdkPart
	size       int64
}

type vmdkPart struct {
	start, len int64
	r          io.ReaderAt // nil for ZERO
	base       int64       // byte offset inside r
}

// OpenVMDKDescriptor opens a descriptor file of size bytes; open is called
// for each extent file it names.
func OpenVMDKDescriptor(r io.ReaderAt, size int64, open ExtentOpener) (*VMDKDescribed, error) {
	if size > vmdkDescMax || size < 0 {
		return nil, corrupt("vmdk", 0, "descriptor file of %d bytes", size)
	}
	b := make([]byte, size)
	if err := readAt("vmdk", r, b, 0, "descriptor"); err != nil {
		return nil, err
	}
	d, err := ParseVMDKDescriptor(b)
	if err != nil {
		return nil, err
	}
	if d.ParentCID != "" && d.ParentCID != "ffffffff" {
		return nil, unsupported("vmdk", 0, "child disk (parentCID %s)", d.ParentCID)
	}
	v := &VMDKDescribed{Descriptor: d}
	for _, e := range d.Extents {
		if e.Sectors > 1<<52 || v.size > 1<<62 {
			return nil, corrupt("vmdk", 0, "extent of %d sectors", e.Sectors)
		}
		p := vmdkPart{start: v.size, len: e.Sectors * 512}
		switch e.Type {
		case "ZERO":
		case "FLAT", "VMFS", "SPARSE", "VMFSSPARSE":
			er, esz, err := open(e.File)
			if err != nil {
				return nil, &Error{Format: "vmdk", Offset: -1, What: fmt.Sprintf("opening extent %q", e.File), Err: err}
			}
			if e.Type == "SPARSE" || e.Type == "VMFSSPARSE" {
				s, err := OpenVMDKSparse(er, esz)
				if err != nil {
					return nil, err
				}
				p.r = s
			} else {
				p.r = er
				p.base = e.Offset * 512
			}
		default:
			return nil, unsupported("vmdk", 0, "extent type %s", e.Type)
		}
		v.parts = append(v.parts, p)
		v.size += p.len
	}
	return v, nil
}

// Size is the virtual disk size in bytes.
func (v *VMDKDescribed) Size() int64 { return v.size }

// ReadAt reads virtual disk bytes across extents; bytes past the end of a
// short flat extent read as zeros, as qemu does.
func (v *VMDKDescribed) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, v.size)
	p = p[:n]
	for _, e := range v.parts {
		if len(p) == 0 {
			break
		}
		if off >= e.start+e.len {
			continue
		}
		in := off - e.start
		chunk := min(int64(len(p)), e.len-in)
		q := p[:chunk]
		if e.r == nil {
			zero(q)
		} else {
			k, err := e.r.ReadAt(q, e.base+in)
			if k < len(q) {
				if err != nil && err != io.EOF {
					return 0, ioErr("vmdk", e.base+in, "reading extent", err)
				}
				zero(q[k:])
			}
		}
		p = p[chunk:]
		off += chunk
	}
	return n, eof
}

// afterFields returns line without its first n space-separated fields.
func afterFields(line string, n int) string {
	for i := 0; i < n; i++ {
		line = strings.TrimLeft(line, " \t")
		if j := strings.IndexAny(line, " \t"); j >= 0 {
			line = line[j:]
		} else {
			return ""
		}
	}
	return strings.TrimSpace(line)
}
