package ese

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Value is one column's value in one record.
type Value struct {
	Column *Column
	// Null is set when the column holds no value (and has no default).
	Null bool
	// Multi is set for multi-valued columns: Raw then holds each value.
	Multi bool
	// Raw holds the stored bytes of each value, after decompression and
	// long-value resolution; one entry for single values.
	Raw [][]byte
	// Default is set when the value comes from the column's default.
	Default bool
	// Err is set when the value could not be read; Raw is then empty.
	Err error
}

// Record is one row of a table.
type Record struct {
	table *Table
	raw   *rawRecord
	// Key is the record's B-tree key.
	Key []byte
}

// Records calls fn for every record of the table, in primary-key order.
func (t *Table) Records(ctx context.Context, fn func(*Record) error) error {
	if t.FDP == 0 {
		return corruptf("table %q has no data page", t.Name)
	}
	err := t.db.walk(ctx, t.FDP, func(n node) error {
		raw, err := parseRecord(n.data, t.db.large)
		if err != nil {
			return err
		}
		return fn(&Record{table: t, raw: raw, Key: n.key})
	})
	if err != nil {
		return fmt.Errorf("ese: table %q (root page %d): %w", t.Name, t.FDP, err)
	}
	return nil
}

// Count returns the number of records in the table.
func (t *Table) Count(ctx context.Context) (int, error) {
	n := 0
	err := t.Records(ctx, func(*Record) error { n++; return nil })
	return n, err
}

// Values returns the value of every column, in column order.
func (r *Record) Values(ctx context.Context) []Value {
	out := make([]Value, len(r.table.Columns))
	for i, c := range r.table.Columns {
		out[i] = r.Get(ctx, c)
	}
	return out
}

// Get returns the value of column c.
func (r *Record) Get(ctx context.Context, c *Column) Value {
	v := Value{Column: c, Multi: c.Flags&ColumnMultiValued != 0}
	def := func() Value {
		if c.Default == nil {
			v.Null = true
			return v
		}
		v.Default = true
		v.Raw = [][]byte{c.Default}
		return v
	}
	switch {
	case c.ID <= 127:
		b, present := r.raw.fixedState(c)
		if !present {
			return def()
		}
		if b == nil {
			v.Null = true
			return v
		}
		v.Raw = [][]byte{b}
	case c.ID <= 255:
		b, present, null := r.raw.variableState(c.ID)
		if !present {
			return def()
		}
		if null {
			v.Null = true
			return v
		}
		v.Raw = [][]byte{b}
	default:
		f := r.raw.taggedField(c.ID)
		if f == nil {
			return def()
		}
		if f.null {
			v.Null = true
			return v
		}
		raw, err := r.tagged(ctx, f)
		if err != nil {
			v.Err = fmt.Errorf("column %q (%d): %w", c.Name, c.ID, err)
			return v
		}
		if len(raw) > 1 {
			v.Multi = true
		}
		v.Raw = raw
	}
	return v
}

func (r *Record) tagged(ctx context.Context, f *taggedField) ([][]byte, error) {
	if f.flags&tagEncrypted != 0 {
		return nil, fmt.Errorf("%w: encrypted value", ErrUnsupported)
	}
	d := f.data
	if f.flags&tagMulti == 0 {
		switch {
		case f.flags&tagSeparated != 0:
			lv, err := r.table.longValue(ctx, d)
			return [][]byte{lv}, err
		case f.flags&tagCompressed != 0:
			b, err := decompress(d, maxDecompressed)
			return [][]byte{b}, err
		}
		return [][]byte{d}, nil
	}
	var vals [][]byte
	var separated []bool
	if f.flags&tagTwoValues != 0 {
		if len(d) < 1 || int(d[0]) > len(d)-1 {
			return nil, corruptf("two-value field of %d bytes", len(d))
		}
		n := int(d[0])
		vals = [][]byte{d[1 : 1+n], d[1+n:]}
		separated = []bool{false, false}
	} else {
		if len(d) < 2 {
			return nil, corruptf("multi-value field of %d bytes", len(d))
		}
		first := int(binary.LittleEndian.Uint16(d) & 0x7fff)
		if first < 2 || first%2 != 0 || first > len(d) {
			return nil, corruptf("multi-value offset array of %d bytes in %d", first, len(d))
		}
		cnt := first / 2
		for i := range cnt {
			o := binary.LittleEndian.Uint16(d[2*i:])
			s := int(o & 0x7fff)
			e := len(d)
			if i+1 < cnt {
				e = int(binary.LittleEndian.Uint16(d[2*i+2:]) & 0x7fff)
			}
			if s < first || s > e || e > len(d) {
				return nil, corruptf("multi-value %d at %d..%d outside %d..%d", i, s, e, first, len(d))
			}
			vals = append(vals, d[s:e])
			separated = append(separated, o&0x8000 != 0)
		}
	}
	for i := range vals {
		var err error
		switch {
		case separated[i]:
			vals[i], err = r.table.longValue(ctx, vals[i])
		case i == 0 && f.flags&tagCompressed != 0:
			// Only the first of several values is ever compressed.
			vals[i], err = decompress(vals[i], maxDecompressed)
		}
		if err != nil {
			return nil, fmt.Errorf("value %d: %w", i+1, err)
		}
	}
	return vals, nil
}

