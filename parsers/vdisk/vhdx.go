package vdisk

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"sync"
)

// ErrVHDXLogPending is wrapped by the error OpenVHDX returns when the
// header names a non-empty log: the file was not closed cleanly and its
// log must be replayed (by Hyper-V or qemu-img check -r all) before the
// BAT and payload can be trusted.
var ErrVHDXLogPending = errors.New("vhdx log is not empty and must be replayed")

var crc32c = crc32.MakeTable(crc32.Castagnoli)

const (
	vhdxHeader1Off  = 64 << 10
	vhdxHeader2Off  = 128 << 10
	vhdxRegion1Off  = 192 << 10
	vhdxRegion2Off  = 256 << 10
	vhdxHeaderSize  = 4 << 10
	vhdxRegionSize  = 64 << 10
	vhdxMetaTblSize = 64 << 10
	vhdxMaxEntries  = 2047
	vhdxMaxSize     = 64 << 40

	vhdxPayloadNotPresent = 0
	vhdxPayloadUndefined  = 1
	vhdxPayloadZero       = 2
	vhdxPayloadUnmapped   = 3
	vhdxPayloadFull       = 6
	vhdxPayloadPartial    = 7
	vhdxBitmapPresent     = 6
)

// guid converts the textual form of a GUID into its on-disk byte order
// (first three fields little-endian).
func guid(s string) [16]byte {
	var g [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("bad GUID literal " + s)
	}
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g
}

var (
	vhdxBATGUID        = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
	vhdxMetadataGUID   = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
	vhdxFileParamsGUID = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	vhdxDiskSizeGUID   = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	vhdxDiskIDGUID     = guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
	vhdxLogicalGUID    = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	vhdxPhysicalGUID   = guid("CDA348C7-445D-4471-9CC9-E9885251C556")
	vhdxParentLocGUID  = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
)

// VHDXHeader is the current (highest sequence number, valid) header.
type VHDXHeader struct {
	Offset        int64
	Sequence      uint64
	FileWriteGUID [16]byte
	DataWriteGUID [16]byte
	LogGUID       [16]byte
	LogVersion    uint16
	Version       uint16
	LogLength     uint32
	LogOffset     uint64
}

// VHDX reads a fixed or dynamic VHDX without a parent.
type VHDX struct {
	r          io.ReaderAt
	fileSize   int64
	Header     VHDXHeader
	BlockSize  int64
	LogSector  int64
	PhysSector int64
	DiskID     [16]byte
	size       int64
	chunkRatio int64
	bat        []uint64
	batOff     int64

	mu      sync.Mutex
	bitmaps map[int64][]byte
}

func crcOK(b []byte, at int) bool {
	want := binary.LittleEndian.Uint32(b[at:])
	var z [4]byte
	c := crc32.Update(0, crc32c, b[:at])
	c = crc32.Update(c, crc32c, z[:])
	c = crc32.Update(c, crc32c, b[at+4:])
	return c == want
}

