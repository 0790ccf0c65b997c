package ext4

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

func openImage(t *testing.T, p string) *FS {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	fs, err := Open(context.Background(), f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

var fixtures = []string{"ext4/dissect_ext4_journal_xattr.bin", "ext4/dissect_ext4_symlink_test1.bin"}

func TestFixturesMatchSleuthKit(t *testing.T) {
	testenv.NeedTool(t, "fls", "icat")
	for _, rel := range fixtures {
		t.Run(filepath.Base(rel), func(t *testing.T) {
			p := testenv.Fixture(t, rel)
			fstest.CompareTSK(t, openImage(t, p), p, 0, true, nil)
		})
	}
}

func TestFixtureFacts(t *testing.T) {
	ctx := context.Background()
	f := openImage(t, testenv.Fixture(t, fixtures[0]))
	es, err := f.ReadDir(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "lost+found,test_file,xattr_cap" {
		t.Errorf("root lists %v", names)
	}
	b, err := filesystem.ReadFile(ctx, f, "/test_file")
	if err != nil || string(b) != "dissect test file in ext4\n" {
		t.Errorf("test_file = %q, %v", b, err)
	}
	e, _ := f.Stat(ctx, "test_file")
	if want := time.Date(2018, 5, 29, 8, 57, 58, 0, time.UTC); !e.Atime.Truncate(time.Second).Equal(want) {
		t.Errorf("atime %v, want %v", e.Atime, want)
	}
	if f.Type() != "ext4" {
		t.Errorf("type %s", f.Type())
	}

	s := openImage(t, testenv.Fixture(t, fixtures[1]))
	p, e, err := filesystem.Resolve(ctx, s, "/path/to/dir/with/file.ext")
	if err != nil || p != "/other/path/target/to/my/file.ext" {
		t.Fatalf("resolve: %q %v", p, err)
	}
	b, err = filesystem.ReadFile(ctx, s, p)
	if err != nil || string(b) != "resolved!\n" || e.Size != 10 {
		t.Errorf("resolved file %q %v", b, err)
	}
	if tg, err := s.Readlink(ctx, "/path/to/dir/with/file.ext"); err != nil || tg != "../../../../other/path/source/to/my/file.ext" {
		t.Errorf("readlink %q %v", tg, err)
	}
}

// mkfs builds an image of src with mkfs.ext4 -d and the given options.
func mkfs(t *testing.T, src string, size string, opts ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	args := append([]string{"-q", "-F", "-d", src}, opts...)
	args = append(args, img, size)
	fstest.Run(t, "mkfs.ext4", args...)
	return img
}

func TestMkfsTree(t *testing.T) {
	testenv.NeedTool(t, "mkfs.ext4", "e2fsck", "fls", "icat")
	src := t.TempDir()
	fstest.MakeTree(t, src, fstest.TreeOptions{Files: 300, Symlinks: true, Hardlinks: true, Sparse: true, BigFile: 5 << 20})
	m := fstest.Manifest(t, src)
	variants := map[string][]string{
		"ext4-4k":     {"-b", "4096"},
		"ext4-1k":     {"-b", "1024"},
		"ext4-inline": {"-b", "4096", "-I", "256", "-O", "inline_data"},
		"ext4-64bit":  {"-b", "4096", "-O", "64bit,metadata_csum,^has_journal"},
		"ext3":        {"-t", "ext3", "-b", "1024"},
		"ext2":        {"-t", "ext2", "-b", "4096", "-I", "128"},
	}
	for nm, opts := range variants {
		t.Run(nm, func(t *testing.T) {
			img := mkfs(t, src, "96M", opts...)
			f := openImage(t, img)
			fstest.CompareManifest(t, f, m, fstest.Check{Mode: true, Symlinks: true, Hardlinks: true,
				SkipRoot: func(p string) bool { return p == "lost+found" }})
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
				t.Errorf("sparse.img: %d data bytes of %d, ranges %v", data, fl.Size(), rs)
			}
			if nm == "ext4-4k" || nm == "ext2" || nm == "ext4-inline" {
				fstest.CompareTSK(t, f, img, 0, true, nil)
			}
		})
	}
}

// TestHtreeDirectory makes a 10,000-entry directory, lets e2fsck -D index
// it, and checks every name is found by listing and by lookup.
func TestHtreeDirectory(t *testing.T) {
	testenv.NeedTool(t, "mkfs.ext4", "e2fsck")
	img, names := bigDirImage(t, 10000)
	f := openImage(t, img)
	ctx := context.Background()
	in, _, err := f.lookup(ctx, "/big")
	if err != nil {
		t.Fatal(err)
	}
	if in.flags&flagIndex == 0 {
		t.Errorf("directory is not htree-indexed (flags %#x)", in.flags)
	}
	es, err := f.ReadDir(ctx, "/big")
	if err != nil || len(es) != len(names) {
		t.Fatalf("ReadDir: %d entries, %v", len(es), err)
	}
	for _, n := range names[:100] {
		if _, err := f.Stat(ctx, "/big/"+n); err != nil {
			t.Error(err)
		}
	}
}

func bigDirImage(t testing.TB, n int) (string, []string) {
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "big"), 0o755)
	var names []string
	for i := 0; i < n; i++ {
		nm := "entry-with-a-longish-name-" + strings.Repeat("x", i%20) + "-" + itoa(i)
		names = append(names, nm)
		if err := os.WriteFile(filepath.Join(src, "big", nm), []byte(nm), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(t.TempDir(), "big.img")
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img, "64M").CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	// e2fsck -fD returns 1 when it optimised directories.
	out, err = exec.Command("e2fsck", "-fyD", img).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() > 1) {
		t.Fatalf("e2fsck: %v %s", err, out)
	}
	return img, names
}

func itoa(i int) string { return string(bytes.TrimSpace([]byte(strings.TrimSpace(fmtInt(i))))) }

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestCorruptInodeKeepsRestBrowsable(t *testing.T) {
	ctx := context.Background()
	b, err := os.ReadFile(testenv.Fixture(t, fixtures[0]))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(ctx, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	in, _, err := f.lookup(ctx, "/test_file")
	if err != nil {
		t.Fatal(err)
	}
	// Smash the extent header of test_file's inode on a copy.
	g, idx := (in.ino-1)/f.ipg, (in.ino-1)%f.ipg
	off := int64(f.inodeTables[g])*f.bs + int64(idx)*int64(f.inodeSize)
	bad := append([]byte(nil), b...)
	copy(bad[off+40:], []byte{0xde, 0xad, 0xbe, 0xef})
	f2, err := Open(ctx, bytes.NewReader(bad), int64(len(bad)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f2.Open(ctx, "/test_file"); err == nil || !strings.Contains(err.Error(), "extent") {
		t.Errorf("damaged file opened: %v", err)
	}
	if es, err := f2.ReadDir(ctx, "/"); err != nil || len(es) != 3 {
		t.Errorf("root after damage: %v %v", es, err)
	}
}
