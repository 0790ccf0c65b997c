package vfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Application views: directories next to disk.img and files/ in a point
// directory (sql/, exchange/, ese/) that show the databases found
// on the point's file systems as plain files. Each view is an AppProvider;
// the tree finds candidate files with one bounded walk per point, lets the
// first provider that recognises a file claim it, and generates file
// contents lazily into a bounded on-disk cache (appcache.go).

// AppProvider makes one application directory of a point directory.
type AppProvider interface {
	// Dir is the directory's name in the point directory ("sql").
	Dir() string
	// Match says from a file's path in its file system and its size
	// whether it may be one of the provider's databases. No I/O.
	Match(path string, size int64) bool
	// Probe reads the start of a matching file to confirm it (a
	// signature). Providers are asked in order; the first whose Probe
	// returns true claims the file, so a more specific provider (Exchange)
	// goes before a general one (ESE).
	Probe(ctx context.Context, r io.ReaderAt, size int64) bool
	// Open reads a claimed file. An error gives a database directory that
	// fails with EIO; the rest of the view stays readable.
	Open(ctx context.Context, src AppSource) (AppDatabase, error)
}

// AppMerger is implemented by providers whose databases' top-level entries
// go straight into the provider's directory (exchange/<mailbox>/) instead
// of into a directory per database (sql/<database>/).
type AppMerger interface {
	MergeDatabases() bool
}

// AppSource is a database file found on a point's file system.
type AppSource struct {
	Path   string // path in the file system ("/SQLData/Sales.mdf")
	Volume string // partition folder name when the disk has several ("p2-ntfs")
	R      io.ReaderAt
	Size   int64
	Mtime  time.Time // the file's modification time
	Log    *slog.Logger
}

// AppDatabase is an opened database: a read-only tree of directories and
// generated files. Its methods may be called concurrently. The tree keeps
// a bounded number of databases open and opens one again when needed, so
// names and contents must not depend on anything but the file.
type AppDatabase interface {
	// Name is the directory name the database wants (the tree makes it
	// safe and unique).
	Name() string
	// ReadDir lists a directory of the database ("" is its top; deeper
	// directories are slash-separated paths of entry names).
	ReadDir(ctx context.Context, dir string) ([]AppEntry, error)
	// WriteFile writes the whole content of the file at a path ReadDir
	// listed. It is called again when the cached copy was dropped and
	// must write the same bytes every time. An error makes reads of the
	// file fail with EIO.
	WriteFile(ctx context.Context, name string, w io.Writer) error
}

// AppEntry is one file or directory of an AppDatabase.
type AppEntry struct {
	Name  string
	Dir   bool
	Mtime time.Time // zero: the database file's time
}

// DefaultApps are the application views a tree shows when Options.Apps is
// nil, in claiming order.
func DefaultApps() []AppProvider {
	return []AppProvider{SQLApp{}, ExchangeApp{}, ESEApp{}}
}

// Bounds of the walk that finds database files in a point.
const (
	maxAppWalkEntries = 500_000 // directory entries visited per point
	maxAppWalkDepth   = 64
	maxAppProbes      = 4096 // candidate files opened to check a signature
	maxOpenAppDBs     = 16   // databases kept open (catalogs, page caches)
)

// appSkipDirs are directories that hold no databases but very many files
// (compared lowercased, from the file system root).
var appSkipDirs = map[string]bool{
	"/windows/winsxs":               true,
	"/windows/servicing":            true,
	"/windows/installer":            true,
	"/windows/assembly":             true,
	"/windows/softwaredistribution": true,
	"/windows/syswow64":             true,
	"/windows/systemapps":           true,
	"/windows/microsoft.net":        true,
	"/windows/system32/driverstore": true,
	"/program files/windowsapps":    true,
	"/proc":                         true,
	"/sys":                          true,
	"/usr/share":                    true,
	"/usr/lib":                      true,
	"/usr/include":                  true,
}

// appTree is the per-tree state of the application views.
type appTree struct {
	provs []AppProvider
	cache *genCache

	mu    sync.Mutex
	scans map[int64]*appScan // by point id: points never change
	open  []*appDB           // open databases, least recently used first
	max   int                // maxOpenAppDBs (tests lower it)
}

func newAppTree(opt Options) *appTree {
	provs := opt.Apps
	if provs == nil {
		provs = DefaultApps()
	}
	return &appTree{provs: provs, cache: newGenCache(opt.AppCacheDir, opt.AppCacheSize), scans: map[int64]*appScan{}, max: maxOpenAppDBs}
}

