package catalog

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestPolicyKeep(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var pts []Point
	add := func(id int64, ago time.Duration, kind string) {
		pts = append(pts, Point{ID: id, Time: now.Add(-ago), Kind: kind, State: StateCommitted})
	}
	// Every 10 minutes for 3 days, a bookmark 2 days ago.
	id := int64(0)
	for ago := 72 * time.Hour; ago >= 0; ago -= 10 * time.Minute {
		id++
		kind := KindFlush
		if ago == 48*time.Hour {
			kind = KindBookmark
		}
		add(id, ago, kind)
	}
	keep := Policy{Within: Duration(time.Hour), Hourly: 6, Daily: 3}.Keep(pts, now)
	var got []time.Duration
	for _, p := range pts {
		if keep[p.ID] {
			got = append(got, now.Sub(p.Time))
		}
	}
	// Within 1h: 7 points (60..0 min); hourly: the newest of hours 12,11..7 (6
	// hours, of which 12 and 11 are already kept); daily: newest of 23rd,
	// 22nd, 21st; the bookmark.
	want := 7 + 4 + 2 + 1
	if len(got) != want {
		t.Errorf("kept %d points (%v), want %d", len(got), got, want)
	}
	if !keep[pts[len(pts)-1].ID] {
		t.Error("the newest point is not kept")
	}
	for _, p := range pts {
		if p.Kind == KindBookmark && !keep[p.ID] {
			t.Error("a bookmark is not kept")
		}
	}
	if k := (Policy{}).Keep(pts, now); len(k) != 2 {
		t.Errorf("an empty policy keeps %d points, want the newest and the bookmark", len(k))
	}
}

// Dropping points merges their block versions into the next point: every
// remaining point's block map is unchanged, the newest point cannot go, and
// unreferenced chunks are collected.
func TestDropPointKeepsLaterPointsExact(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	v := setup(t, db) // chunks "a", "b", "c"; a 4-block volume
	base := time.Now().Add(-time.Hour)
	p1 := commitPoint(t, db, v, base, BlockWrite{Blk: 0, Hash: hash("a")}, BlockWrite{Blk: 1, Hash: hash("b")}, BlockWrite{Blk: 2, Hash: hash("c")})
	p2 := commitPoint(t, db, v, base.Add(time.Minute), BlockWrite{Blk: 1, Hash: hash("a")}, BlockWrite{Blk: 2, Hash: hash("a")})
	p3 := commitPoint(t, db, v, base.Add(2*time.Minute), BlockWrite{Blk: 0, Hash: hash("b")}, BlockWrite{Blk: 3, Hash: hash("a")})
	p4 := commitPoint(t, db, v, base.Add(3*time.Minute), BlockWrite{Blk: 2, Zero: true})
	maps := func(ids ...int64) map[int64][]int64 {
		out := map[int64][]int64{}
		for _, id := range ids {
			refs := make([]ChunkRef, 4)
			if err := db.BlockMap(ctx, v.ID, id, 0, refs); err != nil {
				t.Fatal(err)
			}
			for _, r := range refs {
				out[id] = append(out[id], r.ID)
			}
		}
		return out
	}
	before := maps(p3.ID, p4.ID)
	for _, p := range []Point{p1, p2} {
		if _, _, err := db.DropPoint(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	after := maps(p3.ID, p4.ID)
	for id := range before {
		if !slices.Equal(before[id], after[id]) {
			t.Errorf("point %d reads %v after the drop, %v before", id, after[id], before[id])
		}
	}
	if _, _, err := db.DropPoint(ctx, p4.ID); !errors.Is(err, ErrNotDroppable) {
		t.Errorf("dropping the newest point: %v, want ErrNotDroppable", err)
	}
	if _, err := db.Point(ctx, p1.ID); err == nil {
		t.Error("a dropped point is still listed")
	}
	g, err := db.DeleteUnreferencedChunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// c was only p1's block 2, which p2 overwrote.
	if g.Chunks != 1 {
		t.Errorf("freed %d chunks, want 1 (c)", g.Chunks)
	}
}
