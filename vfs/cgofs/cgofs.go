//go:build windows || (linux && cgo && fuse3)

// Package cgofs serves a vfs tree through cgofuse
// (github.com/winfsp/cgofuse): on Windows through WinFsp, which cgofuse
// loads at run time without cgo, so the Windows build needs no C
// toolchain; on Linux (built with cgo and -tags fuse3, against libfuse3)
// so that the same adapter runs through a real kernel mount in tests.
//
// cgofuse's interface is path-based: every call walks its path in the tree
// (vfs.FS.Walk, which keeps looked-up nodes, so a walk is a few map reads),
// then maps to one call of the tree's inode API. Listings report each
// entry's attributes with it (readdir-plus), so Windows Explorer and dir
// need no stat per entry.
package cgofs

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/winfsp/cgofuse/fuse"

	"github.com/rewind-cdp/rewind/vfs"
)

// Options tune a mount.
type Options struct {
	// Writable lets disk images be written (the tree must have been made
	// with vfs.Options.Writable): writes reach their overlays.
	Writable bool
	// VolumeName is the label Windows shows for the drive.
	VolumeName string
	// Debug makes the FUSE layer log every request.
	Debug bool
}

// Server is a mounted tree.
type Server struct {
	host *fuse.FileSystemHost
	fs   *fileSystem
	dir  string
	done chan bool
}

// Mount serves t at dir — a drive letter such as "X:" or a directory that
// does not exist yet on Windows, an existing empty directory on Linux —
// and returns once the file system is mounted.
func Mount(t *vfs.FS, dir string, opt Options) (*Server, error) {
	fsys := &fileSystem{t: t, opt: opt, files: map[uint64]*vfs.Handle{}, next: 1, mounted: make(chan struct{})}
	host := fuse.NewFileSystemHost(fsys)
	host.SetCapReaddirPlus(true)      // attributes come with every listing
	host.SetCapCaseInsensitive(false) // names are as the backed-up file systems had them
	host.SetUseIno(true)              // hard links share a file index
	var args []string
	if runtime.GOOS == "windows" {
		// uid/gid -1: WinFsp maps the files to the user who mounted.
		name := opt.VolumeName
		if name == "" {
			name = "Rewind"
		}
		args = append(args, "-o", "uid=-1", "-o", "gid=-1", "--FileSystemName=Rewind", "-o", "volname="+name,
			// the tree's listings may change each second as points arrive
			"-o", "FileInfoTimeout=1000", "-o", "DirInfoTimeout=1000", "-o", "VolumeInfoTimeout=1000")
	} else {
		args = append(args, "-o", "fsname=rewind", "-o", "subtype=rewind")
		if !opt.Writable {
			args = append(args, "-o", "ro")
		}
	}
	if opt.Debug {
		args = append(args, "-o", "debug")
	}
	s := &Server{host: host, fs: fsys, dir: dir, done: make(chan bool, 1)}
	go func() {
		defer func() {
			// cgofuse panics when it cannot load WinFsp or libfuse.
			if r := recover(); r != nil {
				fsys.mountErr = fmt.Errorf("%v", r)
				s.done <- false
			}
		}()
		s.done <- host.Mount(dir, args)
	}()
	select {
	case <-fsys.mounted:
		return s, nil
	case ok := <-s.done:
		s.done <- ok
		if fsys.mountErr != nil {
			return nil, fmt.Errorf("mount %s: %w (is WinFsp installed? https://winfsp.dev)", dir, fsys.mountErr)
		}
		return nil, fmt.Errorf("mount %s: the FUSE layer refused the mount point (on Windows: a free drive letter such as X:, or a directory that does not exist yet)", dir)
	case <-time.After(60 * time.Second):
		host.Unmount()
		return nil, fmt.Errorf("mount %s: not mounted after 60 s", dir)
	}
}

// Dir is the mount point.
func (s *Server) Dir() string { return s.dir }

// Wait blocks until the file system is unmounted.
func (s *Server) Wait() {
	ok := <-s.done
	s.done <- ok
}

// Unmount unmounts and waits until the file system is gone.
func (s *Server) Unmount() error {
	select {
	case ok := <-s.done: // already unmounted from outside
		s.done <- ok
		return nil
	default:
	}
	if !s.host.Unmount() {
		return fmt.Errorf("unmount %s: refused (files in use?)", s.dir)
	}
	select {
	case ok := <-s.done:
		s.done <- ok
	case <-time.After(30 * time.Second):
		return fmt.Errorf("unmount %s: still mounted after 30 s", s.dir)
	}
	return nil
}

type fileSystem struct {
	fuse.FileSystemBase
	t   *vfs.FS
	opt Options

	mounted  chan struct{}
	once     sync.Once
	mountErr error

	mu    sync.Mutex
	files map[uint64]*vfs.Handle
	next  uint64
}

var (
	_ fuse.FileSystemInterface = (*fileSystem)(nil)
	_ fuse.FileSystemOpenEx    = (*fileSystem)(nil)
)

