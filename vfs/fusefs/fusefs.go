//go:build linux

// Package fusefs serves a vfs tree through the Linux kernel's FUSE with
// go-fuse's raw protocol layer: every request maps to one call of the
// tree's API, with the tree's inode numbers as FUSE node ids.
package fusefs

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/rewind-cdp/rewind/vfs"
)

// Options tune a mount.
type Options struct {
	// AllowOther lets users other than the one mounting see the tree.
	AllowOther bool
	// Writable mounts read-write (the tree must have been made with
	// vfs.Options.Writable): writes reach the disk images' overlays.
	Writable bool
	// ImmutableTimeout is how long the kernel may cache entries,
	// attributes and data of nodes inside points (default 1 h).
	ImmutableTimeout time.Duration
	// Timeout is the cache time of listings that change as points
	// arrive (default 1 s).
	Timeout time.Duration
	// Debug logs every FUSE request (to the standard logger).
	Debug bool
}

// Server is a mounted tree.
type Server struct {
	srv *fuse.Server
	dir string
}

// Mount serves t at dir until Unmount. Mounting needs root or fusermount3.
func Mount(t *vfs.FS, dir string, opt Options) (*Server, error) {
	if opt.ImmutableTimeout <= 0 {
		opt.ImmutableTimeout = time.Hour
	}
	if opt.Timeout <= 0 {
		opt.Timeout = time.Second
	}
	r := &raw{RawFileSystem: fuse.NewDefaultRawFileSystem(), t: t, opt: opt,
		files: map[uint64]*vfs.Handle{}, dirs: map[uint64]*dirList{}, next: 1}
	mo := &fuse.MountOptions{
		AllowOther:           opt.AllowOther,
		FsName:               "rewind",
		Name:                 "rewind",
		MaxReadAhead:         1 << 20,
		MaxWrite:             1 << 20,
		DisableXAttrs:        true,
		EnableSymlinkCaching: true, // a link never changes its target: vfs gives a changed link a new inode
		DirectMount:          os.Geteuid() == 0,
		Debug:                opt.Debug,
	}
	if !opt.Writable {
		mo.Options = append(mo.Options, "ro")
	}
	srv, err := fuse.NewServer(r, dir, mo)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	return &Server{srv: srv, dir: dir}, nil
}

// Dir is the mount point.
func (m *Server) Dir() string { return m.dir }

// Wait blocks until the file system is unmounted.
func (m *Server) Wait() { m.srv.Wait() }

