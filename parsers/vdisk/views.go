package vdisk

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// ViewOptions makes synthesized headers stable: the same options and raw
// size always give the same bytes, which a mounted, cached file needs.
type ViewOptions struct {
	// UniqueID goes into the VHD footer and the VMDK CID; when zero it
	// is derived from Seed and the size.
	UniqueID [16]byte
	// Seed distinguishes views of different disks of the same size
	// (e.g. machine/volume/point) when UniqueID is zero.
	Seed string
	// Time is the VHD footer timestamp (zero: the VHD epoch).
	Time time.Time
}

func (o *ViewOptions) id(size int64) [16]byte {
	if o != nil && o.UniqueID != [16]byte{} {
		return o.UniqueID
	}
	seed := ""
	if o != nil {
		seed = o.Seed
	}
	h := sha256.Sum256(fmt.Appendf(nil, "rewind-vdisk-view\x00%s\x00%d", seed, size))
	var g [16]byte
	copy(g[:], h[:16])
	g[6] = g[6]&0x0f | 0x40 // RFC 4122 version 4 layout
	g[8] = g[8]&0x3f | 0x80
	return g
}

func vhdTimestamp(t time.Time) uint32 {
	if t.IsZero() || t.Before(vhdEpoch) {
		return 0
	}
	return uint32(t.Sub(vhdEpoch) / time.Second)
}

// newVHDFooter builds the footer Rewind writes: creator "win " so that
// qemu (block/vpc.c) and Hyper-V both take the exact current size rather
// than the CHS-rounded one.
func newVHDFooter(size int64, diskType uint32, dataOffset uint64, id [16]byte, ts uint32) *VHDFooter {
	c, h, s := VHDGeometry(size)
	return &VHDFooter{
		Features:       2,
		Version:        0x00010000,
		DataOffset:     dataOffset,
		Timestamp:      ts,
		CreatorApp:     [4]byte{'w', 'i', 'n', ' '},
		CreatorVersion: 0x000a0000,
		CreatorHostOS:  0x5769326b, // "Wi2k"
		OriginalSize:   uint64(size),
		CurrentSize:    uint64(size),
		Cylinders:      c,
		Heads:          h,
		SectorsPerTrk:  s,
		DiskType:       diskType,
		UniqueID:       id,
	}
}

// FixedVHDView is a fixed VHD synthesized over a raw disk: the raw bytes
// (zero-padded to a whole sector) followed by a computed footer. Nothing is
// copied. qemu-img recognises it with "-f vpc": qemu only probes VHDs by a
// cookie at offset 0, which a fixed VHD (like Hyper-V's own) does not have.
type FixedVHDView struct {
	raw     io.ReaderAt
	rawSize int64
	padded  int64
	footer  []byte
}

// NewFixedVHDView builds the view over size bytes of raw.
func NewFixedVHDView(raw io.ReaderAt, size int64, opt *ViewOptions) (*FixedVHDView, error) {
	if size <= 0 || size > 2040<<30 {
		return nil, &Error{Format: "vhd", Offset: -1, What: fmt.Sprintf("disk of %d bytes does not fit a VHD (max 2040 GiB)", size), Err: ErrUnsupported}
	}
	padded := (size + 511) &^ 511
	var ts uint32
	if opt != nil {
		ts = vhdTimestamp(opt.Time)
	}
	f := newVHDFooter(padded, VHDTypeFixed, ^uint64(0), opt.id(size), ts)
	return &FixedVHDView{raw: raw, rawSize: size, padded: padded, footer: f.marshal()}, nil
}

// Size is the size of the .vhd file.
func (v *FixedVHDView) Size() int64 { return v.padded + vhdFooterSize }

// Footer returns the 512 synthesized bytes at the end of the file.
func (v *FixedVHDView) Footer() []byte { return append([]byte(nil), v.footer...) }

// ReadAt reads the .vhd file.
func (v *FixedVHDView) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, v.Size())
	p = p[:n]
	if off < v.rawSize {
		k := min(int64(len(p)), v.rawSize-off)
		m, err := v.raw.ReadAt(p[:k], off)
		if int64(m) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return m, err
		}
		p, off = p[k:], off+k
	}
	if len(p) > 0 && off < v.padded {
		k := min(int64(len(p)), v.padded-off)
		zero(p[:k])
		p, off = p[k:], off+k
	}
	if len(p) > 0 {
		copy(p, v.footer[off-v.padded:])
	}
	return n, eof
}

// VMDKView is a monolithicFlat VMDK synthesized over a raw disk: ReadAt
// and Size serve the text descriptor (disk.vmdk); Extent serves the flat
// extent it names, which is the raw disk itself.
type VMDKView struct {
	desc       []byte
	extentName string
	flat       *paddedReader
}

// NewVMDKView builds the view; extentName is the flat extent's file name
// as the descriptor names it, relative to the descriptor (e.g.
// "disk-flat.vmdk").
func NewVMDKView(raw io.ReaderAt, size int64, extentName string, opt *ViewOptions) (*VMDKView, error) {
	if size <= 0 {
		return nil, &Error{Format: "vmdk", Offset: -1, What: "empty disk", Err: ErrUnsupported}
	}
	for _, c := range extentName {
		if c == '"' || c == '\n' || c == '\r' || c == 0 || c == '/' {
			return nil, &Error{Format: "vmdk", Offset: -1, What: fmt.Sprintf("extent name %q", extentName), Err: ErrUnsupported}
		}
	}
	sectors := (size + 511) / 512
	id := opt.id(size)
	return &VMDKView{
		desc:       vmdkDescriptor("monolithicFlat", fmt.Sprintf("RW %d FLAT %q 0", sectors, extentName), sectors, id),
		extentName: extentName,
		flat:       &paddedReader{r: raw, size: size, padded: sectors * 512},
	}, nil
}

