package vfs

import (
	"context"
	"errors"
	"fmt"
	"github.com/rewind-cdp/rewind/overlay"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/detect"
	"github.com/rewind-cdp/rewind/parsers/vdisk"
	"github.com/rewind-cdp/rewind/repository"
)

// RootIno is the inode number of the tree's root.
const RootIno uint64 = 1

// DefaultCacheSize is the default bound of the decompressed block cache.
const DefaultCacheSize = 256 << 20

// Names of the files in a point directory.
const (
	DiskImg   = "disk.img"
	DiskVHD   = "disk.vhd"
	DiskVMDK  = "disk.vmdk"
	DiskFlat  = "disk-flat.vmdk" // the VMDK extent, only when disk.img is not a whole number of sectors
	FilesDir  = "files"
	LatestDir = "latest"
)

// Options configure a tree.
type Options struct {
	// CacheSize bounds the shared cache of decompressed blocks in bytes
	// (default DefaultCacheSize).
	CacheSize int64
	// Point, when set, makes the tree one point's file tree (what its
	// files/ directory holds) instead of the whole repository.
	Point *catalog.Point
	// Writable gives the disk images (disk.img, disk.vhd, the VMDK
	// extent) a copy-on-write overlay in Scratch; the repository and the
	// files/ trees stay read-only.
	Writable bool
	// Scratch is the directory for overlay files (default: a new
	// directory under os.TempDir, removed by Close).
	Scratch string
	// Audit receives one JSON line per open and per listing.
	Audit io.Writer
	// Logger gets warnings about damaged data (default slog.Default()).
	Logger *slog.Logger
	// Location is the zone of typed times without one (default time.Local).
	Location *time.Location
	// Now is the clock for listings and relative names (default time.Now).
	Now func() time.Time
	// UID and GID own the directories and disk files the tree makes up
	// (default: the current process's).
	UID, GID uint32
	// Refresh is how old a listing of machines, volumes or points may be
	// before the catalog is asked again (default 1 s).
	Refresh time.Duration
	// Apps are the application views of point directories (nil:
	// DefaultApps; empty: none). See apps.go.
	Apps []AppProvider
	// AppCacheSize bounds the disk space of generated application files
	// (default DefaultAppCacheSize); AppCacheDir is where they go
	// (default os.TempDir).
	AppCacheSize int64
	AppCacheDir  string
}

// Attr is what stat shows of a node.
type Attr struct {
	Ino   uint64
	Mode  os.FileMode // type and permission bits
	Size  int64
	Nlink uint32
	UID   uint32
	GID   uint32
	Mtime time.Time
	Atime time.Time
	Ctime time.Time
	// Immutable nodes (everything inside a point) never change: adapters
	// may give them long attribute and entry timeouts and keep their data
	// in the kernel page cache. The rest (machine, volume and point
	// listings, latest and typed-time links) change as points arrive.
	Immutable bool
}

// DirEntry is one entry of a listing, with its attributes.
type DirEntry struct {
	Name string
	Attr Attr
}

type kind uint8

const (
	kRoot    kind = iota // machines
	kMachine             // volumes
	kVolume              // points
	kLink                // latest or a typed time: a symlink to a point
	kPoint               // disk files and files/
	kDisk                // disk.img, disk.vhd, disk.vmdk, disk-flat.vmdk
	kFiles               // files/ with several partitions
	kFS                  // a node of a file system (files/, a partition folder, or below)
	kBroken              // files/ or a partition whose file system could not be opened
	kApp                 // an application view: sql/, ese/ (apps.go)
	kAppDir              // a directory inside an application view
	kAppFile             // a generated file inside an application view
)

type node struct {
	ino    uint64
	kind   kind
	parent uint64
	name   string

	machine string
	vol     catalog.Volume // kVolume, kLink
	point   int64          // kPoint and below
	pname   string         // point directory name
	part    int            // partition index into pointState.vols
	path    string         // path inside the file system
	disk    string         // kDisk: which file

	attr Attr     // fixed attributes of immutable nodes
	app  *appNode // kApp, kAppDir, kAppFile

	mu       sync.Mutex
	listed   bool
	entries  []DirEntry        // immutable directory listing
	children map[string]uint64 // names looked up or listed
}

// FS is the time-travel tree. Its methods are safe for concurrent use.
type FS struct {
	repo    *repository.Repo
	opt     Options
	log     *slog.Logger
	cache   *blockCache
	sem     chan struct{}
	raRuns  atomic.Int64
	audit   *auditLog
	apps    *appTree
	scratch string
	ownTmp  bool
	started time.Time

	mu     sync.Mutex
	nodes  map[uint64]*node
	keys   map[string]uint64
	fsKeys map[fsKey]uint64 // file system nodes
	next   uint64

	lmu      sync.Mutex
	machines []string
	mLoaded  time.Time
	volumes  map[string]*listing // machine -> volumes
	vstates  map[int64]*volState

	pmu      sync.Mutex
	pstates  map[int64]*pointState
	porder   []int64
	overlays map[string]*overlay.Overlay // by point id
	descs    map[int64]*memFile          // writable VMDK descriptors by point id
}

type listing struct {
	loaded time.Time
	vols   []catalog.Volume
}

// maxPointStates bounds how many points keep their readers open at once.
const maxPointStates = 32

