package mdf

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Object ids of the system base tables. sysrowsets has a fixed
// allocation unit id; the others are found through sysrowsets.
const (
	auSysRowsets     = 5 << 16
	objSysRsCols     = 3
	objSysSchObjs    = 34
	objSysColPars    = 41
	objSysScalarTyps = 50
	objSysIdxStats   = 54
	objSysIsCols     = 55
	objSysClsObjs    = 64
)

// Allocation unit types.
const (
	AUInRowData       = 1
	AULOBData         = 2
	AURowOverflowData = 3
)

// AllocUnit is one row of sysallocunits.
type AllocUnit struct {
	ID       int64
	Type     int
	OwnerID  int64 // rowset (partition) id
	First    PageID
	Root     PageID
	FirstIAM PageID
	Used     int64
	Data     int64
}

type rowset struct {
	id        int64
	ownerType int
	idMajor   int32
	idMinor   int32
	numPart   int32
	rcrows    int64
	cmprLevel int
}

type object struct {
	id       int32
	name     string
	nsid     int32
	status   uint32
	typ      string
	shipped  bool
	internal bool
}

type colpar struct {
	id        int32
	number    int16
	colid     int32
	name      string
	xtype     uint8
	utype     int32
	length    int16
	prec      uint8
	scale     uint8
	collation int32
	status    uint32
}

type idxcol struct {
	obj, idx int32
	subid    int32
	status   uint32
	colid    int32
	keyOrd   int
}

type idxstat struct {
	obj, idx int32
	status   uint32
	typ      uint8
}

type rscol struct {
	rsid        int64
	rscolid     int32
	hbcolid     int32
	ti          uint32
	ordkey      int16
	maxinrowlen int16
	status      uint32
	offset      int16
	nullbit     int16
	bitpos      int16
}

// sysrec reads typed fields of a system table record by fixed offset.
type sysrec struct {
	r   *Record
	bad bool
}

func (s *sysrec) fixed(off, n int) []byte {
	b, err := s.r.Fixed(off, n)
	if err != nil {
		s.bad = true
		return make([]byte, n)
	}
	return b
}
func (s *sysrec) u8(off int) uint8   { return s.fixed(off, 1)[0] }
func (s *sysrec) i16(off int) int16  { return int16(binary.LittleEndian.Uint16(s.fixed(off, 2))) }
func (s *sysrec) i32(off int) int32  { return int32(binary.LittleEndian.Uint32(s.fixed(off, 4))) }
func (s *sysrec) u32(off int) uint32 { return binary.LittleEndian.Uint32(s.fixed(off, 4)) }
func (s *sysrec) i64(off int) int64  { return int64(binary.LittleEndian.Uint64(s.fixed(off, 8))) }
func (s *sysrec) pid(off int) PageID { return parsePageID(s.fixed(off, 6)) }
func (s *sysrec) has(off, n int) bool {
	return off+n <= s.r.FixedEnd
}
func (s *sysrec) nvar(i int) string {
	b, _, _, err := s.r.Var(i)
	if err != nil {
		s.bad = true
		return ""
	}
	return decodeUTF16(b)
}

// decodeUTF16 decodes UTF-16LE (nchar, nvarchar, ntext, sysname).
func decodeUTF16(b []byte) string {
	n := len(b) / 2
	if n == 0 {
		return ""
	}
	// ASCII fast path: one allocation, the string's own bytes.
	ascii := make([]byte, n)
	i := 0
	for ; i < n; i++ {
		c := uint16(b[2*i]) | uint16(b[2*i+1])<<8
		if c >= 0x80 {
			break
		}
		ascii[i] = byte(c)
	}
	if i == n {
		return unsafe.String(&ascii[0], n)
	}
	out := make([]byte, i, i+(n-i)*3)
	copy(out, ascii[:i])
	for ; i < n; i++ {
		c := rune(binary.LittleEndian.Uint16(b[2*i:]))
		switch {
		case c < 0x80:
			out = append(out, byte(c))
		case utf16.IsSurrogate(c) && i+1 < n:
			c2 := rune(binary.LittleEndian.Uint16(b[2*i+2:]))
			if r := utf16.DecodeRune(c, c2); r != utf8.RuneError {
				out = utf8.AppendRune(out, r)
				i++
			} else {
				out = utf8.AppendRune(out, utf8.RuneError)
			}
		default:
			out = utf8.AppendRune(out, c)
		}
	}
	return unsafe.String(unsafe.SliceData(out), len(out))
}