func (a *appTree) close() error { return a.cache.close() }

// appScan is what the walk of one point found, per provider.
type appScan struct {
	once  sync.Once
	found [][]appFound
}

type appFound struct {
	part  int
	vname string
	path  string
	size  int64
	mtime time.Time
}

// appNode is the application state of a node of kind kApp, kAppDir or
// kAppFile.
type appNode struct {
	prov int

	// kApp: the top-level entries, made once
	once sync.Once
	tops []appTop
	err  error

	// kAppDir, kAppFile
	db  *appDB
	rel string // path inside the database ("" is its top)
}

type appTop struct {
	name string
	db   *appDB
	rel  string
	e    AppEntry
}

// appDB is a database file a view found. It is opened when needed and
// closed (dropped) when more than maxOpenAppDBs are open.
type appDB struct {
	view *node // the kApp node
	prov AppProvider
	src  appFound

	mu  sync.Mutex
	db  AppDatabase // nil when not open
	err error       // why it cannot be opened (for good: points never change)
}

// get returns the open database, opening it again if it was dropped.
func (f *FS) appDBGet(ctx context.Context, a *appDB) (AppDatabase, error) {
	a.mu.Lock()
	db, err := a.db, a.err
	if db == nil && err == nil {
		db, err = f.openAppDB(context.WithoutCancel(ctx), a)
		a.db, a.err = db, err
	}
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	t := f.apps
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := slices.Index(t.open, a); i >= 0 {
		t.open = slices.Delete(t.open, i, i+1)
	}
	t.open = append(t.open, a)
	for len(t.open) > t.max {
		old := t.open[0]
		t.open = t.open[1:]
		old.mu.Lock()
		old.db = nil // calls under way keep their reference
		old.mu.Unlock()
	}
	return db, nil
}

// scan walks a point's file systems once and returns the files each
// provider claimed.
func (f *FS) appScan(ctx context.Context, n *node) [][]appFound {
	a := f.apps
	if len(a.provs) == 0 {
		return nil
	}
	a.mu.Lock()
	s := a.scans[n.point]
	if s == nil {
		s = &appScan{}
		a.scans[n.point] = s
	}
	a.mu.Unlock()
	s.once.Do(func() { s.found = f.walkApps(context.WithoutCancel(ctx), n) })
	return s.found
}

func (f *FS) walkApps(ctx context.Context, n *node) [][]appFound {
	found := make([][]appFound, len(f.apps.provs))
	ps, err := f.pointState(ctx, n)
	if err != nil {
		return found
	}
	vols, err := f.volumesIn(ctx, ps)
	if err != nil {
		return found
	}
	start := time.Now()
	visited, probes := 0, 0
	where := func(v fsVolume) []any {
		return []any{"machine", ps.p.Machine, "volume", ps.p.Volume, "point", ps.name, "partition", v.name}
	}
	for part, v := range vols {
		if v.fs == nil {
			continue
		}
		type dir struct {
			path  string
			depth int
		}
		stack := []dir{{"/", 0}}
		for len(stack) > 0 {
			d := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			es, err := v.fs.ReadDir(ctx, d.path)
			if err != nil {
				f.log.Debug("application views: cannot list a directory", append(where(v), "path", d.path, "err", err)...)
				continue
			}
			for _, e := range es {
				if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsRune(e.Name, '/') {
					continue
				}
				if visited++; visited > maxAppWalkEntries {
					f.log.Warn("application views: stopped looking for databases after too many files",
						append(where(v), "entries", maxAppWalkEntries)...)
					return sortFound(found)
				}
				p := path.Join(d.path, e.Name)
				if e.Mode.IsDir() {
					if d.depth+1 < maxAppWalkDepth && !appSkipDirs[strings.ToLower(p)] {
						stack = append(stack, dir{p, d.depth + 1})
					}
					continue
				}
				if !e.Mode.IsRegular() {
					continue
				}
				for i, pr := range f.apps.provs {
					if !pr.Match(p, e.Size) {
						continue
					}
					if probes++; probes > maxAppProbes {
						break
					}
					fl, err := v.fs.Open(ctx, p)
					if err != nil {
						f.log.Warn("application views: cannot open a candidate file", append(where(v), "path", p, "err", err)...)
						break
					}
					if probeSafe(ctx, pr, fl, fl.Size()) {
						found[i] = append(found[i], appFound{part: part, vname: v.name, path: p, size: fl.Size(), mtime: e.Mtime})
						break
					}
				}
			}
		}
	}
	if probes > maxAppProbes {
		f.log.Warn("application views: too many candidate files, the rest were not checked", "machine", ps.p.Machine,
			"volume", ps.p.Volume, "point", ps.name, "checked", maxAppProbes)
	}
	f.log.Debug("application views: walked the point", "machine", ps.p.Machine, "volume", ps.p.Volume, "point", ps.name,
		"entries", visited, "took", time.Since(start))
	return sortFound(found)
}

