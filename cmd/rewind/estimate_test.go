package main

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// A repository with a known synthetic history: a 16 MiB volume, half
// random data and half zeros, then 2 % of its blocks rewritten with random
// data every day for 14 days. `rewind estimate --days 30` must give the
// expected figure within 5 %.
func TestEstimateMatchesAKnownChangeRate(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	r, err := repository.Init(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.NewStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const bs, blocks = 64 << 10, 256 // 16 MiB
	m, err := r.Catalog.AddMachine(ctx, "db1", []byte("token"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.Catalog.EnsureVolume(ctx, m.ID, "data", bs*blocks, bs)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	put := func(blk int64) catalog.BlockWrite {
		b := make([]byte, bs)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		stored, comp := r.Codec().Compress(b, nil)
		e := pack.Entry{Compression: comp, HashAlgo: pack.HashSHA256, ULen: bs, Hash: pack.SumBlock(b)}
		if err := st.Put(ctx, e, stored); err != nil {
			t.Fatal(err)
		}
		return catalog.BlockWrite{Blk: blk, Hash: e.Hash}
	}
	start := time.Now().Add(-30 * 24 * time.Hour)
	point := func(at time.Time, w []catalog.BlockWrite) {
		p, _, err := r.Catalog.BeginPoint(ctx, v.ID, bs*blocks, catalog.KindScan, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Commit(ctx, catalog.Batch{VolumeID: v.ID, PointID: p.ID, Blocks: w, Progress: int64(len(w)), Commit: true, Time: at}); err != nil {
			t.Fatal(err)
		}
	}
	var w []catalog.BlockWrite
	for blk := int64(0); blk < blocks; blk++ {
		if blk%2 == 0 {
			w = append(w, put(blk))
		} else {
			w = append(w, catalog.BlockWrite{Blk: blk, Zero: true})
		}
	}
	point(start, w)
	const perDay = blocks * 2 / 100 // 5 blocks: 2 % of the volume
	for d := 1; d <= 14; d++ {
		w = w[:0]
		for range perDay {
			w = append(w, put(int64(rng.IntN(blocks))))
		}
		point(start.Add(time.Duration(d)*24*time.Hour), w)
	}
	st.Close(ctx)
	r.Close()

	code, out, errs := runSQL(t, "estimate", "--repo", dir, "--days", "30", "--json")
	if code != 0 {
		t.Fatalf("estimate: exit %d: %s", code, errs)
	}
	var res struct {
		Need     float64 `json:"need_bytes"`
		Machines []struct {
			DailyChange float64 `json:"daily_change_bytes"`
		} `json:"machines"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Machines) != 1 {
		t.Fatalf("estimate --json printed %q: %v", out, err)
	}
	// Random data does not compress: the initial copy is the 128 data
	// blocks, each day adds 5 new ones.
	want := (float64(blocks/2*bs) + perDay*bs*30) * 1.1
	if math.Abs(res.Need-want)/want > 0.05 {
		t.Errorf("estimate needs %.0f bytes for 30 days, want %.0f within 5 %%", res.Need, want)
	}
	if got := res.Machines[0].DailyChange; math.Abs(got-perDay*bs)/(perDay*bs) > 0.01 {
		t.Errorf("daily change %.0f, want %d", got, perDay*bs)
	}
	t.Logf("estimate: %.0f bytes, expected %.0f (%.2f %% off)", res.Need, want, 100*(res.Need-want)/want)

	// A new machine priced by the measured reduction; bad input refused.
	code, out, _ = runSQL(t, "estimate", "--repo", dir, "--days", "30", "--add-size", "16MiB", "--add-change", "2%", "--json")
	var add struct {
		Add struct {
			Need float64 `json:"need_bytes"`
		} `json:"add_machine"`
	}
	json.Unmarshal([]byte(out), &add)
	if code != 0 || math.Abs(add.Add.Need-want)/want > 0.05 {
		t.Errorf("pricing a machine like db1: exit %d, %.0f bytes, want %.0f within 5 %%", code, add.Add.Need, want)
	}
	for _, a := range [][]string{{"--days", "0"}, {"--add-change", "2%"}, {"--add-size", "lots"}, {"--add-size", "1TB", "--add-change", "150%"}} {
		if code, _, _ := runSQL(t, append([]string{"estimate", "--repo", dir}, a...)...); code != 2 {
			t.Errorf("estimate %v: exit %d, want 2", a, code)
		}
	}
}