// Unmount unmounts, retrying a few times while the mount is busy, and
// lazily as a last resort so that nothing stays mounted.
func (m *Server) Unmount() error {
	var err error
	for i := 0; i < 10; i++ {
		if err = m.srv.Unmount(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if lerr := syscall.Unmount(m.dir, syscall.MNT_DETACH); lerr == nil {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", m.dir, err)
}

type raw struct {
	fuse.RawFileSystem
	t   *vfs.FS
	opt Options

	mu    sync.Mutex
	files map[uint64]*vfs.Handle
	dirs  map[uint64]*dirList
	next  uint64
}

// dirList is an open directory: its entries and their attributes (from
// the listing, so that readdirplus asks the tree nothing per entry).
type dirList struct {
	list  []fuse.DirEntry
	attrs []vfs.Attr // attrs[i] belongs to list[i]; "." and ".." have none
}

// reqCtx is a context cancelled when the kernel interrupts the request.
type reqCtx struct {
	context.Context
	cancel <-chan struct{}
}

func (c reqCtx) Done() <-chan struct{} { return c.cancel }
func (c reqCtx) Err() error {
	select {
	case <-c.cancel:
		return context.Canceled
	default:
		return nil
	}
}

func ctxOf(cancel <-chan struct{}, h *fuse.InHeader) context.Context {
	return vfs.WithCaller(reqCtx{context.Background(), cancel}, vfs.Caller{UID: h.Uid, GID: h.Gid, PID: h.Pid})
}

func status(err error) fuse.Status { return fuse.Status(vfs.ErrnoOf(err)) }

func (r *raw) String() string { return "rewind" }

func (r *raw) timeout(a vfs.Attr) time.Duration {
	if a.Immutable {
		return r.opt.ImmutableTimeout
	}
	return r.opt.Timeout
}

func fillAttr(out *fuse.Attr, a vfs.Attr) {
	*out = fuse.Attr{Ino: a.Ino, Size: uint64(a.Size), Blocks: uint64(a.Size+511) / 512, Nlink: a.Nlink,
		Owner: fuse.Owner{Uid: a.UID, Gid: a.GID}, Blksize: 4096}
	out.Mode = unixMode(a.Mode)
	out.SetTimes(&a.Atime, &a.Mtime, &a.Ctime)
}

func unixMode(m os.FileMode) uint32 {
	mode := uint32(m.Perm())
	switch {
	case m.IsDir():
		mode |= syscall.S_IFDIR
	case m&os.ModeSymlink != 0:
		mode |= syscall.S_IFLNK
	case m&os.ModeNamedPipe != 0:
		mode |= syscall.S_IFIFO
	case m&os.ModeSocket != 0:
		mode |= syscall.S_IFSOCK
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice != 0:
		mode |= syscall.S_IFCHR
	case m&os.ModeDevice != 0:
		mode |= syscall.S_IFBLK
	default:
		mode |= syscall.S_IFREG
	}
	if m&os.ModeSetuid != 0 {
		mode |= syscall.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		mode |= syscall.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		mode |= syscall.S_ISVTX
	}
	return mode
}

func (r *raw) fillEntry(out *fuse.EntryOut, a vfs.Attr) {
	out.NodeId = a.Ino
	out.Generation = 1
	d := r.timeout(a)
	out.SetEntryTimeout(d)
	out.SetAttrTimeout(d)
	fillAttr(&out.Attr, a)
}

func (r *raw) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	a, err := r.t.Lookup(ctxOf(cancel, h), h.NodeId, name)
	if err != nil {
		return status(err)
	}
	r.fillEntry(out, a)
	return fuse.OK
}

func (r *raw) Forget(nodeid, nlookup uint64) {}

func (r *raw) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	a, err := r.t.Getattr(ctxOf(cancel, &in.InHeader), in.NodeId)
	if err != nil {
		return status(err)
	}
	out.SetTimeout(r.timeout(a))
	fillAttr(&out.Attr, a)
	return fuse.OK
}

func (r *raw) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	a, err := r.t.Getattr(ctxOf(cancel, &in.InHeader), in.NodeId)
	if err != nil {
		return status(err)
	}
	// Writable disk images accept what does not change them (a size
	// equal to theirs, times), so that hypervisors can open them.
	if !r.opt.Writable || !a.Mode.IsRegular() || a.Immutable {
		return fuse.EROFS
	}
	if sz, ok := in.GetSize(); ok && int64(sz) != a.Size {
		return fuse.EPERM
	}
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		return fuse.EPERM
	}
	out.SetTimeout(r.timeout(a))
	fillAttr(&out.Attr, a)
	return fuse.OK
}

func (r *raw) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t, err := r.t.Readlink(ctxOf(cancel, h), h.NodeId)
	if err != nil {
		return nil, status(err)
	}
	return []byte(t), fuse.OK
}

func (r *raw) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if in.Mask&2 != 0 && !r.opt.Writable { // W_OK
		return fuse.EROFS
	}
	return fuse.OK
}

func (r *raw) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ctx := ctxOf(cancel, &in.InHeader)
	write := in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY
	if write && in.Flags&syscall.O_TRUNC != 0 {
		return fuse.EPERM
	}
	h, err := r.t.Open(ctx, in.NodeId, write)
	if err != nil {
		return status(err)
	}
	if a, err := r.t.Getattr(ctx, in.NodeId); err == nil && a.Immutable {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	}
	r.mu.Lock()
	out.Fh = r.next
	r.files[r.next] = h
	r.next++
	r.mu.Unlock()
	return fuse.OK
}

