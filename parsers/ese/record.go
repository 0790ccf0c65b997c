package ese

import (
	"encoding/binary"
	"sort"
)

// Tagged field header flags (TAGFLD_HEADER).
const (
	tagLongValue  = 0x01
	tagCompressed = 0x02
	tagSeparated  = 0x04
	tagMulti      = 0x08
	tagTwoValues  = 0x10
	tagNull       = 0x20
	tagEncrypted  = 0x40
)

// rawRecord is a parsed record (the data of a table leaf entry).
type rawRecord struct {
	data      []byte
	lastFixed int
	lastVar   int
	bitmap    []byte
	varOffs   []uint16
	varData   int
	tagged    []taggedField
}

type taggedField struct {
	id     uint32
	data   []byte
	flags  byte
	null   bool
	hasHdr bool
}

func parseRecord(d []byte, large bool) (*rawRecord, error) {
	if len(d) < 4 {
		return nil, corruptf("record of %d bytes has no header", len(d))
	}
	r := &rawRecord{data: d, lastFixed: int(d[0]), lastVar: int(d[1])}
	varOff := int(binary.LittleEndian.Uint16(d[2:]))
	bm := (r.lastFixed + 7) / 8
	if varOff < 4+bm || varOff > len(d) {
		return nil, corruptf("record: variable data offset %d outside 4..%d", varOff, len(d))
	}
	r.bitmap = d[varOff-bm : varOff]
	nvar := 0
	if r.lastVar >= 128 {
		nvar = r.lastVar - 127
	}
	if varOff+2*nvar > len(d) {
		return nil, corruptf("record: %d variable offsets at %d run past %d bytes", nvar, varOff, len(d))
	}
	r.varOffs = make([]uint16, nvar)
	for i := range nvar {
		r.varOffs[i] = binary.LittleEndian.Uint16(d[varOff+2*i:])
	}
	r.varData = varOff + 2*nvar
	tagStart := r.varData
	if nvar > 0 {
		tagStart += int(r.varOffs[nvar-1] & 0x7fff)
	}
	if tagStart > len(d) {
		return nil, corruptf("record: variable data ends at %d past %d bytes", tagStart, len(d))
	}
	if err := r.parseTagged(d[tagStart:], large); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rawRecord) parseTagged(t []byte, large bool) error {
	if len(t) < 4 {
		return nil
	}
	mask := uint16(0x1fff)
	if large {
		mask = 0x7fff
	}
	first := int(binary.LittleEndian.Uint16(t[2:]) & mask)
	if first < 4 || first%4 != 0 || first > len(t) {
		return corruptf("record: tagged field array of %d bytes in %d", first, len(t))
	}
	n := first / 4
	r.tagged = make([]taggedField, 0, n)
	offs := make([]int, n+1)
	for i := range n {
		offs[i] = int(binary.LittleEndian.Uint16(t[4*i+2:]) & mask)
	}
	offs[n] = len(t)
	for i := range n {
		id := uint32(binary.LittleEndian.Uint16(t[4*i:]))
		ib := binary.LittleEndian.Uint16(t[4*i+2:])
		start, end := offs[i], offs[i+1]
		if start < first || start > end || end > len(t) {
			return corruptf("record: tagged column %d at %d..%d outside %d..%d", id, start, end, first, len(t))
		}
		f := taggedField{id: id, data: t[start:end]}
		if large {
			f.hasHdr = true
		} else {
			f.hasHdr = ib&0x4000 != 0
			f.null = ib&0x2000 != 0
		}
		if f.hasHdr && len(f.data) > 0 {
			f.flags = f.data[0]
			f.data = f.data[1:]
			if f.flags&tagNull != 0 {
				f.null = true
			}
		}
		r.tagged = append(r.tagged, f)
	}
	return nil
}

// fixed returns the bytes of a fixed column, nil when NULL or absent (the
// caller applies the default for absent columns).
func (r *rawRecord) fixed(c *Column) []byte {
	b, _ := r.fixedState(c)
	return b
}

// fixedState returns the column bytes and whether the record holds the
// column at all (false: the column was added after the record was
// written, and its default applies).
func (r *rawRecord) fixedState(c *Column) ([]byte, bool) {
	if c == nil || c.ID < 1 || int(c.ID) > r.lastFixed {
		return nil, false
	}
	bit := int(c.ID) - 1
	if bit/8 < len(r.bitmap) && r.bitmap[bit/8]&(1<<uint(bit%8)) != 0 {
		return nil, true
	}
	end := c.RecordOffset + c.fixedSize()
	if c.RecordOffset < 4 || end > len(r.data) {
		return nil, true
	}
	return r.data[c.RecordOffset:end], true
}

// variable returns the bytes of variable column id and whether it is set.
func (r *rawRecord) variable(id uint32) ([]byte, bool) {
	b, present, null := r.variableState(id)
	return b, present && !null
}

func (r *rawRecord) variableState(id uint32) (b []byte, present, null bool) {
	if id < 128 || int(id) > r.lastVar {
		return nil, false, false
	}
	i := int(id) - 128
	end := r.varOffs[i]
	if end&0x8000 != 0 {
		return nil, true, true
	}
	start := 0
	if i > 0 {
		start = int(r.varOffs[i-1] & 0x7fff)
	}
	s, e := r.varData+start, r.varData+int(end)
	if s > e || e > len(r.data) {
		return nil, true, true
	}
	return r.data[s:e], true, false
}

func (r *rawRecord) taggedField(id uint32) *taggedField {
	i := sort.Search(len(r.tagged), func(i int) bool { return r.tagged[i].id >= id })
	if i < len(r.tagged) && r.tagged[i].id == id {
		return &r.tagged[i]
	}
	for j := range r.tagged { // arrays written out of order
		if r.tagged[j].id == id {
			return &r.tagged[j]
		}
	}
	return nil
}
