package vfstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/repository/pack"
	"github.com/rewind-cdp/rewind/test/testenv"
	"github.com/rewind-cdp/rewind/vfs"
)

// Machine and volume names BuildExt4 uses.
const (
	Machine       = "web1"
	Volume        = "root"
	DamagedVolume = "damaged"
)

// StoreImage stores the file img as a new committed point of
// machine/volume (both created when missing) and returns the point.
func StoreImage(t testing.TB, repo *repository.Repo, machine, volume, img string) catalog.Point {
	t.Helper()
	ctx := context.Background()
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	m, err := repo.Catalog.AddMachine(ctx, machine, []byte("token of "+machine))
	if err != nil {
		ms, lerr := repo.Catalog.Machines(ctx)
		if lerr != nil {
			t.Fatal(err)
		}
		for _, x := range ms {
			if x.Name == machine {
				m = x
			}
		}
		if m.ID == 0 {
			t.Fatal(err)
		}
	}
	bs := int64(repository.DefaultBlockSize)
	v, err := repo.Catalog.EnsureVolume(ctx, m.ID, volume, int64(len(data)), bs)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := repo.Catalog.BeginPoint(ctx, v.ID, int64(len(data)), catalog.KindScan, "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := repo.NewStore(ctx)
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
		stored, comp := repo.Codec().Compress(b, nil)
		e := pack.Entry{Compression: comp, HashAlgo: pack.HashSHA256, ULen: uint32(len(b)), Hash: pack.SumBlock(b)}
		if err := st.Put(ctx, e, stored); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, catalog.BlockWrite{Blk: blk, Hash: e.Hash})
	}
	if err := st.Commit(ctx, catalog.Batch{VolumeID: v.ID, PointID: p.ID, Blocks: rows, Progress: int64(len(rows)), Commit: true, Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	p, err = repo.Catalog.Point(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func mkfsExt4(t testing.TB, src, img string) {
	t.Helper()
	os.Remove(img)
	fstest.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, img, "96M")
}

// regularFiles lists src's regular files (relative, sorted).
func regularFiles(t testing.TB, src string) []string {
	var out []string
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(src, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// change makes the changes between two points: rewritten, grown,
// truncated, removed and new files, a new directory, a retargeted
// symbolic link and a changed mode, each with a known mtime.
func change(t testing.TB, src string, gen int) {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewSource(int64(1000 + gen)))
	files := regularFiles(t, src)
	mt := time.Date(2025, 6, 1+gen, 8, 30, 0, 0, time.UTC)
	touch := func(p string) { must(os.Chtimes(p, mt, mt)) }
	for i := 0; i < 8; i++ {
		p := filepath.Join(src, files[(i*37+gen*11)%len(files)])
		b := make([]byte, rng.Intn(100000))
		rng.Read(b)
		must(os.WriteFile(p, b, 0o644))
		touch(p)
	}
	victim := filepath.Join(src, files[(gen*53+5)%len(files)])
	os.Remove(victim)
	d := filepath.Join(src, fmt.Sprintf("new-in-%d", gen))
	must(os.MkdirAll(d, 0o755))
	for i := 0; i < 5; i++ {
		p := filepath.Join(d, fmt.Sprintf("n%d-ünï.txt", i))
		must(os.WriteFile(p, bytes.Repeat([]byte(fmt.Sprintf("gen %d file %d\n", gen, i)), 100*i), 0o640))
		touch(p)
	}
	touch(d)
	link := filepath.Join(src, "link-dir")
	os.Remove(link)
	must(os.Symlink(fmt.Sprintf("dir0%d", gen), link))
	p := filepath.Join(src, files[(gen*71+3)%len(files)])
	if _, err := os.Stat(p); err == nil {
		must(os.Chmod(p, 0o711))
	}
	// directories written to get their mtimes back to known ones
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() && p != src {
			os.Chtimes(p, mt, mt)
		}
		return nil
	})
}

func ext4Check() fstest.Check {
	return fstest.Check{Mode: true, Symlinks: true, Hardlinks: true,
		SkipRoot: func(p string) bool { return p == "lost+found" }}
}

// BuildExt4 makes a repository in dir holding 3 points of an ext4 volume
// (Machine/Volume) with changes between them, and one point of a second
// volume (DamagedVolume) whose file system has a file with a broken
// extent tree and a file with a damaged block in the repository. It needs
// mkfs.ext4 and debugfs (e2fsprogs).
func BuildExt4(t testing.TB, dir string) Expect {
	t.Helper()
	testenv.NeedTool(t, "mkfs.ext4", "debugfs")
	ctx := context.Background()
	repo, err := repository.Init(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	work := t.TempDir()
	src := filepath.Join(work, "src")
	img := filepath.Join(work, "fs.img")
	fstest.MakeTree(t, src, fstest.TreeOptions{Files: 200, Symlinks: true, Hardlinks: true, Sparse: true, BigFile: 3 << 20})
	var e Expect
	for gen := 0; gen < 3; gen++ {
		if gen > 0 {
			change(t, src, gen)
			time.Sleep(20 * time.Millisecond)
		}
		mkfsExt4(t, src, img)
		m := fstest.Manifest(t, src)
		p := StoreImage(t, repo, Machine, Volume, img)
		e.Points = append(e.Points, Point{Machine: Machine, Volume: Volume, Time: p.Time, DiskSHA256: fileSHA(t, img),
			DiskSize: p.Size, Manifest: m, Check: ext4Check()})
	}
	ps, err := repo.Catalog.Points(ctx, Machine, Volume)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range vfs.PointNames(ps) {
		e.Points[i].Name = n
	}

	// The damaged volume.
	dsrc := filepath.Join(work, "dsrc")
	fstest.MakeTree(t, dsrc, fstest.TreeOptions{Files: 60, Symlinks: true})
	rng := rand.New(rand.NewSource(7))
	unique := make([]byte, 1<<20)
	rng.Read(unique)
	must(t, os.WriteFile(filepath.Join(dsrc, "unique.bin"), unique, 0o644))
	must(t, os.WriteFile(filepath.Join(dsrc, "broken-extents.bin"), unique[:200000], 0o644))
	mt := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range []string{"unique.bin", "broken-extents.bin", ""} {
		must(t, os.Chtimes(filepath.Join(dsrc, n), mt, mt))
	}
	dimg := filepath.Join(work, "damaged.img")
	mkfsExt4(t, dsrc, dimg)
	m := fstest.Manifest(t, dsrc)
	// zero the extent header magic of one file (debugfs keeps the inode
	// checksum right: only the extent tree is bad)
	fstest.Run(t, "debugfs", "-w", "-R", "sif /broken-extents.bin block[0] 0", dimg)
	phys := bmap(t, dimg, "/unique.bin", 128)
	p := StoreImage(t, repo, Machine, DamagedVolume, dimg)
	damagePack(t, repo, p, phys*4096)
	e.Points = append(e.Points, Point{Machine: Machine, Volume: DamagedVolume, Name: vfs.PointNames([]catalog.Point{p})[0],
		Time: p.Time, DiskSHA256: "", DiskSize: p.Size, Manifest: m, Check: ext4Check(),
		Damaged: []string{"broken-extents.bin", "unique.bin"}})
	return e
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var bmapOut = regexp.MustCompile(`(?m)^(\d+)\s*$`)

// bmap returns the physical block of a file's logical block.
func bmap(t testing.TB, img, p string, lblk int) int64 {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", fmt.Sprintf("bmap %s %d", p, lblk), img).Output()
	if err != nil {
		t.Fatalf("debugfs bmap: %v", err)
	}
	m := bmapOut.FindSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs bmap %s %d: %q", p, lblk, out)
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

// damagePack flips bytes in the stored block holding volume offset off.
func damagePack(t testing.TB, repo *repository.Repo, p catalog.Point, off int64) {
	t.Helper()
	ctx := context.Background()
	ref, err := repo.OpenPoint(p).Block(ctx, off/p.BlockSize)
	if err != nil || ref.ID == 0 {
		t.Fatalf("block of offset %d: %+v %v", off, ref, err)
	}
	f, err := os.OpenFile(repo.PackPath(ref.PackID), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pos := ref.Offset + int64(ref.CLen)/2
	b := make([]byte, 16)
	if _, err := f.ReadAt(b, pos); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0x5a
	}
	if _, err := f.WriteAt(b, pos); err != nil {
		t.Fatal(err)
	}
}
