package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"sync"
	"unsafe"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/directio"
)

// mapWindow is how many block versions are resolved per catalog visit.
const mapWindow = 1024

// dirMapWindow is mapWindow for directory volumes.
const dirMapWindow = 16

// PointReader reads a volume as it was at one point. It is an
// io.ReaderAt, safe for concurrent use, and keeps a bounded number of
// resolved block-map windows.
type PointReader struct {
	repo  *Repo
	point catalog.Point

	mu      sync.Mutex
	windows map[int64][]catalog.ChunkRef
	order   []int64
}

const maxWindows = 64

// OpenPoint returns a reader of the volume at point p.
func (r *Repo) OpenPoint(p catalog.Point) *PointReader {
	return &PointReader{repo: r, point: p, windows: map[int64][]catalog.ChunkRef{}}
}

// Size is the volume's size at the point.
func (pr *PointReader) Size() int64 { return pr.point.Size }

func (pr *PointReader) blocks() int64 {
	return (pr.point.Size + pr.point.BlockSize - 1) / pr.point.BlockSize
}

// Block returns where block blk of the point is stored.
func (pr *PointReader) Block(ctx context.Context, blk int64) (catalog.ChunkRef, error) {
	win := int64(mapWindow)
	if pr.point.VolumeKind == catalog.VolumeDir {
		// A directory volume is read file by file, each in its own slot far
		// from the others: resolve small windows (1 MiB at 64 KiB blocks).
		win = dirMapWindow
	}
	w := blk / win
	pr.mu.Lock()
	refs, ok := pr.windows[w]
	pr.mu.Unlock()
	if !ok {
		first := w * win
		n := min(win, pr.blocks()-first)
		if n <= 0 {
			return catalog.ChunkRef{}, fmt.Errorf("block %d is past the end of the volume", blk)
		}
		refs = make([]catalog.ChunkRef, n)
		if err := pr.repo.Catalog.BlockMap(ctx, pr.point.VolumeID, pr.point.ID, first, refs); err != nil {
			return catalog.ChunkRef{}, err
		}
		pr.mu.Lock()
		if _, dup := pr.windows[w]; !dup {
			if len(pr.order) >= maxWindows {
				delete(pr.windows, pr.order[0])
				pr.order = pr.order[1:]
			}
			pr.windows[w] = refs
			pr.order = append(pr.order, w)
		}
		pr.mu.Unlock()
	}
	return refs[blk-w*win], nil
}

// blockLen is the length of block blk (the last one may be short).
func (pr *PointReader) blockLen(blk int64) int64 {
	return min(pr.point.BlockSize, pr.point.Size-blk*pr.point.BlockSize)
}

