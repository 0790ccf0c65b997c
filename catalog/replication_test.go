package catalog

import (
	"context"
	"errors"
	"testing"
	"time"
)

// ChangedBlocks lists what turns one point into a later one, with the
// later point's versions, across a pruned point in between.
func TestChangedBlocks(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	v := setup(t, db)
	t0 := time.Unix(1000, 0)
	p1 := commitPoint(t, db, v, t0, BlockWrite{Blk: 0, Hash: hash("a")}, BlockWrite{Blk: 1, Hash: hash("b")})
	p2 := commitPoint(t, db, v, t0.Add(time.Second), BlockWrite{Blk: 1, Hash: hash("c")}, BlockWrite{Blk: 2, Hash: hash("a")})
	p3 := commitPoint(t, db, v, t0.Add(2*time.Second), BlockWrite{Blk: 2, Hash: hash("b")}, BlockWrite{Blk: 0, Zero: true})
	type bv struct {
		blk  int64
		hash [32]byte
		zero bool
	}
	get := func(after, seq, from int64, limit int) []bv {
		t.Helper()
		cbs, err := db.ChangedBlocks(ctx, v.ID, after, seq, from, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []bv
		for _, c := range cbs {
			out = append(out, bv{c.Blk, c.Chunk.Hash, c.Chunk.ID == 0})
		}
		return out
	}
	eq := func(got, want []bv) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("got %v, want %v", got, want)
			}
		}
	}
	eq(get(0, p1.ID, 0, 100), []bv{{0, hash("a"), false}, {1, hash("b"), false}})
	eq(get(p1.ID, p2.ID, 0, 100), []bv{{1, hash("c"), false}, {2, hash("a"), false}})
	// p1 → p3 takes each block's version at p3: block 2 is b, not a.
	eq(get(p1.ID, p3.ID, 0, 100), []bv{{0, [32]byte{}, true}, {1, hash("c"), false}, {2, hash("b"), false}})
	// Paging.
	eq(get(p1.ID, p3.ID, 1, 1), []bv{{1, hash("c"), false}})
	eq(get(p1.ID, p3.ID, 2, 1), []bv{{2, hash("b"), false}})
	// After p1, points p2 and p3 reference chunks c, a and b (10 bytes each).
	if n, err := db.UnsentBytes(ctx, v.ID, p1.ID); err != nil || n != 30 {
		t.Fatalf("unsent after p1: %d, %v; want 30", n, err)
	}
	if n, err := db.UnsentBytes(ctx, v.ID, p3.ID); err != nil || n != 0 {
		t.Fatalf("unsent after p3: %d, %v; want 0", n, err)
	}
}

// A peer's machines never mix with local machines or another peer's.
func TestReplicaMachinesAndPoints(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.AddMachine(ctx, "local", []byte("tok")); err != nil {
		t.Fatal(err)
	}
	a, err := db.AddPeer(ctx, "a", []byte("pa"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := db.AddPeer(ctx, "b", []byte("pb"))
	if _, err := db.AddPeer(ctx, "a", []byte("px")); !errors.Is(err, ErrExists) {
		t.Fatalf("second peer a: %v", err)
	}
	if got, err := db.PeerByToken(ctx, []byte("pb")); err != nil || got.ID != b.ID {
		t.Fatalf("peer by token: %+v %v", got, err)
	}
	if _, err := db.ReplicaMachine(ctx, a, "local"); !errors.Is(err, ErrMachineClash) {
		t.Fatalf("peer writing a local machine: %v", err)
	}
	m, err := db.ReplicaMachine(ctx, a, "web")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := db.ReplicaMachine(ctx, a, "web"); err != nil || again.ID != m.ID {
		t.Fatalf("second lookup: %+v %v", again, err)
	}
	if _, err := db.ReplicaMachine(ctx, b, "web"); !errors.Is(err, ErrMachineClash) {
		t.Fatalf("peer b writing peer a's machine: %v", err)
	}
	if o, _ := db.MachineOwner(ctx, m.ID); o != "a" {
		t.Fatalf("owner %q", o)
	}
	v, err := db.EnsureVolume(ctx, m.ID, "root", 8192, 4096)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Unix(2000, 5).UTC()
	p, resumed, have, err := db.BeginReplicaPoint(ctx, v.ID, 8192, t1, KindFlush, "x")
	if err != nil || resumed || have {
		t.Fatalf("begin: %v %v %v", resumed, have, err)
	}
	// Again for the same point: resumed. For another: the pending one goes.
	if p2, resumed, _, _ := db.BeginReplicaPoint(ctx, v.ID, 8192, t1, KindFlush, "x"); !resumed || p2.ID != p.ID {
		t.Fatalf("same point not resumed: %v %d", resumed, p2.ID)
	}
	p3, resumed, _, err := db.BeginReplicaPoint(ctx, v.ID, 8192, t1.Add(time.Second), KindScan, "")
	if err != nil || resumed || p3.ID == p.ID {
		t.Fatalf("another point: %v %d %v", resumed, p3.ID, err)
	}
	if err := db.Apply(ctx, Batch{VolumeID: v.ID, PointID: p3.ID, Progress: 2, Commit: true, Time: p3.Time}); err != nil {
		t.Fatal(err)
	}
	got, err := db.PointAtExactly(ctx, v.ID, t1.Add(time.Second))
	if err != nil || got.ID != p3.ID || got.Kind != KindScan {
		t.Fatalf("committed replica point: %+v %v", got, err)
	}
	// The point, and any older one, is never created twice.
	for _, at := range []time.Time{t1, t1.Add(time.Second)} {
		if _, _, have, err := db.BeginReplicaPoint(ctx, v.ID, 8192, at, KindScan, ""); !have || err != nil {
			t.Fatalf("point at %s begun again: have %v, %v", at, have, err)
		}
	}
}
