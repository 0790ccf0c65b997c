// Package ese reads Extensible Storage Engine databases (the engine behind
// Exchange .edb files, Active Directory's ntds.dit, SRUDB.dat and Windows
// Search): header and shadow header, page checksums, the catalog, B-trees,
// records with fixed, variable, tagged, multi-valued and long values, and
// the compression schemes ESE uses. It reads an io.ReaderAt, never a path,
// and treats every size and offset in the file as untrusted.
package ese

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// ErrCorrupt is wrapped by every error about malformed database content.
var ErrCorrupt = errors.New("ese: corrupt database")

// ErrUnsupported is wrapped by errors about valid content this reader does
// not decode (for example XPRESS9 compression or encrypted values).
var ErrUnsupported = errors.New("ese: unsupported")

func corruptf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

const (
	headerMagic = 0x89abcdef
	catalogFDP  = 4 // pgnoFDPMSO
)

// Header is the database file header (or its shadow copy).
type Header struct {
	Checksum         uint32
	FormatVersion    uint32 // 0x620 for every database since Windows 2000
	FileType         uint32 // 0 database, 1 streaming file
	DBTime           uint64
	State            uint32 // 1 just created, 2 dirty shutdown, 3 clean shutdown, 4 being converted, 5 force detach
	FormatRevision   uint32 // ulDaeUpdateMajor
	PageSize         uint32
	CreationVersion  uint32
	CreationRevision uint32
	// FromShadow is set when the primary header was damaged and the shadow
	// copy (the second header page) was used instead.
	FromShadow bool
	// PrimaryErr says what was wrong with the primary header when
	// FromShadow is set.
	PrimaryErr error
}

// StateName names the database state.
func (h *Header) StateName() string {
	switch h.State {
	case 1:
		return "just created"
	case 2:
		return "dirty shutdown"
	case 3:
		return "clean shutdown"
	case 4:
		return "being converted"
	case 5:
		return "force detach"
	}
	return fmt.Sprintf("unknown (%d)", h.State)
}

// parseHeader decodes and verifies one header copy held in b (at least
// 4 KiB), read from file offset off.
func parseHeader(b []byte, off int64) (*Header, error) {
	if len(b) < 4096 {
		return nil, corruptf("header at offset %d: only %d bytes", off, len(b))
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[4:]); m != headerMagic {
		return nil, corruptf("header at offset %d: signature %#08x, want %#08x", off, m, headerMagic)
	}
	h := &Header{
		Checksum:         le.Uint32(b[0:]),
		FormatVersion:    le.Uint32(b[8:]),
		FileType:         le.Uint32(b[12:]),
		DBTime:           le.Uint64(b[16:]),
		State:            le.Uint32(b[52:]),
		FormatRevision:   le.Uint32(b[232:]),
		PageSize:         le.Uint32(b[236:]),
		CreationVersion:  le.Uint32(b[340:]),
		CreationRevision: le.Uint32(b[344:]),
	}
	if h.PageSize == 0 {
		h.PageSize = 4096
	}
	switch h.PageSize {
	case 2048, 4096, 8192, 16384, 32768:
	default:
		return nil, corruptf("header at offset %d: page size %d", off, h.PageSize)
	}
	// The header checksum is the legacy XOR over the header page (4 KiB,
	// or the whole page when that is larger).
	n := min(len(b), int(h.PageSize))
	if sum := xorChecksum(b[:n]); sum != h.Checksum {
		if sum4k := xorChecksum(b[:4096]); sum4k != h.Checksum {
			return nil, corruptf("header at offset %d: checksum %#08x, computed %#08x", off, h.Checksum, sum)
		}
	}
	return h, nil
}

// DB is an open ESE database.
type DB struct {
	r        io.ReaderAt
	size     int64
	Header   *Header
	pageSize int
	large    bool // pages over 8 KiB: extended header, 15-bit tags
	lastPage uint32

	mu       sync.Mutex
	cache    map[uint32]*page
	badPages map[uint32]error

	tables  []*Table
	byName  map[string]*Table
	catalog *Table
}