// ReadBlock returns the verified data of block blk, appended to dst[:0].
func (pr *PointReader) ReadBlock(ctx context.Context, blk int64, dst []byte) ([]byte, error) {
	ref, err := pr.Block(ctx, blk)
	if err != nil {
		return nil, err
	}
	n := pr.blockLen(blk)
	if ref.ID == 0 {
		dst = dst[:0]
		return append(dst, make([]byte, n)...), nil
	}
	data, err := pr.repo.ReadChunk(ctx, ref, dst)
	if errors.Is(err, fs.ErrNotExist) {
		// A prune rewrote the pack since the block map was read: look the
		// block up again.
		pr.mu.Lock()
		delete(pr.windows, blk/mapWindow)
		pr.mu.Unlock()
		if ref, err = pr.Block(ctx, blk); err == nil {
			data, err = pr.repo.ReadChunk(ctx, ref, dst)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s/%s point %d, block %d: %w", pr.point.Machine, pr.point.Volume, pr.point.ID, blk, err)
	}
	if int64(len(data)) != n {
		return nil, fmt.Errorf("%s/%s point %d, block %d: stored block has %d bytes, expected %d", pr.point.Machine, pr.point.Volume, pr.point.ID, blk, len(data), n)
	}
	return data, nil
}

// ReadAt reads the volume at the point.
func (pr *PointReader) ReadAt(p []byte, off int64) (int, error) {
	return pr.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt with a context.
func (pr *PointReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	n := 0
	bs := pr.point.BlockSize
	var buf []byte
	for n < len(p) {
		pos := off + int64(n)
		if pos >= pr.point.Size {
			return n, io.EOF
		}
		blk := pos / bs
		data, err := pr.ReadBlock(ctx, blk, buf)
		if err != nil {
			return n, err
		}
		buf = data[:0]
		n += copy(p[n:], data[pos-blk*bs:])
	}
	return n, nil
}

// ErrDirVolume refuses to treat a directory volume (captured by the
// directory shim) as a disk: its address space is sparse and 4 EiB large.
var ErrDirVolume = errors.New("a directory volume is not a disk image: restore it with rewind restore --to-dir, or browse its files/ (package parsers/filesystem/dirvol)")

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Workers read and decompress blocks in parallel (default: twice the
	// CPUs, so a core is never idle while a worker waits on the disk).
	Workers int
	// SkipZeros leaves all-zero blocks unwritten, for a fresh sparse file.
	SkipZeros bool
	// Progress, when set, is called with the bytes of each block done.
	Progress func(n int64)
}

// Restore writes the volume at point p to dst, block by block, each block
// verified against its content hash before it is written.
func (r *Repo) Restore(ctx context.Context, p catalog.Point, dst io.WriterAt, opt RestoreOptions) error {
	if p.VolumeKind == catalog.VolumeDir {
		return fmt.Errorf("%s/%s point %d: %w", p.Machine, p.Volume, p.ID, ErrDirVolume)
	}
	pr := r.OpenPoint(p)
	workers := opt.Workers
	if workers <= 0 {
		workers = 2 * runtime.NumCPU()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A job is a run of consecutive blocks, written with as few writes as
	// its zero blocks allow: large writes cost a target written around
	// the page cache far less per byte than block-sized ones.
	run := max(1, restoreRun/p.BlockSize)
	type job struct {
		first int64
		refs  []catalog.ChunkRef
	}
	jobs := make(chan job, 2*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Page-aligned, so that a target writing around the page
			// cache can take the blocks as they are.
			buf := directio.AlignedBuf(int(run * p.BlockSize))
			for j := range jobs {
				if err := r.restoreRun(ctx, pr, j.first, j.refs, buf, dst, opt); err != nil {
					cancel(err)
				}
			}
		}()
	}
	// Resolve the block map a window ahead of the workers.
	total := pr.blocks()
	windows := make(chan []catalog.ChunkRef, 2)
	go func() {
		defer close(windows)
		for first := int64(0); first < total; first += mapWindow {
			refs := make([]catalog.ChunkRef, min(int64(mapWindow), total-first))
			if err := r.Catalog.BlockMap(ctx, p.VolumeID, p.ID, first, refs); err != nil {
				cancel(err)
				return
			}
			select {
			case windows <- refs:
			case <-ctx.Done():
				return
			}
		}
	}()
	first := int64(0)
feed:
	for refs := range windows {
		for i := 0; i < len(refs); i += int(run) {
			select {
			case jobs <- job{first + int64(i), refs[i:min(len(refs), i+int(run))]}:
			case <-ctx.Done():
				break feed
			}
		}
		first += int64(len(refs))
	}
	for range windows { // let the resolver finish after a cancel
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}

// restoreRun is the size in bytes of the runs of blocks Restore writes.
const restoreRun = 1 << 20

// restoreRun writes the blocks from first with refs to dst, decoding them
// into buf (room for all of them) and writing each stretch between blocks
// left unwritten (zeros, with SkipZeros) at once.
func (r *Repo) restoreRun(ctx context.Context, pr *PointReader, first int64, refs []catalog.ChunkRef, buf []byte, dst io.WriterAt, opt RestoreOptions) error {
	p := pr.point
	bs := p.BlockSize
	var from, to int64 // the stretch buf[from:to] waits to be written
	write := func() error {
		if to > from {
			if _, err := dst.WriteAt(buf[from:to], first*bs+from); err != nil {
				return fmt.Errorf("write blocks %d-%d: %w", first+from/bs, first+(to-1)/bs, err)
			}
		}
		return nil
	}
	for i, ref := range refs {
		blk := first + int64(i)
		n := pr.blockLen(blk)
		at := int64(i) * bs
		slot := buf[at : at+n]
		if ref.ID == 0 {
			if opt.SkipZeros {
				if err := write(); err != nil {
					return err
				}
				from, to = at+bs, at+bs
				if opt.Progress != nil {
					opt.Progress(n)
				}
				continue
			}
			clear(slot)
		} else {
			data, err := r.ReadChunk(ctx, ref, slot[:0])
			if err != nil {
				return fmt.Errorf("%s/%s point %d, block %d: %w", p.Machine, p.Volume, p.ID, blk, err)
			}
			if int64(len(data)) != n {
				return fmt.Errorf("%s/%s point %d, block %d: stored block has %d bytes, expected %d", p.Machine, p.Volume, p.ID, blk, len(data), n)
			}
			if unsafe.SliceData(data) != unsafe.SliceData(slot) {
				copy(slot, data)
			}
		}
		to = at + n
		if opt.Progress != nil {
			opt.Progress(n)
		}
	}
	return write()
}
