package vfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/rewind-cdp/rewind/parsers/ese"
	eseexport "github.com/rewind-cdp/rewind/parsers/ese/export"
)

// ESEApp is the ese/ view: ese/<database>/<table>.jsonl for every ESE
// database (Active Directory's ntds.dit, SRUDB.dat, Windows Search, UAL
// .mdb, ...) on the point's file systems, the same bytes `rewind ese export
// --format jsonl` writes. An Exchange view listed before it claims the
// Exchange databases.
type ESEApp struct{}

// ESEDir is the ESE view's directory name.
const ESEDir = "ese"

// Dir implements AppProvider.
func (ESEApp) Dir() string { return ESEDir }

// Match implements AppProvider: .edb, .dit, .dat and .mdb files of at
// least two pages.
func (ESEApp) Match(p string, size int64) bool {
	switch strings.ToLower(path.Ext(p)) {
	case ".edb", ".dit", ".dat", ".mdb":
		return size >= 2*4096
	}
	return false
}

// eseMagic is the signature at offset 4 of an ESE database header.
const eseMagic = 0x89abcdef

// Probe implements AppProvider: the ESE signature in the header or in the
// shadow header of a database (not a streaming) file.
func (ESEApp) Probe(ctx context.Context, r io.ReaderAt, size int64) bool {
	for _, off := range []int64{0, 4096, 8192, 16384, 32768, 2048} {
		var b [16]byte
		if off+4096 > size {
			continue
		}
		if n, _ := r.ReadAt(b[:], off); n < len(b) {
			continue
		}
		if binary.LittleEndian.Uint32(b[4:]) == eseMagic && binary.LittleEndian.Uint32(b[12:]) == 0 {
			return true
		}
		if off == 0 && binary.LittleEndian.Uint32(b[4:]) != 0 {
			return false // a header that is not ESE: no shadow to look for
		}
	}
	return false
}

// Open implements AppProvider.
func (ESEApp) Open(ctx context.Context, src AppSource) (AppDatabase, error) {
	db, err := ese.Open(ctx, src.R, src.Size)
	if err != nil {
		return nil, err
	}
	if db.Header.FromShadow {
		src.Log.Warn("ese view: primary header damaged, read the shadow copy", "err", db.Header.PrimaryErr)
	}
	return &eseDB{db: db, src: src}, nil
}

type eseDB struct {
	db  *ese.DB
	src AppSource
	mu  sync.Mutex
}

// Name is the file's base name without its extension (ESE databases keep
// no name of their own).
func (e *eseDB) Name() string {
	b := path.Base(e.src.Path)
	return strings.TrimSuffix(b, path.Ext(b))
}

func (e *eseDB) ReadDir(ctx context.Context, dir string) ([]AppEntry, error) {
	if dir != "" {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotExist)
	}
	var out []AppEntry
	for _, t := range e.db.Tables() {
		out = append(out, AppEntry{Name: t.Name + ".jsonl"})
	}
	return out, nil
}

// errESEUnreadable marks a table with values that could not be decoded:
// the view shows only whole tables.
var errESEUnreadable = fmt.Errorf("table has undecodable values (rewind ese export --at ... --path ... writes them as null): %w", errAppDamaged)

func (e *eseDB) WriteFile(ctx context.Context, name string, w io.Writer) error {
	t, err := e.db.Table(strings.TrimSuffix(name, ".jsonl"))
	if err != nil || !strings.HasSuffix(name, ".jsonl") {
		return fmt.Errorf("%s: %w", name, ErrNotExist)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var fails []error
	err = eseexport.Table(ctx, w, t, "jsonl", func(row int, col string, err error) {
		if len(fails) < 10 {
			fails = append(fails, fmt.Errorf("row %d column %s: %w", row, col, err))
		}
	})
	if err != nil {
		return fmt.Errorf("%s: %w", e.src.Path, err)
	}
	if len(fails) > 0 {
		return fmt.Errorf("%s: table %s: %w: %w", e.src.Path, t.Name, errESEUnreadable, errors.Join(fails...))
	}
	return nil
}