// ctx carries the caller of the current request, for the audit log.
// cgofuse gives no way to learn of an interrupted request, so it is never
// cancelled.
func (f *fileSystem) ctx() context.Context {
	uid, gid, pid := fuse.Getcontext()
	return vfs.WithCaller(context.Background(), vfs.Caller{UID: uid, GID: gid, PID: uint32(pid)})
}

// errc maps an error of the tree to cgofuse's negative error number.
func errc(err error) int {
	switch vfs.ErrnoOf(err) {
	case vfs.OK:
		return 0
	case vfs.ENOENT:
		return -fuse.ENOENT
	case vfs.ENOTDIR:
		return -fuse.ENOTDIR
	case vfs.EISDIR:
		return -fuse.EISDIR
	case vfs.EROFS:
		return -fuse.EROFS
	case vfs.EINVAL:
		return -fuse.EINVAL
	case vfs.ENOSPC:
		return -fuse.ENOSPC
	case vfs.EINTR:
		return -fuse.EINTR
	case vfs.EACCES:
		return -fuse.EACCES
	case vfs.EPERM:
		return -fuse.EPERM
	}
	return -fuse.EIO
}

// fillStat converts the tree's attributes to cgofuse's stat.
func fillStat(st *fuse.Stat_t, a vfs.Attr) {
	*st = fuse.Stat_t{}
	st.Ino = a.Ino
	st.Mode = modeOf(a.Mode)
	st.Nlink = a.Nlink
	if st.Nlink == 0 {
		st.Nlink = 1
	}
	st.Uid, st.Gid = a.UID, a.GID
	st.Size = a.Size
	st.Blksize = 4096
	st.Blocks = (a.Size + 511) / 512
	st.Mtim = fuse.NewTimespec(a.Mtime)
	st.Atim = st.Mtim
	if !a.Atime.IsZero() {
		st.Atim = fuse.NewTimespec(a.Atime)
	}
	st.Ctim = st.Mtim
	if !a.Ctime.IsZero() {
		st.Ctim = fuse.NewTimespec(a.Ctime)
	}
	st.Birthtim = st.Ctim
}

// modeOf converts an os.FileMode to POSIX mode bits.
func modeOf(m os.FileMode) uint32 {
	v := uint32(m.Perm())
	switch {
	case m.IsDir():
		v |= fuse.S_IFDIR
	case m&os.ModeSymlink != 0:
		v |= fuse.S_IFLNK
	case m&os.ModeNamedPipe != 0:
		v |= fuse.S_IFIFO
	case m&os.ModeSocket != 0:
		v |= fuse.S_IFSOCK
	case m&os.ModeCharDevice != 0:
		v |= fuse.S_IFCHR
	case m&os.ModeDevice != 0:
		v |= fuse.S_IFBLK
	default:
		v |= fuse.S_IFREG
	}
	if m&os.ModeSetuid != 0 {
		v |= fuse.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		v |= fuse.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		v |= fuse.S_ISVTX
	}
	return v
}

func (f *fileSystem) Init() {
	f.once.Do(func() { close(f.mounted) })
}

func (f *fileSystem) Statfs(path string, st *fuse.Statfs_t) int {
	*st = fuse.Statfs_t{Bsize: 4096, Frsize: 4096, Namemax: 255}
	return 0
}

func (f *fileSystem) Getattr(path string, st *fuse.Stat_t, fh uint64) int {
	a, err := f.t.Walk(f.ctx(), path)
	if err != nil {
		return errc(err)
	}
	fillStat(st, a)
	return 0
}

func (f *fileSystem) Readlink(path string) (int, string) {
	ctx := f.ctx()
	a, err := f.t.Walk(ctx, path)
	if err != nil {
		return errc(err), ""
	}
	target, err := f.t.Readlink(ctx, a.Ino)
	if err != nil {
		return errc(err), ""
	}
	return 0, target
}

func (f *fileSystem) Opendir(path string) (int, uint64) {
	a, err := f.t.Walk(f.ctx(), path)
	if err != nil {
		return errc(err), ^uint64(0)
	}
	if !a.Mode.IsDir() {
		return -fuse.ENOTDIR, ^uint64(0)
	}
	return 0, a.Ino
}

func (f *fileSystem) Readdir(path string, fill func(name string, stat *fuse.Stat_t, ofst int64) bool, ofst int64, fh uint64) int {
	ctx := f.ctx()
	ino := fh
	if fh == ^uint64(0) {
		a, err := f.t.Walk(ctx, path)
		if err != nil {
			return errc(err)
		}
		ino = a.Ino
	}
	self, err := f.t.Getattr(ctx, ino)
	if err != nil {
		return errc(err)
	}
	ents, err := f.t.Readdir(ctx, ino)
	if err != nil {
		return errc(err)
	}
	var st fuse.Stat_t
	fillStat(&st, self)
	if !fill(".", &st, 0) || !fill("..", nil, 0) {
		return 0
	}
	for _, e := range ents {
		var est fuse.Stat_t
		fillStat(&est, e.Attr)
		if !fill(e.Name, &est, 0) {
			break
		}
	}
	return 0
}