// New builds the tree over repo. Close releases it.
func New(ctx context.Context, repo *repository.Repo, opt Options) (*FS, error) {
	if opt.CacheSize <= 0 {
		opt.CacheSize = DefaultCacheSize
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Location == nil {
		opt.Location = time.Local
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Refresh <= 0 {
		opt.Refresh = time.Second
	}
	if opt.UID == 0 && opt.GID == 0 {
		opt.UID, opt.GID = uint32(os.Getuid()), uint32(os.Getgid())
	}
	f := &FS{
		repo: repo, opt: opt, log: opt.Logger,
		cache: newBlockCache(repo, opt.CacheSize), sem: make(chan struct{}, 8),
		started: opt.Now(),
		nodes:   map[uint64]*node{}, keys: map[string]uint64{}, fsKeys: map[fsKey]uint64{}, next: RootIno + 1,
		volumes: map[string]*listing{}, vstates: map[int64]*volState{},
		pstates: map[int64]*pointState{}, overlays: map[string]*overlay.Overlay{}, descs: map[int64]*memFile{},
		apps: newAppTree(opt),
	}
	if opt.Audit != nil {
		f.audit = &auditLog{w: opt.Audit}
	}
	if opt.Writable {
		f.scratch = opt.Scratch
		if f.scratch == "" {
			d, err := os.MkdirTemp("", "rewind-overlay-")
			if err != nil {
				return nil, fmt.Errorf("overlay scratch directory: %w", err)
			}
			f.scratch, f.ownTmp = d, true
		} else if err := os.MkdirAll(f.scratch, 0o700); err != nil {
			return nil, fmt.Errorf("overlay scratch directory: %w", err)
		}
	}
	root := &node{ino: RootIno, kind: kRoot, name: "/"}
	root.attr = f.dirAttr(RootIno, f.started, false)
	if p := opt.Point; p != nil {
		pname := pointNameOf(ctx, repo, *p)
		root = &node{ino: RootIno, kind: kFiles, name: "/", point: p.ID, pname: pname, machine: p.Machine, part: -1,
			vol: catalog.Volume{ID: p.VolumeID, Machine: p.Machine, Name: p.Volume}}
		f.pstates[p.ID] = f.newPointState(*p, pname)
		f.porder = append(f.porder, p.ID)
		if err := f.initFiles(ctx, root); err != nil {
			return nil, err
		}
	}
	f.nodes[RootIno] = root
	return f, nil
}

// pointNameOf finds the directory name the whole-repository tree gives p.
func pointNameOf(ctx context.Context, repo *repository.Repo, p catalog.Point) string {
	ps, err := repo.Catalog.Points(ctx, p.Machine, p.Volume)
	if err == nil {
		names := PointNames(ps)
		for i := range ps {
			if ps[i].ID == p.ID {
				return names[i]
			}
		}
	}
	return p.Time.UTC().Format(nameLayout)
}

// Close drops the overlays (their scratch files are deleted) and caches.
// The repository stays open: it belongs to the caller.
func (f *FS) Close() error {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	errs := []error{f.apps.close()}
	for k, o := range f.overlays {
		errs = append(errs, o.Close())
		delete(f.overlays, k)
	}
	if f.ownTmp {
		errs = append(errs, os.RemoveAll(f.scratch))
	}
	return errors.Join(errs...)
}

// Stats reports the block cache's counters.
func (f *FS) Stats() CacheStats {
	c := f.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Bytes: c.used, Max: c.max, Blocks: len(c.items), Hits: c.hits, Misses: c.misses, Reused: c.reused, Dropped: c.dropped, ReadAheadRuns: f.raRuns.Load()}
}

func (f *FS) dirAttr(ino uint64, t time.Time, immutable bool) Attr {
	return Attr{Ino: ino, Mode: os.ModeDir | 0o555, Nlink: 2, UID: f.opt.UID, GID: f.opt.GID,
		Mtime: t, Atime: t, Ctime: t, Immutable: immutable}
}

func (f *FS) node(ino uint64) (*node, error) {
	f.mu.Lock()
	n := f.nodes[ino]
	f.mu.Unlock()
	if n == nil {
		return nil, fmt.Errorf("inode %d: %w", ino, ErrNotExist)
	}
	return n, nil
}

// intern returns the node stored under key, or stores the one mk makes
// with a new inode number. Inode numbers stay the same for the life of
// the tree.
func (f *FS) intern(key string, mk func(ino uint64) *node) *node {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ino, ok := f.keys[key]; ok {
		return f.nodes[ino]
	}
	ino := f.next
	f.next++
	n := mk(ino)
	n.ino = ino
	n.attr.Ino = ino
	f.keys[key] = ino
	f.nodes[ino] = n
	return n
}

// --- machines, volumes, points ---

func (f *FS) machineNames(ctx context.Context) ([]string, error) {
	f.lmu.Lock()
	defer f.lmu.Unlock()
	if f.machines != nil && f.opt.Now().Sub(f.mLoaded) < f.opt.Refresh {
		return f.machines, nil
	}
	names, err := f.repo.Catalog.MachineNames(ctx)
	if err != nil {
		return nil, err
	}
	if names == nil {
		names = []string{}
	}
	f.machines, f.mLoaded = names, f.opt.Now()
	return names, nil
}

func (f *FS) volumesOf(ctx context.Context, machine string) ([]catalog.Volume, error) {
	f.lmu.Lock()
	defer f.lmu.Unlock()
	if l := f.volumes[machine]; l != nil && f.opt.Now().Sub(l.loaded) < f.opt.Refresh {
		return l.vols, nil
	}
	vs, err := f.repo.Catalog.Volumes(ctx, machine)
	if err != nil {
		return nil, err
	}
	f.volumes[machine] = &listing{loaded: f.opt.Now(), vols: vs}
	return vs, nil
}

// volState holds a volume's committed points and their names. It is
// refreshed incrementally (points commit in id order and names depend
// only on earlier points), and in full every fullReload in case points
// were removed.
type volState struct {
	mu         sync.Mutex
	loaded     time.Time
	fullLoaded time.Time
	points     []catalog.Point
	names      []string
	byName     map[string]int
}

const fullReload = time.Minute

func (f *FS) pointsOf(ctx context.Context, v catalog.Volume) (*volState, error) {
	f.lmu.Lock()
	vs := f.vstates[v.ID]
	if vs == nil {
		vs = &volState{}
		f.vstates[v.ID] = vs
	}
	f.lmu.Unlock()
	vs.mu.Lock()
	defer vs.mu.Unlock()
	now := f.opt.Now()
	switch {
	case vs.points == nil || now.Sub(vs.fullLoaded) >= fullReload:
		ps, err := f.repo.Catalog.Points(ctx, v.Machine, v.Name)
		if err != nil {
			return nil, err
		}
		names := PointNames(ps)
		byName := make(map[string]int, len(ps))
		for i, n := range names {
			byName[n] = i
		}
		// new slices: snapshots handed out earlier stay as they were
		vs.points, vs.names, vs.byName = append([]catalog.Point{}, ps...), names, byName
		vs.loaded, vs.fullLoaded = now, now
	case now.Sub(vs.loaded) >= f.opt.Refresh:
		var last int64
		for _, p := range vs.points {
			last = max(last, p.ID)
		}
		ps, err := f.repo.Catalog.PointsAfter(ctx, v.ID, last)
		if err != nil {
			return nil, err
		}
		vs.loaded = now
		if len(ps) == 0 {
			break
		}
		all := PointNames(append(append([]catalog.Point{}, vs.points...), ps...))
		byName := make(map[string]int, len(all))
		for i, n := range all {
			byName[n] = i
		}
		vs.points = append(vs.points[:len(vs.points):len(vs.points)], ps...)
		vs.names, vs.byName = all, byName
	}
	return vs, nil
}

// snapshot returns the volume's points and names as of now.
func (vs *volState) snapshot() ([]catalog.Point, []string, map[string]int) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.points, vs.names, vs.byName
}

