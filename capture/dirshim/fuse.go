package dirshim

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Mount serves the data directory at mnt. The caller must be root (the
// mount is done directly, without fusermount). Other users may use the
// mount, with the kernel checking permissions (allow_other,
// default_permissions), as they would on the data directory.
func (d *DirFS) Mount(mnt string) error {
	root := &fs.LoopbackRoot{Path: d.data, Dev: d.dev}
	root.NewNode = func(r *fs.LoopbackRoot, parent *fs.Inode, name string, st *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, d: d}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(d.data, &st); err != nil {
		return err
	}
	rn := root.NewNode(root, nil, "", &st)
	root.RootNode = rn
	srv, err := fs.Mount(mnt, rn, &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount:   true,
			AllowOther:    true,
			FsName:        d.data,
			Name:          "rewind-dir",
			MaxWrite:      1 << 20,
			MaxBackground: 64,
			Options:       []string{"default_permissions"},
		},
		// Only this mount changes the directory: attributes may be cached.
		AttrTimeout:  ptr(time.Second),
		EntryTimeout: ptr(time.Second),
	})
	if err != nil {
		return fmt.Errorf("mount directory shim of %s on %s: %w", d.data, mnt, err)
	}
	d.server, d.mnt = srv, mnt
	return nil
}

func ptr[T any](v T) *T { return &v }

// Unmount stops serving (it fails while files under the mount are open).
func (d *DirFS) Unmount() error {
	if d.server == nil {
		return nil
	}
	if err := d.server.Unmount(); err != nil {
		return fmt.Errorf("unmount directory shim %s: %w", d.mnt, err)
	}
	d.server.Wait()
	d.server = nil
	return nil
}

// node is a loopback node whose every change is journaled.
type node struct {
	fs.LoopbackNode
	d *DirFS
}

var (
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
)

// rel is the node's path relative to the data directory.
func (n *node) rel() string { return n.Path(nil) }

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	rel := join(n.rel(), name)
	var old *slotInfo
	if e := n.d.entries[rel]; e != nil {
		old = e.si
	}
	unlock := func() {}
	if old != nil && flags&syscall.O_TRUNC != 0 {
		unlock = n.d.lockRange(0, -1)
	}
	defer unlock()
	ch, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return ch, fh, fl, errno
	}
	si := n.d.created(rel)
	if si != nil && si == old && flags&syscall.O_TRUNC != 0 {
		n.d.resized(si, 0)
	}
	return ch, n.d.handle(fh, si), fl, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	rel := n.rel()
	si := n.d.slotOf(n.StableAttr().Ino, rel)
	if si != nil && flags&syscall.O_TRUNC != 0 {
		unlock := n.d.lockRange(0, -1)
		defer unlock()
	}
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return fh, fl, errno
	}
	if si != nil && flags&syscall.O_TRUNC != 0 {
		n.d.resized(si, 0)
	}
	return n.d.handle(fh, si), fl, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	ch, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno == 0 {
		n.d.created(join(n.rel(), name))
	}
	return ch, errno
}

// Mknod makes regular files only: the shim captures files, directories
// and symlinks.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if mode&syscall.S_IFMT != syscall.S_IFREG && mode&syscall.S_IFMT != 0 {
		return nil, syscall.EPERM
	}
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if errno == 0 {
		n.d.created(join(n.rel(), name))
	}
	return ch, errno
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	ch, errno := n.LoopbackNode.Symlink(ctx, target, name, out)
	if errno == 0 {
		n.d.created(join(n.rel(), name))
	}
	return ch, errno
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno == 0 {
		n.d.created(join(n.rel(), name))
	}
	return ch, errno
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	errno := n.LoopbackNode.Unlink(ctx, name)
	if errno == 0 {
		n.d.removed(join(n.rel(), name))
	}
	return errno
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	errno := n.LoopbackNode.Rmdir(ctx, name)
	if errno == 0 {
		n.d.removed(join(n.rel(), name))
	}
	return errno
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	n.d.mu.Lock()
	defer n.d.mu.Unlock()
	errno := n.LoopbackNode.Rename(ctx, name, &np.LoopbackNode, newName, flags)
	if errno == 0 {
		const exchange = 0x2 // RENAME_EXCHANGE
		n.d.renamed(join(n.rel(), name), join(np.rel(), newName), flags&exchange != 0)
	}
	return errno
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if h, ok := f.(*handle); ok {
		f = h.inner
	}
	isFile := n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFREG
	var si *slotInfo
	if isFile {
		si = n.d.slotOf(n.StableAttr().Ino, n.rel())
	}
	sz, resize := in.GetSize()
	if resize && si != nil {
		unlock := n.d.lockRange(0, -1)
		defer unlock()
	}
	errno := n.LoopbackNode.Setattr(ctx, f, in, out)
	if errno != 0 {
		return errno
	}
	switch {
	case si != nil:
		if resize {
			n.d.resized(si, int64(sz))
		}
		n.d.markSlot(si.slot)
	default:
		n.d.mu.Lock()
		n.d.markDirty(n.rel())
		n.d.mu.Unlock()
	}
	return 0
}

// Fsync of a file or directory makes the backing file durable, journals the
// manifest and flushes the journal: a flush point.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	// The backing file and the journal are made durable at once.
	done := make(chan syscall.Errno, 1)
	go func() {
		if h, ok := f.(*handle); ok {
			if fs, ok := h.inner.(fs.FileFsyncer); ok {
				done <- fs.Fsync(ctx, flags)
				return
			}
			done <- 0
			return
		}
		fd, err := syscall.Open(n.d.backing(n.rel()), syscall.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			done <- fs.ToErrno(err)
			return
		}
		err = syscall.Fsync(fd)
		syscall.Close(fd)
		done <- fs.ToErrno(err)
	}()
	jerr := n.d.flush()
	if errno := <-done; errno != 0 {
		return errno
	}
	return jerr
}

// flush journals the manifest and a flush.
func (d *DirFS) flush() syscall.Errno {
	t := time.Now()
	d.WriteManifest(t)
	if err := d.journal.Flush(t); err != nil {
		return syscall.EIO
	}
	return 0
}

// CopyFileRange is refused, so the kernel copies through read and write
// (which are journaled).
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, len uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

var _ fs.NodeOpendirHandler = (*node)(nil)

// OpendirHandle wraps the loopback's directory handle, so that an fsync of
// the directory (which reaches the handle, not the node) is a flush point.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return fh, fl, errno
	}
	return &dirHandle{inner: fh, d: n.d}, fl, 0
}

type dirHandle struct {
	inner fs.FileHandle
	d     *DirFS
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	return h.inner.(fs.FileReaddirenter).Readdirent(ctx)
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := h.inner.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (h *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := h.inner.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	done := make(chan syscall.Errno, 1)
	go func() {
		if s, ok := h.inner.(fs.FileFsyncdirer); ok {
			done <- s.Fsyncdir(ctx, flags)
			return
		}
		done <- 0
	}()
	jerr := h.d.flush()
	if errno := <-done; errno != 0 {
		return errno
	}
	return jerr
}
