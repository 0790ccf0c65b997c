package vdisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/zlib"
)

const (
	vmdkGTEntries  = 512
	vmdkDescSecs   = 20
	vmdkMaxSectors = 1<<32 - 1 // hosted sparse extents address sectors with 32 bits: 2 TiB
)

// WriteVMDKSparse writes a monolithicSparse VMDK (hosted sparse extent,
// version 1, redundant grain directory) to w. All-zero grains stay
// unallocated. It returns the file size.
func WriteVMDKSparse(ctx context.Context, w io.WriterAt, src io.ReaderAt, size int64, opt *WriteOptions) (int64, error) {
	wr := newWriter(ctx, "vmdk", src, size, opt)
	wr.wa = w
	gs, err := opt.blockSize(64<<10, 4096, 1<<20)
	if err != nil {
		return 0, err
	}
	sectors := sectorAlign(size) / 512
	if size <= 0 || sectors > vmdkMaxSectors {
		return 0, corrupt("vmdk", -1, "disk of %d bytes", size)
	}
	vsize := sectors * 512
	gsec := gs / 512
	grains := (vsize + gs - 1) / gs
	ngt := (grains + vmdkGTEntries - 1) / vmdkGTEntries
	gdSecs := (ngt*4 + 511) / 512
	gtSecs := int64(vmdkGTEntries * 4 / 512)
	rgd := int64(1 + vmdkDescSecs)
	rgt := rgd + gdSecs
	gd := rgt + ngt*gtSecs
	gt := gd + gdSecs
	overhead := (gt + ngt*gtSecs + gsec - 1) / gsec * gsec
	desc := vmdkDescriptor("monolithicSparse", fmt.Sprintf("RW %d SPARSE %q", sectors, opt.extentName()), sectors, opt.id(size))
	if len(desc) > vmdkDescSecs*512 {
		return 0, corrupt("vmdk", -1, "descriptor of %d bytes", len(desc))
	}
	h := VMDKHeader{Version: 1, Flags: vmdkFlagNL | vmdkFlagRGD, Capacity: uint64(sectors), GrainSize: uint64(gsec),
		DescriptorOffset: 1, DescriptorSize: vmdkDescSecs, NumGTEsPerGT: vmdkGTEntries,
		RGDOffset: uint64(rgd), GDOffset: uint64(gd), OverHead: uint64(overhead)}
	// Metadata area: header, descriptor, both directories and all grain
	// tables (written as each grain table's range completes).
	gdb := make([]byte, gdSecs*512)
	rgdb := make([]byte, gdSecs*512)
	for i := int64(0); i < ngt; i++ {
		binary.LittleEndian.PutUint32(gdb[i*4:], uint32(gt+i*gtSecs))
		binary.LittleEndian.PutUint32(rgdb[i*4:], uint32(rgt+i*gtSecs))
	}
	pos := overhead // sectors
	buf := make([]byte, gs)
	tbl := make([]byte, gtSecs*512)
	for t := int64(0); t < ngt && wr.err == nil; t++ {
		clear(tbl)
		for j := int64(0); j < vmdkGTEntries; j++ {
			g := t*vmdkGTEntries + j
			if g >= grains || wr.err != nil {
				break
			}
			wr.read(buf, g*gs)
			if wr.err == nil && !isZero(buf) {
				if pos > 0xFFFFFFFF-gsec {
					wr.fail("allocating grain", fmt.Errorf("file exceeds 2 TiB of sectors"))
					break
				}
				binary.LittleEndian.PutUint32(tbl[j*4:], uint32(pos))
				wr.writeAt(buf, pos*512)
				pos += gsec
			}
			wr.progress((g + 1) * gs)
		}
		wr.writeAt(tbl, (gt+t*gtSecs)*512)
		wr.writeAt(tbl, (rgt+t*gtSecs)*512)
	}
	meta := make([]byte, rgt*512)
	copy(meta, h.marshal())
	copy(meta[512:], desc)
	copy(meta[rgd*512:], rgdb)
	wr.writeAt(meta, 0)
	wr.writeAt(gdb, gd*512)
	if pos == overhead {
		// no grain at all: make the file reach the end of the metadata
		wr.writeAt(make([]byte, 512), (overhead-1)*512)
	}
	total := pos * 512
	if wr.err != nil {
		return total, wr.err
	}
	return total, verify(w, total, vsize, func(r io.ReaderAt, n int64) (Disk, error) { return OpenVMDKSparse(r, n) })
}

