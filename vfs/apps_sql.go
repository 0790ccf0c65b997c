package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/rewind-cdp/rewind/parsers/mdf"
	"github.com/rewind-cdp/rewind/parsers/mdf/export"
)

// SQLApp is the sql/ view: sql/<database>/<schema>.<table>.csv and .jsonl
// for every SQL Server primary data file (.mdf) on the point's file
// systems, the same bytes `rewind sql export --format csv|jsonl` writes.
type SQLApp struct{}

// SQLDir is the SQL view's directory name.
const SQLDir = "sql"

// Dir implements AppProvider.
func (SQLApp) Dir() string { return SQLDir }

// Match implements AppProvider: .mdf files of at least 10 pages.
func (SQLApp) Match(p string, size int64) bool {
	return strings.EqualFold(path.Ext(p), ".mdf") && size >= 10*mdf.PageSize
}

// Probe implements AppProvider: page 0 is a file header page.
func (SQLApp) Probe(ctx context.Context, r io.ReaderAt, size int64) bool {
	var b [2]byte
	if n, _ := r.ReadAt(b[:], 0); n < 2 {
		return false
	}
	return b[1] == mdf.PageTypeFileHeader
}

// Open implements AppProvider.
func (SQLApp) Open(ctx context.Context, src AppSource) (AppDatabase, error) {
	db, err := mdf.Open(ctx, src.R, src.Size, mdf.Options{})
	if err != nil {
		return nil, err
	}
	for _, e := range db.CatalogErrors() {
		src.Log.Warn("sql view: damaged system catalog, some tables may be missing", "err", e)
	}
	s := &sqlDB{db: db, src: src, files: map[string]sqlFile{}}
	for _, t := range db.Tables() {
		for _, format := range []string{"csv", "jsonl"} {
			name := t.Schema + "." + t.Name + export.Ext(format)
			if _, dup := s.files[name]; !dup {
				s.names = append(s.names, name)
				s.files[name] = sqlFile{t, format}
			}
		}
	}
	return s, nil
}

type sqlDB struct {
	db    *mdf.Database
	src   AppSource
	names []string
	files map[string]sqlFile
	mu    sync.Mutex // one table read at a time per file
}

type sqlFile struct {
	t      *mdf.Table
	format string
}

// Name is the database name from the boot page; an attached database
// whose name is its file's path gets the path's base name.
func (s *sqlDB) Name() string {
	n := strings.TrimSpace(s.db.Boot.Name)
	if i := strings.LastIndexAny(n, `\/`); i >= 0 {
		n = n[i+1:]
		n = strings.TrimSuffix(n, path.Ext(n))
	}
	return n
}

func (s *sqlDB) ReadDir(ctx context.Context, dir string) ([]AppEntry, error) {
	if dir != "" {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotExist)
	}
	out := make([]AppEntry, 0, len(s.names))
	for _, n := range s.names {
		out = append(out, AppEntry{Name: n})
	}
	return out, nil
}

// errSQLUnreadable marks a table with damaged data: the view shows only
// whole tables (`rewind sql export` gives the readable rows).
var errSQLUnreadable = fmt.Errorf("table has unreadable data (rewind sql export --at ... --path ... writes the readable rows): %w", errAppDamaged)

func (s *sqlDB) WriteFile(ctx context.Context, name string, w io.Writer) error {
	f, ok := s.files[name]
	if !ok {
		return fmt.Errorf("%s: %w", name, ErrNotExist)
	}
	t, format := f.t, f.format
	s.mu.Lock()
	defer s.mu.Unlock()
	rw, err := export.NewWriter(w, format, t, export.Options{})
	if err != nil {
		return err
	}
	var fails []error
	res, err := s.db.ReadTable(ctx, t, func(r *mdf.Row) error {
		if len(r.Errors) > 0 && len(fails) < 10 {
			fails = append(fails, fmt.Errorf("row %s: %w", r.RID, errors.Join(r.Errors...)))
		}
		return rw.WriteRow(r)
	})
	if cerr := rw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: table %s: %w", s.src.Path, t.FullName(), err)
	}
	if res != nil {
		fails = append(fails, res.Unreadable...)
	}
	if len(fails) > 0 {
		return fmt.Errorf("%s: table %s: %w: %w", s.src.Path, t.FullName(), errSQLUnreadable, errors.Join(fails...))
	}
	return nil
}
