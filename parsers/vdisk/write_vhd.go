package vdisk

import (
	"context"
	"encoding/binary"
	"io"
)

// WriteVHDFixed streams a fixed VHD to w: the source bytes (zero-padded
// to a whole sector) and a footer. It returns the bytes written.
func WriteVHDFixed(ctx context.Context, w io.Writer, src io.ReaderAt, size int64, opt *WriteOptions) (int64, error) {
	wr := newWriter(ctx, "vhd", src, size, opt)
	wr.w = w
	if size <= 0 || size > 2040<<30 {
		return 0, corrupt("vhd", -1, "disk of %d bytes does not fit a VHD", size)
	}
	vsize := sectorAlign(size)
	buf := make([]byte, 4<<20)
	for off := int64(0); off < vsize && wr.err == nil; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), vsize-off)]
		wr.read(b, off)
		wr.write(b)
		wr.progress(off + int64(len(b)))
	}
	var ts uint32
	if opt != nil {
		ts = vhdTimestamp(opt.Time)
	}
	f := newVHDFooter(vsize, VHDTypeFixed, ^uint64(0), opt.id(size), ts)
	wr.write(f.marshal())
	if wr.err != nil {
		return wr.pos, wr.err
	}
	return wr.pos, verify(w, wr.pos, vsize, func(r io.ReaderAt, n int64) (Disk, error) { return OpenVHD(r, n) })
}

// WriteVHDDynamic writes a dynamic VHD to w; all-zero blocks stay
// unallocated. It returns the file size.
func WriteVHDDynamic(ctx context.Context, w io.WriterAt, src io.ReaderAt, size int64, opt *WriteOptions) (int64, error) {
	wr := newWriter(ctx, "vhd", src, size, opt)
	wr.wa = w
	bs, err := opt.blockSize(2<<20, 512*8, vhdMaxBlockSize)
	if err != nil {
		return 0, err
	}
	if size <= 0 || size > 2040<<30 {
		return 0, corrupt("vhd", -1, "disk of %d bytes does not fit a VHD", size)
	}
	vsize := sectorAlign(size)
	entries := (vsize + bs - 1) / bs
	batOff := int64(512 + vhdDynHeaderSize)
	batLen := sectorAlign(entries * 4)
	bitmapLen := sectorAlign((bs/512 + 7) / 8)
	bitmap := make([]byte, bitmapLen)
	for i := range bitmap {
		bitmap[i] = 0xFF
	}
	bat := make([]byte, batLen)
	for i := range bat {
		bat[i] = 0xFF
	}
	pos := batOff + batLen
	buf := make([]byte, bs)
	for i := int64(0); i < entries && wr.err == nil; i++ {
		wr.read(buf, i*bs)
		if wr.err == nil && !isZero(buf) {
			binary.BigEndian.PutUint32(bat[i*4:], uint32(pos/512))
			wr.writeAt(bitmap, pos)
			wr.writeAt(buf, pos+bitmapLen)
			pos += bitmapLen + bs
		}
		wr.progress((i + 1) * bs)
	}
	var ts uint32
	if opt != nil {
		ts = vhdTimestamp(opt.Time)
	}
	f := newVHDFooter(vsize, VHDTypeDynamic, 512, opt.id(size), ts)
	foot := f.marshal()
	hdr := make([]byte, vhdDynHeaderSize)
	be := binary.BigEndian
	copy(hdr, "cxsparse")
	be.PutUint64(hdr[8:], ^uint64(0))
	be.PutUint64(hdr[16:], uint64(batOff))
	be.PutUint32(hdr[24:], 0x00010000)
	be.PutUint32(hdr[28:], uint32(entries))
	be.PutUint32(hdr[32:], uint32(bs))
	be.PutUint32(hdr[36:], vhdChecksum(hdr, 36))
	wr.writeAt(bat, batOff)
	wr.writeAt(hdr, 512)
	wr.writeAt(foot, 0)
	wr.writeAt(foot, pos)
	total := pos + vhdFooterSize
	if wr.err != nil {
		return total, wr.err
	}
	return total, verify(w, total, vsize, func(r io.ReaderAt, n int64) (Disk, error) { return OpenVHD(r, n) })
}
