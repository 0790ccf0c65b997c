package vdisk

import (
	"encoding/binary"
	"io"
	"sync"
	"time"
)

// VHD disk types (footer field "Disk Type").
const (
	VHDTypeFixed        = 2
	VHDTypeDynamic      = 3
	VHDTypeDifferencing = 4
)

const (
	vhdFooterSize    = 512
	vhdDynHeaderSize = 1024
	vhdMaxBlockSize  = 256 << 20
	vhdNoBlock       = 0xFFFFFFFF
	// vhdMaxCHS is the largest geometry the footer can express.
	vhdMaxCHS = 65535 * 16 * 255
)

var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// VHDFooter is the 512-byte VHD footer (hard disk footer).
type VHDFooter struct {
	Features       uint32
	Version        uint32
	DataOffset     uint64
	Timestamp      uint32
	CreatorApp     [4]byte
	CreatorVersion uint32
	CreatorHostOS  uint32
	OriginalSize   uint64
	CurrentSize    uint64
	Cylinders      uint16
	Heads          uint8
	SectorsPerTrk  uint8
	DiskType       uint32
	Checksum       uint32
	UniqueID       [16]byte
	SavedState     uint8
}

// vhdChecksum is the one's complement of the byte sum, skipping the
// checksum field at [skip, skip+4).
func vhdChecksum(b []byte, skip int) uint32 {
	var s uint32
	for i, c := range b {
		if i >= skip && i < skip+4 {
			continue
		}
		s += uint32(c)
	}
	return ^s
}

func parseVHDFooter(b []byte, off int64) (VHDFooter, error) {
	var f VHDFooter
	if len(b) < vhdFooterSize || string(b[:8]) != "conectix" {
		return f, corrupt("vhd", off, "footer cookie is not \"conectix\"")
	}
	be := binary.BigEndian
	f.Features = be.Uint32(b[8:])
	f.Version = be.Uint32(b[12:])
	f.DataOffset = be.Uint64(b[16:])
	f.Timestamp = be.Uint32(b[24:])
	copy(f.CreatorApp[:], b[28:32])
	f.CreatorVersion = be.Uint32(b[32:])
	f.CreatorHostOS = be.Uint32(b[36:])
	f.OriginalSize = be.Uint64(b[40:])
	f.CurrentSize = be.Uint64(b[48:])
	f.Cylinders = be.Uint16(b[56:])
	f.Heads = b[58]
	f.SectorsPerTrk = b[59]
	f.DiskType = be.Uint32(b[60:])
	f.Checksum = be.Uint32(b[64:])
	copy(f.UniqueID[:], b[68:84])
	f.SavedState = b[84]
	if sum := vhdChecksum(b[:vhdFooterSize], 64); sum != f.Checksum {
		return f, corrupt("vhd", off+64, "footer checksum 0x%08x, computed 0x%08x", f.Checksum, sum)
	}
	return f, nil
}

// marshal encodes the footer and sets its checksum.
func (f *VHDFooter) marshal() []byte {
	b := make([]byte, vhdFooterSize)
	be := binary.BigEndian
	copy(b, "conectix")
	be.PutUint32(b[8:], f.Features)
	be.PutUint32(b[12:], f.Version)
	be.PutUint64(b[16:], f.DataOffset)
	be.PutUint32(b[24:], f.Timestamp)
	copy(b[28:32], f.CreatorApp[:])
	be.PutUint32(b[32:], f.CreatorVersion)
	be.PutUint32(b[36:], f.CreatorHostOS)
	be.PutUint64(b[40:], f.OriginalSize)
	be.PutUint64(b[48:], f.CurrentSize)
	be.PutUint16(b[56:], f.Cylinders)
	b[58] = f.Heads
	b[59] = f.SectorsPerTrk
	be.PutUint32(b[60:], f.DiskType)
	copy(b[68:84], f.UniqueID[:])
	b[84] = f.SavedState
	f.Checksum = vhdChecksum(b, 64)
	be.PutUint32(b[64:], f.Checksum)
	return b
}