func sortFound(found [][]appFound) [][]appFound {
	for _, fs := range found {
		sort.Slice(fs, func(i, j int) bool {
			if fs[i].part != fs[j].part {
				return fs[i].part < fs[j].part
			}
			return fs[i].path < fs[j].path
		})
	}
	return found
}

// probeSafe runs a provider's Probe, treating a panic as "not mine".
func probeSafe(ctx context.Context, pr AppProvider, r io.ReaderAt, size int64) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return pr.Probe(ctx, r, size)
}

// appDirs returns the entries of a point directory's application views:
// one per provider that found at least one database.
func (f *FS) appDirs(ctx context.Context, pt *node) []DirEntry {
	found := f.appScan(ctx, pt)
	var out []DirEntry
	for i, pr := range f.apps.provs {
		if len(found[i]) == 0 {
			continue
		}
		n := f.appNodeOf(pt, i)
		out = append(out, DirEntry{Name: pr.Dir(), Attr: n.attr})
	}
	return out
}

// appLookup finds an application directory of a point directory.
func (f *FS) appLookup(ctx context.Context, pt *node, name string) (*node, error) {
	for i, pr := range f.apps.provs {
		if pr.Dir() != name {
			continue
		}
		if found := f.appScan(ctx, pt); len(found[i]) > 0 {
			return f.appNodeOf(pt, i), nil
		}
	}
	return nil, fmt.Errorf("%s/%s: %w", f.pathOf(pt), name, ErrNotExist)
}

func (f *FS) appNodeOf(pt *node, prov int) *node {
	return f.intern("p\x00"+strconv.FormatInt(pt.point, 10)+"\x00app\x00"+strconv.Itoa(prov), func(ino uint64) *node {
		return &node{kind: kApp, parent: pt.ino, name: f.apps.provs[prov].Dir(), machine: pt.machine, vol: pt.vol,
			point: pt.point, pname: pt.pname, part: -1, app: &appNode{prov: prov}, attr: f.dirAttr(0, pt.attr.Mtime, true)}
	})
}

// appTops opens a view's databases once and names its top-level entries.
func (f *FS) appTops(ctx context.Context, d *node) ([]appTop, error) {
	an := d.app
	an.once.Do(func() {
		ctx := context.WithoutCancel(ctx)
		pt, err := f.node(d.parent)
		if err != nil {
			an.err = err
			return
		}
		pr := f.apps.provs[an.prov]
		found := f.appScan(ctx, pt)[an.prov]
		merge := false
		if m, ok := pr.(AppMerger); ok {
			merge = m.MergeDatabases()
		}
		used := map[string]bool{}
		for _, fd := range found {
			db := &appDB{view: d, prov: pr, src: fd}
			x, err := f.appDBGet(ctx, db)
			if !merge || err != nil {
				an.tops = append(an.tops, appTop{name: uniqueName(used, appDBName(db, x)), db: db, e: AppEntry{Dir: true}})
				continue
			}
			es, err := x.ReadDir(ctx, "")
			if err != nil {
				db.mu.Lock()
				db.err = err
				db.mu.Unlock()
				an.tops = append(an.tops, appTop{name: uniqueName(used, appDBName(db, x)), db: db, e: AppEntry{Dir: true}})
				continue
			}
			for _, e := range es {
				an.tops = append(an.tops, appTop{name: uniqueName(used, e.Name), db: db, rel: e.Name, e: e})
			}
		}
	})
	return an.tops, an.err
}

// appDBName is the directory name of a database: the name it reports, or
// the file's base name without extension when it could not be opened.
func appDBName(a *appDB, db AppDatabase) string {
	name := ""
	if db != nil {
		name = db.Name()
	}
	if name == "" {
		name = strings.TrimSuffix(path.Base(a.src.path), path.Ext(a.src.path))
	}
	return name
}

// uniqueName makes name safe as a file name and unique (case-insensitive,
// for Windows) among used: a clash gets a ~2, ~3, ... suffix.
func uniqueName(used map[string]bool, name string) string {
	name = safeName(name)
	if name == "" || name == "." || name == ".." {
		name = "_" + name
	}
	cand := name
	for i := 2; used[strings.ToLower(cand)]; i++ {
		cand = name + "~" + strconv.Itoa(i)
	}
	used[strings.ToLower(cand)] = true
	return cand
}

