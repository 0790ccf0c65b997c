package repository

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// compact rewrites the sealed packs whose dead entries (chunks the catalog
// no longer indexes) take at least minDead of the file: their live entries
// are copied, as stored, into new packs, the chunks re-pointed in one
// transaction per new pack, and the old packs deleted. Readers that still
// hold an old location find the pack gone and look the block up again.
func (r *Repo) compact(ctx context.Context, minDead float64) (rewritten int, freed int64, err error) {
	packs, err := r.Catalog.Packs(ctx)
	if err != nil {
		return 0, 0, err
	}
	var (
		w     *pack.Writer
		wID   int64
		moves []catalog.ChunkMove
		olds  []int64 // packs whose entries are all in w (or earlier new packs)
	)
	var buf []byte
	finish := func() error {
		if w == nil {
			return nil
		}
		if err := w.Seal(); err != nil {
			return err
		}
		if err := r.uploadPack(ctx, wID); err != nil {
			return err
		}
		if err := r.Catalog.MoveChunks(ctx, catalog.PackState{ID: wID, State: catalog.PackSealed, Size: w.Size()}, moves); err != nil {
			return err
		}
		r.dropLocal(wID)
		for _, id := range olds {
			if err := r.Catalog.DeletePack(ctx, id); err != nil {
				return err
			}
			if err := r.deletePack(ctx, id); err != nil {
				return err
			}
		}
		w, moves, olds = nil, nil, nil
		return nil
	}
	for _, p := range packs {
		if p.State != catalog.PackSealed || p.Size <= 0 {
			continue
		}
		chunks, err := r.Catalog.PackChunks(ctx, p.ID)
		if err != nil {
			return rewritten, freed, err
		}
		var live int64
		for _, c := range chunks {
			live += pack.Entry{CLen: c.CLen}.Len()
		}
		if len(chunks) == 0 || float64(p.Size-live) < minDead*float64(p.Size) {
			continue
		}
		pr, err := r.packReader(ctx, p.ID)
		if err != nil {
			return rewritten, freed, err
		}
		for _, c := range chunks {
			if err := ctx.Err(); err != nil {
				return rewritten, freed, err
			}
			e, stored, err := pr.ReadEntry(c.Offset, c.CLen, buf)
			if err != nil {
				return rewritten, freed, fmt.Errorf("compact pack %s: %w", r.PackName(p.ID), err)
			}
			buf = stored[:0]
			if e.Hash != c.Hash {
				return rewritten, freed, fmt.Errorf("compact pack %s: entry at %d holds %s, the catalog expects %x", r.PackName(p.ID), c.Offset, e.Hash, c.Hash)
			}
			if w == nil {
				if wID, err = r.Catalog.CreatePack(ctx); err != nil {
					return rewritten, freed, err
				}
				if err := os.MkdirAll(filepath.Dir(r.PackPath(wID)), 0o700); err != nil {
					return rewritten, freed, err
				}
				if w, err = pack.Create(r.PackPath(wID), uint64(wID)); err != nil {
					return rewritten, freed, err
				}
			}
			ne, err := w.Append(e, stored)
			if err != nil {
				return rewritten, freed, err
			}
			moves = append(moves, catalog.ChunkMove{ID: c.ID, FromPack: p.ID, Offset: ne.Offset})
		}
		olds = append(olds, p.ID)
		rewritten++
		freed += p.Size - live
		if w.Size() >= r.Config.PackSize {
			if err := finish(); err != nil {
				return rewritten, freed, err
			}
		}
	}
	return rewritten, freed, finish()
}