// Any returns the value as Go data: nil for NULL; bool, uint8, int16,
// int32, int64 (Currency, LongLong), float32, float64, time.Time
// (DateTime), []byte (Binary), string (Text, GUID as
// xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), uint32, uint16; []any for
// multi-valued columns.
func (v Value) Any() any {
	if v.Null || v.Err != nil || len(v.Raw) == 0 {
		return nil
	}
	if v.Multi {
		out := make([]any, len(v.Raw))
		for i, b := range v.Raw {
			out[i] = convert(v.Column, b)
		}
		return out
	}
	return convert(v.Column, v.Raw[0])
}

func convert(c *Column, b []byte) any {
	le := binary.LittleEndian
	if n := c.Type.FixedSize(); n > 0 && len(b) != n {
		return b // malformed: hand back the bytes
	}
	switch c.Type {
	case TypeBit:
		return b[0] != 0
	case TypeUnsignedByte:
		return b[0]
	case TypeShort:
		return int16(le.Uint16(b))
	case TypeUnsignedShort:
		return le.Uint16(b)
	case TypeLong:
		return int32(le.Uint32(b))
	case TypeUnsignedLong:
		return le.Uint32(b)
	case TypeCurrency, TypeLongLong:
		return int64(le.Uint64(b))
	case TypeIEEESingle:
		return math.Float32frombits(le.Uint32(b))
	case TypeIEEEDouble:
		return math.Float64frombits(le.Uint64(b))
	case TypeDateTime:
		return DateTime(b)
	case TypeGUID:
		return GUID(b)
	case TypeText, TypeLongText:
		return decodeText(b, c.Codepage)
	}
	return b
}

// GUID formats 16 bytes (Microsoft layout) as a lower-case GUID string.
func GUID(b []byte) string {
	if len(b) != 16 {
		return fmt.Sprintf("%x", b)
	}
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:])
}

var oleEpoch = time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)

// DateTime decodes an 8-byte DateTime column. ESE stores OLE automation
// dates (days since 1899-12-30 as a float64); some applications (User
// Access Logging) store FILETIMEs in DateTime columns instead, which read
// as vanishingly small doubles and are recognised as such.
func DateTime(b []byte) time.Time {
	if len(b) != 8 {
		return time.Time{}
	}
	u := binary.LittleEndian.Uint64(b)
	f := math.Float64frombits(u)
	exp := (u >> 52) & 0x7ff
	if u != 0 && exp < 0x100 && int64(u) > 0 && int64(u) < 2650467743999999999 {
		return FileTime(int64(u))
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 2958466 {
		return time.Time{}
	}
	// Linear: fractions of negative dates count forward from the day
	// boundary the integer part names, as the ground truth data has it.
	days := math.Floor(f)
	ms := math.Round((f - days) * 86400000)
	return oleEpoch.AddDate(0, 0, int(days)).Add(time.Duration(ms) * time.Millisecond)
}

// FileTime converts 100 ns intervals since 1601-01-01 to a time.
func FileTime(v int64) time.Time {
	const unixOffset = 116444736000000000
	return time.Unix(0, 0).UTC().Add(time.Duration((v-unixOffset)/10000) * time.Millisecond).
		Add(time.Duration((v-unixOffset)%10000) * 100)
}

var cp1252 = [32]rune{
	0x20ac, 0xfffd, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0xfffd, 0x017d, 0xfffd,
	0xfffd, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0xfffd, 0x017e, 0x0178,
}

// decodeText turns stored text into UTF-8: UTF-16LE for code page 1200,
// Windows-1252 (a superset of ASCII) otherwise. Trailing NULs are dropped.
func decodeText(b []byte, codepage uint32) string {
	if codepage == 1200 {
		u := make([]uint16, (len(b)+1)/2)
		for i := range u {
			u[i] = uint16(b[2*i])
			if 2*i+1 < len(b) {
				u[i] |= uint16(b[2*i+1]) << 8
			}
		}
		for len(u) > 0 && u[len(u)-1] == 0 {
			u = u[:len(u)-1]
		}
		return string(utf16.Decode(u))
	}
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	if utf8.Valid(b) && isASCII(b) {
		return string(b)
	}
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c < 0x80:
			sb.WriteByte(c)
		case c < 0xa0:
			sb.WriteRune(cp1252[c-0x80])
		default:
			sb.WriteRune(rune(c))
		}
	}
	return sb.String()
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