// Open reads the header (falling back to the shadow header when the
// primary is damaged) and the catalog.
func Open(ctx context.Context, r io.ReaderAt, size int64) (*DB, error) {
	if size < 2*2048 {
		return nil, corruptf("file of %d bytes is too small for an ESE database", size)
	}
	buf := make([]byte, min(size, 32768))
	if _, err := r.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("ese: reading header at offset 0: %w", err)
	}
	h, perr := parseHeader(buf[:min(len(buf), 32768)], 0)
	if perr != nil {
		// Try the shadow copy, which sits one page in; the page size is
		// unknown when the primary is damaged, so try each.
		for _, ps := range []int64{4096, 8192, 16384, 32768, 2048} {
			if 2*ps > size {
				continue
			}
			sb := make([]byte, max(ps, 4096))
			if _, err := r.ReadAt(sb, ps); err != nil && !errors.Is(err, io.EOF) {
				continue
			}
			sh, err := parseHeader(sb, ps)
			if err == nil && int64(sh.PageSize) == ps {
				sh.FromShadow = true
				sh.PrimaryErr = perr
				h = sh
				break
			}
		}
		if h == nil {
			return nil, fmt.Errorf("ese: no usable header: primary: %w; shadow copy unusable too", perr)
		}
	}
	db := &DB{
		r:        r,
		size:     size,
		Header:   h,
		pageSize: int(h.PageSize),
		large:    h.PageSize > 8192,
		cache:    map[uint32]*page{},
		badPages: map[uint32]error{},
	}
	np := size/int64(db.pageSize) - 1
	if np < 1 {
		return nil, corruptf("file of %d bytes holds no database page", size)
	}
	db.lastPage = uint32(min(np, 1<<32-1))
	if err := db.loadCatalog(ctx); err != nil {
		return nil, err
	}
	return db, nil
}

// PageSize returns the database page size in bytes.
func (db *DB) PageSize() int { return db.pageSize }

// PageCount returns the number of database pages (excluding the two
// header pages).
func (db *DB) PageCount() uint32 { return db.lastPage }

// Tables lists every table in catalog order.
func (db *DB) Tables() []*Table { return db.tables }

// Table returns the table with the given name.
func (db *DB) Table(name string) (*Table, error) {
	t := db.byName[name]
	if t == nil {
		return nil, fmt.Errorf("ese: no table named %q", name)
	}
	return t, nil
}

// ChecksumError describes one page whose stored checksum does not match.
type ChecksumError struct {
	Page     uint32
	Offset   int64
	Stored   uint64
	Computed uint64
	Block    int // 0 for the page (or its first block); 1..3 for later blocks of 16/32 KiB pages
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("ese: page %d (offset %d) block %d: stored checksum %#016x, computed %#016x",
		e.Page, e.Offset, e.Block, e.Stored, e.Computed)
}

// BadPages returns the checksum failures met so far, by page number.
func (db *DB) BadPages() []error {
	db.mu.Lock()
	defer db.mu.Unlock()
	keys := make([]uint32, 0, len(db.badPages))
	for k := range db.badPages {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	out := make([]error, 0, len(keys))
	for _, k := range keys {
		out = append(out, db.badPages[k])
	}
	return out
}

// VerifyReport sums up a scan of every page checksum.
type VerifyReport struct {
	Pages    int // pages scanned
	Empty    int // never-written pages (all zero), not checked
	NewECC   int // pages with the ECC/XOR checksum format
	OldXOR   int // pages with the legacy XOR checksum
	Failures []*ChecksumError
}

// Verify checks the checksum of every page in the file.
func (db *DB) Verify(ctx context.Context) (*VerifyReport, error) {
	rep := &VerifyReport{}
	buf := make([]byte, db.pageSize)
	for pg := uint32(1); pg <= db.lastPage; pg++ {
		if pg%256 == 0 {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
		}
		off := int64(pg+1) * int64(db.pageSize)
		if _, err := db.r.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return rep, fmt.Errorf("ese: reading page %d at offset %d: %w", pg, off, err)
		}
		rep.Pages++
		kind, errs := db.checkPage(buf, pg)
		switch kind {
		case sumEmpty:
			rep.Empty++
		case sumNew:
			rep.NewECC++
		case sumOld:
			rep.OldXOR++
		}
		rep.Failures = append(rep.Failures, errs...)
	}
	return rep, nil
}
