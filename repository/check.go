package repository

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"sync"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
	"github.com/rewind-cdp/rewind/repository/packstore"
)

// Damage is one problem found by Check.
type Damage struct {
	Pack    string `json:"pack,omitempty"`
	Offset  int64  `json:"offset,omitempty"`
	Problem string `json:"problem"`
}

// CheckResult is what Check found.
type CheckResult struct {
	Packs        int             `json:"packs"`
	Chunks       int             `json:"chunks"`
	BytesRead    int64           `json:"bytes_read"`
	Damage       []Damage        `json:"damage"`
	DamagedPacks []string        `json:"damaged_packs"`
	Affected     []catalog.Point `json:"affected_points"`
	Warnings     []string        `json:"warnings"`
}

// OK reports whether nothing is damaged.
func (c CheckResult) OK() bool { return len(c.Damage) == 0 }

// CheckOptions tune Check.
type CheckOptions struct {
	// ReadData reads every chunk back, decompresses it and re-hashes it;
	// otherwise only entry headers are compared with the catalog.
	ReadData bool
	// Progress, when set, is called with the stored bytes of each chunk
	// checked; Total is told the sum first.
	Total    func(n int64)
	Progress func(n int64)
}

// Check proves catalog and packs agree: every pack the catalog names
// exists and (when sealed) has a valid index; every indexed chunk is where
// the catalog says; every block row names an indexed chunk; with ReadData,
// every chunk decodes to data with its hash. Damage is reported with the
// packs and every point it affects; an error return means the check itself
// could not run.
func (r *Repo) Check(ctx context.Context, opt CheckOptions) (CheckResult, error) {
	var res CheckResult
	packs, err := r.Catalog.Packs(ctx)
	if err != nil {
		return res, err
	}
	res.Packs = len(packs)
	known := map[string]bool{}
	var damagedChunks []int64
	damagedPacks := map[string]bool{}
	var mu sync.Mutex
	report := func(c *catalog.ChunkRef, packName string, off int64, problem string) {
		mu.Lock()
		defer mu.Unlock()
		res.Damage = append(res.Damage, Damage{Pack: packName, Offset: off, Problem: problem})
		damagedPacks[packName] = true
		if c != nil {
			damagedChunks = append(damagedChunks, c.ID)
		}
	}

	type packWork struct {
		p      catalog.PackState
		chunks []catalog.ChunkRef
	}
	var work []packWork
	var total int64
	for _, p := range packs {
		known[r.PackName(p.ID)] = true
		chunks, err := r.Catalog.PackChunks(ctx, p.ID)
		if err != nil {
			return res, err
		}
		res.Chunks += len(chunks)
		for _, c := range chunks {
			total += int64(c.CLen) + pack.EntryHeaderSize
		}
		work = append(work, packWork{p, chunks})
	}
	if opt.Total != nil {
		opt.Total(total)
	}

	jobs := make(chan packWork)
	var wg sync.WaitGroup
	for range max(1, runtime.NumCPU()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range jobs {
				n := r.checkPack(ctx, w.p, w.chunks, opt, report)
				mu.Lock()
				res.BytesRead += n
				mu.Unlock()
			}
		}()
	}
	for _, w := range work {
		select {
		case jobs <- w:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}

	dangling, err := r.Catalog.DanglingBlocks(ctx)
	if err != nil {
		return res, err
	}
	for _, id := range dangling {
		res.Damage = append(res.Damage, Damage{Problem: fmt.Sprintf("block versions name chunk %d, which the chunk index lacks", id)})
		damagedChunks = append(damagedChunks, id)
	}

	// Pack files the catalog does not know: left by a crash before they were
	// registered; they hold nothing anybody was told is stored.
	unknown := func(where string) func(string, int64) {
		return func(name string, _ int64) {
			if !known[name] {
				res.Warnings = append(res.Warnings, fmt.Sprintf("pack %s in %s is not in the catalog (unreferenced; safe to delete)", name, where))
			}
		}
	}
	local := packstore.Dir{Root: r.Dir}
	if err := local.List(ctx, unknown(r.Dir)); err != nil {
		res.Warnings = append(res.Warnings, "listing the packs directory: "+err.Error())
	}
	if !r.packs.Local() {
		if err := r.packs.List(ctx, unknown(r.packs.String())); err != nil {
			return res, err
		}
	}

	for p := range damagedPacks {
		if p != "" {
			res.DamagedPacks = append(res.DamagedPacks, p)
		}
	}
	sort.Strings(res.DamagedPacks)
	if len(damagedChunks) > 0 {
		res.Affected, err = r.Catalog.AffectedPoints(ctx, damagedChunks)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// checkPack checks one pack and returns the bytes it read.
func (r *Repo) checkPack(ctx context.Context, p catalog.PackState, chunks []catalog.ChunkRef,
	opt CheckOptions, report func(*catalog.ChunkRef, string, int64, string)) int64 {
	name := r.PackName(p.ID)
	f, size, release, err := r.OpenPack(ctx, p.ID)
	if err != nil {
		for i := range chunks {
			report(&chunks[i], name, chunks[i].Offset, "pack file missing: "+err.Error())
		}
		if len(chunks) == 0 {
			report(nil, name, 0, "pack file missing: "+err.Error())
		}
		return 0
	}
	defer release()
	pr := pack.NewReader(f, size, name)
	if id, err := pr.Header(); err != nil {
		report(nil, name, 0, err.Error())
	} else if id != uint64(p.ID) {
		report(nil, name, 0, "header names pack "+strconv.FormatUint(id, 10))
	}
	if p.State == catalog.PackSealed {
		idx, err := pr.Index()
		if err != nil {
			report(nil, name, size, err.Error())
		} else {
			at := map[int64]pack.Entry{}
			for _, e := range idx {
				at[e.Offset] = e
			}
			for i, c := range chunks {
				if e, ok := at[c.Offset]; !ok || e.Hash != c.Hash || e.CLen != c.CLen {
					report(&chunks[i], name, c.Offset, "pack index disagrees with the catalog about this chunk")
				}
			}
		}
	}
	var read int64
	var buf []byte
	for i, c := range chunks {
		if ctx.Err() != nil {
			return read
		}
		if opt.ReadData {
			data, err := r.ReadChunk(ctx, c, buf)
			if err != nil {
				report(&chunks[i], name, c.Offset, problem(err))
			} else {
				buf = data[:0]
			}
			read += int64(c.CLen) + pack.EntryHeaderSize
		} else {
			e, err := pr.ReadEntryHeader(c.Offset)
			if err != nil {
				report(&chunks[i], name, c.Offset, problem(err))
			} else if e.Hash != c.Hash || e.CLen != c.CLen || e.ULen != c.ULen {
				report(&chunks[i], name, c.Offset, "entry header disagrees with the catalog")
			}
			read += pack.EntryHeaderSize
		}
		if opt.Progress != nil {
			opt.Progress(int64(c.CLen) + pack.EntryHeaderSize)
		}
	}
	return read
}

// problem strips the pack and offset prefix of a FormatError, which the
// Damage record carries in its own fields.
func problem(err error) string {
	var fe *pack.FormatError
	if errors.As(err, &fe) {
		return fe.Msg
	}
	return err.Error()
}
