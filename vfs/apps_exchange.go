package vfs

import (
	"context"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/rewind-cdp/rewind/parsers/exchange"
)

// ExchangeApp is the exchange/ view:
// exchange/<mailbox>/<folder path>/<yyyy-mm-dd HHMM> <subject>.eml for
// every mailbox of the Exchange mailbox databases (.edb) on the point's
// file systems, named and written as `rewind exchange export` does. It
// goes before ESEApp in the claiming order; an ESE file without the
// mailbox tables is left to ese/.
type ExchangeApp struct{}

// ExchangeDir is the Exchange view's directory name.
const ExchangeDir = "exchange"

// Dir implements AppProvider.
func (ExchangeApp) Dir() string { return ExchangeDir }

// MergeDatabases implements AppMerger: mailboxes go straight into
// exchange/.
func (ExchangeApp) MergeDatabases() bool { return true }

// Match implements AppProvider: .edb files of at least two pages.
func (ExchangeApp) Match(p string, size int64) bool {
	return strings.EqualFold(path.Ext(p), ".edb") && size >= 2*4096
}

// Probe implements AppProvider: an ESE database whose catalog has the
// Mailbox, Folder and Message_N tables.
func (ExchangeApp) Probe(ctx context.Context, r io.ReaderAt, size int64) bool {
	if !(ESEApp{}).Probe(ctx, r, size) {
		return false
	}
	_, err := exchange.Open(ctx, r, size)
	return err == nil
}

// Open implements AppProvider.
func (ExchangeApp) Open(ctx context.Context, src AppSource) (AppDatabase, error) {
	db, err := exchange.Open(ctx, src.R, src.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.Path, err)
	}
	return newExchangeDB(src.Path, db), nil
}

// exchangeDB is an opened mailbox database. Each mailbox is read once (one
// pass over its message table) the first time one of its directories is
// listed, and kept while the database stays open.
type exchangeDB struct {
	path string
	db   *exchange.DB

	mu    sync.Mutex                   // guards the fields below and every read of db (one ESE reader)
	boxes map[string]*exchange.Mailbox // by directory name; nil until listed
	order []string
	trees map[string]*exchangeTree  // by mailbox directory name
	ahead map[string]*exchange.Item // messages loaded ahead of their reads, by path in the database
}

// Reading one message back costs a pass over the mailbox's message table
// (the ESE reader cannot seek by key), so a read loads a batch: the
// message asked for and those that follow it in its directory's listing,
// which `ls -l`, a copy or a search go on to read. The batch is bounded in
// messages and in the sizes the message table gives, and only the latest
// batch is kept.
const (
	aheadBatch = 64
	aheadBytes = 32 << 20
)

// exchangeTree is one mailbox laid out as directories and files.
type exchangeTree struct {
	dirs  map[string][]AppEntry        // by path below the mailbox ("" is its top)
	files map[string]*exchange.Message // by path below the mailbox
}

func newExchangeDB(p string, db *exchange.DB) *exchangeDB {
	return &exchangeDB{path: p, db: db, trees: map[string]*exchangeTree{}, ahead: map[string]*exchange.Item{}}
}

// Name is the file's base name without its extension.
func (e *exchangeDB) Name() string {
	b := path.Base(e.path)
	return strings.TrimSuffix(b, path.Ext(b))
}

// mailboxes lists the mailboxes under unique directory names.
func (e *exchangeDB) mailboxes(ctx context.Context) error {
	if e.boxes != nil {
		return nil
	}
	list, err := e.db.Mailboxes(ctx)
	if err != nil {
		return fmt.Errorf("%s: mailboxes: %w", e.path, err)
	}
	e.boxes, e.order = map[string]*exchange.Mailbox{}, exchange.MailboxDirs(list)
	for i, name := range e.order {
		e.boxes[name] = list[i]
	}
	return nil
}

