// Package shim is the capture agent's block shim: it serves a protected
// volume as a single FUSE file backed by the real image or device, so that a
// loop device on that file sees every write, discard and flush of the
// filesystem above it — in completion order — and hands each to a Journal
// before the operation returns.
package shim

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Journal receives every change as it happens. Its methods run in the
// write path and must be quick; they must not fail the write (a journal
// that cannot keep up remembers what changed some other way).
type Journal interface {
	Write(t time.Time, off int64, data []byte)
	Discard(t time.Time, off, n int64)
	// Flush is called after the backing store was made durable; it makes
	// the journal durable up to here.
	Flush(t time.Time) error
}

// WriteAhead is a Journal that can be the volume's write-ahead log. While
// Logged is true, every change so far is in the journal with its data, a
// Flush makes it durable, and nothing leaves the journal before SyncBacking
// made the backing store durable; after a crash the journal is replayed
// onto the backing store (Replay) before it is served again. A flush then
// needs one device flush (the journal's) instead of two: the backing store
// is synced only when the journal lets records go. Once Logged is false (a
// change was kept out of the journal), every flush syncs the backing store
// as well.
type WriteAhead interface {
	Journal
	Logged() bool
}

// FileName is the name of the volume file at the root of the mount.
const FileName = "volume"

// stripeSize is the granularity at which writes to the same region are
// serialised, so the journal's order is the backing store's order.
const (
	stripeSize = 64 << 10
	stripes    = 256
)

// Shim is a mounted block shim.
type Shim struct {
	server  *fuse.Server
	dir     string
	backing *os.File
	size    int64
	journal Journal
	locks   [stripes]sync.Mutex

	// written counts writes and discards done to the backing store;
	// synced is the count the last completed sync covered. syncMu lets
	// one sync of the backing store run at a time: a flush that waited for
	// it is usually covered by the one it waited for.
	written atomic.Uint64
	syncMu  sync.Mutex
	synced  uint64
}

// Path is the volume file, to attach a loop device to.
func (s *Shim) Path() string { return s.dir + "/" + FileName }

// Mount serves backing (size bytes) at dir. The caller must be root (the
// mount is done directly, without fusermount).
func Mount(dir string, backing *os.File, size int64, j Journal) (*Shim, error) {
	s := &Shim{dir: dir, backing: backing, size: size, journal: j}
	// The first flush syncs, whatever: writes done before this mount (by an
	// agent that was killed) may still be in the page cache only.
	s.written.Store(1)
	root := &rootNode{shim: s}
	srv, err := fs.Mount(dir, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount:   true,
			FsName:        "rewind-shim",
			Name:          "rewind",
			MaxWrite:      1 << 20,
			MaxBackground: 64,
		},
		// The volume file changes only through this mount.
		AttrTimeout:  ptr(time.Hour),
		EntryTimeout: ptr(time.Hour),
	})
	if err != nil {
		return nil, fmt.Errorf("mount block shim on %s: %w", dir, err)
	}
	s.server = srv
	return s, nil
}

func ptr[T any](v T) *T { return &v }

// Unmount stops serving. Nothing may use the volume file any more (detach
// the loop device first).
func (s *Shim) Unmount() error {
	if err := s.server.Unmount(); err != nil {
		return fmt.Errorf("unmount block shim %s: %w", s.dir, err)
	}
	s.server.Wait()
	return nil
}

// lock takes the stripe locks covering [off, off+n), in ascending stripe
// order (so writers never deadlock), and returns their release.
func (s *Shim) lock(off, n int64) func() {
	first, last := off/stripeSize, (off+max(n, 1)-1)/stripeSize
	var held []int
	if last-first+1 >= stripes {
		for i := range stripes {
			held = append(held, i)
		}
	} else {
		for st := first; st <= last; st++ {
			held = append(held, int(st%stripes))
		}
		sort.Ints(held) // distinct: fewer stripes than the ring
	}
	for _, i := range held {
		s.locks[i].Lock()
	}
	return func() {
		for _, i := range held {
			s.locks[i].Unlock()
		}
	}
}

type rootNode struct {
	fs.Inode
	shim *Shim
}

var _ fs.NodeOnAdder = (*rootNode)(nil)

func (r *rootNode) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &volumeNode{shim: r.shim}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild(FileName, ch, false)
}

type volumeNode struct {
	fs.Inode
	shim *Shim
}

var (
	_ fs.NodeGetattrer = (*volumeNode)(nil)
	_ fs.NodeSetattrer = (*volumeNode)(nil)
	_ fs.NodeOpener    = (*volumeNode)(nil)
	_ fs.NodeReader    = (*volumeNode)(nil)
	_ fs.NodeWriter    = (*volumeNode)(nil)
	_ fs.NodeFsyncer   = (*volumeNode)(nil)
	_ fs.NodeFlusher   = (*volumeNode)(nil)
	_ fs.NodeAllocater = (*volumeNode)(nil)
)

func (n *volumeNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o600
	out.Size = uint64(n.shim.size)
	out.Blocks = (out.Size + 511) / 512
	out.Nlink = 1
	return 0
}