// openAppDB opens a found database file with its provider.
func (f *FS) openAppDB(ctx context.Context, a *appDB) (db AppDatabase, err error) {
	d, fd, pr := a.view, a.src, a.prov
	where := []any{"machine", d.machine, "volume", d.vol.Name, "point", d.pname, "path", fd.path, "view", pr.Dir()}
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%s: reader failed: %v: %w", fd.path, r, errAppDamaged)
		}
		if err != nil {
			f.log.Warn("application views: cannot read a database", append(where, "err", err)...)
		}
	}()
	ps, err := f.pointState(ctx, d)
	if err != nil {
		return nil, err
	}
	vols, err := f.volumesIn(ctx, ps)
	if err != nil {
		return nil, err
	}
	if fd.part >= len(vols) || vols[fd.part].fs == nil {
		return nil, fmt.Errorf("%s: partition %d: %w", fd.path, fd.part, errAppDamaged)
	}
	fl, err := vols[fd.part].fs.Open(ctx, fd.path)
	if err != nil {
		return nil, err
	}
	x, err := pr.Open(ctx, AppSource{Path: fd.path, Volume: fd.vname, R: fl, Size: fl.Size(), Mtime: fd.mtime, Log: f.log.With(where...)})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fd.path, err)
	}
	return &safeDB{x}, nil
}

// errAppDamaged marks database content that could not be read (EIO).
var errAppDamaged = errors.New("damaged database")

// safeDB turns a panic of a database reader into an error.
type safeDB struct{ AppDatabase }

func (s *safeDB) ReadDir(ctx context.Context, dir string) (es []AppEntry, err error) {
	defer func() {
		if r := recover(); r != nil {
			es, err = nil, fmt.Errorf("listing %q: reader failed: %v: %w", dir, r, errAppDamaged)
		}
	}()
	return s.AppDatabase.ReadDir(ctx, dir)
}

func (s *safeDB) WriteFile(ctx context.Context, name string, w io.Writer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: reader failed: %v: %w", name, r, errAppDamaged)
		}
	}()
	return s.AppDatabase.WriteFile(ctx, name, w)
}

// appChild interns the node of an entry below an application directory.
func (f *FS) appChild(d *node, name string, db *appDB, rel string, e AppEntry) *node {
	key := "p\x00" + strconv.FormatInt(d.point, 10) + "\x00app\x00" + strconv.Itoa(d.app.prov) + "\x00" + strconv.FormatUint(d.ino, 10) + "\x00" + name
	return f.intern(key, func(ino uint64) *node {
		k := kAppDir
		if !e.Dir {
			k = kAppFile
		}
		t := e.Mtime
		if t.IsZero() {
			t = db.src.mtime
		}
		if t.IsZero() {
			t = d.attr.Mtime
		}
		a := f.dirAttr(0, t, true)
		if !e.Dir {
			a = Attr{Mode: 0o444, Nlink: 1, UID: f.opt.UID, GID: f.opt.GID, Mtime: t, Atime: t, Ctime: t, Immutable: true, Size: -1}
		}
		return &node{kind: k, parent: d.ino, name: name, machine: d.machine, vol: d.vol, point: d.point, pname: d.pname, part: -1,
			app: &appNode{prov: d.app.prov, db: db, rel: rel}, attr: a}
	})
}

// appList lists an application directory once and keeps the listing.
func (f *FS) appList(ctx context.Context, d *node) ([]*node, error) {
	d.mu.Lock()
	if d.listed {
		kids := make([]*node, 0, len(d.entries))
		for _, e := range d.entries {
			if n, err := f.node(d.children[e.Name]); err == nil {
				kids = append(kids, n)
			}
		}
		d.mu.Unlock()
		return kids, nil
	}
	d.mu.Unlock()
	var kids []*node
	switch d.kind {
	case kApp:
		tops, err := f.appTops(ctx, d)
		if err != nil {
			return nil, err
		}
		for _, t := range tops {
			kids = append(kids, f.appChild(d, t.name, t.db, t.rel, t.e))
		}
	case kAppDir:
		an := d.app
		db, err := f.appDBGet(ctx, an.db)
		if err != nil {
			return nil, err
		}
		es, err := db.ReadDir(context.WithoutCancel(ctx), an.rel)
		if err != nil {
			f.log.Warn("application views: cannot list a database directory", "path", f.pathOf(d), "err", err)
			return nil, err
		}
		used := map[string]bool{}
		for _, e := range es {
			name := uniqueName(used, e.Name)
			kids = append(kids, f.appChild(d, name, an.db, path.Join(an.rel, e.Name), e))
		}
	default:
		return nil, fmt.Errorf("%s: %w", f.pathOf(d), ErrNotDir)
	}
	entries := make([]DirEntry, 0, len(kids))
	children := make(map[string]uint64, len(kids))
	for _, k := range kids {
		entries = append(entries, DirEntry{Name: k.name})
		children[k.name] = k.ino
	}
	d.mu.Lock()
	d.entries, d.children, d.listed = entries, children, true
	d.mu.Unlock()
	return kids, nil
}