func (r *raw) handle(fh uint64) *vfs.Handle {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.files[fh]
}

func (r *raw) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h := r.handle(in.Fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	if int(in.Size) < len(buf) {
		buf = buf[:in.Size]
	}
	n, err := h.Read(ctxOf(cancel, &in.InHeader), buf, int64(in.Offset))
	if err != nil {
		return nil, status(err)
	}
	return fuse.ReadResultData(buf[:n]), fuse.OK
}

func (r *raw) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h := r.handle(in.Fh)
	if h == nil {
		return 0, fuse.EBADF
	}
	n, err := h.Write(ctxOf(cancel, &in.InHeader), data, int64(in.Offset))
	if err != nil {
		return uint32(n), status(err)
	}
	return uint32(n), fuse.OK
}

func (r *raw) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.OK }

func (r *raw) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h := r.handle(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	return status(h.Sync(ctxOf(cancel, &in.InHeader)))
}

func (r *raw) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	r.mu.Lock()
	h := r.files[in.Fh]
	delete(r.files, in.Fh)
	r.mu.Unlock()
	if h != nil {
		h.Close()
	}
}

func (r *raw) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	ctx := ctxOf(cancel, &in.InHeader)
	es, err := r.t.Readdir(vfs.WithNamesOnly(ctx), in.NodeId) // entries carry name, mode and inode only
	if err != nil {
		return status(err)
	}
	dl := &dirList{list: make([]fuse.DirEntry, 0, len(es)+2), attrs: make([]vfs.Attr, 2, len(es)+2)}
	dl.list = append(dl.list, fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: in.NodeId, Off: 1},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: in.NodeId, Off: 2})
	for _, e := range es {
		dl.list = append(dl.list, fuse.DirEntry{Name: e.Name, Mode: unixMode(e.Attr.Mode), Ino: e.Attr.Ino, Off: uint64(len(dl.list) + 1)})
		dl.attrs = append(dl.attrs, e.Attr)
	}
	r.mu.Lock()
	out.Fh = r.next
	r.dirs[r.next] = dl
	r.next++
	r.mu.Unlock()
	if a, err := r.t.Getattr(ctx, in.NodeId); err == nil && a.Immutable {
		out.OpenFlags |= fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return fuse.OK
}

func (r *raw) dir(fh uint64) *dirList {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dirs[fh]
}

func (r *raw) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	dl := r.dir(in.Fh)
	if dl == nil {
		return fuse.EBADF
	}
	list := dl.list
	for i := in.Offset; i < uint64(len(list)); i++ {
		if !out.AddDirEntry(list[i]) {
			break
		}
	}
	return fuse.OK
}

func (r *raw) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	dl := r.dir(in.Fh)
	if dl == nil {
		return fuse.EBADF
	}
	for i := in.Offset; i < uint64(len(dl.list)); i++ {
		e := dl.list[i]
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			break
		}
		if i < 2 {
			continue // "." and "..": Linux ignores their entry
		}
		if a := dl.attrs[i]; a.Mode.IsRegular() && !a.Immutable {
			// A names-only listing leaves generated files (sql/, ese/)
			// with size 0 until they are looked up, and overlay-backed
			// images change: no attributes here (node id 0), so the
			// kernel looks the entry up when it needs them.
			continue
		}
		r.fillEntry(eo, dl.attrs[i])
	}
	return fuse.OK
}

func (r *raw) ReleaseDir(in *fuse.ReleaseIn) {
	r.mu.Lock()
	delete(r.dirs, in.Fh)
	r.mu.Unlock()
}

func (r *raw) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	*out = fuse.StatfsOut{Bsize: 4096, Frsize: 4096, NameLen: 255}
	return fuse.OK
}