// Setattr accepts everything but a change of size: a volume does not grow.
func (n *volumeNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != n.shim.size {
		return syscall.EPERM
	}
	return n.Getattr(ctx, fh, out)
}

func (n *volumeNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (n *volumeNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= n.shim.size {
		return fuse.ReadResultData(nil), 0
	}
	if rem := n.shim.size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	got, err := n.shim.backing.ReadAt(dest, off)
	if err != nil && got < len(dest) {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *volumeNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if off < 0 || off+int64(len(data)) > n.shim.size {
		return 0, syscall.ENOSPC
	}
	unlock := n.shim.lock(off, int64(len(data)))
	defer unlock()
	w, err := n.shim.backing.WriteAt(data, off)
	n.shim.written.Add(1)
	if err != nil {
		if w > 0 {
			n.shim.journal.Write(time.Now(), off, data[:w])
		}
		return uint32(w), fs.ToErrno(err)
	}
	n.shim.journal.Write(time.Now(), off, data)
	return uint32(w), 0
}

// Fsync makes the backing store and the journal durable, both at once, or
// the journal alone when it is a write-ahead log of every change (see
// WriteAhead). (The loop device turns a flush into one fsync of its
// backing file.)
func (n *volumeNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if wa, ok := n.shim.journal.(WriteAhead); ok && wa.Logged() {
		if err := wa.Flush(time.Now()); err != nil {
			return syscall.EIO
		}
		return 0
	}
	done := make(chan error, 1)
	go func() { done <- n.shim.syncBacking() }()
	jerr := n.shim.journal.Flush(time.Now())
	if err := <-done; err != nil {
		return fs.ToErrno(err)
	}
	if jerr != nil {
		return syscall.EIO
	}
	return 0
}

// SyncBacking makes every write and discard done before it durable on the
// backing store (for a WriteAhead journal, before it drops records).
func (s *Shim) SyncBacking() error { return s.syncBacking() }

// syncBacking makes every write and discard done before it durable on the
// backing store. fdatasync is enough: the volume is the data (and the
// extents that hold it), not the image file's times.
func (s *Shim) syncBacking() error {
	target := s.written.Load()
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.synced >= target {
		return nil // covered by the sync this one waited for
	}
	upto := s.written.Load()
	rc, err := s.backing.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for serr = unix.Fdatasync(int(fd)); serr == unix.EINTR; serr = unix.Fdatasync(int(fd)) {
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	s.synced = upto
	return nil
}

// Flush is close(2) of a handle: nothing to do (fsync is the barrier).
func (n *volumeNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno { return 0 }

// Allocate handles discards: the loop device turns them into punching holes
// (or zeroing ranges) in the file.
func (n *volumeNode) Allocate(ctx context.Context, fh fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	const (
		keepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
		punchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
		zeroRange = 0x10 // FALLOC_FL_ZERO_RANGE
	)
	if mode&(punchHole|zeroRange) == 0 {
		return syscall.EOPNOTSUPP // plain preallocation: a volume has all its space
	}
	o, l := int64(off), int64(size)
	if o < 0 || o >= n.shim.size {
		return 0
	}
	l = min(l, n.shim.size-o)
	unlock := n.shim.lock(o, l)
	defer unlock()
	defer n.shim.written.Add(1)
	if err := discard(n.shim.backing, mode|keepSize, o, l); err != nil {
		return fs.ToErrno(err)
	}
	n.shim.journal.Discard(time.Now(), o, l)
	return 0
}

// discard punches a hole (or zeroes a range, by mode) in f, writing zeros
// where f cannot.
func discard(f *os.File, mode uint32, off, n int64) error {
	if err := syscall.Fallocate(int(f.Fd()), mode, off, n); err != nil {
		// A block device or a filesystem without hole punching: write zeros.
		return writeZeros(f, off, n)
	}
	return nil
}

// Replay applies journaled changes to the backing store of a volume of
// size bytes, in order, then makes it durable: after a crash, a
// WriteAhead journal's records (the writes and discards, in the order
// they were made) bring the volume back to every flush it acknowledged.
// next returns the next change, ok false at the end.
func Replay(backing *os.File, size int64, next func() (off, n int64, data []byte, ok bool, err error)) (int, error) {
	const punchHole, keepSize = 0x02, 0x01
	count := 0
	for {
		off, n, data, ok, err := next()
		if err != nil {
			return count, err
		}
		if !ok {
			break
		}
		if off < 0 || n < 0 || off+n > size || (data != nil && int64(len(data)) != n) {
			return count, fmt.Errorf("replay: change %d+%d outside the %d-byte volume", off, n, size)
		}
		if data != nil {
			if _, err := backing.WriteAt(data, off); err != nil {
				return count, fmt.Errorf("replay: write at %d: %w", off, err)
			}
		} else if err := discard(backing, punchHole|keepSize, off, n); err != nil {
			return count, fmt.Errorf("replay: discard %d+%d: %w", off, n, err)
		}
		count++
	}
	return count, backing.Sync()
}

func writeZeros(f *os.File, off, n int64) error {
	z := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(z)))
		if _, err := f.WriteAt(z[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}