func (f *FS) machineNode(name string) *node {
	return f.intern("m\x00"+name, func(ino uint64) *node {
		return &node{kind: kMachine, parent: RootIno, name: name, machine: name, attr: f.dirAttr(0, f.started, false)}
	})
}

func (f *FS) volumeNode(parent uint64, v catalog.Volume) *node {
	return f.intern("v\x00"+strconv.FormatInt(v.ID, 10), func(ino uint64) *node {
		return &node{kind: kVolume, parent: parent, name: v.Name, machine: v.Machine, vol: v, attr: f.dirAttr(0, f.started, false)}
	})
}

func (f *FS) pointNode(parent *node, p catalog.Point, name string) *node {
	return f.intern("p\x00"+strconv.FormatInt(p.ID, 10), func(ino uint64) *node {
		return &node{kind: kPoint, parent: parent.ino, name: name, machine: p.Machine, vol: parent.vol, point: p.ID, pname: name,
			attr: f.dirAttr(0, p.Time, true)}
	})
}

// linkNode returns the symbolic link name -> target of a volume
// directory. A link gets a new inode when its target changes (latest, when
// a point arrives), so kernels may cache every link's target for good.
func (f *FS) linkNode(parent *node, name, target string) *node {
	return f.intern("l\x00"+strconv.FormatInt(parent.vol.ID, 10)+"\x00"+name+"\x00"+target, func(ino uint64) *node {
		return &node{kind: kLink, parent: parent.ino, name: name, machine: parent.machine, vol: parent.vol, path: target}
	})
}

func (f *FS) linkAttr(n *node) Attr {
	return Attr{Ino: n.ino, Mode: os.ModeSymlink | 0o777, Size: int64(len(n.path)), Nlink: 1, UID: f.opt.UID, GID: f.opt.GID,
		Mtime: f.started, Atime: f.started, Ctime: f.started}
}

// --- inside a point ---

// pointState holds the readers of one point.
type pointState struct {
	p    catalog.Point
	name string
	br   *blockReader

	once    sync.Once
	vols    []fsVolume
	volsErr error
}

type fsVolume struct {
	name string // folder name with several partitions: p1-ntfs
	fs   filesystem.FS
	err  error
}

func (f *FS) newPointState(p catalog.Point, name string) *pointState {
	br := &blockReader{pr: f.repo.OpenPoint(p), p: p, cache: f.cache, sem: f.sem, runs: &f.raRuns,
		log: func(err error) { f.log.Debug("read-ahead failed", "err", err) }}
	return &pointState{p: p, name: name, br: br}
}

// pointState returns the readers of a point, opening them if needed.
func (f *FS) pointState(ctx context.Context, n *node) (*pointState, error) {
	f.pmu.Lock()
	ps := f.pstates[n.point]
	f.pmu.Unlock()
	if ps != nil {
		return ps, nil
	}
	p, err := f.repo.Catalog.Point(ctx, n.point)
	if err != nil {
		return nil, err
	}
	f.pmu.Lock()
	defer f.pmu.Unlock()
	if ps := f.pstates[n.point]; ps != nil {
		return ps, nil
	}
	ps = f.newPointState(p, n.pname)
	if len(f.porder) >= maxPointStates {
		old := f.porder[0]
		f.porder = f.porder[1:]
		if f.opt.Point == nil || old != f.opt.Point.ID {
			delete(f.pstates, old)
		} else {
			f.porder = append(f.porder, old)
		}
	}
	f.pstates[n.point] = ps
	f.porder = append(f.porder, n.point)
	return ps, nil
}