type namesOnlyKey struct{}

// WithNamesOnly marks a Readdir whose caller uses only the entries' names,
// modes and inode numbers (a FUSE listing without readdir-plus). Generated
// application files (sql/, ese/) are then listed without being generated:
// their Attr.Size is 0 until a Getattr or Lookup generates them. Without
// it, listing a database directory exports every table to learn its size.
func WithNamesOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, namesOnlyKey{}, true)
}

func namesOnly(ctx context.Context) bool {
	b, _ := ctx.Value(namesOnlyKey{}).(bool)
	return b
}

// appReaddir lists an application directory with every entry's attributes
// (file sizes need the files generated: see genCache).
func (f *FS) appReaddir(ctx context.Context, d *node) ([]DirEntry, error) {
	kids, err := f.appList(ctx, d)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, 0, len(kids))
	for _, k := range kids {
		if k.kind == kAppFile && namesOnly(ctx) {
			k.mu.Lock()
			a := k.attr
			k.mu.Unlock()
			if a.Size < 0 {
				a.Ino, a.Size, a.Immutable = k.ino, 0, false
			}
			out = append(out, DirEntry{Name: k.name, Attr: a})
			continue
		}
		a, err := f.Getattr(ctx, k.ino)
		if err != nil {
			// a file that cannot be generated still shows, with size 0;
			// reading it fails with EIO
			k.mu.Lock()
			a = k.attr
			k.mu.Unlock()
			a.Ino, a.Size, a.Immutable = k.ino, 0, false
		}
		out = append(out, DirEntry{Name: k.name, Attr: a})
	}
	return out, nil
}

// appLookupChild finds name in an application directory.
func (f *FS) appLookupChild(ctx context.Context, d *node, name string) (*node, error) {
	if _, err := f.appList(ctx, d); err != nil {
		return nil, err
	}
	d.mu.Lock()
	ino, ok := d.children[name]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%s/%s: %w", f.pathOf(d), name, ErrNotExist)
	}
	return f.node(ino)
}

// appContentKey identifies a generated file for the cache.
func appContentKey(n *node) string {
	return strconv.FormatInt(n.point, 10) + "/" + strconv.FormatUint(n.ino, 10)
}

// appFileAttr returns a generated file's attributes; the first call
// generates it to learn its size.
func (f *FS) appFileAttr(ctx context.Context, n *node) (Attr, error) {
	n.mu.Lock()
	a := n.attr
	n.mu.Unlock()
	if a.Size >= 0 {
		return a, nil
	}
	size, err := f.apps.cache.size(ctx, appContentKey(n), f.appWriter(n))
	if err != nil {
		return Attr{}, err
	}
	n.mu.Lock()
	n.attr.Size = size
	a = n.attr
	n.mu.Unlock()
	return a, nil
}

func (f *FS) appWriter(n *node) func(context.Context, io.Writer) error {
	return func(ctx context.Context, w io.Writer) error {
		db, err := f.appDBGet(ctx, n.app.db)
		if err == nil {
			err = db.WriteFile(ctx, n.app.rel, w)
		}
		if err != nil {
			// logged once: the cache remembers failures
			f.log.Warn("application views: cannot generate a file", "path", f.pathOf(n), "err", err)
		}
		return err
	}
}

// appOpen opens a generated file.
func (f *FS) appOpen(ctx context.Context, n *node, write bool) (*Handle, error) {
	if write {
		return nil, fmt.Errorf("%s: %w", f.pathOf(n), ErrReadOnly)
	}
	fl, size, err := f.apps.cache.open(ctx, appContentKey(n), f.appWriter(n))
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.attr.Size = size
	n.mu.Unlock()
	f.auditEvent(ctx, "open", n)
	return &Handle{r: osReader{fl}, size: size, close: fl.Close}, nil
}

// osReader reads a generated file's cached copy.
type osReader struct{ *os.File }

func (r osReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return r.File.ReadAt(p, off)
}
