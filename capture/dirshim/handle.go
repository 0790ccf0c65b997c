package dirshim

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
)

// handle is an open file of the shim: reads go to the backing file; writes
// and size changes are journaled at the file's slot.
type handle struct {
	inner fs.FileHandle
	d     *DirFS
	si    *slotInfo // nil for what is not a captured file
}

func (d *DirFS) handle(fh fs.FileHandle, si *slotInfo) fs.FileHandle {
	if fh == nil {
		return nil
	}
	return &handle{inner: fh, d: d, si: si}
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
	_ fs.FileLseeker   = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
	_ fs.FileGetlker   = (*handle)(nil)
	_ fs.FileSetlker   = (*handle)(nil)
	_ fs.FileSetlkwer  = (*handle)(nil)
)

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.inner.(fs.FileReader).Read(ctx, dest, off)
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.si == nil {
		return h.inner.(fs.FileWriter).Write(ctx, data, off)
	}
	if off < 0 || off+int64(len(data)) > dirvol.SlotSize {
		return 0, syscall.EFBIG
	}
	unlock := h.d.lockRange(dirvol.Addr(h.si.slot, off), int64(len(data)))
	defer unlock()
	n, errno := h.inner.(fs.FileWriter).Write(ctx, data, off)
	if n > 0 {
		h.d.wrote(h.si, off, data[:n])
	}
	return n, errno
}

func (h *handle) Flush(ctx context.Context) syscall.Errno {
	return h.inner.(fs.FileFlusher).Flush(ctx)
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	return h.inner.(fs.FileReleaser).Release(ctx)
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.inner.(fs.FileGetattrer).Getattr(ctx, out)
}

func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.inner.(fs.FileLseeker).Lseek(ctx, off, whence)
}

func (h *handle) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return h.inner.(fs.FileGetlker).Getlk(ctx, owner, lk, flags, out)
}

func (h *handle) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.inner.(fs.FileSetlker).Setlk(ctx, owner, lk, flags)
}

func (h *handle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return h.inner.(fs.FileSetlkwer).Setlkw(ctx, owner, lk, flags)
}

// Allocate passes fallocate through and journals its effect: a punched or
// zeroed range is a discard; a preallocation past the end grows the file.
func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	a := h.inner.(fs.FileAllocater)
	if h.si == nil {
		return a.Allocate(ctx, off, size, mode)
	}
	unlock := h.d.lockRange(0, -1)
	defer unlock()
	if errno := a.Allocate(ctx, off, size, mode); errno != 0 {
		return errno
	}
	if mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 {
		h.d.punched(h.si, int64(off), int64(size))
	}
	var out fuse.AttrOut
	if errno := h.Getattr(ctx, &out); errno == 0 {
		h.d.dmu.Lock()
		grown := int64(out.Size) > h.si.size
		h.d.dmu.Unlock()
		if grown {
			h.d.resized(h.si, int64(out.Size))
		}
	}
	h.d.markSlot(h.si.slot)
	return 0
}