// volumes opens the file systems of a point once.
func (f *FS) volumesIn(ctx context.Context, ps *pointState) ([]fsVolume, error) {
	ps.once.Do(func() {
		vs, err := detect.Volumes(context.WithoutCancel(ctx), ps.br, ps.p.Size)
		if err != nil {
			ps.volsErr = fmt.Errorf("%s/%s %s: partition table: %w", ps.p.Machine, ps.p.Volume, ps.name, err)
			f.log.Warn("cannot read the partition table", "machine", ps.p.Machine, "volume", ps.p.Volume, "point", ps.name, "err", err)
			return
		}
		for _, v := range vs {
			fv := fsVolume{fs: v.FS, err: v.Err}
			typ := "unknown"
			if v.FS != nil {
				typ = v.FS.Type()
			} else {
				f.log.Warn("no readable file system", "machine", ps.p.Machine, "volume", ps.p.Volume, "point", ps.name,
					"partition", v.Partition.Index, "err", v.Err)
			}
			fv.name = fmt.Sprintf("p%d-%s", v.Partition.Index, typ)
			ps.vols = append(ps.vols, fv)
		}
	})
	return ps.vols, ps.volsErr
}

// diskSize returns the size of one of a point's disk files.
func (f *FS) diskReader(ctx context.Context, n *node, ps *pointState) (ctxReaderAt, func(context.Context, []byte, int64) (int, error), int64, error) {
	var raw ctxReaderAt = ps.br
	var ov *overlay.Overlay
	if f.opt.Writable {
		var err error
		if ov, err = f.overlay(ps); err != nil {
			return nil, nil, 0, err
		}
		raw = ov
	}
	seed := fmt.Sprintf("%s/%s/%d", ps.p.Machine, ps.p.Volume, ps.p.ID)
	ro := func(context.Context, []byte, int64) (int, error) { return 0, ErrReadOnly }
	rawWrite := ro
	if ov != nil {
		rawWrite = ov.WriteAtContext
	}
	switch n.disk {
	case DiskImg:
		return raw, rawWrite, ps.p.Size, nil
	case DiskFlat:
		padded := (ps.p.Size + 511) &^ 511
		return &padReader{r: raw, size: ps.p.Size, padded: padded}, func(ctx context.Context, p []byte, off int64) (int, error) {
			if off+int64(len(p)) > ps.p.Size {
				return 0, ErrNoSpace
			}
			return rawWrite(ctx, p, off)
		}, padded, nil
	case DiskVHD:
		v, err := vdisk.NewFixedVHDView(raw, ps.p.Size, &vdisk.ViewOptions{Seed: seed, Time: ps.p.Time})
		if err != nil {
			return nil, nil, 0, err
		}
		return ctxAdapter{v}, func(ctx context.Context, p []byte, off int64) (int, error) {
			if off+int64(len(p)) > ps.p.Size {
				return 0, fmt.Errorf("disk.vhd: the footer is read-only: %w", ErrReadOnly)
			}
			return rawWrite(ctx, p, off)
		}, v.Size(), nil
	case DiskVMDK:
		extent := DiskImg
		if ps.p.Size%512 != 0 {
			extent = DiskFlat
		}
		v, err := vdisk.NewVMDKView(raw, ps.p.Size, extent, &vdisk.ViewOptions{Seed: seed, Time: ps.p.Time})
		if err != nil {
			return nil, nil, 0, err
		}
		if !f.opt.Writable {
			return ctxAdapter{v}, ro, v.Size(), nil
		}
		f.pmu.Lock()
		d := f.descs[ps.p.ID]
		if d == nil {
			d = &memFile{b: v.Descriptor()}
			f.descs[ps.p.ID] = d
		}
		f.pmu.Unlock()
		return d, d.WriteAtContext, d.size(), nil
	}
	return nil, nil, 0, fmt.Errorf("%s: %w", n.disk, ErrNotExist)
}

func (f *FS) overlay(ps *pointState) (*overlay.Overlay, error) {
	key := strconv.FormatInt(ps.p.ID, 10)
	f.pmu.Lock()
	defer f.pmu.Unlock()
	if o := f.overlays[key]; o != nil {
		return o, nil
	}
	name := fmt.Sprintf("%s_%s_%d.overlay", safeName(ps.p.Machine), safeName(ps.p.Volume), ps.p.ID)
	o, err := overlay.New(ps.br, ps.p.Size, filepath.Join(f.scratch, name))
	if err != nil {
		return nil, err
	}
	f.overlays[key] = o
	return o, nil
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == ':' {
			return '_'
		}
		return r
	}, s)
}

type ctxAdapter struct{ io.ReaderAt }

func (c ctxAdapter) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return c.ReadAt(p, off)
}

// padReader reads r and then zeros up to padded bytes.
type padReader struct {
	r            ctxReaderAt
	size, padded int64
}

func (p *padReader) ReadAt(b []byte, off int64) (int, error) {
	return p.ReadAtContext(context.Background(), b, off)
}

