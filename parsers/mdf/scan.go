package mdf

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Row is one decoded table row.
type Row struct {
	Values  []any // one per Table.Columns entry
	Deleted bool  // ghost record or record on a deallocated page
	RID     RowID // where the record lies
	// Errors lists columns that could not be decoded (their value is nil).
	Errors []error
}

// ScanResult summarises a table read.
type ScanResult struct {
	Rows        int64 // rows passed to the callback (deleted included)
	Deleted     int64 // of which ghost / deallocated rows
	Pages       int   // data pages read
	BytesRead   int64
	Unreadable  []error // pages or records that could not be read (*PageError mostly)
	ColumnFails int64   // column values that could not be decoded
}

// pageCache keeps recently read pages for LOB lookups.
type pageCache struct {
	mu    sync.Mutex
	pages map[PageID]*Page
	order []PageID
}

const pageCacheSize = 256

func (db *Database) cachedPage(id PageID) (*Page, error) {
	if id.File == 0 {
		id.File = db.fileID
	}
	c := &db.cache
	c.mu.Lock()
	if p, ok := c.pages[id]; ok {
		c.mu.Unlock()
		return p, nil
	}
	c.mu.Unlock()
	p, err := db.ReadPage(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.pages == nil {
		c.pages = map[PageID]*Page{}
	}
	if len(c.order) >= pageCacheSize {
		delete(c.pages, c.order[0])
		c.order = c.order[1:]
	}
	c.pages[id] = p
	c.order = append(c.order, id)
	c.mu.Unlock()
	return p, nil
}

// CountRows counts the live rows of a table by reading its data pages.
func (db *Database) CountRows(ctx context.Context, t *Table) (int64, *ScanResult, error) {
	res, err := db.scan(ctx, t, false, nil)
	if err != nil {
		return 0, res, err
	}
	return res.Rows, res, nil
}

// ReadTable decodes every row of t, calling fn for each. Unreadable pages
// and records are listed in the result; reading goes on past them. An
// error from fn stops the read and is returned.
func (db *Database) ReadTable(ctx context.Context, t *Table, fn func(*Row) error) (*ScanResult, error) {
	if fn == nil {
		return nil, errors.New("mdf: ReadTable needs a callback")
	}
	return db.scan(ctx, t, true, fn)
}

// tablePages returns the data pages of one partition's in-row allocation
// unit in reading order: for a clustered index the leaf chain from its
// first page, then any pages the chain missed; for a heap, IAM order.
func (db *Database) tablePages(ctx context.Context, t *Table, au *AllocUnit, res *ScanResult) []PageID {
	if au == nil {
		return nil
	}
	pages, errs := db.allocUnitPages(ctx, au)
	res.Unreadable = append(res.Unreadable, errs...)
	if !t.Clustered || au.First.IsZero() {
		return pages
	}
	in := make(map[PageID]bool, len(pages))
	for _, p := range pages {
		in[p] = true
	}
	ordered := make([]PageID, 0, len(pages))
	done := map[PageID]bool{}
	// Only the headers are read here (the pages are verified when scanned).
	var hdr [pageHeaderSize]byte
	for id := au.First; in[id] && !done[id]; {
		if _, err := db.r.ReadAt(hdr[:], int64(id.Page)*PageSize); err != nil {
			break
		}
		h := parsePageHeader(hdr[:])
		if h.HeaderVersion != 1 || h.This != id || h.Type != PageTypeData || !h.BelongsTo(au.ID) || h.Level != 0 {
			break
		}
		done[id] = true
		ordered = append(ordered, id)
		id = h.Next
		if id.File == 0 {
			break
		}
	}
	for _, id := range pages {
		if !done[id] {
			ordered = append(ordered, id)
		}
	}
	return ordered
}

func (db *Database) scan(ctx context.Context, t *Table, decode bool, fn func(*Row) error) (*ScanResult, error) {
	res := &ScanResult{}
	lobs := db.newLOBReader()
	defer lobs.release()
	pbuf := &Page{Data: make([]byte, PageSize)} // reused for every data page
	for _, part := range t.Partitions {
		au := part.InRow
		if au == nil {
			continue
		}
		if part.Compression > 2 {
			res.Unreadable = append(res.Unreadable, fmt.Errorf("table %s partition %d uses %s compression, which this reader does not decode", t.FullName(), part.Number, compressionName(part.Compression)))
			continue
		}
		pages := db.tablePages(ctx, t, au, res)
		seen := make(map[PageID]bool, len(pages))
		for _, id := range pages {
			seen[id] = true
			if err := db.scanPage(ctx, t, au, part.Compression, id, false, decode, lobs, pbuf, fn, res); err != nil {
				return res, err
			}
		}
		if db.opts.IncludeDeleted {
			// Pages of this allocation unit no longer in its IAM chain:
			// deallocated, their rows deleted.
			for pg := uint32(0); pg < db.npage; pg++ {
				id := PageID{File: db.fileID, Page: pg}
				if seen[id] {
					continue
				}
				if err := db.scanPage(ctx, t, au, part.Compression, id, true, decode, lobs, pbuf, fn, res); err != nil {
					return res, err
				}
			}
		}
	}
	return res, ctx.Err()
}

func compressionName(c int) string {
	switch c {
	case 1:
		return "ROW"
	case 2:
		return "PAGE"
	case 3:
		return "COLUMNSTORE"
	}
	return fmt.Sprintf("level %d", c)
}

// scanPage reads one candidate data page of au. With dealloc set the page
// is outside the allocation unit's IAM chain: it is silently skipped
// unless its header claims it for au, and its rows are deleted rows.
func (db *Database) scanPage(ctx context.Context, t *Table, au *AllocUnit, compression int, id PageID, dealloc, decode bool, lobs *lobReader, pbuf *Page, fn func(*Row) error, res *ScanResult) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dealloc {
		// Cheap header probe before verifying the whole page.
		var hdr [pageHeaderSize]byte
		if _, err := db.r.ReadAt(hdr[:], int64(id.Page)*PageSize); err != nil {
			return nil
		}
		h := parsePageHeader(hdr[:])
		if h.Type != PageTypeData || !h.BelongsTo(au.ID) || h.This != id {
			return nil
		}
	}
	p, err := db.readPageBuf(id, pbuf)
	if p != nil && p.Verify.Unused() {
		return nil
	}
	if err != nil {
		res.Unreadable = append(res.Unreadable, err)
		return nil
	}
	if p.Header.Type != PageTypeData || !p.Header.BelongsTo(au.ID) {
		return nil // page of an extent not (or no longer) used by this table
	}
	res.Pages++
	res.BytesRead += PageSize
	if compression == 1 || compression == 2 {
		return db.scanCDPage(t, p, compression, dealloc, decode, lobs, fn, res)
	}
	// Rows and their value slices are carved from one allocation per page
	// (each row keeps its own, never reused, part).
	var rows []Row
	var vals []any
	ncol := len(t.Columns)
	errs := pageRecords(p, db.opts.IncludeDeleted, func(slot int, rec *Record) {
		switch rec.Type {
		case RecPrimary, RecForwarded, RecGhostData:
		default:
			return // forwarding stubs (the forwarded record is read where it lies), index records
		}
		if len(rows) == cap(rows) {
			n := max(int(p.Header.SlotCount)-slot, 1)
			rows = make([]Row, 0, n)
			if decode {
				vals = make([]any, n*ncol)
			}
		}
		rows = append(rows, Row{RID: RowID{PageID: id, Slot: uint16(slot)}, Deleted: dealloc || rec.IsGhost()})
		row := &rows[len(rows)-1]
		if decode {
			v := vals[:ncol:ncol]
			vals = vals[ncol:]
			row.Values, row.Errors = t.decodeRecordInto(v, rec, lobs)
			res.ColumnFails += int64(len(row.Errors))
		}
		res.Rows++
		if row.Deleted {
			res.Deleted++
		}
		if fn != nil && err == nil {
			err = fn(row)
		}
	})
	res.Unreadable = append(res.Unreadable, errs...)
	return err
}

