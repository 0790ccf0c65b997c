package mdf

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// FuzzPage replaces one page of a real data file with fuzzed bytes and
// reads the whole database: catalog, allocation, records, values, LOBs.
// Seeds are the file's own pages. It must never panic.
func FuzzPage(f *testing.F) {
	base := testenv.FixtureBytes(f, "mdf/sql2008_655_pubs_itsligo.mdf")
	// Seed with catalog, IAM, data and LOB pages.
	for _, pg := range []int{9, 16, 20, 90, 93, 118, 196, 204} {
		f.Add(uint16(pg), base[pg*PageSize:(pg+1)*PageSize])
	}
	f.Fuzz(func(t *testing.T, pg uint16, page []byte) {
		n := len(base) / PageSize
		target := int64(pg) % int64(n)
		buf := make([]byte, PageSize)
		copy(buf, page)
		r := overlay{base: memFile(base), off: target * PageSize, page: buf}
		for _, opts := range []Options{{}, {IgnoreChecksums: true, IncludeDeleted: true}} {
			db, err := Open(context.Background(), r, int64(len(base)), opts)
			if err != nil {
				continue
			}
			for _, tb := range db.AllTables() {
				db.ReadTable(context.Background(), tb, func(r *Row) error { return nil })
			}
		}
	})
}

// overlay reads base with one page replaced.
type overlay struct {
	base memFile
	off  int64
	page []byte
}

func (o overlay) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.base.ReadAt(p, off)
	// Copy the overlapping part of the replaced page.
	lo, hi := off, off+int64(len(p))
	if lo < o.off+PageSize && hi > o.off {
		s := max(lo, o.off)
		e := min(hi, o.off+PageSize)
		copy(p[s-off:e-off], o.page[s-o.off:e-o.off])
	}
	return n, err
}

// FuzzRecord decodes fuzzed bytes as a data record of a table using every
// supported type, with the record's page in a small in-memory file so LOB
// and row-overflow pointers resolve into fuzzed pages too.
func FuzzRecord(f *testing.F) {
	base := testenv.FixtureBytes(f, "mdf/sql2008_655_northwind_itsligo.mdf")
	db := openFixture(f, "sql2008_655_northwind_itsligo.mdf", Options{})
	for _, tb := range db.Tables() {
		n := 0
		db.ReadTable(context.Background(), tb, func(r *Row) error {
			if n < 2 {
				p, _ := db.ReadPage(r.RID.PageID)
				off := int(binary.LittleEndian.Uint16(p.Data[PageSize-2*(int(r.RID.Slot)+1):]))
				end := off + 600
				if end > PageSize {
					end = PageSize
				}
				f.Add(append([]byte(nil), base[int(r.RID.Page)*PageSize+off:int(r.RID.Page)*PageSize+end]...))
			}
			n++
			return nil
		})
	}
	f.Add([]byte{0x30, 0x00, 0x08, 0x00, 1, 2, 3, 4, 2, 0, 0, 1, 0, 0x10, 0x80})
	// Hand-built compressed records (see compress_test.go) and a CI header.
	f.Add(buildCD(cdRecPrimary, []cdVal{short(0x80, 0x2a), {cd: cdNull}, {cd: cdBitTrue}, short('A', 'B'),
		{cd: cdLong, data: []byte("Alfreds Futterkiste")}, short(0xc2, 0x1e, 0xdc, 0x20), {cd: cdSymbol, data: []byte{0}}}))
	f.Add(append([]byte{0x06, 0, 0, 17, 0, 30, 0}, buildCD(cdRecPrimary, []cdVal{{cd: cdNull}, short('A', 'n', 't')})...))
	f.Add([]byte{0xD6, 0x6C, 0x20, 0x66, 0x6C, 0x69, 0x65, 0xDF, 0x74})
	types := []struct {
		typ              uint8
		length, prec, sc int
	}{
		{TypeInt, 4, 10, 0}, {TypeBit, 1, 1, 0}, {TypeTinyInt, 1, 3, 0}, {TypeSmallInt, 2, 5, 0},
		{TypeBigInt, 8, 19, 0}, {TypeDecimal, 9, 18, 2}, {TypeMoney, 8, 19, 4}, {TypeSmallMoney, 4, 10, 4},
		{TypeReal, 4, 24, 0}, {TypeFloat, 8, 53, 0}, {TypeDate, 3, 10, 0}, {TypeTime, 5, 16, 7},
		{TypeDateTime, 8, 23, 3}, {TypeDateTime2, 8, 27, 7}, {TypeSmallDateTime, 4, 16, 0},
		{TypeDateTimeOffset, 10, 34, 7}, {TypeChar, 5, 0, 0}, {TypeNChar, 10, 0, 0},
		{TypeUniqueIdentifier, 16, 0, 0}, {TypeTimestamp, 8, 0, 0}, {TypeBinary, 3, 0, 0},
		{TypeVarChar, 50, 0, 0}, {TypeNVarChar, -1, 0, 0}, {TypeVarBinary, -1, 0, 0},
		{TypeText, 16, 0, 0}, {TypeNText, 16, 0, 0}, {TypeImage, 16, 0, 0}, {TypeSQLVariant, 8016, 0, 0},
		{TypeXML, -1, 0, 0}, {TypeNumeric, 17, 38, 10},
	}
	tb := &Table{Name: "fuzz", Schema: "dbo"}
	for i, ty := range types {
		tb.Columns = append(tb.Columns, &Column{ID: i + 1, Name: "c", TypeID: ty.typ, MaxLength: ty.length,
			Precision: ty.prec, Scale: ty.sc, CodePage: 950, Nullable: true})
	}
	db.deriveLayout(tb)
	f.Fuzz(func(t *testing.T, rec []byte) {
		// A page holding the record, for LOB pointers to land on.
		page := make([]byte, PageSize)
		copy(page[pageHeaderSize:], rec)
		file := append(append([]byte(nil), base[:10*PageSize]...), page...)
		mdb := &Database{r: memFile(file), size: int64(len(file)), npage: uint32(len(file) / PageSize), fileID: 1, opts: Options{IgnoreChecksums: true}}
		lobs := mdb.newLOBReader()
		// The same bytes as a ROW compressed record, alone and under a
		// CI record made of the same bytes (PAGE compression).
		if cr, err := parseCDRecord(rec); err == nil {
			tb.decodeCDRecord(make([]any, len(tb.Columns)), cr, nil, lobs)
			pg := &Page{ID: PageID{File: 1, Page: 10}, Data: page}
			if ci, err := parseCompressionInfo(pg, PageSize); err == nil {
				tb.decodeCDRecord(make([]any, len(tb.Columns)), cr, ci, lobs)
			}
		}
		decodeSCSU(rec)
		decodeVarDecimal(rec, 4)
		decodeBinXML(rec)
		decodeBinXML(append([]byte{0xDF, 0xFF, 0x01, 0xB0, 0x04}, rec...))
		if r, err := parseRecord(rec); err == nil {
			tb.decodeRecord(r, lobs)
		}
		decodeVariant(rec)
	})
}
