package repository

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// Target is a device or file that already holds a state of a volume.
type Target interface {
	io.ReaderAt
	io.WriterAt
}

// RollbackOptions tune Rollback.
type RollbackOptions struct {
	// Known, when set, is the point the target is known to hold (for
	// example the last point its agent shipped): the blocks to write come
	// from the catalog alone and the target is not read.
	Known *catalog.Point
	// Workers compare and write blocks in parallel (default: CPUs).
	Workers int
	// Progress, when set, is called with the bytes of each block done.
	Progress func(n int64)
}

// RollbackStats says what a rollback did.
type RollbackStats struct {
	Blocks       int64 // blocks of the volume
	Written      int64 // blocks that differed and were written
	BytesWritten int64
	BytesRead    int64 // bytes of the target read to compare
}

// Rollback brings target, which holds some other state of the same
// volume, to point p by writing only the blocks that differ: blocks whose
// content hash differs from the target's (the target is read and hashed),
// or, with opt.Known, blocks whose stored version differs between the
// known point and p. Every block written is verified against its hash.
func (r *Repo) Rollback(ctx context.Context, p catalog.Point, target Target, opt RollbackOptions) (RollbackStats, error) {
	if k := opt.Known; k != nil && (k.VolumeID != p.VolumeID || k.Size != p.Size || k.BlockSize != p.BlockSize) {
		return RollbackStats{}, fmt.Errorf("point %d is not a point of the same volume and size as point %d", k.ID, p.ID)
	}
	pr := r.OpenPoint(p)
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		blk       int64
		ref, have catalog.ChunkRef // have: the known point's version (with Known)
	}
	var written, wbytes, read atomic.Int64
	jobs := make(chan job, mapWindow)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cur, buf []byte
			for j := range jobs {
				n := pr.blockLen(j.blk)
				off := j.blk * p.BlockSize
				same := false
				if opt.Known != nil {
					same = j.ref.ID == j.have.ID || (j.ref.ID != 0 && j.have.ID != 0 && j.ref.Hash == j.have.Hash)
				} else {
					if int64(cap(cur)) < n {
						cur = make([]byte, n)
					}
					cur = cur[:n]
					if m, err := target.ReadAt(cur, off); int64(m) < n {
						cancel(fmt.Errorf("read target at byte %d: %w", off, orShort(err)))
						continue
					}
					read.Add(n)
					if j.ref.ID == 0 {
						same = isZero(cur)
					} else {
						same = pack.Sum(r.hash, cur) == j.ref.Hash
					}
				}
				if !same {
					var data []byte
					if j.ref.ID == 0 {
						if int64(cap(buf)) < n {
							buf = make([]byte, n)
						}
						data = buf[:n]
						clear(data)
					} else {
						var err error
						data, err = r.ReadChunk(ctx, j.ref, buf)
						if err != nil {
							cancel(fmt.Errorf("%s/%s point %d, block %d: %w", p.Machine, p.Volume, p.ID, j.blk, err))
							continue
						}
						buf = data[:0]
						if int64(len(data)) != n {
							cancel(fmt.Errorf("%s/%s point %d, block %d: stored block has %d bytes, expected %d", p.Machine, p.Volume, p.ID, j.blk, len(data), n))
							continue
						}
					}
					if _, err := target.WriteAt(data, off); err != nil {
						cancel(fmt.Errorf("write target at byte %d: %w", off, err))
						continue
					}
					written.Add(1)
					wbytes.Add(n)
				}
				if opt.Progress != nil {
					opt.Progress(n)
				}
			}
		}()
	}
	total := pr.blocks()
feed:
	for first := int64(0); first < total; first += mapWindow {
		n := min(int64(mapWindow), total-first)
		refs := make([]catalog.ChunkRef, n)
		if err := r.Catalog.BlockMap(ctx, p.VolumeID, p.ID, first, refs); err != nil {
			cancel(err)
			break
		}
		have := make([]catalog.ChunkRef, n)
		if opt.Known != nil {
			if err := r.Catalog.BlockMap(ctx, p.VolumeID, opt.Known.ID, first, have); err != nil {
				cancel(err)
				break
			}
		}
		for i := range n {
			select {
			case jobs <- job{first + i, refs[i], have[i]}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	st := RollbackStats{Blocks: total, Written: written.Load(), BytesWritten: wbytes.Load(), BytesRead: read.Load()}
	return st, context.Cause(ctx)
}

func orShort(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

var zeros64k = make([]byte, 64<<10)

func isZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeros64k))
		if !bytes.Equal(b[:k], zeros64k[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}
