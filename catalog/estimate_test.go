package catalog

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"
)

// A volume written in full, then 8 blocks (a fixed fraction) a day for 10
// days: Usage measures the base, the daily change and its reduction, and
// Need extrapolates them.
func TestUsageMeasuresChangeRate(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	m, err := db.AddMachine(ctx, "m", []byte("tok"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := db.EnsureVolume(ctx, m.ID, "v", 100*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := db.CreatePack(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	chunk := func(clen uint32) [32]byte { // a new chunk of 4096 logical bytes
		n++
		h := hash(fmt.Sprint("chunk", n))
		if err := db.Apply(ctx, Batch{Chunks: []NewChunk{{Hash: h, PackID: pk, Offset: int64(n) * 10000, CLen: clen, ULen: 4096}}}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	start := time.Now().Add(-20 * 24 * time.Hour)
	// Day 0: 100 blocks, 90 with data (compressing to 2048), 10 zero; two share a chunk.
	var writes []BlockWrite
	shared := chunk(2048)
	for blk := int64(0); blk < 100; blk++ {
		switch {
		case blk < 10:
			writes = append(writes, BlockWrite{Blk: blk, Zero: true})
		case blk < 12:
			writes = append(writes, BlockWrite{Blk: blk, Hash: shared})
		default:
			writes = append(writes, BlockWrite{Blk: blk, Hash: chunk(2048)})
		}
	}
	commitPoint(t, db, v, start, writes...)
	// Days 1..10: 8 blocks a day, 6 new chunks of 1024 stored bytes and 2
	// re-using a chunk of the first point (de-duplicated).
	for d := 1; d <= 10; d++ {
		var w []BlockWrite
		for i := range 8 {
			blk := int64(20 + (d*8+i)%80)
			h := shared
			if i < 6 {
				h = chunk(1024)
			}
			w = append(w, BlockWrite{Blk: blk, Hash: h})
		}
		commitPoint(t, db, v, start.Add(time.Duration(d)*24*time.Hour), w...)
	}
	us, err := db.Usage(ctx)
	if err != nil || len(us) != 1 {
		t.Fatalf("Usage: %v, %v", us, err)
	}
	u := us[0]
	if u.Points != 11 || math.Abs(u.Days()-10) > 1e-6 {
		t.Errorf("points %d over %.3f days, want 11 over 10", u.Points, u.Days())
	}
	if u.BaseLogical != 90*4096 || u.BaseStored != 89*2048 {
		t.Errorf("base: %d logical, %d stored; want %d, %d", u.BaseLogical, u.BaseStored, 90*4096, 89*2048)
	}
	if u.ChangedLogical != 80*4096 || u.ChangedStored != 60*1024 {
		t.Errorf("changes: %d logical, %d stored; want %d, %d", u.ChangedLogical, u.ChangedStored, 80*4096, 60*1024)
	}
	if got, want := u.DailyChange(), 8.0*4096; math.Abs(got-want) > 1e-6 {
		t.Errorf("daily change %.1f, want %.1f", got, want)
	}
	if got, want := u.ChangeReduction(), 60.0*1024/(80*4096); math.Abs(got-want) > 1e-9 {
		t.Errorf("reduction %.4f, want %.4f", got, want)
	}
	// 30 days: the base plus 30 days of 6 KiB stored per day.
	if got, want := u.Need(30), float64(89*2048+30*6*1024); math.Abs(got-want) > 1e-6 {
		t.Errorf("Need(30) = %.0f, want %.0f", got, want)
	}
}

func TestSnapshotAndTapeSets(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	v := setup(t, db)
	commitPoint(t, db, v, time.Now(), BlockWrite{Blk: 0, Hash: hash("a")})
	path := t.TempDir() + "/snap.db"
	if err := db.Snapshot(ctx, path); err != nil {
		t.Fatal(err)
	}
	snap, err := Open(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := snap.Points(ctx, "", "")
	snap.Close()
	if err != nil || len(ps) != 1 {
		t.Errorf("snapshot holds points %v (%v), want the one committed", ps, err)
	}
	if sets, err := db.TapeSets(ctx); err != nil || len(sets) != 0 {
		t.Errorf("tape sets before any: %v, %v", sets, err)
	}
	want := TapeSet{ID: "s1", Written: time.Unix(100, 0), Tapes: 3, Bytes: 12345, Files: []TapeFile{{Name: "catalog.db", Size: 10, Tape: 1, Record: 1}}}
	if err := db.RecordTapeSet(ctx, want); err != nil {
		t.Fatal(err)
	}
	sets, err := db.TapeSets(ctx)
	if err != nil || len(sets) != 1 || sets[0].ID != "s1" || sets[0].Tapes != 3 || len(sets[0].Files) != 1 || sets[0].Files[0] != want.Files[0] {
		t.Errorf("tape sets: %+v, %v", sets, err)
	}
}
