package repository

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// storePoint stores data as a new committed point of volume vol.
func storePoint(t *testing.T, r *Repo, st *Store, vol catalog.Volume, data []byte) catalog.Point {
	t.Helper()
	ctx := context.Background()
	p, _, err := r.Catalog.BeginPoint(ctx, vol.ID, int64(len(data)), catalog.KindScan, "")
	if err != nil {
		t.Fatal(err)
	}
	bs := vol.BlockSize
	var rows []catalog.BlockWrite
	for blk := int64(0); blk*bs < int64(len(data)); blk++ {
		b := data[blk*bs : min((blk+1)*bs, int64(len(data)))]
		stored, comp := r.Codec().Compress(b, nil)
		e := pack.Entry{Compression: comp, HashAlgo: pack.HashSHA256, ULen: uint32(len(b)), Hash: pack.SumBlock(b)}
		if err := st.Put(ctx, e, stored); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, catalog.BlockWrite{Blk: blk, Hash: e.Hash})
	}
	if err := st.Commit(ctx, catalog.Batch{VolumeID: vol.ID, PointID: p.ID, Blocks: rows, Progress: int64(len(rows)), Commit: true, Time: p.Time}); err != nil {
		t.Fatal(err)
	}
	p, err = r.Catalog.Point(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Prune drops a point, deletes the packs only it needed and rewrites the
// packs it shared: wherever the packs live, the kept point restores
// exactly, check --read-data is clean, and the store holds exactly the
// packs the catalog names.
func TestPruneFreesPacks(t *testing.T) { forEachBackend(t, testPruneFreesPacks) }

func testPruneFreesPacks(t *testing.T, b *backend) {
	ctx := context.Background()
	r := b.init(t, filepath.Join(t.TempDir(), "repo"))
	defer r.Close()
	r.Config.PackSize = 16 << 10
	st, err := r.NewStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := r.Catalog.AddMachine(ctx, "m", []byte("t"))
	const size = 200 << 10
	vol, err := r.Catalog.EnsureVolume(ctx, m.ID, "v", size, 4096)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{3})
	old := make([]byte, size)
	rng.Read(old)
	cur := bytes.Clone(old)
	rng.Read(cur[size/2:]) // the second half changes
	storePoint(t, r, st, vol, old)
	time.Sleep(10 * time.Millisecond)
	kept := storePoint(t, r, st, vol, cur)
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Catalog.SetPolicy(ctx, "m", "v", catalog.Policy{Minutely: 1}); err != nil {
		t.Fatal(err)
	}
	res, err := r.Prune(ctx, time.Now(), PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("prune: %d chunks freed, %d packs deleted, %d rewritten", res.Chunks, res.PacksDeleted, res.PacksRewritten)
	if res.Chunks == 0 || res.PacksDeleted == 0 {
		t.Fatalf("prune freed nothing: %+v", res)
	}
	out := &memTarget{b: make([]byte, size)}
	if err := r.Restore(ctx, kept, out, RestoreOptions{}); err != nil || !bytes.Equal(out.b, cur) {
		t.Fatalf("the kept point after prune: %v (equal %v)", err, bytes.Equal(out.b, cur))
	}
	chk, err := r.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || !chk.OK() || len(chk.Warnings) > 0 {
		t.Fatalf("check after prune: %+v %v", chk, err)
	}
	packs, _ := r.Catalog.Packs(ctx)
	var n int
	if err := r.Packs().List(ctx, func(string, int64) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n != len(packs) {
		t.Errorf("the store holds %d packs, the catalog names %d", n, len(packs))
	}
}
