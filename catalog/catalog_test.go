package catalog

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "catalog.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func hash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// setup makes a machine with one volume of 4 blocks and one pack holding
// chunks "a", "b", "c".
func setup(t *testing.T, db *DB) Volume {
	t.Helper()
	ctx := context.Background()
	m, err := db.AddMachine(ctx, "m", []byte("tok"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := db.EnsureVolume(ctx, m.ID, "v", 4*4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := db.CreatePack(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []NewChunk
	for i, s := range []string{"a", "b", "c"} {
		chunks = append(chunks, NewChunk{Hash: hash(s), PackID: pk, Offset: int64(100 * (i + 1)), CLen: 10, ULen: 4096})
	}
	if err := db.Apply(ctx, Batch{Chunks: chunks}); err != nil {
		t.Fatal(err)
	}
	return v
}

func commitPoint(t *testing.T, db *DB, v Volume, at time.Time, writes ...BlockWrite) Point {
	t.Helper()
	ctx := context.Background()
	p, _, err := db.BeginPoint(ctx, v.ID, v.Size, KindScan, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Apply(ctx, Batch{VolumeID: v.ID, PointID: p.ID, Blocks: writes, Progress: 4, Commit: true, Time: at}); err != nil {
		t.Fatal(err)
	}
	p, err = db.Point(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mapAt(t *testing.T, db *DB, v Volume, seq int64) []string {
	t.Helper()
	refs := make([]ChunkRef, 4)
	if err := db.BlockMap(context.Background(), v.ID, seq, 0, refs); err != nil {
		t.Fatal(err)
	}
	names := map[[32]byte]string{hash("a"): "a", hash("b"): "b", hash("c"): "c"}
	var out []string
	for _, r := range refs {
		if r.ID == 0 {
			out = append(out, "0")
		} else {
			out = append(out, names[r.Hash])
		}
	}
	return out
}

func eq(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBlockVersionsResolvePerPoint(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	v := setup(t, db)
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	p1 := commitPoint(t, db, v, t0, BlockWrite{Blk: 0, Hash: hash("a")}, BlockWrite{Blk: 1, Hash: hash("b")})
	p2 := commitPoint(t, db, v, t0.Add(time.Minute), BlockWrite{Blk: 1, Hash: hash("c")}, BlockWrite{Blk: 3, Hash: hash("a")})
	p3 := commitPoint(t, db, v, t0.Add(2*time.Minute), BlockWrite{Blk: 0, Zero: true})

	for _, c := range []struct {
		p    Point
		want []string
	}{
		{p1, []string{"a", "b", "0", "0"}},
		{p2, []string{"a", "c", "0", "a"}},
		{p3, []string{"0", "c", "0", "a"}},
	} {
		if got := mapAt(t, db, v, c.p.ID); !eq(got, c.want) {
			t.Errorf("point %d: map %v, want %v", c.p.ID, got, c.want)
		}
	}

	// A pending point's rows are invisible to committed points and are
	// discarded with it.
	pend, resumed, err := db.BeginPoint(ctx, v.ID, v.Size, KindScan, "")
	if err != nil || resumed {
		t.Fatalf("begin: %v resumed %v", err, resumed)
	}
	if err := db.Apply(ctx, Batch{VolumeID: v.ID, PointID: pend.ID, Blocks: []BlockWrite{{Blk: 2, Hash: hash("b")}}, Progress: 2}); err != nil {
		t.Fatal(err)
	}
	if got := mapAt(t, db, v, p3.ID); !eq(got, []string{"0", "c", "0", "a"}) {
		t.Errorf("pending rows leaked into point %d: %v", p3.ID, got)
	}
	again, resumed, err := db.BeginPoint(ctx, v.ID, v.Size, KindScan, "")
	if err != nil || !resumed || again.ID != pend.ID || again.Progress != 2 {
		t.Fatalf("resume: point %d (want %d) resumed %v progress %d err %v", again.ID, pend.ID, resumed, again.Progress, err)
	}
	other, resumed, err := db.BeginPoint(ctx, v.ID, v.Size*2, KindScan, "")
	if err != nil || resumed || other.ID == pend.ID {
		t.Fatalf("a source of another size must start afresh: %+v %v %v", other, resumed, err)
	}
	if got := mapAt(t, db, v, other.ID); !eq(got, []string{"0", "c", "0", "a"}) {
		t.Errorf("discarded pending rows are still there: %v", got)
	}

	// Times resolve to the newest point at or before them.
	for _, c := range []struct {
		at   time.Time
		want int64
	}{{t0, p1.ID}, {t0.Add(90 * time.Second), p2.ID}, {t0.Add(time.Hour), p3.ID}} {
		p, err := db.PointAt(ctx, v.ID, c.at)
		if err != nil || p.ID != c.want {
			t.Errorf("PointAt(%s) = %d, %v; want %d", c.at, p.ID, err, c.want)
		}
	}
	if _, err := db.PointAt(ctx, v.ID, t0.Add(-time.Second)); !errors.Is(err, ErrNotFound) {
		t.Errorf("PointAt before the first point: %v, want ErrNotFound", err)
	}

	// Chunk "b" is only in point 1's state; "a" in all three.
	b, _ := db.Chunk(ctx, hash("b"))
	aff, err := db.AffectedPoints(ctx, []int64{b.ID})
	if err != nil || len(aff) != 1 || aff[0].ID != p1.ID {
		t.Errorf("points affected by chunk b: %+v %v; want point %d only", aff, err, p1.ID)
	}
	a, _ := db.Chunk(ctx, hash("a"))
	aff, _ = db.AffectedPoints(ctx, []int64{a.ID})
	if len(aff) != 3 {
		t.Errorf("points affected by chunk a: %d, want 3", len(aff))
	}
}

func TestMachinesAndTokens(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.AddMachine(ctx, "web1", []byte("h1")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddMachine(ctx, "web1", []byte("h2")); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate machine: %v, want ErrExists", err)
	}
	m, err := db.MachineByToken(ctx, []byte("h1"))
	if err != nil || m.Name != "web1" {
		t.Errorf("token lookup: %+v %v", m, err)
	}
	if _, err := db.MachineByToken(ctx, []byte("nope")); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown token: %v", err)
	}
}

func TestOpenRefusesMissingCatalog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "none.db")
	if _, err := Open(context.Background(), p, false); err == nil {
		t.Fatal("opened a catalog that does not exist")
	}
}

func TestListingsForTheFileSystem(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	v := setup(t, db)
	if _, err := db.AddMachine(ctx, "a-first", []byte("tok2")); err != nil {
		t.Fatal(err)
	}
	names, err := db.MachineNames(ctx)
	if err != nil || len(names) != 2 || names[0] != "a-first" || names[1] != "m" {
		t.Errorf("MachineNames = %q %v", names, err)
	}
	vs, err := db.Volumes(ctx, "m")
	if err != nil || len(vs) != 1 || vs[0].ID != v.ID {
		t.Errorf("Volumes(m) = %+v %v", vs, err)
	}
	if vs, err := db.Volumes(ctx, "a-first"); err != nil || len(vs) != 0 {
		t.Errorf("Volumes(a-first) = %+v %v", vs, err)
	}
	base := time.Unix(1700000000, 0)
	p1 := commitPoint(t, db, v, base)
	p2 := commitPoint(t, db, v, base.Add(time.Second))
	if ps, err := db.PointsAfter(ctx, v.ID, 0); err != nil || len(ps) != 2 {
		t.Errorf("PointsAfter(0) = %+v %v", ps, err)
	}
	if ps, err := db.PointsAfter(ctx, v.ID, p1.ID); err != nil || len(ps) != 1 || ps[0].ID != p2.ID {
		t.Errorf("PointsAfter(p1) = %+v %v", ps, err)
	}
	if ps, err := db.PointsAfter(ctx, v.ID, p2.ID); err != nil || len(ps) != 0 {
		t.Errorf("PointsAfter(p2) = %+v %v", ps, err)
	}
}
