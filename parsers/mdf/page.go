// Package mdf reads SQL Server primary data files (.mdf) without SQL Server:
// boot page, allocation maps, system catalog, tables, rows and typed values.
//
// A Database is opened on an io.ReaderAt and a size. Every size and offset
// taken from the file is bounds-checked before it is used; damaged pages
// produce errors (collected in a ScanResult where a table is read) instead
// of panics.
package mdf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// PageSize is the size of every SQL Server page.
const PageSize = 8192

// pageHeaderSize is the size of the page header that precedes the records.
const pageHeaderSize = 96

// Page types found in m_type.
const (
	PageTypeData       = 1
	PageTypeIndex      = 2
	PageTypeTextMix    = 3
	PageTypeTextTree   = 4
	PageTypeSort       = 7
	PageTypeGAM        = 8
	PageTypeSGAM       = 9
	PageTypeIAM        = 10
	PageTypePFS        = 11
	PageTypeBoot       = 13
	PageTypeFileHeader = 15
	PageTypeDiffMap    = 16
	PageTypeMLMap      = 17
)

// Page header flag bits (m_flagBits).
const (
	flagTornBits = 0x0100
	flagChecksum = 0x0200
)

// ErrFormat is wrapped by every error about malformed file content.
var ErrFormat = errors.New("mdf: malformed data")

// PageID addresses a page: file id and page number within that file.
type PageID struct {
	File uint16
	Page uint32
}

func (p PageID) String() string { return fmt.Sprintf("%d:%d", p.File, p.Page) }

// IsZero reports whether p is the null page pointer.
func (p PageID) IsZero() bool { return p.File == 0 && p.Page == 0 }

// RowID addresses one record: page and slot.
type RowID struct {
	PageID
	Slot uint16
}

func (r RowID) String() string { return fmt.Sprintf("%d:%d:%d", r.File, r.Page, r.Slot) }

func parsePageID(b []byte) PageID {
	return PageID{Page: binary.LittleEndian.Uint32(b[0:4]), File: binary.LittleEndian.Uint16(b[4:6])}
}

func parseRowID(b []byte) RowID {
	return RowID{PageID: parsePageID(b[0:6]), Slot: binary.LittleEndian.Uint16(b[6:8])}
}

// PageHeader is the 96-byte header at the start of every page.
type PageHeader struct {
	HeaderVersion uint8
	Type          uint8
	TypeFlagBits  uint8
	Level         uint8
	FlagBits      uint16
	IndexID       uint16 // m_indexId (allocation unit high part)
	Prev          PageID
	PMinLen       uint16
	Next          PageID
	SlotCount     uint16
	ObjectID      uint32 // m_objId (allocation unit id part, or the object id on SQL Server 2000 pages)
	FreeCount     uint16
	FreeData      uint16
	This          PageID
	ReservedCount uint16
	GhostRecCount uint16
	TornBits      uint32 // checksum or torn-page bits
}

// AllocUnitID returns the allocation unit id the page belongs to, computed
// as SQL Server does from m_objId and m_indexId. This also holds for pages
// written by SQL Server 2000, whose allocation units got ids of that form on
// upgrade.
func (h *PageHeader) AllocUnitID() int64 {
	return int64(uint64(h.IndexID)<<48 | uint64(h.ObjectID)<<16)
}

// BelongsTo reports whether the page belongs to allocation unit au. Besides
// the exact id match, this accepts SQL Server 2000 data pages of a
// clustered index, which carry index id 0 in their header while their
// allocation unit (object id << 16 | 1 << 48) names index 1.
func (h *PageHeader) BelongsTo(au int64) bool {
	if h.AllocUnitID() == au {
		return true
	}
	if au&0xffff != 0 || h.IndexID != 0 || uint64(au)>>48 != 1 {
		return false
	}
	return uint32(uint64(au)>>16) == h.ObjectID
}

func parsePageHeader(b []byte) PageHeader {
	return PageHeader{
		HeaderVersion: b[0],
		Type:          b[1],
		TypeFlagBits:  b[2],
		Level:         b[3],
		FlagBits:      binary.LittleEndian.Uint16(b[4:]),
		IndexID:       binary.LittleEndian.Uint16(b[6:]),
		Prev:          parsePageID(b[8:]),
		PMinLen:       binary.LittleEndian.Uint16(b[14:]),
		Next:          parsePageID(b[16:]),
		SlotCount:     binary.LittleEndian.Uint16(b[22:]),
		ObjectID:      binary.LittleEndian.Uint32(b[24:]),
		FreeCount:     binary.LittleEndian.Uint16(b[28:]),
		FreeData:      binary.LittleEndian.Uint16(b[30:]),
		This:          parsePageID(b[32:]),
		ReservedCount: binary.LittleEndian.Uint16(b[38:]),
		GhostRecCount: binary.LittleEndian.Uint16(b[58:]),
		TornBits:      binary.LittleEndian.Uint32(b[60:]),
	}
}

// Page is one decoded 8 KiB page. Data is the whole page (header
// included) with torn-page bits already restored.
type Page struct {
	ID     PageID
	Header PageHeader
	Data   []byte
	// Verify is the outcome of the checksum or torn-page check.
	Verify VerifyStatus
}

// VerifyStatus says how a page's integrity was checked.
type VerifyStatus int