// vmdkDescriptor renders a descriptor with one extent line.
func vmdkDescriptor(createType, extent string, sectors int64, id [16]byte) []byte {
	cyl := min(sectors/(255*63), 65535)
	return fmt.Appendf(nil, `# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=%08x
parentCID=ffffffff
createType=%q

# Extent description
%s

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "%d"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.longContentID = "%x"
ddb.uuid = "%s"
ddb.virtualHWVersion = "4"
`, binary.BigEndian.Uint32(id[:4])|1, createType, extent, cyl, id[:16], vmdkUUID(id))
}

func vmdkUUID(id [16]byte) string {
	s := ""
	for i, b := range id {
		if i > 0 {
			s += " "
			if i == 8 {
				s = s[:len(s)-1] + "-"
			}
		}
		s += fmt.Sprintf("%02x", b)
	}
	return s
}

// Size is the descriptor's size.
func (v *VMDKView) Size() int64 { return int64(len(v.desc)) }

// ReadAt reads the descriptor.
func (v *VMDKView) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, v.Size())
	copy(p[:n], v.desc[off:])
	return n, eof
}

// Descriptor returns the descriptor text.
func (v *VMDKView) Descriptor() []byte { return append([]byte(nil), v.desc...) }

// Extent returns the flat extent's name and contents: the raw disk,
// zero-padded to a whole sector if it is not one already.
func (v *VMDKView) Extent() (name string, r io.ReaderAt, size int64) {
	return v.extentName, v.flat, v.flat.padded
}

// paddedReader reads r and then zeros up to padded bytes.
type paddedReader struct {
	r            io.ReaderAt
	size, padded int64
}

func (p *paddedReader) Size() int64 { return p.padded }

func (p *paddedReader) ReadAt(b []byte, off int64) (int, error) {
	n, eof := clampRead(b, off, p.padded)
	b = b[:n]
	if off < p.size {
		k := min(int64(len(b)), p.size-off)
		m, err := p.r.ReadAt(b[:k], off)
		if int64(m) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return m, err
		}
		b = b[k:]
	}
	zero(b)
	return n, eof
}

// DynamicVHDView is a dynamic VHD synthesized over a raw disk without
// copying or scanning it: every block is declared allocated with a full
// sector bitmap, and block data maps straight onto the raw bytes. Unlike a
// fixed VHD it starts with the "conectix" cookie, so qemu-img probes it as
// vpc without "-f vpc".
type DynamicVHDView struct {
	raw       *paddedReader
	bs        int64
	blocks    int64
	head      []byte // footer copy, dynamic header, BAT
	footer    []byte
	dataStart int64
}

// NewDynamicVHDView builds the view over size bytes of raw with 2 MiB blocks.
func NewDynamicVHDView(raw io.ReaderAt, size int64, opt *ViewOptions) (*DynamicVHDView, error) {
	if size <= 0 || size > 2040<<30 {
		return nil, &Error{Format: "vhd", Offset: -1, What: fmt.Sprintf("disk of %d bytes does not fit a VHD (max 2040 GiB)", size), Err: ErrUnsupported}
	}
	const bs = 2 << 20
	padded := (size + 511) &^ 511
	blocks := (padded + bs - 1) / bs
	batLen := (blocks*4 + 511) &^ 511
	dataStart := int64(512+vhdDynHeaderSize) + batLen
	var ts uint32
	if opt != nil {
		ts = vhdTimestamp(opt.Time)
	}
	f := newVHDFooter(padded, VHDTypeDynamic, 512, opt.id(size), ts)
	foot := f.marshal()
	head := make([]byte, dataStart)
	copy(head, foot)
	h := head[512 : 512+vhdDynHeaderSize]
	be := binary.BigEndian
	copy(h, "cxsparse")
	be.PutUint64(h[8:], ^uint64(0))
	be.PutUint64(h[16:], 512+vhdDynHeaderSize)
	be.PutUint32(h[24:], 0x00010000)
	be.PutUint32(h[28:], uint32(blocks))
	be.PutUint32(h[32:], bs)
	be.PutUint32(h[36:], vhdChecksum(h, 36))
	bat := head[512+vhdDynHeaderSize:]
	for i := range bat {
		bat[i] = 0xFF
	}
	for i := int64(0); i < blocks; i++ {
		be.PutUint32(bat[i*4:], uint32((dataStart+i*(512+bs))/512))
	}
	return &DynamicVHDView{raw: &paddedReader{r: raw, size: size, padded: blocks * bs}, bs: bs, blocks: blocks,
		head: head, footer: foot, dataStart: dataStart}, nil
}

// Size is the size of the .vhd file.
func (v *DynamicVHDView) Size() int64 {
	return v.dataStart + v.blocks*(512+v.bs) + vhdFooterSize
}

// ReadAt reads the .vhd file.
func (v *DynamicVHDView) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, v.Size())
	p = p[:n]
	end := v.dataStart + v.blocks*(512+v.bs)
	for len(p) > 0 {
		var k int
		switch {
		case off < v.dataStart:
			k = copy(p, v.head[off:])
		case off >= end:
			k = copy(p, v.footer[off-end:])
		default:
			blk := (off - v.dataStart) / (512 + v.bs)
			in := (off - v.dataStart) % (512 + v.bs)
			if in < 512 {
				k = int(min(int64(len(p)), 512-in))
				for i := range p[:k] {
					p[i] = 0xFF
				}
			} else {
				k = int(min(int64(len(p)), 512+v.bs-in))
				if _, err := v.raw.ReadAt(p[:k], blk*v.bs+in-512); err != nil && err != io.EOF {
					return 0, err
				}
			}
		}
		p = p[k:]
		off += int64(k)
	}
	return n, eof
}