func (f *fileSystem) Releasedir(path string, fh uint64) int { return 0 }

// Open and OpenEx open a file; only disk images of a writable tree may be
// opened for writing.
func (f *fileSystem) Open(path string, flags int) (int, uint64) {
	fi := fuse.FileInfo_t{Flags: flags}
	errc := f.OpenEx(path, &fi)
	return errc, fi.Fh
}

func (f *fileSystem) OpenEx(path string, fi *fuse.FileInfo_t) int {
	ctx := f.ctx()
	write := fi.Flags&fuse.O_ACCMODE != fuse.O_RDONLY
	if write && !f.opt.Writable {
		return -fuse.EROFS
	}
	if fi.Flags&fuse.O_TRUNC != 0 {
		return -fuse.EROFS // nothing in the tree changes size
	}
	a, err := f.t.Walk(ctx, path)
	if err != nil {
		return errc(err)
	}
	h, err := f.t.Open(ctx, a.Ino, write)
	if err != nil {
		return errc(err)
	}
	f.mu.Lock()
	fh := f.next
	f.next++
	f.files[fh] = h
	f.mu.Unlock()
	fi.Fh = fh
	// Points never change: the page cache may keep their data.
	fi.KeepCache = a.Immutable && !write
	return 0
}

func (f *fileSystem) CreateEx(path string, mode uint32, fi *fuse.FileInfo_t) int { return -fuse.EROFS }

func (f *fileSystem) handle(fh uint64) (*vfs.Handle, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.files[fh]
	if !ok {
		return nil, -fuse.EBADF
	}
	return h, 0
}

func (f *fileSystem) Read(path string, buff []byte, ofst int64, fh uint64) int {
	h, e := f.handle(fh)
	if h == nil {
		return e
	}
	n, err := h.Read(f.ctx(), buff, ofst)
	if err != nil {
		// Not the bytes read before the damage: FUSE takes a short read
		// for the end of the file, and the damage would read as a
		// truncated file instead of an I/O error.
		return errc(err)
	}
	return n
}

func (f *fileSystem) Write(path string, buff []byte, ofst int64, fh uint64) int {
	h, e := f.handle(fh)
	if h == nil {
		return e
	}
	n, err := h.Write(f.ctx(), buff, ofst)
	if err != nil {
		return errc(err)
	}
	return n
}

func (f *fileSystem) Flush(path string, fh uint64) int { return 0 }

func (f *fileSystem) Fsync(path string, datasync bool, fh uint64) int {
	h, e := f.handle(fh)
	if h == nil {
		return e
	}
	return errc(h.Sync(f.ctx()))
}

func (f *fileSystem) Release(path string, fh uint64) int {
	f.mu.Lock()
	h, ok := f.files[fh]
	delete(f.files, fh)
	f.mu.Unlock()
	if !ok {
		return -fuse.EBADF
	}
	return errc(h.Close())
}

// Everything that would change the tree's shape is refused: backups never
// change.
func (f *fileSystem) Mknod(path string, mode uint32, dev uint64) int { return -fuse.EROFS }
func (f *fileSystem) Mkdir(path string, mode uint32) int             { return -fuse.EROFS }
func (f *fileSystem) Unlink(path string) int                         { return -fuse.EROFS }
func (f *fileSystem) Rmdir(path string) int                          { return -fuse.EROFS }
func (f *fileSystem) Link(oldpath, newpath string) int               { return -fuse.EROFS }
func (f *fileSystem) Symlink(target, newpath string) int             { return -fuse.EROFS }
func (f *fileSystem) Rename(oldpath, newpath string) int             { return -fuse.EROFS }
func (f *fileSystem) Chmod(path string, mode uint32) int             { return -fuse.EROFS }
func (f *fileSystem) Chown(path string, uid, gid uint32) int         { return -fuse.EROFS }
func (f *fileSystem) Utimens(path string, tmsp []fuse.Timespec) int  { return -fuse.EROFS }
func (f *fileSystem) Create(path string, flags int, mode uint32) (int, uint64) {
	return -fuse.EROFS, ^uint64(0)
}
func (f *fileSystem) Setxattr(path, name string, value []byte, flags int) int { return -fuse.EROFS }
func (f *fileSystem) Removexattr(path, name string) int                       { return -fuse.EROFS }

// Truncate is refused except to a disk image's own size (which some
// hypervisors ask for when they open a disk for writing).
func (f *fileSystem) Truncate(path string, size int64, fh uint64) int {
	a, err := f.t.Walk(f.ctx(), path)
	if err != nil {
		return errc(err)
	}
	if !f.opt.Writable || a.Mode.IsDir() || a.Size != size {
		return -fuse.EROFS
	}
	return 0
}

// Access grants reading everywhere and writing only to a writable tree's
// disk images.
func (f *fileSystem) Access(path string, mask uint32) int {
	a, err := f.t.Walk(f.ctx(), path)
	if err != nil {
		return errc(err)
	}
	const wOK = 2
	if mask&wOK != 0 && (!f.opt.Writable || !a.Mode.IsRegular()) {
		return -fuse.EROFS
	}
	return 0
}
