package mdf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// Options tune how a database is read.
type Options struct {
	// IncludeDeleted also returns ghost records and records left on
	// deallocated pages of a table, marked Deleted.
	IncludeDeleted bool
	// IgnoreChecksums decodes pages whose checksum or torn bits are wrong
	// instead of listing them as unreadable.
	IgnoreChecksums bool
	// CodePage, when not zero, decodes every char, varchar and text column
	// with this Windows code page instead of the one its collation implies.
	CodePage int
}

// Database is an opened .mdf file.
type Database struct {
	r     io.ReaderAt
	size  int64
	npage uint32
	opts  Options

	Boot BootInfo

	allocUnits map[int64]*AllocUnit // by auid
	rowsets    map[int64]*rowset    // by rowsetid
	objects    map[int32]*object    // by object id
	schemas    map[int32]string     // by schema id
	types      map[int32]string     // user type names by utype
	colpars    map[int32][]colpar   // by object id
	rscols     map[int64][]rscol    // by rowset id
	idxcols    map[int32][]idxcol   // sysiscols by object id
	idxstats   map[[2]int32]idxstat // sysidxstats by object and index id
	tables     []*Table             // user tables
	catalogErr []error              // problems met while reading the catalog
	fileID     uint16
	cache      pageCache
}

// BootInfo holds what the boot page (page 1:9) tells about the database.
type BootInfo struct {
	Name            string // database name (attached databases often hold the file path)
	Version         int    // dbi_version: 611 = 2005, 655 = 2008, 661 = 2008 R2, 706 = 2012, 782 = 2014, ...
	CreateVersion   int    // dbi_createVersion: the version that created the database (539 = SQL Server 2000)
	Status          uint32
	DBID            int
	PageVerify      string // CHECKSUM, TORN_PAGE_DETECTION or NONE
	FirstSysIndexes PageID
}

// VersionName maps an internal database version to a SQL Server release.
func VersionName(v int) string {
	switch {
	case v == 0:
		return "unknown"
	case v <= 539:
		return "SQL Server 2000"
	case v <= 611:
		return "SQL Server 2005"
	case v <= 655:
		return "SQL Server 2008"
	case v <= 661:
		return "SQL Server 2008 R2"
	case v <= 706:
		return "SQL Server 2012"
	case v <= 782:
		return "SQL Server 2014"
	case v <= 852:
		return "SQL Server 2016"
	case v <= 869:
		return "SQL Server 2017"
	case v <= 904:
		return "SQL Server 2019"
	case v <= 957:
		return "SQL Server 2022"
	}
	return "SQL Server (newer than 2022)"
}

// Open reads the boot page and the system catalog of the data file held by
// r (size bytes).
func Open(ctx context.Context, r io.ReaderAt, size int64, opts Options) (*Database, error) {
	if size < 10*PageSize {
		return nil, fmt.Errorf("%w: file of %d bytes is too small for a data file (needs at least 10 pages)", ErrFormat, size)
	}
	np := size / PageSize
	if np > 1<<32-1 {
		np = 1<<32 - 1
	}
	db := &Database{r: r, size: size, npage: uint32(np), opts: opts}
	hdr, err := db.readPageRaw(PageID{Page: 0})
	if err != nil {
		return nil, err
	}
	if hdr.Header.Type != PageTypeFileHeader {
		return nil, fmt.Errorf("%w: page 0 has type %d, not a file header page: not a SQL Server data file", ErrFormat, hdr.Header.Type)
	}
	db.fileID = hdr.Header.This.File
	if db.fileID == 0 {
		db.fileID = 1
	}
	if err := db.readBoot(); err != nil {
		return nil, err
	}
	if err := db.readCatalog(ctx); err != nil {
		return nil, err
	}
	return db, nil
}

// NumPages returns the number of whole pages in the file.
func (db *Database) NumPages() uint32 { return db.npage }

// CatalogErrors lists problems met while reading the system tables
// (damaged catalog pages, malformed rows); the catalog is built from what
// could be read.
func (db *Database) CatalogErrors() []error { return db.catalogErr }

// readPageRaw reads a page without verifying it.
func (db *Database) readPageRaw(id PageID) (*Page, error) {
	if err := db.checkPageID(id); err != nil {
		return nil, err
	}
	return db.readPageInto(id, &Page{Data: make([]byte, PageSize)})
}

