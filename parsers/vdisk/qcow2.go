package vdisk

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

const (
	qcowMagic         = 0x514649fb // "QFI\xfb"
	qcowOflagCopied   = 1 << 63
	qcowOflagCompress = 1 << 62
	qcowOflagZero     = 1
	qcowOffsetMask    = 0x00fffffffffffe00
	qcowL2CacheMax    = 64
)

// Qcow2Header is the part of the qcow2 header this package uses.
type Qcow2Header struct {
	Version               uint32
	BackingFileOffset     uint64
	BackingFileSize       uint32
	ClusterBits           uint32
	Size                  uint64
	CryptMethod           uint32
	L1Size                uint32
	L1TableOffset         uint64
	RefcountTableOffset   uint64
	RefcountTableClusters uint32
	NbSnapshots           uint32
	SnapshotsOffset       uint64
	Incompatible          uint64
	Compatible            uint64
	Autoclear             uint64
	RefcountOrder         uint32
	HeaderLength          uint32
	CompressionType       uint8
}

func parseQcow2Header(b []byte) (Qcow2Header, error) {
	var h Qcow2Header
	be := binary.BigEndian
	if len(b) < 72 || be.Uint32(b) != qcowMagic {
		return h, corrupt("qcow2", 0, "no qcow2 magic")
	}
	h.Version = be.Uint32(b[4:])
	h.BackingFileOffset = be.Uint64(b[8:])
	h.BackingFileSize = be.Uint32(b[16:])
	h.ClusterBits = be.Uint32(b[20:])
	h.Size = be.Uint64(b[24:])
	h.CryptMethod = be.Uint32(b[32:])
	h.L1Size = be.Uint32(b[36:])
	h.L1TableOffset = be.Uint64(b[40:])
	h.RefcountTableOffset = be.Uint64(b[48:])
	h.RefcountTableClusters = be.Uint32(b[56:])
	h.NbSnapshots = be.Uint32(b[60:])
	h.SnapshotsOffset = be.Uint64(b[64:])
	h.RefcountOrder = 4
	h.HeaderLength = 72
	switch h.Version {
	case 2:
	case 3:
		if len(b) < 104 {
			return h, corrupt("qcow2", 0, "v3 header too short")
		}
		h.Incompatible = be.Uint64(b[72:])
		h.Compatible = be.Uint64(b[80:])
		h.Autoclear = be.Uint64(b[88:])
		h.RefcountOrder = be.Uint32(b[96:])
		h.HeaderLength = be.Uint32(b[100:])
		if h.HeaderLength < 104 {
			return h, corrupt("qcow2", 100, "header length %d < 104", h.HeaderLength)
		}
		if h.HeaderLength > 104 && h.Incompatible&(1<<3) != 0 {
			h.CompressionType = b[104]
		}
	default:
		return h, unsupported("qcow2", 4, "version %d", h.Version)
	}
	return h, nil
}

// Qcow2 reads a qcow2 (version 2 or 3) image without a backing file.
type Qcow2 struct {
	r        io.ReaderAt
	fileSize int64
	Header   Qcow2Header
	cbits    uint
	csize    int64
	l2n      int64 // entries per L2 table
	l1       []uint64

	mu    sync.Mutex
	l2    map[uint64][]uint64
	zbuf  []byte
	cdata []byte
}

// OpenQcow2 opens a qcow2 image of fileSize bytes.
func OpenQcow2(r io.ReaderAt, fileSize int64) (*Qcow2, error) {
	b := make([]byte, 112)
	n, err := r.ReadAt(b, 0)
	if n < 72 {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, ioErr("qcow2", 0, "reading header", err)
	}
	h, err := parseQcow2Header(b[:n])
	if err != nil {
		return nil, err
	}
	if h.ClusterBits < 9 || h.ClusterBits > 21 {
		return nil, corrupt("qcow2", 20, "cluster bits %d", h.ClusterBits)
	}
	if h.CryptMethod != 0 {
		return nil, unsupported("qcow2", 32, "encryption method %d", h.CryptMethod)
	}
	if h.BackingFileOffset != 0 {
		return nil, unsupported("qcow2", 8, "backing file (needs its parent image)")
	}
	// bit 0 dirty and bit 1 corrupt are harmless for reading
	if bad := h.Incompatible &^ (1<<0 | 1<<1 | 1<<3); bad != 0 {
		return nil, unsupported("qcow2", 72, "incompatible features 0x%x (external data file or extended L2)", bad)
	}
	if h.CompressionType != 0 {
		return nil, unsupported("qcow2", 104, "compression type %d (only zlib)", h.CompressionType)
	}
	if h.Size > 1<<60 {
		return nil, corrupt("qcow2", 24, "virtual size %d", h.Size)
	}
	q := &Qcow2{r: r, fileSize: fileSize, Header: h, cbits: uint(h.ClusterBits)}
	q.csize = 1 << q.cbits
	q.l2n = q.csize / 8
	per := q.csize * q.l2n
	need := (int64(h.Size) + per - 1) / per
	if int64(h.L1Size) < need {
		return nil, corrupt("qcow2", 36, "L1 table of %d entries for %d needed", h.L1Size, need)
	}
	if need > 0 {
		l1off := int64(h.L1TableOffset)
		if h.L1TableOffset > uint64(fileSize) || l1off+need*8 > fileSize || l1off%q.csize != 0 {
			return nil, corrupt("qcow2", 40, "L1 table at %d (%d entries) outside file of %d bytes", h.L1TableOffset, need, fileSize)
		}
		raw := make([]byte, need*8)
		if err := readAt("qcow2", r, raw, l1off, "L1 table"); err != nil {
			return nil, err
		}
		q.l1 = make([]uint64, need)
		for i := range q.l1 {
			q.l1[i] = binary.BigEndian.Uint64(raw[i*8:])
		}
	}
	q.l2 = make(map[uint64][]uint64)
	return q, nil
}

