package mdf

import (
	"encoding/binary"
	"testing"
)

// These tests build records by hand from the published layout of the CD
// format (see compress.go); they check the decoder against that layout,
// not against files written by SQL Server (none is available here).

// cdVal is one column of a hand-built CD record.
type cdVal struct {
	cd   byte
	data []byte
}

// buildCD encodes a CD record: header, count, CD array, short data, long
// data region.
func buildCD(typ int, vals []cdVal) []byte {
	var long []cdVal
	h := byte(1 | typ<<2)
	for _, v := range vals {
		if v.cd == cdLong {
			long = append(long, v)
		}
	}
	if len(long) > 0 {
		h |= 0x20
	}
	b := []byte{h}
	if len(vals) < 0x80 {
		b = append(b, byte(len(vals)))
	} else {
		b = append(b, byte(len(vals)>>8)|0x80, byte(len(vals)))
	}
	cds := make([]byte, (len(vals)+1)/2)
	for i, v := range vals {
		cds[i/2] |= v.cd << (4 * uint(i%2))
	}
	b = append(b, cds...)
	b = append(b, make([]byte, (len(vals)-1)/30)...) // short cluster array
	for _, v := range vals {
		if v.cd != cdLong {
			b = append(b, v.data...)
		}
	}
	if len(long) > 0 {
		b = append(b, 1)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(long)))
		end := 0
		for _, v := range long {
			end += len(v.data)
			b = binary.LittleEndian.AppendUint16(b, uint16(end))
		}
		b = append(b, make([]byte, (len(vals)-1)/30)...) // long cluster array
		for _, v := range long {
			b = append(b, v.data...)
		}
	}
	return b
}

func short(b ...byte) cdVal { return cdVal{cd: cdShort1 + byte(len(b)) - 1, data: b} }

func testTable(cols ...*Column) *Table {
	t := &Table{Schema: "dbo", Name: "c"}
	for i, c := range cols {
		c.ID = i + 1
		c.stored = true
		c.nullBit = i + 1
		if c.CodePage == 0 {
			c.CodePage = 1252
		}
		t.Columns = append(t.Columns, c)
	}
	return t
}

func TestCompressedInt(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want int64
	}{
		{nil, 0}, {[]byte{0x7e}, -2}, {[]byte{0x7f}, -1}, {[]byte{0x81}, 1}, {[]byte{0x82}, 2},
		{[]byte{0x80, 0x80}, 128}, {[]byte{0x7f, 0x7f}, -129},
		{[]byte{0xff, 0xff, 0xff, 0xff}, 2147483647}, {[]byte{0x00, 0x00, 0x00, 0x00}, -2147483648},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9223372036854775807},
	} {
		got, err := compressedInt(c.b)
		if err != nil || got != c.want {
			t.Errorf("compressedInt(%x) = %d, %v; want %d", c.b, got, err, c.want)
		}
	}
	if _, err := compressedInt(make([]byte, 9)); err == nil {
		t.Error("9-byte compressed integer accepted")
	}
}

func TestVarDecimal(t *testing.T) {
	for _, c := range []struct {
		b     []byte
		scale int
		want  string
	}{
		{[]byte{0xc2, 0x1e, 0xdc, 0x20}, 2, "123.45"}, // the published 123.45 example
		{[]byte{0x42, 0x1e, 0xdc, 0x20}, 2, "-123.45"},
		{nil, 3, "0.000"},
		{[]byte{0xc0, 0x01, 0x40}, 0, "5"}, // first group 005
	} {
		got, err := decodeVarDecimal(c.b, c.scale)
		if err != nil || got.String() != c.want {
			t.Errorf("decodeVarDecimal(%x, %d) = %v, %v; want %s", c.b, c.scale, got, err, c.want)
		}
	}
}