// VHDGeometry computes the CHS geometry of the VHD specification
// (appendix "CHS calculation") for a disk of the given size in bytes.
func VHDGeometry(size int64) (cyl uint16, heads, spt uint8) {
	total := size / 512
	if total > vhdMaxCHS {
		total = vhdMaxCHS
	}
	var h, s, cth int64
	if total >= 65535*16*63 {
		s, h = 255, 16
		cth = total / s
	} else {
		s = 17
		cth = total / s
		h = (cth + 1023) / 1024
		if h < 4 {
			h = 4
		}
		if cth >= h*1024 || h > 16 {
			s, h = 31, 16
			cth = total / s
		}
		if cth >= h*1024 {
			s, h = 63, 16
			cth = total / s
		}
	}
	return uint16(cth / h), uint8(h), uint8(s)
}

// vhdCurrentSizeCreators are the creator applications whose images qemu
// sizes by the footer's current size rather than by the CHS geometry
// (qemu block/vpc.c). Writers here use "win " so that qemu and Hyper-V
// agree on the exact virtual size.
var vhdCurrentSizeCreators = []string{"win ", "qem2", "d2v ", "tap\x00", "CTXS"}

// VirtualSize is the disk size as qemu computes it: the footer's current
// size for Hyper-V-style creators or a saturated geometry, the CHS product
// otherwise (Virtual PC and old qemu images).
func (f *VHDFooter) VirtualSize() int64 {
	chs := int64(f.Cylinders) * int64(f.Heads) * int64(f.SectorsPerTrk)
	useCur := chs == vhdMaxCHS
	for _, c := range vhdCurrentSizeCreators {
		if string(f.CreatorApp[:]) == c {
			useCur = true
		}
	}
	if useCur {
		return int64(f.CurrentSize/512) * 512
	}
	return chs * 512
}

// VHD reads a fixed or dynamic VHD.
type VHD struct {
	r         io.ReaderAt
	fileSize  int64
	Footer    VHDFooter
	size      int64
	blockSize int64
	bitmapLen int64
	bat       []uint32

	mu      sync.Mutex
	bitmaps map[uint32][]byte
}

// OpenVHD opens a fixed or dynamic VHD of fileSize bytes. Differencing
// disks are refused (their parent is not reachable from an io.ReaderAt).
func OpenVHD(r io.ReaderAt, fileSize int64) (*VHD, error) {
	if fileSize < vhdFooterSize {
		return nil, corrupt("vhd", 0, "file of %d bytes is smaller than a footer", fileSize)
	}
	buf := make([]byte, vhdFooterSize)
	foff := fileSize - vhdFooterSize
	if err := readAt("vhd", r, buf, foff, "footer"); err != nil {
		return nil, err
	}
	f, err := parseVHDFooter(buf, foff)
	if err != nil {
		// A dynamic disk keeps a copy of the footer at offset 0.
		if err2 := readAt("vhd", r, buf, 0, "footer copy"); err2 != nil {
			return nil, err
		}
		f2, err2 := parseVHDFooter(buf, 0)
		if err2 != nil || f2.DiskType == VHDTypeFixed {
			return nil, err
		}
		f = f2
	}
	v := &VHD{r: r, fileSize: fileSize, Footer: f, size: f.VirtualSize()}
	if v.size < 0 {
		return nil, corrupt("vhd", foff+48, "negative disk size")
	}
	switch f.DiskType {
	case VHDTypeFixed:
		if v.size > fileSize-vhdFooterSize {
			return nil, corrupt("vhd", foff+48, "fixed disk of %d bytes in a file of %d bytes", v.size, fileSize)
		}
		return v, nil
	case VHDTypeDynamic:
	case VHDTypeDifferencing:
		return nil, unsupported("vhd", foff+60, "differencing disk (needs its parent)")
	default:
		return nil, corrupt("vhd", foff+60, "unknown disk type %d", f.DiskType)
	}
	hoff := int64(f.DataOffset)
	if f.DataOffset > uint64(fileSize) || hoff+vhdDynHeaderSize > fileSize {
		return nil, corrupt("vhd", foff+16, "dynamic header offset %d beyond file of %d bytes", f.DataOffset, fileSize)
	}
	h := make([]byte, vhdDynHeaderSize)
	if err := readAt("vhd", r, h, hoff, "dynamic header"); err != nil {
		return nil, err
	}
	if string(h[:8]) != "cxsparse" {
		return nil, corrupt("vhd", hoff, "dynamic header cookie is not \"cxsparse\"")
	}
	be := binary.BigEndian
	if sum := vhdChecksum(h, 36); sum != be.Uint32(h[36:]) {
		return nil, corrupt("vhd", hoff+36, "dynamic header checksum 0x%08x, computed 0x%08x", be.Uint32(h[36:]), sum)
	}
	tableOff := be.Uint64(h[16:])
	entries := int64(be.Uint32(h[28:]))
	bs := int64(be.Uint32(h[32:]))
	if bs < 512 || bs > vhdMaxBlockSize || bs&(bs-1) != 0 {
		return nil, corrupt("vhd", hoff+32, "block size %d", bs)
	}
	if entries*bs < v.size {
		return nil, corrupt("vhd", hoff+28, "%d table entries of %d bytes cannot hold %d bytes", entries, bs, v.size)
	}
	if tableOff > uint64(fileSize) || int64(tableOff)+entries*4 > fileSize {
		return nil, corrupt("vhd", hoff+16, "block table at %d with %d entries beyond file of %d bytes", tableOff, entries, fileSize)
	}
	need := (v.size + bs - 1) / bs
	raw := make([]byte, need*4)
	if err := readAt("vhd", r, raw, int64(tableOff), "block allocation table"); err != nil {
		return nil, err
	}
	v.bat = make([]uint32, need)
	for i := range v.bat {
		v.bat[i] = be.Uint32(raw[i*4:])
	}
	v.blockSize = bs
	v.bitmapLen = ((bs/512+7)/8 + 511) / 512 * 512
	v.bitmaps = make(map[uint32][]byte)
	return v, nil
}