func (p *padReader) ReadAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	if off >= p.padded {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.padded-off))
	b = b[:n]
	if off < p.size {
		k := min(int64(n), p.size-off)
		if m, err := p.r.ReadAtContext(ctx, b[:k], off); int64(m) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return m, err
		}
		clear(b[k:])
	} else {
		clear(b)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (f *FS) diskNode(parent *node, name string) *node {
	return f.intern("p\x00"+strconv.FormatInt(parent.point, 10)+"\x00"+name, func(ino uint64) *node {
		return &node{kind: kDisk, parent: parent.ino, name: name, machine: parent.machine, vol: parent.vol, point: parent.point, pname: parent.pname, disk: name}
	})
}

func (f *FS) diskAttr(ctx context.Context, n *node) (Attr, error) {
	n.mu.Lock()
	a := n.attr
	n.mu.Unlock()
	if a.Mode != 0 && !f.opt.Writable {
		return a, nil // sizes of writable disks may change (the VMDK descriptor)
	}
	ps, err := f.pointState(ctx, n)
	if err != nil {
		return Attr{}, err
	}
	_, _, size, err := f.diskReader(ctx, n, ps)
	if err != nil {
		return Attr{}, err
	}
	mode := os.FileMode(0o444)
	if f.opt.Writable {
		mode = 0o644
	}
	t := ps.p.Time
	a = Attr{Ino: n.ino, Mode: mode, Size: size, Nlink: 1, UID: f.opt.UID, GID: f.opt.GID, Mtime: t, Atime: t, Ctime: t,
		Immutable: !f.opt.Writable}
	n.mu.Lock()
	n.attr = a
	n.mu.Unlock()
	return a, nil
}

// initFiles sets up a files/ node (or the root of a one-point tree): with
// one file system it is that file system's root, with several a folder per
// partition, and a directory that fails with EIO when nothing is readable.
func (f *FS) initFiles(ctx context.Context, n *node) error {
	ps, err := f.pointState(ctx, n)
	if err != nil {
		return err
	}
	vols, err := f.volumesIn(ctx, ps)
	switch {
	case err != nil:
		n.kind = kBroken
		n.attr = f.dirAttr(n.ino, ps.p.Time, true)
	case len(vols) == 1 && vols[0].fs != nil:
		e, err := vols[0].fs.Root(ctx)
		if err != nil {
			n.kind = kBroken
			n.attr = f.dirAttr(n.ino, ps.p.Time, true)
			return nil
		}
		n.kind, n.part, n.path = kFS, 0, "/"
		n.attr = f.fsAttr(n.ino, e)
	case len(vols) == 1:
		n.kind = kBroken
		n.attr = f.dirAttr(n.ino, ps.p.Time, true)
	default:
		n.kind = kFiles
		n.attr = f.dirAttr(n.ino, ps.p.Time, true)
	}
	return nil
}

func (f *FS) fsAttr(ino uint64, e filesystem.Entry) Attr {
	a := Attr{Ino: ino, Mode: e.Mode, Size: e.Size, Nlink: max(e.Nlink, 1), UID: e.UID, GID: e.GID,
		Mtime: e.Mtime, Atime: e.Atime, Ctime: e.Ctime, Immutable: true}
	if a.Atime.IsZero() {
		a.Atime = a.Mtime
	}
	if a.Ctime.IsZero() {
		a.Ctime = a.Mtime
	}
	if a.Mode.IsDir() && a.Nlink < 2 {
		a.Nlink = 2
	}
	return a
}

// fsKey names a file system node for interning: a file by its inode
// number (hard links share one node), a directory by its path.
type fsKey struct {
	point int64
	part  int
	ino   uint64
	path  string
}

// fsChild interns the node of a file system entry; hard links (same inode
// number in the same file system) share one node.
func (f *FS) fsChild(parent *node, e filesystem.Entry) *node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fsChildLocked(parent, e)
}

// fsChildLocked is fsChild with f.mu held: a listing interns all its
// entries under one lock, without building a string key per file.
func (f *FS) fsChildLocked(parent *node, e filesystem.Entry) *node {
	k := fsKey{point: parent.point, part: parent.part}
	var p string
	if e.Ino != 0 && !e.Mode.IsDir() {
		k.ino = e.Ino
	} else {
		p = strings.TrimSuffix(parent.path, "/") + "/" + e.Name
		k.path = p // directories by path: one name each
	}
	if ino, ok := f.fsKeys[k]; ok {
		return f.nodes[ino]
	}
	if p == "" {
		p = strings.TrimSuffix(parent.path, "/") + "/" + e.Name
	}
	ino := f.next
	f.next++
	n := &node{ino: ino, kind: kFS, parent: parent.ino, name: e.Name, machine: parent.machine, vol: parent.vol, point: parent.point,
		pname: parent.pname, part: parent.part, path: p, attr: f.fsAttr(ino, e)}
	f.fsKeys[k] = ino
	f.nodes[ino] = n
	return n
}

func (f *FS) fsOf(ctx context.Context, n *node) (filesystem.FS, error) {
	ps, err := f.pointState(ctx, n)
	if err != nil {
		return nil, err
	}
	vols, err := f.volumesIn(ctx, ps)
	if err != nil {
		return nil, err
	}
	if n.part < 0 || n.part >= len(vols) {
		return nil, fmt.Errorf("partition %d: %w", n.part, ErrNotExist)
	}
	v := vols[n.part]
	if v.fs == nil {
		return nil, fmt.Errorf("%s/%s %s, %s: %w", ps.p.Machine, ps.p.Volume, ps.name, v.name, v.err)
	}
	return v.fs, nil
}

// --- the operations adapters call ---