const (
	VerifyNone      VerifyStatus = iota // page carries no protection
	VerifyChecksum                      // checksum present and correct
	VerifyTornBits                      // torn-page bits present and consistent
	VerifyBadSum                        // checksum present and wrong
	VerifyTorn                          // torn-page bits inconsistent: the page was torn
	VerifyWrongPage                     // header names another page (or is not a page header)
	VerifyEmpty                         // page never written (all zero)
)

func (v VerifyStatus) String() string {
	switch v {
	case VerifyNone:
		return "none"
	case VerifyChecksum:
		return "checksum ok"
	case VerifyTornBits:
		return "torn bits ok"
	case VerifyBadSum:
		return "bad checksum"
	case VerifyTorn:
		return "torn page"
	case VerifyWrongPage:
		return "wrong page id in header"
	case VerifyEmpty:
		return "empty"
	}
	return fmt.Sprintf("VerifyStatus(%d)", int(v))
}

// Unused reports whether the page holds no page of this file at all
// (never written, or foreign content): normal inside allocated extents.
func (v VerifyStatus) Unused() bool { return v == VerifyEmpty || v == VerifyWrongPage }

// OK reports whether the status means the page is usable.
func (v VerifyStatus) OK() bool {
	return v == VerifyNone || v == VerifyChecksum || v == VerifyTornBits
}

// PageChecksum computes the SQL Server page checksum of an 8 KiB page: the
// XOR of each 512-byte sector's 32-bit words (the checksum field itself
// skipped), each sector's result rotated left by 15 minus its index.
func PageChecksum(p []byte) uint32 {
	var sum uint32
	for i := 0; i < 16; i++ {
		// XOR 64-bit words and fold: same result as 32-bit words.
		sec := p[i*512 : i*512+512 : i*512+512]
		var x uint64
		for j := 0; j < 512; j += 64 {
			w := sec[j : j+64 : j+64]
			x ^= binary.LittleEndian.Uint64(w[0:]) ^ binary.LittleEndian.Uint64(w[8:]) ^
				binary.LittleEndian.Uint64(w[16:]) ^ binary.LittleEndian.Uint64(w[24:]) ^
				binary.LittleEndian.Uint64(w[32:]) ^ binary.LittleEndian.Uint64(w[40:]) ^
				binary.LittleEndian.Uint64(w[48:]) ^ binary.LittleEndian.Uint64(w[56:])
		}
		x32 := uint32(x) ^ uint32(x>>32)
		if i == 0 {
			x32 ^= binary.LittleEndian.Uint32(sec[60:]) // the checksum field itself is skipped
		}
		sum ^= bits.RotateLeft32(x32, 15-i)
	}
	return sum
}

// verifyPage checks a page's checksum or torn bits, restoring the
// original torn-page bits in place when they are consistent.
func verifyPage(p []byte, want PageID) VerifyStatus {
	allZero := true
	for _, c := range p[:pageHeaderSize] {
		if c != 0 {
			allZero = false
			break
		}
	}
	if allZero {
		return VerifyEmpty
	}
	h := parsePageHeader(p)
	if want.File != 0 && (h.HeaderVersion != 1 || h.This != want) {
		// Not a page written for this position: never formatted, or
		// leftovers from before the file was extended.
		return VerifyWrongPage
	}
	status := VerifyNone
	switch {
	case h.FlagBits&flagChecksum != 0:
		if PageChecksum(p) != h.TornBits {
			return VerifyBadSum
		}
		status = VerifyChecksum
	case h.FlagBits&flagTornBits != 0:
		pattern := byte(h.TornBits & 3)
		for i := 1; i < 16; i++ {
			if p[i*512+511]&3 != pattern {
				return VerifyTorn
			}
		}
		for i := 1; i < 16; i++ {
			orig := byte(h.TornBits>>(2*i)) & 3
			p[i*512+511] = p[i*512+511]&^3 | orig
		}
		status = VerifyTornBits
	}
	return status
}

// slotOffset returns the record offset held by slot i, checked to lie in
// the record area.
func (p *Page) slotOffset(i int) (int, error) {
	if i < 0 || i >= int(p.Header.SlotCount) {
		return 0, p.errorf(0, "slot %d out of range (slot count %d)", i, p.Header.SlotCount)
	}
	pos := PageSize - 2*(i+1)
	if pos < pageHeaderSize {
		return 0, p.errorf(pos, "slot array overlaps header (slot %d)", i)
	}
	off := int(binary.LittleEndian.Uint16(p.Data[pos:]))
	if off == 0 {
		return 0, nil // empty slot
	}
	if off < pageHeaderSize || off >= pos || off >= p.slotEnd() {
		return 0, p.errorf(pos, "slot %d offset %d outside record area", i, off)
	}
	return off, nil
}

// slotEnd returns where the record area for slots ends (start of slot array).
func (p *Page) slotEnd() int {
	e := PageSize - 2*int(p.Header.SlotCount)
	if e < pageHeaderSize {
		e = pageHeaderSize
	}
	return e
}

// PageError is an error about one page, carrying the page id and the byte
// offset within the file.
type PageError struct {
	Page   PageID
	Offset int64 // byte offset in the file
	Err    error
}

func (e *PageError) Error() string {
	return fmt.Sprintf("page %s (file offset %d): %v", e.Page, e.Offset, e.Err)
}

func (e *PageError) Unwrap() error { return e.Err }

func (p *Page) errorf(off int, format string, args ...any) error {
	return &PageError{Page: p.ID, Offset: int64(p.ID.Page)*PageSize + int64(off),
		Err: fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))}
}