// OpenVHDX opens a VHDX of fileSize bytes.
func OpenVHDX(r io.ReaderAt, fileSize int64) (*VHDX, error) {
	id := make([]byte, 8)
	if err := readAt("vhdx", r, id, 0, "file type identifier"); err != nil {
		return nil, err
	}
	if string(id) != "vhdxfile" {
		return nil, corrupt("vhdx", 0, "no \"vhdxfile\" identifier")
	}
	v := &VHDX{r: r, fileSize: fileSize, bitmaps: map[int64][]byte{}}
	found := false
	hb := make([]byte, vhdxHeaderSize)
	for _, off := range []int64{vhdxHeader1Off, vhdxHeader2Off} {
		if readAt("vhdx", r, hb, off, "header") != nil || string(hb[:4]) != "head" || !crcOK(hb, 4) {
			continue
		}
		le := binary.LittleEndian
		h := VHDXHeader{Offset: off, Sequence: le.Uint64(hb[8:])}
		if found && h.Sequence <= v.Header.Sequence {
			continue
		}
		copy(h.FileWriteGUID[:], hb[16:])
		copy(h.DataWriteGUID[:], hb[32:])
		copy(h.LogGUID[:], hb[48:])
		h.LogVersion = le.Uint16(hb[64:])
		h.Version = le.Uint16(hb[66:])
		h.LogLength = le.Uint32(hb[68:])
		h.LogOffset = le.Uint64(hb[72:])
		v.Header, found = h, true
	}
	if !found {
		return nil, corrupt("vhdx", vhdxHeader1Off, "no valid header (signature and CRC-32C checked at both copies)")
	}
	if v.Header.Version != 1 {
		return nil, unsupported("vhdx", v.Header.Offset+66, "header version %d", v.Header.Version)
	}
	if v.Header.LogGUID != [16]byte{} {
		return nil, &Error{Format: "vhdx", Offset: v.Header.Offset + 48, What: "header names a log", Err: ErrVHDXLogPending}
	}
	var batOff, batLen, metaOff, metaLen int64
	rb := make([]byte, vhdxRegionSize)
	ok := false
	var lastErr error
	for _, off := range []int64{vhdxRegion1Off, vhdxRegion2Off} {
		if err := readAt("vhdx", r, rb, off, "region table"); err != nil {
			lastErr = err
			continue
		}
		if string(rb[:4]) != "regi" || !crcOK(rb, 4) {
			lastErr = corrupt("vhdx", off, "region table signature or CRC-32C")
			continue
		}
		le := binary.LittleEndian
		n := int64(le.Uint32(rb[8:]))
		if n > vhdxMaxEntries {
			lastErr = corrupt("vhdx", off+8, "%d region entries", n)
			continue
		}
		batOff, metaOff, lastErr = 0, 0, nil
		for i := int64(0); i < n && lastErr == nil; i++ {
			e := rb[16+i*32:]
			var g [16]byte
			copy(g[:], e)
			fo, ln, req := int64(le.Uint64(e[16:])), int64(le.Uint32(e[24:])), le.Uint32(e[28:])&1
			if fo < 0 || fo%(1<<20) != 0 || fo+ln > fileSize || fo < 1<<20 {
				lastErr = corrupt("vhdx", off+16+i*32+16, "region at %d, %d bytes, outside file of %d bytes", fo, ln, fileSize)
			}
			switch {
			case g == vhdxBATGUID:
				batOff, batLen = fo, ln
			case g == vhdxMetadataGUID:
				metaOff, metaLen = fo, ln
			case req != 0:
				lastErr = unsupported("vhdx", off+16+i*32, "unknown required region")
			}
		}
		if lastErr == nil && (batOff == 0 || metaOff == 0) {
			lastErr = corrupt("vhdx", off, "region table lacks BAT or metadata region")
		}
		if lastErr == nil {
			ok = true
			break
		}
	}
	if !ok {
		return nil, lastErr
	}
	if err := v.readMetadata(metaOff, metaLen); err != nil {
		return nil, err
	}
	v.chunkRatio = (1 << 23) * v.LogSector / v.BlockSize
	blocks := (v.size + v.BlockSize - 1) / v.BlockSize
	total := int64(0)
	if blocks > 0 {
		total = blocks + (blocks-1)/v.chunkRatio
	}
	if total*8 > batLen {
		return nil, corrupt("vhdx", batOff, "BAT region of %d bytes cannot hold %d entries", batLen, total)
	}
	raw := make([]byte, total*8)
	if err := readAt("vhdx", r, raw, batOff, "BAT"); err != nil {
		return nil, err
	}
	v.bat = make([]uint64, total)
	for i := range v.bat {
		v.bat[i] = binary.LittleEndian.Uint64(raw[i*8:])
	}
	v.batOff = batOff
	return v, nil
}

func (v *VHDX) readMetadata(off, length int64) error {
	if length < vhdxMetaTblSize {
		return corrupt("vhdx", off, "metadata region of %d bytes", length)
	}
	t := make([]byte, vhdxMetaTblSize)
	if err := readAt("vhdx", v.r, t, off, "metadata table"); err != nil {
		return err
	}
	if string(t[:8]) != "metadata" {
		return corrupt("vhdx", off, "metadata table signature")
	}
	le := binary.LittleEndian
	n := int64(le.Uint16(t[10:]))
	if n > vhdxMaxEntries {
		return corrupt("vhdx", off+10, "%d metadata entries", n)
	}
	item := func(i int64, want int64) ([]byte, error) {
		e := t[32+i*32:]
		io, ln := int64(le.Uint32(e[16:])), int64(le.Uint32(e[20:]))
		if ln < want || io < vhdxMetaTblSize || io+ln > length {
			return nil, corrupt("vhdx", off+32+i*32+16, "metadata item at %d, %d bytes", io, ln)
		}
		b := make([]byte, want)
		return b, readAt("vhdx", v.r, b, off+io, "metadata item")
	}
	var have int
	for i := int64(0); i < n; i++ {
		e := t[32+i*32:]
		var g [16]byte
		copy(g[:], e)
		flags := le.Uint32(e[24:])
		var b []byte
		var err error
		switch g {
		case vhdxFileParamsGUID:
			if b, err = item(i, 8); err != nil {
				return err
			}
			v.BlockSize = int64(le.Uint32(b))
			if le.Uint32(b[4:])&2 != 0 {
				return unsupported("vhdx", off+32+i*32, "differencing disk (has a parent)")
			}
			have |= 1
		case vhdxDiskSizeGUID:
			if b, err = item(i, 8); err != nil {
				return err
			}
			if s := le.Uint64(b); s > vhdxMaxSize {
				return corrupt("vhdx", off+32+i*32, "virtual disk size %d", s)
			}
			v.size = int64(le.Uint64(b))
			have |= 2
		case vhdxLogicalGUID:
			if b, err = item(i, 4); err != nil {
				return err
			}
			v.LogSector = int64(le.Uint32(b))
			have |= 4
		case vhdxPhysicalGUID:
			if b, err = item(i, 4); err != nil {
				return err
			}
			v.PhysSector = int64(le.Uint32(b))
		case vhdxDiskIDGUID:
			if b, err = item(i, 16); err != nil {
				return err
			}
			copy(v.DiskID[:], b)
		case vhdxParentLocGUID:
			return unsupported("vhdx", off+32+i*32, "parent locator (differencing disk)")
		default:
			if flags&4 != 0 {
				return unsupported("vhdx", off+32+i*32, "unknown required metadata item")
			}
		}
	}
	if have != 7 {
		return corrupt("vhdx", off, "metadata lacks file parameters, disk size or logical sector size")
	}
	bs := v.BlockSize
	if bs < 1<<20 || bs > 256<<20 || bs&(bs-1) != 0 {
		return corrupt("vhdx", off, "block size %d", bs)
	}
	if v.LogSector != 512 && v.LogSector != 4096 {
		return corrupt("vhdx", off, "logical sector size %d", v.LogSector)
	}
	if v.size%v.LogSector != 0 {
		return corrupt("vhdx", off, "virtual size %d not a multiple of the sector size", v.size)
	}
	return nil
}

