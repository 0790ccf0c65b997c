package ntfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

const fixture = "ntfs/dissect_ntfs_volume.bin.gz"

func fixtureFS(t testing.TB) (*FS, []byte) {
	t.Helper()
	b := testenv.FixtureBytes(t, fixture)
	f, err := Open(context.Background(), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f, b
}

// tskSkip leaves out what fls lists beyond a browsable tree: metafiles at
// the root and alternate data streams.
func tskSkip(te fstest.TSKEntry) bool {
	return strings.HasPrefix(te.Path, "$") || strings.Contains(te.Path, ":")
}

func TestFixtureMatchesSleuthKit(t *testing.T) {
	testenv.NeedTool(t, "fls", "icat")
	f, b := fixtureFS(t)
	img := filepath.Join(t.TempDir(), "ntfs.bin") // decompressed copy in the test's temp dir
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	fstest.CompareTSK(t, f, img, 0, true, tskSkip)
}

func TestFixtureFacts(t *testing.T) {
	ctx := context.Background()
	f, _ := fixtureFS(t)
	if f.Label() != "New Volume" {
		t.Errorf("label %q", f.Label())
	}
	check := func(p string, ino uint64, want string) {
		t.Helper()
		e, err := f.Stat(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if e.Ino != ino {
			t.Errorf("%s: MFT %d, want %d", p, e.Ino, ino)
		}
		b, err := filesystem.ReadFile(ctx, f, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) == 64 {
			s := sha256.Sum256(b)
			if hex.EncodeToString(s[:]) != want {
				t.Errorf("%s: sha256 %x", p, s)
			}
		} else if string(b) != want {
			t.Errorf("%s = %q, want %q", p, b, want)
		}
	}
	check("File.txt", 41, "Contents here")
	check("Directory/File 1.txt", 42, "File 1 contents")
	check("Directory/File 2.txt", 43, "File 2 contents")
	check("Large.txt", 44, strings.Repeat("A", 2097152))
	check("Random.bin", 33, "abe14bae00734c703772844542916a386641bca80c1db871729826732cc603fa")
	s := sha256.Sum256([]byte(strings.Repeat("A", 2097152)))
	if !strings.HasPrefix(hex.EncodeToString(s[:]), "5b766f6d") {
		t.Errorf("Large.txt sha256 %x does not match the manifest prefix", s)
	}
	es, err := f.ReadDir(ctx, "Directory")
	if err != nil || len(es) != 2 {
		t.Fatalf("Directory: %v %v", es, err)
	}
	large, err := f.ReadDir(ctx, "Large Directory")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range large {
		if !e.IsDir() {
			t.Errorf("%s is not a directory", e.Name)
		}
		names = append(names, e.Name)
	}
	sort.Strings(names)
	var want []string
	for i := 0; i < 2048; i++ {
		want = append(want, fmt.Sprintf("Directory %d", i))
	}
	sort.Strings(want)
	if strings.Join(names, "|") != strings.Join(want, "|") {
		t.Errorf("Large Directory: %d entries", len(names))
	}
	if e, err := f.Stat(ctx, "large directory/DIRECTORY 7"); err != nil || e.Name != "Directory 7" {
		t.Errorf("case-insensitive lookup: %v %v", e, err)
	}
	if e, _ := f.Stat(ctx, "/"); e.Ino != 5 || !e.IsDir() {
		t.Errorf("root %+v", e)
	}
}

func TestDamagedRecordKeepsRestBrowsable(t *testing.T) {
	ctx := context.Background()
	f, b := fixtureFS(t)
	_ = f
	// MFT at cluster 597, 4 KiB clusters, 1 KiB records: smash record 41 (File.txt).
	bad := append([]byte(nil), b...)
	off := 597*4096 + 41*1024
	copy(bad[off:], bytes.Repeat([]byte{0xff}, 1024))
	g, err := Open(ctx, bytes.NewReader(bad), int64(len(bad)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := filesystem.ReadFile(ctx, g, "File.txt"); err == nil {
		t.Error("damaged record read without error")
	}
	if b, err := filesystem.ReadFile(ctx, g, "Directory/File 1.txt"); err != nil || string(b) != "File 1 contents" {
		t.Errorf("neighbour: %q %v", b, err)
	}
	if _, err := g.ReadDir(ctx, "/"); err != nil {
		t.Error(err)
	}
}

var _ = io.EOF

func openFile(t testing.TB, p string) *FS {
	t.Helper()
	fh, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	fi, _ := fh.Stat()
	f, err := Open(context.Background(), fh, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMkntfsTree formats with mkntfs, fills the volume through ntfs-3g and
// compares every file with the source tree and with fls/icat.
func TestMkntfsTree(t *testing.T) {
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "mkntfs", "ntfs-3g", "fls", "icat")
	src := t.TempDir()
	fstest.MakeTree(t, src, fstest.TreeOptions{Files: 300, Symlinks: true, Hardlinks: true, Sparse: true, BigFile: 5 << 20})
	m := fstest.Manifest(t, src)
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "ntfs.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	fstest.Run(t, "truncate", "-s", "128M", img)
	fstest.Run(t, "mkntfs", "-F", "-Q", "-q", "-L", "REWIND", img)
	fstest.MountCopy(t, img, mnt, src, "ntfs-3g", img, mnt)
	f := openFile(t, img)
	if f.Label() != "REWIND" {
		t.Errorf("label %q", f.Label())
	}
	fstest.CompareManifest(t, f, m, fstest.Check{Symlinks: true, Hardlinks: true})
	fl, err := f.Open(context.Background(), "sparse.img")
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := fl.DataRanges(context.Background())
	var data int64
	for _, r := range rs {
		data += r.Len
	}
	if data >= fl.Size()/2 {
		t.Errorf("sparse.img: %d data bytes of %d (%v)", data, fl.Size(), rs)
	}
	fstest.CompareTSK(t, f, img, 0, true, tskSkip)
}