func TestSCSU(t *testing.T) {
	// Samples from Unicode Technical Standard #6, section 9.
	for _, c := range []struct {
		b    []byte
		want string
	}{
		{[]byte{0xD6, 0x6C, 0x20, 0x66, 0x6C, 0x69, 0x65, 0xDF, 0x74}, "Öl fließt"},
		{[]byte{0x12, 0x9C, 0xBE, 0xC1, 0xBA, 0xB2, 0xB0}, "Москва"},
	} {
		got, err := decodeSCSU(c.b)
		if err != nil || got != c.want {
			t.Errorf("decodeSCSU(%x) = %q, %v; want %q", c.b, got, err, c.want)
		}
	}
	if _, err := decodeSCSU([]byte{0x0C}); err == nil {
		t.Error("reserved SCSU tag accepted")
	}
}

func TestRowCompressedRecord(t *testing.T) {
	tb := testTable(
		&Column{Name: "id", TypeID: TypeInt},
		&Column{Name: "n", TypeID: TypeInt, Nullable: true},
		&Column{Name: "flag", TypeID: TypeBit},
		&Column{Name: "off", TypeID: TypeBit},
		&Column{Name: "code", TypeID: TypeChar, MaxLength: 5},
		&Column{Name: "name", TypeID: TypeVarChar, MaxLength: 50},
		&Column{Name: "nname", TypeID: TypeNVarChar, MaxLength: 100},
		&Column{Name: "price", TypeID: TypeMoney},
		&Column{Name: "zero", TypeID: TypeBigInt},
		&Column{Name: "tiny", TypeID: TypeTinyInt},
		&Column{Name: "qty", TypeID: TypeDecimal, Precision: 10, Scale: 2},
	)
	rec := buildCD(cdRecPrimary, []cdVal{
		short(0x80, 0x2a), // 42
		{cd: cdNull},      // NULL
		{cd: cdBitTrue},   // true
		{cd: cdEmpty},     // false
		short('A', 'B'),   // "AB   "
		{cd: cdLong, data: []byte("Alfreds Futterkiste")},
		short('A', 'L', 'F', 'K', 'I'), // odd length: SCSU
		short(0x80, 0x00, 0x30, 0x39),  // 12345 -> 1.2345
		{cd: cdEmpty},                  // 0
		short(200),                     // 200
		short(0xc2, 0x1e, 0xdc, 0x20),  // 123.45
	})
	r, err := parseCDRecord(append(rec, 0xee, 0xee)) // trailing bytes: next record
	if err != nil {
		t.Fatal(err)
	}
	if r.length != len(rec) {
		t.Errorf("record length %d, built %d", r.length, len(rec))
	}
	vals, errs := tb.decodeCDRecord(make([]any, len(tb.Columns)), r, nil, nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	want := []string{"42", "<nil>", "true", "false", "AB   ", "Alfreds Futterkiste", "ALFKI", "1.2345", "0", "200", "123.45"}
	for i, w := range want {
		if got := fmtVal(vals[i]); got != w {
			t.Errorf("column %s = %q, want %q", tb.Columns[i].Name, got, w)
		}
	}
}

func fmtVal(v any) string {
	switch x := v.(type) {
	case nil:
		return "<nil>"
	case Decimal:
		return x.String()
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	case int64:
		return itoa(x)
	}
	return "?"
}

func itoa(v int64) string {
	if v == 0 {
		return "0"
	}
	neg := v < 0
	var b []byte
	for v != 0 {
		d := v % 10
		if d < 0 {
			d = -d
		}
		b = append([]byte{byte('0' + d)}, b...)
		v /= 10
	}
	if neg {
		b = append([]byte{'-'}, b...)
	}
	return string(b)
}

func TestCDRecordManyColumns(t *testing.T) {
	// 31 columns: one short data cluster length byte and one long one.
	vals := make([]cdVal, 31)
	var cols []*Column
	for i := range vals {
		vals[i] = short(0x80, byte(i))
		cols = append(cols, &Column{Name: "c", TypeID: TypeSmallInt})
	}
	vals[30] = cdVal{cd: cdLong, data: []byte("0123456789")}
	cols[30] = &Column{Name: "s", TypeID: TypeVarChar, MaxLength: 20}
	tb := testTable(cols...)
	r, err := parseCDRecord(buildCD(cdRecPrimary, vals))
	if err != nil {
		t.Fatal(err)
	}
	got, errs := tb.decodeCDRecord(make([]any, 31), r, nil, nil)
	if len(errs) > 0 || got[29] != int64(29) || got[30] != "0123456789" {
		t.Fatalf("got %v %v", got[28:], errs)
	}
}

func TestCDRecordMalformed(t *testing.T) {
	good := buildCD(cdRecPrimary, []cdVal{short(1, 2, 3), {cd: cdLong, data: []byte("long value here")}})
	for n := 0; n < len(good); n++ {
		if _, err := parseCDRecord(good[:n]); err == nil && n < len(good)-len("long value here") {
			t.Errorf("record truncated to %d bytes parsed", n)
		}
	}
	if _, err := parseCDRecord([]byte{0x30, 0x00}); err == nil {
		t.Error("FixedVar header accepted as CD record")
	}
	bad := buildCD(cdRecPrimary, []cdVal{{cd: 0xd}})
	if _, err := parseCDRecord(bad); err == nil {
		t.Error("unknown descriptor 0xd accepted")
	}
}

// TestPageCompressedPage builds a PAGE compressed page: a CI record with
// an anchor record (prefixes per column) and a dictionary, then records
// that use prefixes and dictionary symbols.
func TestPageCompressedPage(t *testing.T) {
	tb := testTable(
		&Column{Name: "id", TypeID: TypeInt},
		&Column{Name: "first", TypeID: TypeVarChar, MaxLength: 40},
		&Column{Name: "city", TypeID: TypeVarChar, MaxLength: 40},
	)
	anchor := buildCD(cdRecPrimary, []cdVal{
		{cd: cdNull},
		short('A', 'n', 't', 'o', 'n', 'i'),
		{cd: cdNull},
	})
	dict := []byte{}
	entries := [][]byte{[]byte("Copenhagen"), {6, 'a'}} // second is prefix-encoded: Antoni+a
	dict = binary.LittleEndian.AppendUint16(dict, uint16(len(entries)))
	end := 2 + 2*len(entries)
	for _, e := range entries {
		end += len(e)
		dict = binary.LittleEndian.AppendUint16(dict, uint16(end))
	}
	for _, e := range entries {
		dict = append(dict, e...)
	}
	ci := []byte{0x06, 0, 0}
	dictOff := 7 + len(anchor)
	ci = binary.LittleEndian.AppendUint16(ci, uint16(dictOff))
	ci = binary.LittleEndian.AppendUint16(ci, uint16(dictOff+len(dict)))
	ci = append(append(ci, anchor...), dict...)

	recs := [][]byte{
		buildCD(cdRecPrimary, []cdVal{short(0x81), short(6, 'o'), {cd: cdSymbol, data: []byte{0}}}),             // 1 Antonio Copenhagen
		buildCD(cdRecPrimary, []cdVal{short(0x82), {cd: cdSymbol, data: []byte{1}}, short('R', 'o', 'm', 'e')}), // 2 Antonia Rome
		buildCD(cdRecPrimary, []cdVal{short(0x83), {cd: cdEmpty}, {cd: cdNull}}),                                // 3 Antoni NULL
		buildCD(cdRecGhostData, []cdVal{short(0x84), short(3, 'x'), {cd: cdNull}}),                              // ghost: Antx
	}
	p := &Page{ID: PageID{File: 1, Page: 200}, Data: make([]byte, PageSize)}
	p.Header.SlotCount = uint16(len(recs))
	p.Header.TypeFlagBits = ciFlagBit
	pos := pageHeaderSize
	copy(p.Data[pos:], ci)
	pos += len(ci)
	for i, r := range recs {
		copy(p.Data[pos:], r)
		binary.LittleEndian.PutUint16(p.Data[PageSize-2*(i+1):], uint16(pos))
		pos += len(r)
	}
	for _, deleted := range []bool{false, true} {
		db := &Database{opts: Options{IncludeDeleted: deleted}}
		var got []string
		res := &ScanResult{}
		err := db.scanCDPage(tb, p, 2, false, true, nil, func(r *Row) error {
			s := ""
			for _, v := range r.Values {
				s += fmtVal(v) + "|"
			}
			if r.Deleted {
				s += "deleted"
			}
			got = append(got, s)
			return nil
		}, res)
		if err != nil || len(res.Unreadable) > 0 || res.ColumnFails > 0 {
			t.Fatalf("scan: %v %v %d", err, res.Unreadable, res.ColumnFails)
		}
		want := []string{"1|Antonio|Copenhagen|", "2|Antonia|Rome|", "3|Antoni|<nil>|"}
		if deleted {
			want = append(want, "4|Antx|<nil>|deleted")
		}
		if len(got) != len(want) {
			t.Fatalf("include deleted %v: rows %q, want %q", deleted, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("row %d: %q, want %q", i, got[i], want[i])
			}
		}
	}
	// A dictionary symbol past the dictionary is a column error, not a panic.
	bad := buildCD(cdRecPrimary, []cdVal{short(0x81), {cd: cdSymbol, data: []byte{9}}, {cd: cdNull}})
	r, err := parseCDRecord(bad)
	if err != nil {
		t.Fatal(err)
	}
	info, err := parseCompressionInfo(p, pageHeaderSize+len(ci))
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := tb.decodeCDRecord(make([]any, 3), r, info, nil); len(errs) != 1 {
		t.Errorf("bad symbol: errors %v, want one", errs)
	}
}

func TestSparseVector(t *testing.T) {
	// Record: int id (fixed), a regular varchar, and a sparse vector
	// holding sparse column 4 (int) = 7; sparse column 3 is NULL.
	tb := testTable(
		&Column{Name: "id", TypeID: TypeInt},
		&Column{Name: "name", TypeID: TypeVarChar, MaxLength: 20},
		&Column{Name: "s1", TypeID: TypeVarChar, MaxLength: 20, Sparse: true, Nullable: true},
		&Column{Name: "s2", TypeID: TypeInt, Sparse: true, Nullable: true},
	)
	tb.Columns[0].leafOffset = 4
	tb.Columns[1].leafOffset = -1
	tb.markSparse()
	vec := []byte{5, 0, 1, 0, 4, 0}
	vec = binary.LittleEndian.AppendUint16(vec, uint16(4+4+4))
	vec = binary.LittleEndian.AppendUint32(vec, 7)
	rec := []byte{0x30, 0, 8, 0}
	rec = binary.LittleEndian.AppendUint32(rec, 99)
	rec = append(rec, 4, 0, 0) // 4 columns, null bitmap
	rec = append(rec, 2, 0)    // 2 variable columns
	varStart := len(rec) + 4
	rec = binary.LittleEndian.AppendUint16(rec, uint16(varStart+3))
	rec = binary.LittleEndian.AppendUint16(rec, uint16(varStart+3+len(vec))|complexBit)
	rec = append(rec, "Bob"...)
	rec = append(rec, vec...)
	r, err := parseRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	vals, errs := tb.decodeRecord(r, nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if vals[0] != int64(99) || vals[1] != "Bob" || vals[2] != nil || vals[3] != int64(7) {
		t.Errorf("values %v", vals)
	}
	if _, _, err := sparseValue([]byte{5, 0, 9, 0}, 1); err == nil {
		t.Error("sparse vector with 9 columns in 4 bytes accepted")
	}
}
