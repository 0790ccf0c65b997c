package mdf

import (
	"encoding/binary"
	"fmt"
)

// Record types (bits 1-3 of status byte A).
const (
	RecPrimary      = 0
	RecForwarded    = 1
	RecForwarding   = 2
	RecIndex        = 3
	RecBlobFragment = 4
	RecGhostIndex   = 5
	RecGhostData    = 6
	RecGhostVersion = 7
)

const (
	statusHasNullBitmap = 0x10
	statusHasVarCols    = 0x20
	statusHasVersioning = 0x40
)

// complexBit marks a variable-length column holding a pointer structure
// (row-overflow, LOB root, forwarding back pointer, sparse vector).
const complexBit = 0x8000

// versioningTagSize is the size of the row-versioning tag some records carry.
const versioningTagSize = 14

// Record is one parsed FixedVar record (the format of uncompressed data,
// index and LOB records).
type Record struct {
	Data       []byte // record bytes; may run past the record's true end
	Type       int
	StatusA    byte
	StatusB    byte
	FixedEnd   int // offset of the column count (end of the fixed part)
	NumCols    int // column count stored in the record
	nullBitmap []byte
	varEnds    []byte // raw 2-byte end offsets, one per variable column
	varStart   int    // offset of the first variable column's data
	Length     int    // computed record length (incl. versioning tag)
	Forward    RowID  // target of a forwarding stub
}

// IsGhost reports whether the record is a ghost (deleted, not yet cleaned).
func (r *Record) IsGhost() bool {
	return r.Type == RecGhostData || r.Type == RecGhostIndex || r.Type == RecGhostVersion
}

// HasVersioning reports whether the record carries a 14-byte versioning tag.
func (r *Record) HasVersioning() bool { return r.StatusA&statusHasVersioning != 0 }

// NumVar returns the number of variable-length columns stored.
func (r *Record) NumVar() int { return len(r.varEnds) / 2 }

// parseRecord parses a data (or blob) record that starts at b[0]; b runs
// to the end of the page's record area.
func parseRecord(b []byte) (*Record, error) {
	r := new(Record)
	if err := r.parse(b); err != nil {
		return nil, err
	}
	return r, nil
}

// parse fills r from the record starting at b[0], overwriting every field
// (so one Record can be reused for every slot of a page).
func (r *Record) parse(b []byte) error {
	if len(b) < 1 {
		return fmt.Errorf("%w: empty record", ErrFormat)
	}
	*r = Record{Data: b, StatusA: b[0], Type: int(b[0]>>1) & 7}
	if r.Type == RecForwarding {
		if len(b) < 9 {
			return fmt.Errorf("%w: forwarding stub truncated (%d bytes)", ErrFormat, len(b))
		}
		r.Forward = parseRowID(b[1:9])
		r.Length = 9
		return nil
	}
	if len(b) < 4 {
		return fmt.Errorf("%w: record header truncated (%d bytes)", ErrFormat, len(b))
	}
	r.StatusB = b[1]
	r.FixedEnd = int(binary.LittleEndian.Uint16(b[2:4]))
	if r.FixedEnd < 4 || r.FixedEnd > len(b) {
		return fmt.Errorf("%w: fixed-length end %d outside record (room %d)", ErrFormat, r.FixedEnd, len(b))
	}
	if r.Type == RecBlobFragment {
		// LOB fragments store their length where data records store the
		// end of the fixed part, and have nothing after it.
		r.Length = r.FixedEnd
		return nil
	}
	pos := r.FixedEnd
	if r.StatusA&statusHasNullBitmap == 0 && r.StatusA&statusHasVarCols == 0 {
		// No column count, no bitmap, no variable part.
		r.Length = pos
		if r.HasVersioning() {
			r.Length += versioningTagSize
		}
		return nil
	}
	if pos+2 > len(b) {
		return fmt.Errorf("%w: column count at %d outside record", ErrFormat, pos)
	}
	r.NumCols = int(binary.LittleEndian.Uint16(b[pos:]))
	pos += 2
	if r.StatusA&statusHasNullBitmap != 0 {
		n := (r.NumCols + 7) / 8
		if pos+n > len(b) {
			return fmt.Errorf("%w: null bitmap (%d columns) runs past record", ErrFormat, r.NumCols)
		}
		r.nullBitmap = b[pos : pos+n]
		pos += n
	}
	r.varStart = pos
	if r.StatusA&statusHasVarCols != 0 {
		if pos+2 > len(b) {
			return fmt.Errorf("%w: variable column count at %d outside record", ErrFormat, pos)
		}
		nv := int(binary.LittleEndian.Uint16(b[pos:]))
		pos += 2
		if pos+2*nv > len(b) {
			return fmt.Errorf("%w: %d variable column offsets run past record", ErrFormat, nv)
		}
		r.varEnds = b[pos : pos+2*nv]
		pos += 2 * nv
		r.varStart = pos
		if nv > 0 {
			last := int(binary.LittleEndian.Uint16(r.varEnds[2*(nv-1):]) &^ complexBit)
			if last > pos {
				pos = last
			}
		}
	}
	if pos > len(b) {
		return fmt.Errorf("%w: variable data ends at %d past record room %d", ErrFormat, pos, len(b))
	}
	r.Length = pos
	if r.HasVersioning() {
		r.Length += versioningTagSize
	}
	return nil
}

// IsNull reports whether the null bitmap marks column bit i (0-based) null.
// Columns beyond the stored column count are null (added after the row was
// written).
func (r *Record) IsNull(i int) bool {
	if i < 0 {
		return false
	}
	if i >= r.NumCols && r.NumCols > 0 {
		return true
	}
	if r.nullBitmap == nil || i/8 >= len(r.nullBitmap) {
		return false
	}
	return r.nullBitmap[i/8]&(1<<(uint(i)%8)) != 0
}

// Fixed returns n bytes of the fixed part at record offset off.
func (r *Record) Fixed(off, n int) ([]byte, error) {
	if off < 4 || n < 0 || off+n > r.FixedEnd {
		return nil, fmt.Errorf("%w: fixed column at %d+%d outside fixed part (ends %d)", ErrFormat, off, n, r.FixedEnd)
	}
	return r.Data[off : off+n], nil
}

// Var returns variable column i (0-based): its bytes, whether it is a
// complex column, and whether it is present at all.
func (r *Record) Var(i int) (b []byte, complex bool, present bool, err error) {
	nv := r.NumVar()
	if i < 0 || i >= nv {
		return nil, false, false, nil
	}
	start := r.varStart
	if i > 0 {
		start = int(binary.LittleEndian.Uint16(r.varEnds[2*(i-1):]) &^ complexBit)
	}
	raw := binary.LittleEndian.Uint16(r.varEnds[2*i:])
	end := int(raw &^ complexBit)
	if start < r.varStart || end < start || end > len(r.Data) {
		return nil, false, true, fmt.Errorf("%w: variable column %d spans %d..%d outside record (%d..%d)", ErrFormat, i, start, end, r.varStart, len(r.Data))
	}
	return r.Data[start:end], raw&complexBit != 0, true, nil
}