// decodeRecord decodes every column of a data record.
func (t *Table) decodeRecord(rec *Record, lobs *lobReader) ([]any, []error) {
	return t.decodeRecordInto(make([]any, len(t.Columns)), rec, lobs)
}

// decodeRecordInto is decodeRecord filling vals (len(t.Columns) entries).
func (t *Table) decodeRecordInto(vals []any, rec *Record, lobs *lobReader) ([]any, []error) {
	var errs []error
	for i, c := range t.Columns {
		v, err := t.decodeColumn(c, rec, lobs)
		if err != nil {
			errs = append(errs, fmt.Errorf("column %s: %w", c.Name, err))
			continue
		}
		vals[i] = v
	}
	return vals, errs
}

func (t *Table) decodeColumn(c *Column, rec *Record, lobs *lobReader) (any, error) {
	if c.Sparse {
		return t.decodeSparse(c, rec)
	}
	if !c.stored {
		return nil, nil
	}
	if c.nullBit > 0 && rec.IsNull(c.nullBit-1) {
		return nil, nil
	}
	if c.leafOffset > 0 {
		if c.TypeID == TypeBit {
			b, err := rec.Fixed(c.leafOffset, 1)
			if err != nil {
				return nil, nil // column added after the row was written
			}
			return b[0]&(1<<uint(c.bitPos&7)) != 0, nil
		}
		n := fixedSize(c.TypeID, c.MaxLength, c.Precision, c.Scale)
		if n == 0 {
			return nil, fmt.Errorf("%w: variable-length type %s at fixed offset %d", ErrFormat, c.SQLType(), c.leafOffset)
		}
		if c.leafOffset+n > rec.FixedEnd {
			return nil, nil // column added after the row was written
		}
		b, err := rec.Fixed(c.leafOffset, n)
		if err != nil {
			return nil, err
		}
		return decodeFixed(c, b)
	}
	if c.leafOffset == 0 {
		return nil, nil
	}
	b, complex, present, err := rec.Var(-c.leafOffset - 1)
	if err != nil {
		return nil, err
	}
	if !present {
		if c.Nullable {
			return nil, nil
		}
		b = nil
	}
	if v, offRow, err := lobs.offRowValue(c, b, complex); offRow || err != nil {
		return v, err
	}
	return decodeVarInline(c, b)
}

// offRowValue reads a variable-length value kept off the row: text, ntext
// and image through their text pointer, and complex (row-overflow or LOB
// root) columns. offRow is false for a value stored in the row.
func (lobs *lobReader) offRowValue(c *Column, b []byte, complex bool) (v any, offRow bool, err error) {
	switch c.TypeID {
	case TypeText, TypeNText, TypeImage:
		if len(b) == 0 {
			return emptyValue(c), true, nil
		}
		data, err := lobs.textPointer(b)
		if errors.Is(err, errLOBNull) {
			return nil, true, nil
		}
		if err != nil {
			return nil, true, err
		}
		v, err := decodeVarInline(c, data)
		return v, true, err
	}
	if !complex {
		return nil, false, nil
	}
	data, err := lobs.complexValue(b)
	if err != nil {
		return nil, true, err
	}
	v, err = decodeVarInline(c, data)
	return v, true, err
}

func emptyValue(c *Column) any {
	switch c.TypeID {
	case TypeText, TypeNText, TypeVarChar, TypeNVarChar, TypeChar, TypeNChar:
		return ""
	}
	return []byte{}
}