// Getattr returns a node's attributes.
func (f *FS) Getattr(ctx context.Context, ino uint64) (Attr, error) {
	n, err := f.node(ino)
	if err != nil {
		return Attr{}, err
	}
	switch n.kind {
	case kLink:
		return f.linkAttr(n), nil
	case kDisk:
		return f.diskAttr(ctx, n)
	case kAppFile:
		return f.appFileAttr(ctx, n)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.attr, nil
}

// Lookup finds name in directory parent and returns its attributes (whose
// Ino is the node to use from then on). In a volume directory, any
// timestamp that is not a point's name resolves to a symbolic link to the
// newest point at or before it.
func (f *FS) Lookup(ctx context.Context, parent uint64, name string) (Attr, error) {
	n, err := f.lookup(ctx, parent, name)
	if err != nil {
		return Attr{}, err
	}
	return f.Getattr(ctx, n.ino)
}

func (f *FS) lookup(ctx context.Context, parent uint64, name string) (*node, error) {
	d, err := f.node(parent)
	if err != nil {
		return nil, err
	}
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("%q: %w", name, ErrNotExist)
	}
	notFound := func() (*node, error) { return nil, fmt.Errorf("%s: %w", f.pathOf(d)+"/"+name, ErrNotExist) }
	switch d.kind {
	case kRoot:
		ms, err := f.machineNames(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if m == name {
				return f.machineNode(m), nil
			}
		}
		return notFound()
	case kMachine:
		vs, err := f.volumesOf(ctx, d.machine)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if v.Name == name {
				return f.volumeNode(d.ino, v), nil
			}
		}
		return notFound()
	case kVolume:
		vs, err := f.pointsOf(ctx, d.vol)
		if err != nil {
			return nil, err
		}
		ps, names, byName := vs.snapshot()
		if i, ok := byName[name]; ok {
			return f.pointNode(d, ps[i], names[i]), nil
		}
		if name == LatestDir {
			if len(ps) == 0 {
				return notFound()
			}
			return f.linkNode(d, name, names[len(ps)-1]), nil
		}
		t, ok := parseTyped(name, f.opt.Location, f.opt.Now())
		if !ok {
			return notFound()
		}
		i := atOrBefore(ps, t)
		if i < 0 {
			return notFound()
		}
		return f.linkNode(d, name, names[i]), nil
	case kPoint:
		switch name {
		case DiskImg, DiskVHD, DiskVMDK, DiskFlat:
			ps, err := f.pointState(ctx, d)
			if err != nil {
				return nil, err
			}
			if ps.p.VolumeKind == catalog.VolumeDir || name == DiskFlat && ps.p.Size%512 == 0 {
				return notFound() // a directory volume has files only
			}
			return f.diskNode(d, name), nil
		case FilesDir:
			return f.filesNode(ctx, d)
		}
		return f.appLookup(ctx, d, name)
	case kFiles:
		ps, err := f.pointState(ctx, d)
		if err != nil {
			return nil, err
		}
		vols, err := f.volumesIn(ctx, ps)
		if err != nil {
			return nil, err
		}
		for i, v := range vols {
			if v.name == name {
				return f.partNode(ctx, d, i, v, ps)
			}
		}
		return notFound()
	case kFS:
		d.mu.Lock()
		ino, ok := d.children[name]
		listed := d.listed
		d.mu.Unlock()
		if ok {
			return f.node(ino)
		}
		if listed {
			return notFound()
		}
		fsys, err := f.fsOf(ctx, d)
		if err != nil {
			return nil, err
		}
		e, err := fsys.Stat(ctx, strings.TrimSuffix(d.path, "/")+"/"+name)
		if err != nil {
			if !errors.Is(err, ErrNotExist) {
				f.log.Warn("damaged file system entry", "path", f.pathOf(d)+"/"+name, "err", err)
			}
			return nil, err
		}
		e.Name = name
		c := f.fsChild(d, e)
		d.mu.Lock()
		if d.children == nil {
			d.children = map[string]uint64{}
		}
		d.children[name] = c.ino
		d.mu.Unlock()
		return c, nil
	case kBroken:
		return nil, f.brokenErr(ctx, d)
	case kApp, kAppDir:
		return f.appLookupChild(ctx, d, name)
	case kDisk, kLink, kAppFile:
		return nil, fmt.Errorf("%s: %w", f.pathOf(d), ErrNotDir)
	}
	return notFound()
}

func (f *FS) brokenErr(ctx context.Context, d *node) error {
	if d.part >= 0 && d.kind == kBroken && d.name != FilesDir && d.ino != RootIno {
		if _, err := f.fsOf(ctx, d); err != nil {
			return err
		}
	}
	ps, err := f.pointState(ctx, d)
	if err != nil {
		return err
	}
	vols, err := f.volumesIn(ctx, ps)
	if err != nil {
		return err
	}
	for _, v := range vols {
		if v.err != nil {
			return fmt.Errorf("%s/%s %s: %w", ps.p.Machine, ps.p.Volume, ps.name, v.err)
		}
	}
	return fmt.Errorf("%s/%s %s: no readable file system: %w", ps.p.Machine, ps.p.Volume, ps.name, filesystem.ErrCorrupt)
}

func (f *FS) filesNode(ctx context.Context, pt *node) (*node, error) {
	key := "p\x00" + strconv.FormatInt(pt.point, 10) + "\x00" + FilesDir
	f.mu.Lock()
	ino, ok := f.keys[key]
	f.mu.Unlock()
	if ok {
		return f.node(ino)
	}
	// Set the node up completely before anyone else can see it.
	c := &node{kind: kFiles, parent: pt.ino, name: FilesDir, machine: pt.machine, vol: pt.vol, point: pt.point, pname: pt.pname, part: -1}
	if err := f.initFiles(ctx, c); err != nil {
		return nil, err
	}
	return f.intern(key, func(uint64) *node { return c }), nil
}