// pageRecords calls fn for every live record on a page (and ghosts when
// ghosts is set). The *Record passed is reused for the next slot: fn must
// copy what it keeps. Malformed records are reported through the returned
// errors; the other records are still passed.
func pageRecords(p *Page, ghosts bool, fn func(slot int, rec *Record)) []error {
	var errs []error
	end := p.slotEnd()
	n := int(p.Header.SlotCount)
	if PageSize-2*n < pageHeaderSize {
		errs = append(errs, p.errorf(22, "slot count %d too large", n))
		n = (PageSize - pageHeaderSize) / 2
	}
	var rec Record // reused for every slot: fn must not keep it
	for i := 0; i < n; i++ {
		off, err := p.slotOffset(i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if off == 0 {
			continue
		}
		if err := rec.parse(p.Data[off:end]); err != nil {
			errs = append(errs, &PageError{Page: p.ID, Offset: int64(p.ID.Page)*PageSize + int64(off), Err: fmt.Errorf("slot %d: %w", i, err)})
			continue
		}
		if rec.IsGhost() && !ghosts {
			continue
		}
		fn(i, &rec)
	}
	return errs
}

// chainPages follows m_nextPage from first.
func (db *Database) chainPages(ctx context.Context, first PageID, fn func(p *Page)) []error {
	var errs []error
	seen := map[PageID]bool{}
	for id := first; !id.IsZero(); {
		if err := ctx.Err(); err != nil {
			return append(errs, err)
		}
		if seen[id] || len(seen) > maxChain {
			return append(errs, &PageError{Page: id, Offset: int64(id.Page) * PageSize, Err: fmt.Errorf("%w: page chain loops", ErrFormat)})
		}
		seen[id] = true
		p, err := db.ReadPage(id)
		if err != nil {
			return append(errs, err)
		}
		fn(p)
		id = p.Header.Next
	}
	return errs
}

// systemRecords reads every live record of a system base table.
func (db *Database) systemRecords(ctx context.Context, auid int64, fn func(s *sysrec)) {
	au := db.allocUnits[auid]
	if au == nil {
		db.catalogErr = append(db.catalogErr, fmt.Errorf("%w: system allocation unit %d not found in sysallocunits", ErrFormat, auid))
		return
	}
	db.auRecords(ctx, au, fn)
}

// systemAU finds the in-row allocation unit of a system base table.
func (db *Database) systemAU(obj int32) *AllocUnit {
	var best *rowset
	for _, rs := range db.rowsets {
		if rs.idMajor == obj && rs.idMinor <= 1 && (best == nil || rs.idMinor > best.idMinor) {
			best = rs
		}
	}
	if best == nil {
		return nil
	}
	for _, au := range db.allocUnits {
		if au.OwnerID == best.id && au.Type == AUInRowData {
			return au
		}
	}
	return nil
}

func (db *Database) systemTable(ctx context.Context, obj int32, fn func(s *sysrec)) bool {
	au := db.systemAU(obj)
	if au == nil {
		return false
	}
	db.auRecords(ctx, au, fn)
	return true
}

func (db *Database) auRecords(ctx context.Context, au *AllocUnit, fn func(s *sysrec)) {
	auid := au.ID
	pages, errs := db.allocUnitPages(ctx, au)
	db.catalogErr = append(db.catalogErr, errs...)
	for _, id := range pages {
		p, err := db.ReadPage(id)
		if p != nil && p.Verify.Unused() {
			continue
		}
		if err != nil {
			db.catalogErr = append(db.catalogErr, err)
			continue
		}
		if p.Header.Type != PageTypeData || !p.Header.BelongsTo(auid) {
			continue
		}
		errs := pageRecords(p, false, func(_ int, r *Record) {
			if r.Type != RecPrimary {
				return
			}
			fn(&sysrec{r: r})
		})
		db.catalogErr = append(db.catalogErr, errs...)
	}
}

func (db *Database) readCatalog(ctx context.Context) error {
	db.allocUnits = map[int64]*AllocUnit{}
	db.rowsets = map[int64]*rowset{}
	db.objects = map[int32]*object{}
	db.schemas = map[int32]string{}
	db.types = map[int32]string{}
	db.colpars = map[int32][]colpar{}
	db.rscols = map[int64][]rscol{}

	// sysallocunits: its leaf pages are chained from the boot page.
	readAU := func(p *Page) {
		if p.Header.Type != PageTypeData {
			return
		}
		errs := pageRecords(p, false, func(_ int, r *Record) {
			if r.Type != RecPrimary {
				return
			}
			s := &sysrec{r: r}
			au := &AllocUnit{
				ID: s.i64(4), Type: int(s.u8(12)), OwnerID: s.i64(13),
				First: s.pid(27), Root: s.pid(33), FirstIAM: s.pid(39),
				Used: s.i64(45), Data: s.i64(53),
			}
			if !s.bad {
				db.allocUnits[au.ID] = au
			}
		})
		db.catalogErr = append(db.catalogErr, errs...)
	}
	errs := db.chainPages(ctx, db.Boot.FirstSysIndexes, readAU)
	db.catalogErr = append(db.catalogErr, errs...)
	if len(db.allocUnits) == 0 {
		return fmt.Errorf("%w: sysallocunits at page %s is unreadable (%v)", ErrFormat, db.Boot.FirstSysIndexes, joinErrs(db.catalogErr))
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	db.systemRecords(ctx, auSysRowsets, func(s *sysrec) {
		rs := &rowset{id: s.i64(4), ownerType: int(s.u8(12)), idMajor: s.i32(13), idMinor: s.i32(17), numPart: s.i32(21), rcrows: s.i64(31)}
		if db.Boot.Version >= 655 && s.has(39, 1) {
			rs.cmprLevel = int(s.u8(39))
		}
		if !s.bad {
			db.rowsets[rs.id] = rs
		}
	})
	sysOK := db.systemTable(ctx, objSysSchObjs, func(s *sysrec) {
		o := &object{id: s.i32(4), nsid: s.i32(8), status: s.u32(13), typ: strings.TrimSpace(string(s.fixed(17, 2)))}
		o.name = s.nvar(0)
		if !s.bad {
			o.shipped = o.status&1 != 0
			db.objects[o.id] = o
		}
	})
	db.systemTable(ctx, objSysClsObjs, func(s *sysrec) {
		class := s.u8(4)
		id := s.i32(5)
		name := s.nvar(0)
		if !s.bad && class == 50 {
			db.schemas[id] = name
		}
	})
	db.systemTable(ctx, objSysScalarTyps, func(s *sysrec) {
		id := s.i32(4)
		name := s.nvar(0)
		if !s.bad {
			db.types[id] = name
		}
	})
	db.systemTable(ctx, objSysColPars, func(s *sysrec) {
		c := colpar{id: s.i32(4), number: s.i16(8), colid: s.i32(10), xtype: s.u8(14), utype: s.i32(15),
			length: s.i16(19), prec: s.u8(21), scale: s.u8(22), collation: s.i32(23), status: s.u32(27)}
		c.name = s.nvar(0)
		if !s.bad && c.number == 0 {
			db.colpars[c.id] = append(db.colpars[c.id], c)
		}
	})
	if db.systemAU(objSysRsCols) != nil {
		db.systemTable(ctx, objSysRsCols, func(s *sysrec) {
			c := rscol{rsid: s.i64(4), rscolid: s.i32(12), hbcolid: s.i32(16), ti: s.u32(28), ordkey: s.i16(36),
				maxinrowlen: s.i16(38), status: s.u32(40), offset: int16(s.u32(44) & 0xffff), nullbit: int16(s.u32(48) & 0xffff),
				bitpos: s.i16(52)}
			if !s.bad {
				db.rscols[c.rsid] = append(db.rscols[c.rsid], c)
			}
		})
	}
	db.idxcols = map[int32][]idxcol{}
	db.idxstats = map[[2]int32]idxstat{}
	db.systemTable(ctx, objSysIdxStats, func(s *sysrec) {
		x := idxstat{obj: s.i32(4), idx: s.i32(8), status: s.u32(12), typ: s.u8(21)}
		if !s.bad {
			db.idxstats[[2]int32{x.obj, x.idx}] = x
		}
	})
	db.systemTable(ctx, objSysIsCols, func(s *sysrec) {
		x := idxcol{obj: s.i32(4), idx: s.i32(8), subid: s.i32(12), status: s.u32(16), colid: s.i32(20), keyOrd: int(s.u8(24))}
		if !s.bad {
			db.idxcols[x.obj] = append(db.idxcols[x.obj], x)
		}
	})
	for _, cs := range db.colpars {
		sort.Slice(cs, func(i, j int) bool { return cs[i].colid < cs[j].colid })
	}
	if !sysOK {
		return fmt.Errorf("%w: sysschobjs not found in sysrowsets: catalog unreadable", ErrFormat)
	}
	db.buildTables()
	return ctx.Err()
}

func joinErrs(errs []error) string {
	var s []string
	for i, e := range errs {
		if i == 3 {
			s = append(s, fmt.Sprintf("and %d more", len(errs)-3))
			break
		}
		s = append(s, e.Error())
	}
	return strings.Join(s, "; ")
}
