package mdf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// LOB structure types (blob fragment records).
const (
	lobSmallRoot       = 0
	lobInternal        = 2
	lobData            = 3
	lobLargeRootShiloh = 4 // SQL Server 2000 layout, same link format
	lobLargeRootYukon  = 5
	lobNull            = 8 // root of a value set to NULL through its text pointer
)

// maxLOBSize bounds one reassembled LOB value (SQL Server's own limit).
const maxLOBSize = 1<<31 - 1

// lobReader reassembles off-row values, bounding the work a damaged or
// hostile file can cause.
type lobReader struct {
	db     *Database
	visits int
	limit  int
	seen   map[RowID]bool // fragments of the value being read
	buf    *bytes.Buffer  // reused for every value: results are only valid until the next read
}

// lobBufs recycles LOB assembly buffers between scans.
var lobBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// buffer returns the reader's reset assembly buffer.
func (l *lobReader) buffer() *bytes.Buffer {
	if l.buf == nil {
		l.buf = lobBufs.Get().(*bytes.Buffer)
	}
	l.buf.Reset()
	return l.buf
}

// release gives the assembly buffer back for other scans; values read
// before must not be used any more.
func (l *lobReader) release() {
	if l.buf != nil && l.buf.Cap() <= 4<<20 {
		lobBufs.Put(l.buf)
	}
	l.buf = nil
}

func (db *Database) newLOBReader() *lobReader {
	return &lobReader{db: db, limit: int(db.npage)*64 + 1024}
}

// record fetches the blob fragment record at rid.
func (l *lobReader) record(rid RowID) (*Record, *Page, error) {
	if l.seen == nil {
		l.seen = map[RowID]bool{}
	}
	if l.seen[rid] {
		return nil, nil, fmt.Errorf("%w: LOB fragment %s referenced twice in one value", ErrFormat, rid)
	}
	l.seen[rid] = true
	l.visits++
	if l.visits > l.limit {
		return nil, nil, fmt.Errorf("%w: LOB structure visits too many fragments (loop?)", ErrFormat)
	}
	p, err := l.db.cachedPage(rid.PageID)
	if err != nil {
		return nil, nil, err
	}
	switch p.Header.Type {
	case PageTypeTextMix, PageTypeTextTree, PageTypeData:
	default:
		return nil, p, p.errorf(1, "LOB pointer to page of type %d", p.Header.Type)
	}
	off, err := p.slotOffset(int(rid.Slot))
	if err != nil {
		return nil, p, err
	}
	if off == 0 {
		return nil, p, p.errorf(PageSize-2*(int(rid.Slot)+1), "LOB slot %d is empty", rid.Slot)
	}
	rec, err := parseRecord(p.Data[off:p.slotEnd()])
	if err != nil {
		return nil, p, &PageError{Page: p.ID, Offset: int64(p.ID.Page)*PageSize + int64(off), Err: err}
	}
	if rec.Type != RecBlobFragment {
		return nil, p, p.errorf(off, "LOB pointer to a record of type %d, not a blob fragment", rec.Type)
	}
	if rec.Length < 14 {
		return nil, p, p.errorf(off, "blob fragment of %d bytes", rec.Length)
	}
	return rec, p, nil
}

// read appends the data of the LOB structure at rid to out.
func (l *lobReader) read(rid RowID, out *bytes.Buffer, depth int) error {
	if depth > 16 {
		return fmt.Errorf("%w: LOB tree deeper than 16 levels", ErrFormat)
	}
	rec, p, err := l.record(rid)
	if err != nil {
		return err
	}
	d := rec.Data[:rec.Length]
	typ := binary.LittleEndian.Uint16(d[12:14])
	switch typ {
	case lobSmallRoot:
		if len(d) < 20 {
			return p.errorf(0, "small LOB root too short")
		}
		n := int(binary.LittleEndian.Uint16(d[14:16]))
		if 20+n > len(d) {
			return p.errorf(0, "small LOB root length %d exceeds record (%d bytes)", n, len(d))
		}
		return l.write(out, d[20:20+n])
	case lobData:
		return l.write(out, d[14:])
	case lobLargeRootYukon, lobLargeRootShiloh:
		if len(d) < 24 {
			return p.errorf(0, "large LOB root too short")
		}
		cur := int(binary.LittleEndian.Uint16(d[16:18]))
		for i := 0; i < cur; i++ {
			o := 24 + 12*i
			if o+12 > len(d) {
				return p.errorf(0, "large LOB root link %d past record end", i)
			}
			if err := l.read(parseRowID(d[o+4:o+12]), out, depth+1); err != nil {
				return err
			}
		}
		return nil
	case lobInternal:
		if len(d) < 20 {
			return p.errorf(0, "internal LOB node too short")
		}
		cur := int(binary.LittleEndian.Uint16(d[16:18]))
		for i := 0; i < cur; i++ {
			o := 20 + 16*i
			if o+16 > len(d) {
				return p.errorf(0, "internal LOB node link %d past record end", i)
			}
			if err := l.read(parseRowID(d[o+8:o+16]), out, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if typ == lobNull && depth == 0 {
		return errLOBNull
	}
	return p.errorf(0, "unknown LOB structure type %d", typ)
}

func (l *lobReader) write(out *bytes.Buffer, b []byte) error {
	if out.Len()+len(b) > maxLOBSize {
		return fmt.Errorf("%w: LOB value exceeds %d bytes", ErrFormat, maxLOBSize)
	}
	out.Write(b)
	return nil
}

// textPointer reads a value held through a 16-byte text pointer (text,
// ntext, image): timestamp (8 bytes) then the root's row id. The bytes
// returned are valid until the reader's next call.
func (l *lobReader) textPointer(b []byte) ([]byte, error) {
	if len(b) != 16 {
		return nil, fmt.Errorf("%w: text pointer of %d bytes, want 16", ErrFormat, len(b))
	}
	buf := l.buffer()
	clear(l.seen)
	if err := l.read(parseRowID(b[8:16]), buf, 0); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// errLOBNull reports a text pointer whose root says the value is NULL.
var errLOBNull = errors.New("mdf: LOB value is NULL")

// Complex column kinds (first byte of an in-row complex value).
const (
	complexRowOverflow = 2
	complexInlineRoot  = 5
	complexBackPointer = 1024 // forwarded record back pointer (2-byte id)
)

// complexValue reads a (max) or row-overflow value from its in-row root:
// 12-byte header then 12-byte links (size, row id). The bytes returned
// are valid until the reader's next call.
func (l *lobReader) complexValue(b []byte) ([]byte, error) {
	if len(b) < 12 || (len(b)-12)%12 != 0 {
		return nil, fmt.Errorf("%w: in-row LOB root of %d bytes", ErrFormat, len(b))
	}
	switch b[0] {
	case complexRowOverflow, complexInlineRoot:
	default:
		return nil, fmt.Errorf("%w: unknown complex column type %d", ErrFormat, b[0])
	}
	buf := l.buffer()
	clear(l.seen)
	for o := 12; o+12 <= len(b); o += 12 {
		if err := l.read(parseRowID(b[o+4:o+12]), buf, 0); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
