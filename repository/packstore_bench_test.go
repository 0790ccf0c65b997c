package repository

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
	"github.com/rewind-cdp/rewind/repository/packstore/s3test"
)

var benchRepos int

// discard is an io.WriterAt that keeps nothing.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

var _ io.WriterAt = discard{}

// benchVolume is 64 MiB of 64 KiB blocks, each half random and half
// zero-filled text, so that it compresses about 2:1 like a mixed disk.
func benchVolume() []byte {
	const size, bs = 64 << 20, 64 << 10
	b := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{7})
	for off := 0; off < size; off += bs {
		rng.Read(b[off : off+bs/2])
		copy(b[off+bs/2:], "rewind benchmark block ")
	}
	return b
}

// BenchmarkPackStore measures backup (Put, seal, upload, Commit) and
// restore (cold: a newly opened repository, so S3 reads are not cached)
// with packs in the directory and on versitygw, in the same run:
//
//	go test -run '^$' -bench PackStore -benchtime 3x ./repository
func BenchmarkPackStore(b *testing.B) {
	data := benchVolume()
	backends := []struct {
		name string
		s3   bool
	}{{"dir", false}, {"s3", true}}
	for _, be := range backends {
		b.Run(be.name, func(pb *testing.B) {
			b := pb
			bk := &backend{name: be.name}
			if be.s3 {
				srv := s3test.Start(b)
				bk.s3, bk.opt = srv, OpenOptions{Packs: srv.Options("bench", be.name)}
			}
			var dir string
			var point catalog.Point
			b.Run("backup", func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for range b.N {
					dir = filepath.Join(pb.TempDir(), "repo") // outlives this sub-benchmark
					if be.s3 {
						benchRepos++
						bk.opt.Packs.URL = fmt.Sprintf("s3://bench/repo%d", benchRepos)
					}
					r := bk.initTB(b, dir)
					point = benchStore(b, r, data)
					r.Close()
				}
			})
			b.Run("restore", func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for range b.N {
					r := bk.openTB(b, dir)
					if err := r.Restore(context.Background(), point, discard{}, RestoreOptions{}); err != nil {
						b.Fatal(err)
					}
					r.Close()
				}
			})
		})
	}
}

// benchStore stores data as one point, 64 KiB blocks, committing every
// 4 MiB as ingest does, and closes the store.
func benchStore(b *testing.B, r *Repo, data []byte) catalog.Point {
	ctx := context.Background()
	st, err := r.NewStore(ctx)
	if err != nil {
		b.Fatal(err)
	}
	m, err := r.Catalog.AddMachine(ctx, "m", []byte("t"))
	if err != nil {
		b.Fatal(err)
	}
	const bs = 64 << 10
	v, err := r.Catalog.EnsureVolume(ctx, m.ID, "v", int64(len(data)), bs)
	if err != nil {
		b.Fatal(err)
	}
	p, _, err := r.Catalog.BeginPoint(ctx, v.ID, int64(len(data)), catalog.KindScan, "")
	if err != nil {
		b.Fatal(err)
	}
	var rows []catalog.BlockWrite
	var buf []byte
	for blk := int64(0); blk*bs < int64(len(data)); blk++ {
		block := data[blk*bs : (blk+1)*bs]
		stored, comp := r.Codec().Compress(block, buf)
		buf = stored[:0]
		e := pack.Entry{Compression: comp, HashAlgo: pack.HashSHA256, ULen: bs, Hash: pack.SumBlock(block)}
		if err := st.Put(ctx, e, stored); err != nil {
			b.Fatal(err)
		}
		rows = append(rows, catalog.BlockWrite{Blk: blk, Hash: e.Hash})
		last := (blk+1)*bs == int64(len(data))
		if len(rows) == 64 || last {
			if err := st.Commit(ctx, catalog.Batch{VolumeID: v.ID, PointID: p.ID, Blocks: rows, Progress: blk + 1, Commit: last, Time: p.Time}); err != nil {
				b.Fatal(err)
			}
			rows = nil
		}
	}
	if err := st.Close(ctx); err != nil {
		b.Fatal(err)
	}
	p, err = r.Catalog.Point(ctx, p.ID)
	if err != nil {
		b.Fatal(err)
	}
	return p
}