func (f *FS) partNode(ctx context.Context, d *node, i int, v fsVolume, ps *pointState) (*node, error) {
	key := "p\x00" + strconv.FormatInt(d.point, 10) + "\x00part\x00" + strconv.Itoa(i)
	f.mu.Lock()
	ino, ok := f.keys[key]
	f.mu.Unlock()
	if ok {
		return f.node(ino)
	}
	// read the root outside the node table's lock
	n := &node{kind: kBroken, parent: d.ino, name: v.name, machine: d.machine, vol: d.vol, point: d.point, pname: d.pname, part: i, path: "/",
		attr: f.dirAttr(0, ps.p.Time, true)}
	if v.fs != nil {
		if e, err := v.fs.Root(ctx); err == nil {
			n.kind, n.attr = kFS, f.fsAttr(0, e)
		}
	}
	return f.intern(key, func(uint64) *node { return n }), nil
}

// Readdir lists a directory with every entry's attributes (one listing:
// it is what the audit log records). Entries are in on-disk order inside
// file systems and sorted elsewhere.
func (f *FS) Readdir(ctx context.Context, ino uint64) ([]DirEntry, error) {
	d, err := f.node(ino)
	if err != nil {
		return nil, err
	}
	f.auditEvent(ctx, "list", d)
	var out []DirEntry
	add := func(n *node) {
		a, err := f.Getattr(ctx, n.ino)
		if err != nil {
			return
		}
		out = append(out, DirEntry{Name: n.name, Attr: a})
	}
	switch d.kind {
	case kRoot:
		ms, err := f.machineNames(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			add(f.machineNode(m))
		}
	case kMachine:
		vs, err := f.volumesOf(ctx, d.machine)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			add(f.volumeNode(d.ino, v))
		}
	case kVolume:
		vs, err := f.pointsOf(ctx, d.vol)
		if err != nil {
			return nil, err
		}
		ps, names, _ := vs.snapshot()
		for _, i := range thin(ps, f.opt.Now()) {
			add(f.pointNode(d, ps[i], names[i]))
		}
		if len(ps) > 0 {
			l := f.linkNode(d, LatestDir, names[len(ps)-1])
			out = append(out, DirEntry{Name: LatestDir, Attr: f.linkAttr(l)})
		}
	case kPoint:
		ps, err := f.pointState(ctx, d)
		if err != nil {
			return nil, err
		}
		names := []string{DiskImg, DiskVHD, DiskVMDK}
		if ps.p.Size%512 != 0 {
			names = append(names, DiskFlat)
		}
		if ps.p.VolumeKind == catalog.VolumeDir {
			names = nil // a directory volume (protect-dir) has files only
		}
		for _, nm := range names {
			n := f.diskNode(d, nm)
			if a, err := f.diskAttr(ctx, n); err == nil {
				out = append(out, DirEntry{Name: nm, Attr: a})
			} else {
				f.log.Warn("disk view", "path", f.pathOf(n), "err", err)
			}
		}
		fn, err := f.filesNode(ctx, d)
		if err != nil {
			return nil, err
		}
		add(fn)
		out = append(out, f.appDirs(ctx, d)...)
	case kFiles:
		ps, err := f.pointState(ctx, d)
		if err != nil {
			return nil, err
		}
		vols, err := f.volumesIn(ctx, ps)
		if err != nil {
			return nil, err
		}
		for i, v := range vols {
			n, err := f.partNode(ctx, d, i, v, ps)
			if err == nil {
				add(n)
			}
		}
	case kFS:
		return f.readFSDir(ctx, d)
	case kBroken:
		return nil, f.brokenErr(ctx, d)
	case kApp, kAppDir:
		return f.appReaddir(ctx, d)
	default:
		return nil, fmt.Errorf("%s: %w", f.pathOf(d), ErrNotDir)
	}
	return out, nil
}

func (f *FS) readFSDir(ctx context.Context, d *node) ([]DirEntry, error) {
	d.mu.Lock()
	if d.listed {
		out := d.entries
		d.mu.Unlock()
		return out, nil
	}
	d.mu.Unlock()
	if !d.attr.Mode.IsDir() {
		return nil, fmt.Errorf("%s: %w", f.pathOf(d), ErrNotDir)
	}
	fsys, err := f.fsOf(ctx, d)
	if err != nil {
		return nil, err
	}
	es, err := fsys.ReadDir(ctx, d.path)
	if err != nil {
		f.log.Warn("cannot list a directory", "path", f.pathOf(d), "err", err)
		return nil, err
	}
	out := make([]DirEntry, 0, len(es))
	nodes := make([]*node, 0, len(es))
	children := make(map[string]uint64, len(es))
	f.mu.Lock()
	for _, e := range es {
		if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsRune(e.Name, '/') {
			continue
		}
		if _, dup := children[e.Name]; dup {
			continue
		}
		c := f.fsChildLocked(d, e)
		children[e.Name] = c.ino
		nodes = append(nodes, c)
		out = append(out, DirEntry{Name: e.Name})
	}
	f.mu.Unlock()
	for i, c := range nodes {
		c.mu.Lock()
		out[i].Attr = c.attr
		c.mu.Unlock()
	}
	d.mu.Lock()
	d.entries, d.children, d.listed = out, children, true
	d.mu.Unlock()
	return out, nil
}

// Readlink returns a symbolic link's target.
func (f *FS) Readlink(ctx context.Context, ino uint64) (string, error) {
	n, err := f.node(ino)
	if err != nil {
		return "", err
	}
	switch n.kind {
	case kLink:
		return n.path, nil
	case kFS:
		if n.attr.Mode&os.ModeSymlink == 0 {
			return "", fmt.Errorf("%s: %w", f.pathOf(n), ErrNotLink)
		}
		fsys, err := f.fsOf(ctx, n)
		if err != nil {
			return "", err
		}
		t, err := fsys.Readlink(ctx, n.path)
		if err != nil {
			f.log.Warn("cannot read a symbolic link", "path", f.pathOf(n), "err", err)
		}
		return t, err
	}
	return "", fmt.Errorf("%s: %w", f.pathOf(n), ErrNotLink)
}