// Size is the virtual disk size in bytes.
func (v *VHDX) Size() int64 { return v.size }

// ReadAt reads virtual disk bytes; blocks not present read as zeros.
func (v *VHDX) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, v.size)
	p = p[:n]
	for len(p) > 0 {
		b := off / v.BlockSize
		in := off % v.BlockSize
		chunk := min(int64(len(p)), v.BlockSize-in)
		q := p[:chunk]
		idx := b + b/v.chunkRatio
		e := v.bat[idx]
		fo := int64(e>>20) << 20
		switch e & 7 {
		case vhdxPayloadNotPresent, vhdxPayloadUndefined, vhdxPayloadZero, vhdxPayloadUnmapped:
			zero(q)
		case vhdxPayloadFull:
			if err := v.readPayload(q, fo, in, idx); err != nil {
				return 0, err
			}
		case vhdxPayloadPartial:
			if err := v.readPartial(q, b, fo, in, idx); err != nil {
				return 0, err
			}
		default:
			return 0, corrupt("vhdx", v.batOff+idx*8, "BAT entry state %d for block %d", e&7, b)
		}
		p = p[chunk:]
		off += chunk
	}
	return n, eof
}

func (v *VHDX) readPayload(q []byte, fo, in, idx int64) error {
	if fo < 3<<20 || fo >= v.fileSize {
		return corrupt("vhdx", v.batOff+idx*8, "payload block at %d outside file", fo)
	}
	return readAt("vhdx", v.r, q, fo+in, "payload block")
}

// readPartial reads a partially present block through its chunk's
// sector bitmap (1 bit per logical sector, least significant bit first).
func (v *VHDX) readPartial(q []byte, b, fo, in, idx int64) error {
	c := b / v.chunkRatio
	si := (c+1)*(v.chunkRatio+1) - 1
	var bm []byte
	if si < int64(len(v.bat)) && v.bat[si]&7 == vhdxBitmapPresent {
		bo := int64(v.bat[si]>>20) << 20
		v.mu.Lock()
		bm = v.bitmaps[bo]
		v.mu.Unlock()
		if bm == nil {
			if bo < 3<<20 || bo+1<<20 > v.fileSize {
				return corrupt("vhdx", v.batOff+si*8, "sector bitmap block at %d outside file", bo)
			}
			bm = make([]byte, 1<<20)
			if err := readAt("vhdx", v.r, bm, bo, "sector bitmap block"); err != nil {
				return err
			}
			v.mu.Lock()
			if len(v.bitmaps) > 16 {
				clear(v.bitmaps)
			}
			v.bitmaps[bo] = bm
			v.mu.Unlock()
		}
	}
	first := (b % v.chunkRatio) * (v.BlockSize / v.LogSector)
	for len(q) > 0 {
		s := in / v.LogSector
		k := min(int64(len(q)), (s+1)*v.LogSector-in)
		bit := first + s
		if bm != nil && bm[bit/8]&(1<<(bit%8)) != 0 {
			if err := v.readPayload(q[:k], fo, in, idx); err != nil {
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

// setCRC32C stores the CRC-32C of b (with the 4-byte field at at zeroed)
// into that field.
func setCRC32C(b []byte, at int) {
	clear(b[at : at+4])
	binary.LittleEndian.PutUint32(b[at:], crc32.Checksum(b, crc32c))
}