// checkPageID checks that page id lies in this file.
func (db *Database) checkPageID(id PageID) error {
	if id.File != 0 && db.fileID != 0 && id.File != db.fileID {
		return &PageError{Page: id, Offset: -1, Err: fmt.Errorf("%w: page is in file %d, only file %d is available", ErrFormat, id.File, db.fileID)}
	}
	if id.Page >= db.npage {
		return &PageError{Page: id, Offset: int64(id.Page) * PageSize, Err: fmt.Errorf("%w: page beyond end of file (%d pages)", ErrFormat, db.npage)}
	}
	return nil
}

// readPageInto reads page id (checked by the caller to lie in the file)
// into p, reusing p.Data.
func (db *Database) readPageInto(id PageID, p *Page) (*Page, error) {
	off := int64(id.Page) * PageSize
	buf := p.Data[:PageSize]
	n, err := db.r.ReadAt(buf, off)
	if n < PageSize {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, &PageError{Page: id, Offset: off, Err: err}
	}
	*p = Page{ID: id, Header: parsePageHeader(buf), Data: buf}
	return p, nil
}

// ReadPage reads and verifies a page. A page that fails its checksum or
// torn-bit check is returned together with an error (unless
// IgnoreChecksums is set).
func (db *Database) ReadPage(id PageID) (*Page, error) {
	return db.readPageBuf(id, nil)
}

// readPageBuf is ReadPage reading into buf (a page-sized Page whose Data
// is reused) when buf is not nil.
func (db *Database) readPageBuf(id PageID, buf *Page) (*Page, error) {
	if id.File == 0 {
		id.File = db.fileID
	}
	var p *Page
	var err error
	if buf == nil {
		p, err = db.readPageRaw(id)
	} else if err = db.checkPageID(id); err == nil {
		p, err = db.readPageInto(id, buf)
	}
	if err != nil {
		return nil, err
	}
	p.Verify = verifyPage(p.Data, id)
	p.Header = parsePageHeader(p.Data)
	if !p.Verify.OK() && !db.opts.IgnoreChecksums {
		if p.Verify == VerifyEmpty {
			return p, &PageError{Page: id, Offset: int64(id.Page) * PageSize, Err: fmt.Errorf("%w: page is empty (never written)", ErrFormat)}
		}
		return p, &PageError{Page: id, Offset: int64(id.Page) * PageSize, Err: fmt.Errorf("%w: %s", ErrFormat, p.Verify)}
	}
	return p, nil
}

func (db *Database) readBoot() error {
	p, err := db.ReadPage(PageID{File: db.fileID, Page: 9})
	if err != nil && (p == nil || db.opts.IgnoreChecksums == false && p.Verify != VerifyBadSum && p.Verify != VerifyTorn) {
		return fmt.Errorf("boot page: %w", err)
	}
	if p.Header.Type != PageTypeBoot {
		return fmt.Errorf("boot page: %w", p.errorf(1, "page 9 has type %d, not a boot page", p.Header.Type))
	}
	off, err := p.slotOffset(0)
	if err != nil || off == 0 {
		return fmt.Errorf("boot page: %w", p.errorf(PageSize-2, "no boot record"))
	}
	rec := p.Data[off:p.slotEnd()]
	const need = 4 + 518
	if len(rec) < need {
		return fmt.Errorf("boot page: %w", p.errorf(off, "boot record too short (%d bytes)", len(rec)))
	}
	f := rec[4:]
	b := &db.Boot
	b.Version = int(int16(binary.LittleEndian.Uint16(f[0:])))
	b.CreateVersion = int(int16(binary.LittleEndian.Uint16(f[2:])))
	b.Status = binary.LittleEndian.Uint32(f[32:])
	b.Name = decodeUTF16Name(f[48:304])
	b.DBID = int(binary.LittleEndian.Uint16(f[308:]))
	b.FirstSysIndexes = parsePageID(f[512:518])
	switch {
	case p.Header.FlagBits&flagChecksum != 0:
		b.PageVerify = "CHECKSUM"
	case p.Header.FlagBits&flagTornBits != 0 || b.Status&0x10 != 0:
		b.PageVerify = "TORN_PAGE_DETECTION"
	default:
		b.PageVerify = "NONE"
	}
	return nil
}

// decodeUTF16Name decodes a fixed nchar field, trimming the padding
// (NULs, and the 0x20 0x20 byte pairs SQL Server pads with).
func decodeUTF16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 || c == 0x2020 {
			break
		}
		u = append(u, c)
	}
	return strings.TrimRight(string(utf16.Decode(u)), " ")
}
