package ese

import "encoding/binary"

// xorChecksum is the legacy checksum: 0x89abcdef XORed with every
// little-endian 32-bit word after the first (the checksum itself).
func xorChecksum(b []byte) uint32 {
	sum := uint32(headerMagic)
	for i := 4; i+4 <= len(b); i += 4 {
		sum ^= binary.LittleEndian.Uint32(b[i:])
	}
	return sum
}

func parityMask(v uint32) uint32 {
	v ^= v >> 16
	v ^= v >> 8
	v ^= v >> 4
	v ^= v >> 2
	v ^= v >> 1
	if v&1 != 0 {
		return 0xffffffff
	}
	return 0
}

// eccChecksum computes ESE's 64-bit "new format" checksum of one block: a
// Hsiao ECC code in the high 32 bits, the XOR of the block's words with the
// page number in the low 32 bits. For the block holding the page header
// the first 8 bytes (the checksum) count as zero.
func eccChecksum(b []byte, pgno uint32, headerBlock bool) uint64 {
	var p, p0, p1, p2, p3 uint32
	idxp := uint32(0xff800000)
	n := len(b) / 16 * 16
	for i := 0; i < n; i += 16 {
		t0 := binary.LittleEndian.Uint32(b[i:])
		t1 := binary.LittleEndian.Uint32(b[i+4:])
		t2 := binary.LittleEndian.Uint32(b[i+8:])
		t3 := binary.LittleEndian.Uint32(b[i+12:])
		if i == 0 && headerBlock {
			t0, t1 = 0, 0
		}
		p0 ^= t0
		p1 ^= t1
		p2 ^= t2
		p3 ^= t3
		p ^= idxp & parityMask(t0^t1^t2^t3)
		idxp += 0xff800080
	}
	p |= 0x00400000 & parityMask(p0^p1)
	p |= 0x00000040 & parityMask(p2^p3)
	r0 := p0 ^ p2
	r1 := p1 ^ p3
	p |= 0x00200000 & parityMask(r0)
	p |= 0x00000020 & parityMask(r1)
	r2 := r0 ^ r1
	var r uint32
	idxr := uint32(0xffff0000)
	for i := uint32(1); i != 0; i += i {
		if r2&i != 0 {
			r ^= idxr
		}
		idxr += 0xffff0001
	}
	mask := uint32(len(b))<<19 - 1
	ecc := p&0xffe0ffe0&mask | r&0x001f001f
	return uint64(ecc)<<32 | uint64(r2^pgno)
}

type sumKind int

const (
	sumEmpty sumKind = iota
	sumOld
	sumNew
)

const pageFlagNewChecksum = 0x2000

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checkPage verifies the checksum(s) of page pg held in b and returns the
// format found and any mismatches.
func (db *DB) checkPage(b []byte, pg uint32) (sumKind, []*ChecksumError) {
	if len(b) < 40 || allZero(b) {
		return sumEmpty, nil
	}
	le := binary.LittleEndian
	off := int64(pg+1) * int64(db.pageSize)
	flags := le.Uint32(b[36:])
	if flags&pageFlagNewChecksum == 0 && !db.large {
		stored := le.Uint64(b)
		computed := uint64(pg)<<32 | uint64(xorChecksum(b))
		if stored != computed {
			return sumOld, []*ChecksumError{{Page: pg, Offset: off, Stored: stored, Computed: computed}}
		}
		return sumOld, nil
	}
	block := len(b)
	if db.large {
		block = 4096
		if len(b) > 16384 {
			block = 8192
		}
	}
	var errs []*ChecksumError
	check := func(i int, stored uint64, data []byte) {
		if c := eccChecksum(data, pg, i == 0); c != stored {
			errs = append(errs, &ChecksumError{Page: pg, Offset: off, Stored: stored, Computed: c, Block: i})
		}
	}
	check(0, le.Uint64(b), b[:block])
	if db.large && len(b) >= 64 {
		for i := 1; i <= 3 && (i+1)*block <= len(b); i++ {
			check(i, le.Uint64(b[40+8*(i-1):]), b[i*block:(i+1)*block])
		}
	}
	return sumNew, errs
}