// Size is the virtual disk size in bytes.
func (v *VHD) Size() int64 { return v.size }

// Dynamic reports whether the disk is dynamic (sparse).
func (v *VHD) Dynamic() bool { return v.bat != nil }

func (v *VHD) bitmap(blk uint32, off int64) ([]byte, error) {
	v.mu.Lock()
	b, ok := v.bitmaps[blk]
	v.mu.Unlock()
	if ok {
		return b, nil
	}
	b = make([]byte, v.bitmapLen)
	if err := readAt("vhd", v.r, b, off, "sector bitmap"); err != nil {
		return nil, err
	}
	full := true
	for _, c := range b {
		if c != 0xFF {
			full = false
			break
		}
	}
	if full {
		b = nil // nil means "every sector present"
	}
	v.mu.Lock()
	if len(v.bitmaps) > 4096 {
		clear(v.bitmaps)
	}
	v.bitmaps[blk] = b
	v.mu.Unlock()
	return b, nil
}

// ReadAt reads virtual disk bytes. Sectors not allocated in a dynamic
// disk read as zeros.
func (v *VHD) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, v.size)
	p = p[:n]
	if v.bat == nil {
		if err := readAt("vhd", v.r, p, off, "fixed disk data"); err != nil {
			return 0, err
		}
		return n, eof
	}
	for len(p) > 0 {
		bi := off / v.blockSize
		in := off % v.blockSize
		chunk := min(int64(len(p)), v.blockSize-in)
		q := p[:chunk]
		e := v.bat[bi]
		if e == vhdNoBlock {
			zero(q)
		} else {
			base := int64(e) * 512
			if base+v.bitmapLen > v.fileSize {
				return 0, corrupt("vhd", base, "block %d starts beyond the file", bi)
			}
			bm, err := v.bitmap(e, base)
			if err != nil {
				return 0, err
			}
			if err := v.readBlock(q, base+v.bitmapLen, in, bm); err != nil {
				return 0, err
			}
		}
		p = p[chunk:]
		off += chunk
	}
	return n, eof
}

// readBlock reads q from block data at dataOff+in, honouring the bitmap.
func (v *VHD) readBlock(q []byte, dataOff, in int64, bm []byte) error {
	if bm == nil {
		return readAt("vhd", v.r, q, dataOff+in, "block data")
	}
	for len(q) > 0 {
		sec := in / 512
		runEnd := min(in+int64(len(q)), (sec+1)*512)
		present := bm[sec/8]&(0x80>>(sec%8)) != 0
		// extend the run while sectors share the same state
		for runEnd < in+int64(len(q)) {
			s := runEnd / 512
			if (bm[s/8]&(0x80>>(s%8)) != 0) != present {
				break
			}
			runEnd = min(in+int64(len(q)), (s+1)*512)
		}
		k := runEnd - in
		if present {
			if err := readAt("vhd", v.r, q[:k], dataOff+in, "block data"); err != nil {
				return err
			}
		} else {
			zero(q[:k])
		}
		q = q[k:]
		in += k
	}
	return nil
}
