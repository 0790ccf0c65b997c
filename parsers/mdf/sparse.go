package mdf

import (
	"encoding/binary"
	"fmt"
)

// Sparse columns (SQL Server 2008 and later) are not in the fixed or
// variable part of a record: the non-NULL ones are kept together in one
// complex variable-length column, the sparse vector:
//
//	2 bytes  complex column header (5)
//	2 bytes  number of sparse values n
//	2n bytes column ids
//	2n bytes end offsets of the values, from the start of the vector
//	values   in their uncompressed stored form
//
// A sparse column missing from the vector is NULL. Like compression this
// follows the published description (SQL Internals Viewer, Delaney) and
// is unit-tested with hand-built records only: no fixture has a sparse
// column.

// markSparse records which variable slots belong to regular columns.
func (t *Table) markSparse() {
	t.sparse = false
	for _, c := range t.Columns {
		if c.Sparse {
			t.sparse = true
		}
	}
	if !t.sparse {
		return
	}
	t.claimedVar = map[int]bool{}
	for _, c := range t.Columns {
		if !c.Sparse && c.stored && c.leafOffset < 0 {
			t.claimedVar[-c.leafOffset-1] = true
		}
	}
}

const sparseVectorHeader = 5

// sparseVector finds the record's sparse vector: the complex variable
// column no regular column claims that parses as one. It returns nil when
// the record has none (every sparse column NULL).
func (t *Table) sparseVector(rec *Record) []byte {
	for i := rec.NumVar() - 1; i >= 0; i-- {
		if t.claimedVar[i] {
			continue
		}
		b, complex, present, err := rec.Var(i)
		if err != nil || !present || !complex || len(b) < 4 || binary.LittleEndian.Uint16(b) != sparseVectorHeader {
			continue
		}
		return b
	}
	return nil
}

// sparseValue returns the stored bytes of column id colid in vector v, or
// ok false when the column is not in it (NULL).
func sparseValue(v []byte, colid int) (b []byte, ok bool, err error) {
	if len(v) < 4 {
		return nil, false, nil
	}
	n := int(binary.LittleEndian.Uint16(v[2:]))
	start := 4 + 4*n
	if start > len(v) {
		return nil, false, fmt.Errorf("%w: sparse vector of %d columns runs past its %d bytes", ErrFormat, n, len(v))
	}
	prev := start
	for i := 0; i < n; i++ {
		id := int(binary.LittleEndian.Uint16(v[4+2*i:]))
		end := int(binary.LittleEndian.Uint16(v[4+2*n+2*i:]))
		if end < prev || end > len(v) {
			return nil, false, fmt.Errorf("%w: sparse value %d ends at %d (previous %d, vector %d bytes)", ErrFormat, i, end, prev, len(v))
		}
		if id == colid {
			return v[prev:end], true, nil
		}
		prev = end
	}
	return nil, false, nil
}

// decodeSparse decodes sparse column c of a FixedVar record.
func (t *Table) decodeSparse(c *Column, rec *Record) (any, error) {
	v := t.sparseVector(rec)
	if v == nil {
		return nil, nil
	}
	b, ok, err := sparseValue(v, c.ID)
	if err != nil || !ok {
		return nil, err
	}
	if n := fixedSize(c.TypeID, c.MaxLength, c.Precision, c.Scale); n > 0 {
		if len(b) != n {
			return nil, fmt.Errorf("%w: sparse %s value of %d bytes, want %d", ErrFormat, c.SQLType(), len(b), n)
		}
		if c.TypeID == TypeBit {
			return b[0]&1 != 0, nil
		}
		return decodeFixed(c, b)
	}
	return decodeVarInline(c, b)
}
