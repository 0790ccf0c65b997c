package repository

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
	"github.com/rewind-cdp/rewind/repository/packstore"
	"github.com/rewind-cdp/rewind/repository/packstore/s3test"
)

// backend is a pack store the tests run against: the repository directory,
// or S3 on a versitygw started for the test.
type backend struct {
	name string
	opt  OpenOptions
	s3   *s3test.Server
}

// forEachBackend runs fn as a subtest per pack store. The S3 subtest
// skips (fails in CI) without versitygw.
func forEachBackend(t *testing.T, fn func(t *testing.T, b *backend)) {
	t.Run("dir", func(t *testing.T) { fn(t, &backend{name: "dir"}) })
	t.Run("s3", func(t *testing.T) {
		srv := s3test.Start(t)
		fn(t, &backend{name: "s3", s3: srv, opt: OpenOptions{Packs: srv.Options("rewind", "t")}})
	})
}

// init creates a repository in dir using the backend's store.
func (b *backend) init(t *testing.T, dir string) *Repo { return b.initTB(t, dir) }

func (b *backend) initTB(t testing.TB, dir string) *Repo {
	t.Helper()
	r, err := Init(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.s3 == nil {
		return r
	}
	r.Close()
	return b.openTB(t, dir)
}

// open opens dir again; the store is found from what the repository
// recorded, given only the credentials.
func (b *backend) open(t *testing.T, dir string) *Repo { return b.openTB(t, dir) }

func (b *backend) openTB(t testing.TB, dir string) *Repo {
	t.Helper()
	opt := b.opt
	if _, recorded, _ := packstore.ReadLocation(dir); recorded {
		opt.Packs.Location = packstore.Location{}
	}
	r, err := OpenWith(context.Background(), dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	if r.Packs().Local() != (b.s3 == nil) {
		t.Fatalf("backend %s opened a repository whose pack store is %s", b.name, r.Packs())
	}
	return r
}

// removePack deletes a sealed pack wherever the backend keeps it.
func (b *backend) removePack(t *testing.T, r *Repo, id int64) {
	t.Helper()
	if err := r.deletePack(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// packSize is the size of a pack wherever it is.
func packSize(t *testing.T, r *Repo, id int64) int64 {
	t.Helper()
	_, size, release, err := r.OpenPack(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	release()
	return size
}

type memTarget struct{ b []byte }

func (m *memTarget) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }

// storeVolume writes a whole volume as one committed point through a Store
// and returns the point.
func storeVolume(t *testing.T, r *Repo, st *Store, data []byte, bs int64, commit bool) catalog.Point {
	t.Helper()
	ctx := context.Background()
	m, err := r.Catalog.AddMachine(ctx, "m", []byte("t"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.Catalog.EnsureVolume(ctx, m.ID, "v", int64(len(data)), bs)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := r.Catalog.BeginPoint(ctx, v.ID, int64(len(data)), catalog.KindScan, "")
	if err != nil {
		t.Fatal(err)
	}
	var rows []catalog.BlockWrite
	for blk := int64(0); blk*bs < int64(len(data)); blk++ {
		b := data[blk*bs : min((blk+1)*bs, int64(len(data)))]
		if bytes.Count(b, []byte{0}) == len(b) {
			rows = append(rows, catalog.BlockWrite{Blk: blk, Zero: true})
			continue
		}
		stored, comp := r.Codec().Compress(b, nil)
		e := pack.Entry{Compression: comp, HashAlgo: pack.HashSHA256, ULen: uint32(len(b)), Hash: pack.SumBlock(b)}
		if err := st.Put(ctx, e, stored); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, catalog.BlockWrite{Blk: blk, Hash: e.Hash})
	}
	if !commit {
		return p
	}
	if err := st.Commit(ctx, catalog.Batch{VolumeID: v.ID, PointID: p.ID, Blocks: rows, Progress: int64(len(rows)), Commit: true, Time: p.Time}); err != nil {
		t.Fatal(err)
	}
	p, err = r.Catalog.Point(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if (i/4096)%3 != 2 { // every third 4 KiB block stays zero
			b[i] = byte(i*7 + i/1000)
		}
	}
	return b
}

func TestStoreRestoreAndReadAt(t *testing.T) { forEachBackend(t, testStoreRestoreAndReadAt) }

func testStoreRestoreAndReadAt(t *testing.T, b *backend) {
	ctx := context.Background()
	r := b.init(t, filepath.Join(t.TempDir(), "repo"))
	defer r.Close()
	r.Config.PackSize = 4096 // force several packs
	st, err := r.NewStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := testData(300000) // no multiple of the block size
	p := storeVolume(t, r, st, data, 4096, true)
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	out := &memTarget{b: make([]byte, len(data))}
	if err := r.Restore(ctx, p, out, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.b, data) {
		t.Fatal("restore differs")
	}
	pr := r.OpenPoint(p)
	got := make([]byte, 10000)
	if n, err := pr.ReadAt(got, 4000); n != len(got) || err != nil || !bytes.Equal(got, data[4000:14000]) {
		t.Fatalf("ReadAt across blocks: n %d err %v equal %v", n, err, bytes.Equal(got, data[4000:14000]))
	}
	if res, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil || !res.OK() || res.Packs < 2 || len(res.Warnings) > 0 {
		t.Fatalf("check: %+v %v", res, err)
	}
	if b.s3 != nil {
		// Every pack is sealed, so every pack lives in the store only.
		if m, _ := filepath.Glob(filepath.Join(r.Dir, "packs", "*", "*.pack")); len(m) > 0 {
			t.Errorf("sealed packs left in the directory: %v", m)
		}
		var n int
		r.Packs().List(ctx, func(string, int64) { n++ })
		if packs, _ := r.Catalog.Packs(ctx); n != len(packs) {
			t.Errorf("the store holds %d packs, the catalog names %d", n, len(packs))
		}
	}
}

// A crash leaves the current pack open with entries past what was
// indexed: on restart the pack is cut after the last indexed chunk and
// sealed, and everything acknowledged still restores.
func TestRecoveryAfterCrash(t *testing.T) { forEachBackend(t, testRecoveryAfterCrash) }

func testRecoveryAfterCrash(t *testing.T, b *backend) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	r := b.init(t, dir)
	st, err := r.NewStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := testData(100000)
	p := storeVolume(t, r, st, data, 4096, true)
	// Unacknowledged writes after the commit, then the "crash": no Close.
	extra := bytes.Repeat([]byte("never acknowledged "), 500)
	stored, comp := r.Codec().Compress(extra, nil)
	if err := st.Put(ctx, pack.Entry{Compression: comp, HashAlgo: pack.HashSHA256, ULen: uint32(len(extra)), Hash: pack.SumBlock(extra)}, stored); err != nil {
		t.Fatal(err)
	}
	before := packSize(t, r, 1)
	r.Close()

	r2 := b.open(t, dir)
	defer r2.Close()
	if _, err := r2.NewStore(ctx); err != nil {
		t.Fatalf("recovery: %v", err)
	}
	packs, _ := r2.Catalog.Packs(ctx)
	if len(packs) != 1 || packs[0].State != catalog.PackSealed {
		t.Fatalf("after recovery packs are %+v, want one sealed", packs)
	}
	after := packSize(t, r2, 1)
	t.Logf("pack was %d bytes, %d after recovery", before, after)
	if _, err := os.Stat(r2.PackPath(1)); b.s3 != nil && err == nil {
		t.Error("the recovered pack was left in the directory, not moved to the store")
	}
	res, err := r2.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || !res.OK() {
		t.Fatalf("check after recovery: %+v %v", res, err)
	}
	out := &memTarget{b: make([]byte, len(data))}
	if err := r2.Restore(ctx, p, out, RestoreOptions{}); err != nil || !bytes.Equal(out.b, data) {
		t.Fatalf("restore after recovery: %v", err)
	}
}

func TestMissingPackIsDamage(t *testing.T) { forEachBackend(t, testMissingPackIsDamage) }

func testMissingPackIsDamage(t *testing.T, b *backend) {
	ctx := context.Background()
	r := b.init(t, filepath.Join(t.TempDir(), "repo"))
	defer r.Close()
	st, _ := r.NewStore(ctx)
	p := storeVolume(t, r, st, testData(50000), 4096, true)
	st.Close(ctx)
	b.removePack(t, r, 1)
	res, err := r.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() || len(res.DamagedPacks) != 1 || len(res.Affected) != 1 || res.Affected[0].ID != p.ID {
		t.Fatalf("check with a missing pack: %+v", res)
	}
	err = r.Restore(ctx, p, &memTarget{b: make([]byte, 50000)}, RestoreOptions{})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("restore with a missing pack: %v", err)
	}
}

func TestOpenRefusesNonRepository(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o644)
	if _, err := Open(ctx, dir); !errors.Is(err, ErrNotRepository) {
		t.Errorf("open of a plain directory: %v", err)
	}
	if _, err := Init(ctx, dir); err == nil {
		t.Error("init in a non-empty directory succeeded")
	}
	if _, err := Open(ctx, filepath.Join(dir, "missing")); err == nil {
		t.Error("open of a missing directory succeeded")
	}
}

// A block HasMany found absent may be stored by another session before it
// arrives: PutAbsent must then not append it again, whether the other copy
// is still pending or already indexed by a Commit; and HasMany answers from
// both the pending set and the catalog.
func TestPutAbsentNeverDuplicates(t *testing.T) {
	ctx := context.Background()
	r, err := Init(ctx, filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	st, err := r.NewStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	block := func(i byte) (pack.Entry, []byte) {
		b := bytes.Repeat([]byte{i, 'x'}, 3000)
		stored, comp := r.Codec().Compress(b, nil)
		return pack.Entry{Compression: comp, HashAlgo: pack.HashSHA256, ULen: uint32(len(b)), Hash: pack.SumBlock(b)}, stored
	}
	e1, s1 := block(1)
	e2, s2 := block(2)
	e3, s3 := block(3)
	has, abs, err := st.HasMany(ctx, []pack.Hash{e1.Hash, e2.Hash, e3.Hash})
	if err != nil || has[0] || has[1] || has[2] {
		t.Fatalf("HasMany on an empty store: %v %v", has, err)
	}
	// e1 arrives first from its own session: stored.
	if err := st.PutAbsent(ctx, e1, s1, abs); err != nil {
		t.Fatal(err)
	}
	// e2 is stored by another session and still pending.
	if err := st.Put(ctx, e2, s2); err != nil {
		t.Fatal(err)
	}
	size := st.cur.Size()
	if err := st.PutAbsent(ctx, e2, s2, abs); err != nil {
		t.Fatal(err)
	}
	if st.cur.Size() != size {
		t.Fatal("PutAbsent appended a block that was pending")
	}
	// e3 is stored and indexed by another session's Commit.
	if err := st.Put(ctx, e3, s3); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, catalog.Batch{}); err != nil {
		t.Fatal(err)
	}
	size = st.cur.Size()
	if err := st.PutAbsent(ctx, e3, s3, abs); err != nil {
		t.Fatal(err)
	}
	if st.cur.Size() != size {
		t.Fatal("PutAbsent appended a block a Commit had indexed")
	}
	if has, _, err := st.HasMany(ctx, []pack.Hash{e1.Hash, e2.Hash, e3.Hash, {9}}); err != nil || !has[0] || !has[1] || !has[2] || has[3] {
		t.Fatalf("HasMany after storing: %v %v", has, err)
	}
	// e4 is indexed by a Commit followed by more Commits than the store
	// remembers (it asks the catalog); e5 is never stored by anybody.
	e4, s4 := block(4)
	e5, s5 := block(5)
	if err := st.Put(ctx, e4, s4); err != nil {
		t.Fatal(err)
	}
	for i := range leftCommits + 1 {
		e, stored := block(byte(10 + i))
		if err := st.Put(ctx, e, stored); err != nil {
			t.Fatal(err)
		}
		if err := st.Commit(ctx, catalog.Batch{}); err != nil {
			t.Fatal(err)
		}
	}
	size = st.cur.Size()
	if err := st.PutAbsent(ctx, e4, s4, abs); err != nil {
		t.Fatal(err)
	}
	if st.cur.Size() != size {
		t.Fatal("PutAbsent appended a block indexed many Commits before")
	}
	if err := st.PutAbsent(ctx, e5, s5, abs); err != nil {
		t.Fatal(err)
	}
	if st.cur.Size() == size {
		t.Fatal("PutAbsent did not store a block nobody had stored")
	}
}

// Puts from many goroutines fill packs that are sealed outside the store's
// lock while Commits run beside them: nothing deadlocks or races (run with
// -race), and afterwards every chunk is indexed in a sealed pack that
// checks clean.
func TestConcurrentPutsSealAndCommit(t *testing.T) {
	ctx := context.Background()
	r, err := Init(ctx, filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Config.PackSize = 64 << 10 // a seal every few blocks
	st, err := r.NewStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for g := range 4 {
		go func() {
			var err error
			for i := range 100 {
				b := make([]byte, 5000+i) // incompressible: stored raw
				rand.NewChaCha8([32]byte{byte(g), byte(i)}).Read(b)
				stored, comp := r.Codec().Compress(b, nil)
				e := pack.Entry{Compression: comp, HashAlgo: pack.HashSHA256, ULen: uint32(len(b)), Hash: pack.SumBlock(b)}
				if err = st.Put(ctx, e, stored); err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	go func() {
		var err error
		for range 50 {
			if err = st.Commit(ctx, catalog.Batch{}); err != nil {
				break
			}
		}
		errs <- err
	}()
	for range 5 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := r.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || !res.OK() || res.Packs < 10 {
		t.Fatalf("check: %+v %v", res, err)
	}
	stats, err := r.Catalog.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d packs, %+v", res.Packs, stats)
}

// ReadAhead returns what PointReader returns, forward, backward and past
// the end.
// With small packs the reads cross sealed packs (in the store, with S3)
// and the open one (always in the directory).
func TestReadAheadMatchesPointReader(t *testing.T) {
	forEachBackend(t, testReadAheadMatchesPointReader)
}

func testReadAheadMatchesPointReader(t *testing.T, b *backend) {
	ctx := context.Background()
	r := b.init(t, filepath.Join(t.TempDir(), "repo"))
	defer r.Close()
	r.Config.PackSize = 16 << 10
	st, err := r.NewStore(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := testData(300*4096 + 777)
	p := storeVolume(t, r, st, data, 4096, true)
	ra := r.OpenPoint(p).ReadAhead(ctx, 8)
	for _, c := range []struct{ off, n int64 }{{0, 100}, {100, 70000}, {70100, 500000}, {4096, 4096}, {1 << 20, 300000}, {int64(len(data)) - 10, 10}} {
		got := make([]byte, c.n)
		n, err := ra.ReadAt(got, c.off)
		want := data[c.off:min(c.off+c.n, int64(len(data)))]
		if n != len(want) || !bytes.Equal(got[:n], want) {
			t.Fatalf("ReadAt(%d, %d) = %d bytes (%v), differs from the volume", c.off, c.n, n, err)
		}
		if int64(n) < c.n && err == nil {
			t.Errorf("short read at %d without an error", c.off)
		}
	}
	if _, err := ra.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("negative offset accepted")
	}
}