// Size is the virtual disk size in bytes.
func (q *Qcow2) Size() int64 { return int64(q.Header.Size) }

func (q *Qcow2) l2table(off uint64, l1i int64) ([]uint64, error) {
	q.mu.Lock()
	t, ok := q.l2[off]
	q.mu.Unlock()
	if ok {
		return t, nil
	}
	if off%uint64(q.csize) != 0 || off+uint64(q.csize) > uint64(q.fileSize) {
		return nil, corrupt("qcow2", int64(q.Header.L1TableOffset)+l1i*8, "L2 table offset %d invalid for file of %d bytes", off, q.fileSize)
	}
	raw := make([]byte, q.csize)
	if err := readAt("qcow2", q.r, raw, int64(off), "L2 table"); err != nil {
		return nil, err
	}
	t = make([]uint64, q.l2n)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	q.mu.Lock()
	if len(q.l2) >= qcowL2CacheMax {
		clear(q.l2)
	}
	q.l2[off] = t
	q.mu.Unlock()
	return t, nil
}

// ReadAt reads virtual disk bytes.
func (q *Qcow2) ReadAt(p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, q.Size())
	p = p[:n]
	for len(p) > 0 {
		in := off & (q.csize - 1)
		chunk := min(int64(len(p)), q.csize-in)
		if err := q.readCluster(p[:chunk], off>>q.cbits, in); err != nil {
			return 0, err
		}
		p = p[chunk:]
		off += chunk
	}
	return n, eof
}

func (q *Qcow2) readCluster(p []byte, ci, in int64) error {
	l1i := ci / q.l2n
	l2off := q.l1[l1i] & qcowOffsetMask
	if l2off == 0 {
		zero(p)
		return nil
	}
	t, err := q.l2table(l2off, l1i)
	if err != nil {
		return err
	}
	e := t[ci%q.l2n]
	entryOff := int64(l2off) + (ci%q.l2n)*8
	if e&qcowOflagCompress != 0 {
		return q.readCompressed(p, e, in, entryOff)
	}
	if e&qcowOflagZero != 0 && q.Header.Version >= 3 {
		zero(p)
		return nil
	}
	hoff := e & qcowOffsetMask
	if hoff == 0 {
		zero(p)
		return nil
	}
	if hoff%uint64(q.csize) != 0 || hoff > uint64(q.fileSize) {
		return corrupt("qcow2", entryOff, "data cluster offset %d invalid", hoff)
	}
	return readAt("qcow2", q.r, p, int64(hoff)+in, "data cluster")
}

func (q *Qcow2) readCompressed(p []byte, e uint64, in, entryOff int64) error {
	x := 62 - (q.cbits - 8)
	hoff := int64(e & (1<<x - 1))
	nsec := int64((e>>x)&(1<<(q.cbits-8)-1)) + 1
	clen := nsec*512 - hoff&511
	if hoff >= q.fileSize {
		return corrupt("qcow2", entryOff, "compressed cluster offset %d beyond file", hoff)
	}
	clen = min(clen, q.fileSize-hoff, 2*q.csize+512)
	q.mu.Lock()
	defer q.mu.Unlock()
	if int64(cap(q.cdata)) < clen {
		q.cdata = make([]byte, clen)
	}
	cd := q.cdata[:clen]
	if err := readAt("qcow2", q.r, cd, hoff, "compressed cluster"); err != nil {
		return err
	}
	if q.zbuf == nil {
		q.zbuf = make([]byte, q.csize)
	}
	fr := flate.NewReader(bytes.NewReader(cd))
	defer fr.Close()
	k, err := io.ReadFull(fr, q.zbuf)
	if err != nil && !(err == io.ErrUnexpectedEOF && int64(k) == q.csize) {
		return ioErr("qcow2", hoff, "inflating compressed cluster", err)
	}
	copy(p, q.zbuf[in:])
	return nil
}
