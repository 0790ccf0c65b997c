package repository

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
)

// VolumePrune is what a prune did (or would do) to one volume.
type VolumePrune struct {
	Machine string         `json:"machine"`
	Volume  string         `json:"volume"`
	Policy  catalog.Policy `json:"policy"`
	Kept    int            `json:"kept"`
	Dropped []int64        `json:"dropped"`
	Skipped []int64        `json:"skipped,omitempty"` // not droppable now (a point in progress follows)
}

// PruneOptions tune Prune.
type PruneOptions struct {
	// DryRun only reports the points that would be dropped.
	DryRun bool
	// MinDead is the share of a pack that must be dead (its chunks no
	// longer indexed) for the pack to be rewritten; 0 uses 0.1, 1 never
	// rewrites.
	MinDead float64
}

// PruneResult is what a prune did.
type PruneResult struct {
	Volumes      []VolumePrune `json:"volumes"`
	Chunks       int64         `json:"chunks_freed"`
	FreedBytes   int64         `json:"stored_bytes_freed"`
	PacksDeleted int           `json:"packs_deleted"`
	// PacksRewritten packs had their live entries copied into new packs,
	// freeing CompactedBytes of dead entries.
	PacksRewritten int   `json:"packs_rewritten"`
	CompactedBytes int64 `json:"compacted_bytes"`
}

// PolicyFor finds the policy of a volume: its own, else its machine's.
func PolicyFor(policies map[string]catalog.Policy, machine, volume string) (catalog.Policy, bool) {
	if p, ok := policies[machine+"/"+volume]; ok {
		return p, true
	}
	p, ok := policies[machine+"/"]
	return p, ok
}

// Prune thins the points of every volume that has a retention policy and
// frees what no remaining point needs: block versions are merged into the
// next point, unreferenced chunks forgotten, packs left without chunks
// deleted. It runs beside ingest and readers; with dryRun it only reports
// the points it would drop.
func (r *Repo) Prune(ctx context.Context, now time.Time, opt PruneOptions) (PruneResult, error) {
	dryRun := opt.DryRun
	var res PruneResult
	policies, err := r.Catalog.Policies(ctx)
	if err != nil {
		return res, err
	}
	points, err := r.Catalog.Points(ctx, "", "")
	if err != nil {
		return res, err
	}
	for i := 0; i < len(points); {
		j := i
		for j < len(points) && points[j].VolumeID == points[i].VolumeID {
			j++
		}
		vol := points[i:j]
		i = j
		pol, ok := PolicyFor(policies, vol[0].Machine, vol[0].Volume)
		if !ok {
			continue
		}
		keep := pol.Keep(vol, now)
		vp := VolumePrune{Machine: vol[0].Machine, Volume: vol[0].Volume, Policy: pol, Kept: len(keep), Dropped: []int64{}}
		for _, p := range vol { // oldest first
			if keep[p.ID] {
				continue
			}
			if dryRun {
				vp.Dropped = append(vp.Dropped, p.ID)
				continue
			}
			_, _, err := r.Catalog.DropPoint(ctx, p.ID)
			switch {
			case errors.Is(err, catalog.ErrNotDroppable):
				vp.Skipped = append(vp.Skipped, p.ID)
			case err != nil:
				return res, err
			default:
				vp.Dropped = append(vp.Dropped, p.ID)
			}
		}
		res.Volumes = append(res.Volumes, vp)
	}
	if dryRun {
		return res, nil
	}
	g, err := r.Catalog.DeleteUnreferencedChunks(ctx)
	if err != nil {
		return res, err
	}
	res.Chunks, res.FreedBytes = g.Chunks, g.StoredBytes
	for _, id := range g.EmptyPacks {
		// The catalog first: a crash between the two leaves an orphan
		// file (wasted space), never a catalog entry without its pack.
		if err := r.Catalog.DeletePack(ctx, id); err != nil {
			return res, err
		}
		if err := r.deletePack(ctx, id); err != nil {
			return res, err
		}
		res.PacksDeleted++
	}
	minDead := opt.MinDead
	if minDead == 0 {
		minDead = 0.1
	}
	if minDead < 1 {
		if res.PacksRewritten, res.CompactedBytes, err = r.compact(ctx, minDead); err != nil {
			return res, err
		}
	}
	if n := 0; len(res.Volumes) > 0 {
		for _, v := range res.Volumes {
			n += len(v.Dropped)
		}
		slog.Info("pruned", "points", n, "chunks", res.Chunks, "stored_bytes", res.FreedBytes, "packs_deleted", res.PacksDeleted,
			"packs_rewritten", res.PacksRewritten, "compacted_bytes", res.CompactedBytes)
	}
	return res, nil
}