// Handle is an open file.
type Handle struct {
	sizeFn func() int64 // when the size can change
	r      ctxReaderAt
	w      func(context.Context, []byte, int64) (int, error)
	size   int64
	write  bool
	sync   func() error
	close  func() error
}

// Size is the file's size.
func (h *Handle) Size() int64 {
	if h.sizeFn != nil {
		return h.sizeFn()
	}
	return h.size
}

// Read reads into p at off like pread: a short count at the end of the
// file, 0 past it, and an error (see ErrnoOf) only when data is damaged or
// unreadable.
func (h *Handle) Read(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, ErrInvalid
	}
	size := h.Size()
	if off >= size {
		return 0, nil
	}
	if int64(len(p)) > size-off {
		p = p[:size-off]
	}
	n, err := h.r.ReadAtContext(ctx, p, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// Write writes to a disk image's overlay (files opened writable only).
func (h *Handle) Write(ctx context.Context, p []byte, off int64) (int, error) {
	if !h.write {
		return 0, ErrReadOnly
	}
	return h.w(ctx, p, off)
}

// Sync makes overlay writes durable in the scratch file.
func (h *Handle) Sync(ctx context.Context) error {
	if h.sync != nil {
		return h.sync()
	}
	return nil
}

// Close releases the handle.
func (h *Handle) Close() error {
	if h.close != nil {
		return h.close()
	}
	return nil
}

// Open opens a file for reading, or with write for writing (disk images
// of a writable tree only; ErrReadOnly otherwise).
func (f *FS) Open(ctx context.Context, ino uint64, write bool) (*Handle, error) {
	n, err := f.node(ino)
	if err != nil {
		return nil, err
	}
	switch n.kind {
	case kDisk:
		ps, err := f.pointState(ctx, n)
		if err != nil {
			return nil, err
		}
		r, w, size, err := f.diskReader(ctx, n, ps)
		if err != nil {
			return nil, err
		}
		if write && !f.opt.Writable {
			return nil, fmt.Errorf("%s: %w", f.pathOf(n), ErrReadOnly)
		}
		f.auditEvent(ctx, "open", n)
		h := &Handle{r: r, w: w, size: size, write: write}
		if n.disk == DiskVMDK && f.opt.Writable {
			h.sizeFn = r.(*memFile).size
		}
		if write && n.disk != DiskVMDK {
			o, err := f.overlay(ps)
			if err != nil {
				return nil, err
			}
			h.sync = o.Sync
		}
		return h, nil
	case kFS:
		if n.attr.Mode.IsDir() {
			return nil, fmt.Errorf("%s: %w", f.pathOf(n), ErrIsDir)
		}
		if !n.attr.Mode.IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file: %w", f.pathOf(n), ErrInvalid)
		}
		if write {
			return nil, fmt.Errorf("%s: %w", f.pathOf(n), ErrReadOnly)
		}
		fsys, err := f.fsOf(ctx, n)
		if err != nil {
			return nil, err
		}
		fl, err := fsys.Open(ctx, n.path)
		if err != nil {
			f.log.Warn("cannot open a file", "path", f.pathOf(n), "err", err)
			return nil, err
		}
		f.auditEvent(ctx, "open", n)
		return &Handle{r: &logReader{fl, f, n}, size: fl.Size()}, nil
	case kAppFile:
		return f.appOpen(ctx, n, write)
	case kLink:
		return nil, fmt.Errorf("%s: %w", f.pathOf(n), ErrInvalid)
	}
	return nil, fmt.Errorf("%s: %w", f.pathOf(n), ErrIsDir)
}

// logReader logs read errors of a file system file with its path.
type logReader struct {
	f  filesystem.File
	fs *FS
	n  *node
}

func (l *logReader) ReadAt(p []byte, off int64) (int, error) {
	return l.ReadAtContext(context.Background(), p, off)
}

func (l *logReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := l.f.ReadAtContext(ctx, p, off)
	if err != nil && err != io.EOF && ctx.Err() == nil {
		l.fs.log.Warn("read failed", "path", l.fs.pathOf(l.n), "offset", off, "err", err)
	}
	return n, err
}

// pathOf returns a node's path in the tree.
func (f *FS) pathOf(n *node) string {
	var parts []string
	for n != nil && n.ino != RootIno {
		parts = append(parts, n.name)
		f.mu.Lock()
		n = f.nodes[n.parent]
		f.mu.Unlock()
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteByte('/')
		b.WriteString(parts[i])
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// Walk looks a slash-separated path up from the root, for adapters that
// work with paths. Symbolic links the tree makes up (latest, typed times)
// are followed in the middle of a path; links inside file systems are
// not, and the last component is never followed.
func (f *FS) Walk(ctx context.Context, path string) (Attr, error) {
	ino := RootIno
	parts := filesystem.Split(path)
	for i := 0; i < len(parts); i++ {
		n, err := f.lookup(ctx, ino, parts[i])
		if err != nil {
			return Attr{}, err
		}
		if n.kind == kLink && i < len(parts)-1 {
			if n, err = f.lookup(ctx, n.parent, n.path); err != nil {
				return Attr{}, err
			}
		}
		ino = n.ino
	}
	return f.Getattr(ctx, ino)
}