// WriteVMDKStream streams a streamOptimized VMDK (version 3, deflate
// compressed grains, markers, footer and end-of-stream marker), the form
// vSphere and OVF packages import, to a plain io.Writer: nothing is
// written twice and nothing needs seeking. All-zero grains and grain
// tables are left out. It returns the bytes written.
func WriteVMDKStream(ctx context.Context, w io.Writer, src io.ReaderAt, size int64, opt *WriteOptions) (int64, error) {
	wr := newWriter(ctx, "vmdk", src, size, opt)
	wr.w = w
	gs, err := opt.blockSize(64<<10, 4096, 1<<20)
	if err != nil {
		return 0, err
	}
	sectors := sectorAlign(size) / 512
	if size <= 0 || sectors > vmdkMaxSectors {
		return 0, corrupt("vmdk", -1, "disk of %d bytes", size)
	}
	vsize := sectors * 512
	gsec := gs / 512
	grains := (vsize + gs - 1) / gs
	ngt := (grains + vmdkGTEntries - 1) / vmdkGTEntries
	gtSecs := int64(vmdkGTEntries * 4 / 512)
	overhead := (1 + vmdkDescSecs + gsec - 1) / gsec * gsec
	desc := vmdkDescriptor("streamOptimized", fmt.Sprintf("RW %d SPARSE %q", sectors, opt.extentName()), sectors, opt.id(size))
	if len(desc) > vmdkDescSecs*512 {
		return 0, corrupt("vmdk", -1, "descriptor of %d bytes", len(desc))
	}
	h := VMDKHeader{Version: 3, Flags: vmdkFlagNL | vmdkFlagCompress | vmdkFlagMarkers, Capacity: uint64(sectors),
		GrainSize: uint64(gsec), DescriptorOffset: 1, DescriptorSize: vmdkDescSecs, NumGTEsPerGT: vmdkGTEntries,
		GDOffset: vmdkGDAtEnd, OverHead: uint64(overhead), CompressAlgo: 1}
	head := make([]byte, overhead*512)
	copy(head, h.marshal())
	copy(head[512:], desc)
	wr.write(head)

	gd := make([]byte, (ngt*4+511)/512*512)
	tbl := make([]byte, gtSecs*512)
	buf := make([]byte, gs)
	var zbuf bytes.Buffer
	zw, err := zlib.NewWriterLevel(&zbuf, opt.level())
	if err != nil {
		return 0, err
	}
	marker := func(val uint64, typ uint32) {
		m := make([]byte, 512)
		binary.LittleEndian.PutUint64(m, val)
		binary.LittleEndian.PutUint32(m[12:], typ)
		wr.write(m)
	}
	for t := int64(0); t < ngt && wr.err == nil; t++ {
		clear(tbl)
		used := false
		for j := int64(0); j < vmdkGTEntries; j++ {
			g := t*vmdkGTEntries + j
			if g >= grains || wr.err != nil {
				break
			}
			wr.read(buf, g*gs)
			if wr.err == nil && !isZero(buf) {
				zbuf.Reset()
				zbuf.Write(make([]byte, 12))
				zw.Reset(&zbuf)
				_, _ = zw.Write(buf)
				if err := zw.Close(); err != nil {
					wr.fail("compressing grain", err)
					break
				}
				c := zbuf.Bytes()
				binary.LittleEndian.PutUint64(c, uint64(g*gsec))
				binary.LittleEndian.PutUint32(c[8:], uint32(len(c)-12))
				binary.LittleEndian.PutUint32(tbl[j*4:], uint32(wr.pos/512))
				if wr.pos/512 > 0xFFFFFFFF-(gsec+1) {
					wr.fail("placing grain", fmt.Errorf("stream exceeds 2 TiB of sectors"))
					break
				}
				wr.write(c)
				writeZeros(wr, sectorAlign(int64(len(c)))-int64(len(c)))
				used = true
			}
			wr.progress((g + 1) * gs)
		}
		if used {
			marker(uint64(gtSecs), vmdkMarkerGT)
			binary.LittleEndian.PutUint32(gd[t*4:], uint32(wr.pos/512))
			wr.write(tbl)
		}
	}
	marker(uint64(len(gd)/512), vmdkMarkerGD)
	gdSec := wr.pos / 512
	wr.write(gd)
	marker(1, vmdkMarkerFooter)
	h.GDOffset = uint64(gdSec)
	wr.write(h.marshal())
	marker(0, vmdkMarkerEOS)
	if wr.err != nil {
		return wr.pos, wr.err
	}
	return wr.pos, verify(w, wr.pos, vsize, func(r io.ReaderAt, n int64) (Disk, error) { return OpenVMDKSparse(r, n) })
}