// tree returns the laid-out mailbox, reading it on first use.
func (e *exchangeDB) tree(ctx context.Context, box string) (*exchangeTree, error) {
	if t := e.trees[box]; t != nil {
		return t, nil
	}
	if err := e.mailboxes(ctx); err != nil {
		return nil, err
	}
	mb := e.boxes[box]
	if mb == nil {
		return nil, fmt.Errorf("%s: %w", box, ErrNotExist)
	}
	folders, byFolder, err := mb.MessagesByFolder(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: mailbox %s: %w", e.path, mb.Name(), err)
	}
	l := exchange.NewLayout(folders, byFolder)
	t := &exchangeTree{dirs: map[string][]AppEntry{"": {}}, files: l.Files}
	for _, d := range l.Dirs {
		parent := path.Dir(d)
		if parent == "." {
			parent = ""
		}
		t.dirs[parent] = append(t.dirs[parent], AppEntry{Name: path.Base(d), Dir: true})
		t.dirs[d] = []AppEntry{}
	}
	for p, m := range l.Files {
		d := path.Dir(p)
		if d == "." {
			d = ""
		}
		t.dirs[d] = append(t.dirs[d], AppEntry{Name: path.Base(p), Mtime: m.Date()})
	}
	for d := range t.dirs {
		sort.Slice(t.dirs[d], func(i, j int) bool { return t.dirs[d][i].Name < t.dirs[d][j].Name })
	}
	e.trees[box] = t
	return t, nil
}

// split parts a path of the database into its mailbox and the rest.
func splitBox(p string) (box, rest string) {
	box, rest, _ = strings.Cut(p, "/")
	return box, rest
}

func (e *exchangeDB) ReadDir(ctx context.Context, dir string) ([]AppEntry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if dir == "" {
		if err := e.mailboxes(ctx); err != nil {
			return nil, err
		}
		out := make([]AppEntry, 0, len(e.order))
		for _, n := range e.order {
			out = append(out, AppEntry{Name: n, Dir: true})
		}
		return out, nil
	}
	box, rest := splitBox(dir)
	t, err := e.tree(ctx, box)
	if err != nil {
		return nil, err
	}
	ents, ok := t.dirs[rest]
	if !ok {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotExist)
	}
	return slicesClone(ents), nil
}

func slicesClone(a []AppEntry) []AppEntry { return append([]AppEntry{}, a...) }

func (e *exchangeDB) WriteFile(ctx context.Context, name string, w io.Writer) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	it := e.ahead[name]
	if it == nil {
		var err error
		if it, err = e.load(ctx, name); err != nil {
			return err
		}
	}
	delete(e.ahead, name)
	if err := it.WriteEML(w); err != nil {
		return fmt.Errorf("%s: %s: %w", e.path, name, err)
	}
	return nil
}

// load loads the message at name, and the batch that follows it into
// ahead. Called with mu held.
func (e *exchangeDB) load(ctx context.Context, name string) (*exchange.Item, error) {
	box, rest := splitBox(name)
	t, err := e.tree(ctx, box)
	if err != nil {
		return nil, err
	}
	if t.files[rest] == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrNotExist)
	}
	dir := path.Dir(rest)
	if dir == "." {
		dir = ""
	}
	want := map[int64]string{} // DocID → path in the database
	var bytes int64
	for _, ent := range t.dirs[dir] {
		p := path.Join(dir, ent.Name)
		m := t.files[p]
		if m == nil || (p < rest && len(want) == 0) {
			continue
		}
		if len(want) > 0 && (len(want) >= aheadBatch || bytes+m.Size > aheadBytes) {
			break
		}
		want[m.DocID] = path.Join(box, p)
		bytes += m.Size
	}
	var found *exchange.Item
	e.ahead = map[string]*exchange.Item{}
	err = e.boxes[box].Items(ctx, func(m *exchange.Message) bool { _, ok := want[m.DocID]; return ok }, func(it *exchange.Item) error {
		p := want[it.DocID]
		if p == name {
			found = it
			return nil
		}
		e.ahead[p] = it
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", e.path, name, err)
	}
	if found == nil {
		return nil, fmt.Errorf("%s: %s: the message is no longer in its mailbox's table", e.path, name)
	}
	return found, nil
}
