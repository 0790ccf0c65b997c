package vdisk

import (
	"context"
	"encoding/binary"
	"io"
	"unicode/utf16"
)

// WriteVHDX writes a dynamic VHDX (version 1, 512-byte logical sectors,
// empty log) to w. Blocks that are all zeros stay NOT_PRESENT. It returns
// the file size.
func WriteVHDX(ctx context.Context, w io.WriterAt, src io.ReaderAt, size int64, opt *WriteOptions) (int64, error) {
	wr := newWriter(ctx, "vhdx", src, size, opt)
	wr.wa = w
	bs, err := opt.blockSize(32<<20, 1<<20, 256<<20)
	if err != nil {
		return 0, err
	}
	if size <= 0 || size > vhdxMaxSize {
		return 0, corrupt("vhdx", -1, "disk of %d bytes", size)
	}
	const lss = 512
	vsize := sectorAlign(size)
	chunkRatio := int64(1<<23) * lss / bs
	blocks := (vsize + bs - 1) / bs
	entries := blocks + (blocks-1)/chunkRatio
	const (
		logOff  = 1 << 20
		logLen  = 1 << 20
		metaOff = 2 << 20
		metaLen = 1 << 20
		batOff  = 3 << 20
	)
	batLen := (entries*8 + 1<<20 - 1) &^ (1<<20 - 1)
	pos := int64(batOff + batLen)
	head := make([]byte, pos)
	le := binary.LittleEndian
	bat := head[batOff:]
	buf := make([]byte, bs)
	for b := int64(0); b < blocks && wr.err == nil; b++ {
		wr.read(buf, b*bs)
		if wr.err == nil && !isZero(buf) {
			le.PutUint64(bat[(b+b/chunkRatio)*8:], uint64(pos)|vhdxPayloadFull)
			wr.writeAt(buf, pos)
			pos += bs
		}
		wr.progress((b + 1) * bs)
	}
	// file type identifier
	copy(head, "vhdxfile")
	for i, c := range utf16.Encode([]rune("Rewind")) {
		le.PutUint16(head[8+2*i:], c)
	}
	// headers: two valid copies, sequence 0 and 1
	id := opt.id(size)
	fileGUID, dataGUID := id, id
	fileGUID[0] ^= 0x5a
	dataGUID[0] ^= 0xa5
	for i, off := range []int64{vhdxHeader1Off, vhdxHeader2Off} {
		h := head[off : off+vhdxHeaderSize]
		copy(h, "head")
		le.PutUint64(h[8:], uint64(i))
		copy(h[16:], fileGUID[:])
		copy(h[32:], dataGUID[:])
		le.PutUint16(h[66:], 1)
		le.PutUint32(h[68:], logLen)
		le.PutUint64(h[72:], logOff)
		setCRC32C(h, 4)
	}
	// region tables
	for _, off := range []int64{vhdxRegion1Off, vhdxRegion2Off} {
		r := head[off : off+vhdxRegionSize]
		copy(r, "regi")
		le.PutUint32(r[8:], 2)
		e := r[16:]
		copy(e, vhdxBATGUID[:])
		le.PutUint64(e[16:], batOff)
		le.PutUint32(e[24:], uint32(batLen))
		le.PutUint32(e[28:], 1)
		e = r[48:]
		copy(e, vhdxMetadataGUID[:])
		le.PutUint64(e[16:], metaOff)
		le.PutUint32(e[24:], metaLen)
		le.PutUint32(e[28:], 1)
		setCRC32C(r, 4)
	}
	// metadata table and items
	m := head[metaOff : metaOff+metaLen]
	copy(m, "metadata")
	items := []struct {
		g     [16]byte
		data  []byte
		flags uint32
	}{
		{vhdxFileParamsGUID, le.AppendUint32(le.AppendUint32(nil, uint32(bs)), 0), 4},
		{vhdxDiskSizeGUID, le.AppendUint64(nil, uint64(vsize)), 6},
		{vhdxDiskIDGUID, id[:], 6},
		{vhdxLogicalGUID, le.AppendUint32(nil, lss), 6},
		{vhdxPhysicalGUID, le.AppendUint32(nil, 4096), 6},
	}
	le.PutUint16(m[10:], uint16(len(items)))
	mo := int64(vhdxMetaTblSize)
	for i, it := range items {
		e := m[32+i*32:]
		copy(e, it.g[:])
		le.PutUint32(e[16:], uint32(mo))
		le.PutUint32(e[20:], uint32(len(it.data)))
		le.PutUint32(e[24:], it.flags)
		copy(m[mo:], it.data)
		mo += 8 * ((int64(len(it.data)) + 7) / 8)
	}
	wr.writeAt(head, 0)
	if pos == int64(len(head)) {
		wr.writeAt(head[len(head)-1:], pos-1)
	}
	if wr.err != nil {
		return pos, wr.err
	}
	return pos, verify(w, pos, vsize, func(r io.ReaderAt, n int64) (Disk, error) { return OpenVHDX(r, n) })
}
