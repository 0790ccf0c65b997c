package xfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// kEntry is what the mounted kernel XFS reports for one path.
type kEntry struct {
	st     unix.Statx_t
	target string             // symlink target
	sha    string             // content of a regular file
	ranges []filesystem.Range // SEEK_DATA/SEEK_HOLE map of a regular file
	names  []string           // directory entries in getdents order
}

// kernelImage formats an image with mkfs.xfs (extra options), mounts it
// through a loop device, lets populate fill it, unmounts it and returns
// what the kernel reports (see kernelView).
func kernelImage(t *testing.T, size string, mkfs []string, populate func(mnt string)) (string, map[string]*kEntry) {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "mkfs.xfs", "mount", "umount", "losetup")
	img := filepath.Join(t.TempDir(), "xfs.img")
	run(t, "truncate", "-s", size, img)
	run(t, "mkfs.xfs", append(append([]string{"-q", "-f", "-L", "REWIND"}, mkfs...), img)...)
	umount := mountImage(t, img, "rw")
	populate(filepath.Join(filepath.Dir(img), "mnt"))
	umount()
	return img, kernelView(t, img)
}

// mountImage loop-mounts img on the directory "mnt" next to it and
// returns the unmount function; a t.Cleanup unmounts and detaches the
// loop device if the test ends first, also on failure.
func mountImage(t *testing.T, img, opts string) (umount func()) {
	t.Helper()
	mnt := filepath.Join(filepath.Dir(img), "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
		detach(img)
	})
	run(t, "mount", "-t", "xfs", "-o", "loop,"+opts, img, mnt)
	return func() {
		run(t, "umount", mnt)
		mounted = false
		detach(img)
	}
}

// kernelView mounts img read-write (the kernel replays a dirty log),
// unmounts, then mounts it read-only (so no page cache hides unwritten
// extents) and records what the kernel reports for every path.
func kernelView(t *testing.T, img string) map[string]*kEntry {
	t.Helper()
	mountImage(t, img, "rw")()
	umount := mountImage(t, img, "ro,noatime")
	defer umount()
	return kernelManifest(t, filepath.Join(filepath.Dir(img), "mnt"))
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// detach removes loop devices still backed by img.
func detach(img string) {
	out, err := exec.Command("losetup", "-j", img).Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(dev, "/dev/loop") {
			_ = exec.Command("losetup", "-d", dev).Run()
		}
	}
}

// kernelManifest walks a mounted tree with statx, getdents, readlink,
// SEEK_DATA/SEEK_HOLE and read.
func kernelManifest(t *testing.T, root string) map[string]*kEntry {
	t.Helper()
	m := map[string]*kEntry{}
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(root, rel)
		ke := &kEntry{}
		mask := unix.STATX_BASIC_STATS | unix.STATX_BTIME
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, mask, &ke.st); err != nil {
			t.Fatalf("statx %s: %v", p, err)
		}
		m[rel] = ke
		switch ke.st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			tg, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			ke.target = tg
		case unix.S_IFREG:
			fh, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			ke.ranges = seekRanges(t, fh, int64(ke.st.Size))
			h := sha256.New()
			if _, err := io.Copy(h, fh); err != nil {
				t.Fatal(err)
			}
			fh.Close()
			ke.sha = hex.EncodeToString(h.Sum(nil))
		case unix.S_IFDIR:
			fh, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			ke.names, err = fh.Readdirnames(-1) // getdents order
			fh.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range ke.names {
				walk(strings.TrimPrefix(rel+"/"+n, "/"))
			}
		}
	}
	walk("")
	return m
}

// seekRanges maps a file's data with lseek(SEEK_DATA/SEEK_HOLE).
func seekRanges(t *testing.T, fh *os.File, size int64) []filesystem.Range {
	var out []filesystem.Range
	for off := int64(0); off < size; {
		d, err := unix.Seek(int(fh.Fd()), off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA %s: %v", fh.Name(), err)
		}
		h, err := unix.Seek(int(fh.Fd()), d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE %s: %v", fh.Name(), err)
		}
		out = append(out, filesystem.Range{Off: d, Len: h - d})
		off = h
	}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	return out
}

func kTime(ts unix.StatxTimestamp) time.Time { return filesystem.Unix(ts.Sec, int64(ts.Nsec)) }

// compareKernel checks that the reader shows exactly what the kernel
// showed: the same names in the same order, and for each entry its inode
// number, mode, link count, owner, size, four timestamps to the
// nanosecond, symlink target, content and data ranges.
func compareKernel(t *testing.T, f *FS, m map[string]*kEntry) (files, dirs int) {
	t.Helper()
	ctx := context.Background()
	var fs filesystem.FS = f
	for rel, ke := range m {
		if ke.st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		dirs++
		es, err := fs.ReadDir(ctx, "/"+rel)
		if err != nil {
			t.Errorf("ReadDir(%q): %v", rel, err)
			continue
		}
		var names []string
		for _, e := range es {
			names = append(names, e.Name)
		}
		if !slices.Equal(names, ke.names) {
			t.Errorf("ReadDir(%q): %d names %.200q, kernel lists %d %.200q", rel, len(names), names, len(ke.names), ke.names)
		}
		for _, e := range es {
			cp := strings.TrimPrefix(rel+"/"+e.Name, "/")
			if ck, ok := m[cp]; ok {
				checkEntry(t, cp, e, ck)
			}
		}
	}
	for rel, ke := range m {
		e, err := fs.Stat(ctx, "/"+rel)
		if err != nil {
			t.Errorf("Stat(%q): %v", rel, err)
			continue
		}
		if rel == "" {
			if e.Name != "/" {
				t.Errorf("root named %q", e.Name)
			}
		} else if e.Name != filepath.Base(rel) {
			t.Errorf("Stat(%q) named %q", rel, e.Name)
		}
		checkEntry(t, rel, e, ke)
		switch ke.st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			tg, err := fs.Readlink(ctx, rel)
			if err != nil || tg != ke.target {
				t.Errorf("Readlink(%q) = %.80q, %v; kernel %.80q", rel, tg, err, ke.target)
			}
		case unix.S_IFREG:
			files++
			fl, err := fs.Open(ctx, rel)
			if err != nil {
				t.Errorf("Open(%q): %v", rel, err)
				continue
			}
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(fl, 0, fl.Size())); err != nil {
				t.Errorf("read %q: %v", rel, err)
			} else if got := hex.EncodeToString(h.Sum(nil)); got != ke.sha {
				t.Errorf("%s: sha256 %s, kernel %s", rel, got, ke.sha)
			}
			rs, err := fl.DataRanges(ctx)
			if err != nil || !slices.Equal(rs, ke.ranges) {
				t.Errorf("%s: data ranges %v %v, kernel %v", rel, rs, err, ke.ranges)
			}
		}
	}
	return files, dirs
}

func checkEntry(t *testing.T, rel string, e filesystem.Entry, ke *kEntry) {
	t.Helper()
	st := &ke.st
	want := filesystem.Entry{
		Name: e.Name, Ino: st.Ino, Mode: filesystem.UnixMode(uint32(st.Mode)), Size: int64(st.Size),
		Nlink: st.Nlink, UID: st.Uid, GID: st.Gid,
		Mtime: kTime(st.Mtime), Atime: kTime(st.Atime), Ctime: kTime(st.Ctime), Btime: kTime(st.Btime),
	}
	if e != want {
		t.Errorf("%s:\n reader %+v\n kernel %+v", rel, e, want)
	}
}

// xfsdbLs lists a directory with xfs_db (names and inode numbers, in
// on-disk order, without "." and "..").
func xfsdbLs(t *testing.T, img, dir string) (names []string, inos []uint64) {
	t.Helper()
	out := run(t, "xfs_db", "-r", "-c", "path "+dir, "-c", "ls", img)
	for _, line := range strings.Split(out, "\n") {
		// "8          131                directory      0x0000002e   1 . (good)"
		f := strings.Fields(line)
		if len(f) < 7 || f[len(f)-1] != "(good)" {
			continue
		}
		n, _ := strconv.Atoi(f[4])
		ino, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("xfs_db line %q", line)
		}
		i := strings.Index(line, f[3]) + len(f[3])
		rest := strings.TrimLeft(line[i:], " ")
		rest = strings.TrimSuffix(strings.TrimPrefix(rest, f[4]+" "), " (good)")
		if len(rest) != n {
			t.Fatalf("xfs_db line %q: name of %d bytes, want %d", line, len(rest), n)
		}
		if rest == "." || rest == ".." {
			continue
		}
		names = append(names, rest)
		inos = append(inos, ino)
	}
	return names, inos
}

// compareXfsdb checks ReadDir of dir against xfs_db's listing.
func compareXfsdb(t *testing.T, f *FS, img, dir string) {
	t.Helper()
	names, inos := xfsdbLs(t, img, dir)
	es, err := f.ReadDir(context.Background(), dir)
	if err != nil {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	var gn []string
	var gi []uint64
	for _, e := range es {
		gn = append(gn, e.Name)
		gi = append(gi, e.Ino)
	}
	if !slices.Equal(gn, names) || !slices.Equal(gi, inos) {
		t.Errorf("ReadDir(%s): %d entries, xfs_db lists %d (first names %.100q vs %.100q)", dir, len(gn), len(names), gn, names)
	}
}

// xfsdbFormat returns the data fork format xfs_db reports for a path
// ("local", "extents", "btree").
func xfsdbFormat(t *testing.T, img, p string) string {
	t.Helper()
	out := run(t, "xfs_db", "-r", "-c", "path "+p, "-c", "print core.format", img)
	_, v, _ := strings.Cut(strings.TrimSpace(out), "(")
	return strings.TrimSuffix(v, ")")
}

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

// fillDir creates n one-byte files in dir (one block each, so the
// directory's blocks interleave with file data and fragment).
func fillDir(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("entry-%05d-ü", i)), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fragment makes two files whose blocks interleave (fallocate one block of
// each in turn), then writes all of a and every other block of b, so a is
// dense but fragmented and b keeps unwritten extents between written ones.
func fragment(t *testing.T, a, b string, blocks int, bs int64) {
	t.Helper()
	fa, err := os.Create(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Create(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	for i := 0; i < blocks; i++ {
		for _, fh := range []*os.File{fa, fb} {
			if err := unix.Fallocate(int(fh.Fd()), 0, int64(i)*bs, bs); err != nil {
				t.Fatal(err)
			}
		}
	}
	buf := make([]byte, bs)
	for i := 0; i < blocks; i++ {
		for j := range buf {
			buf[j] = byte(i*7 + j)
		}
		if _, err := fa.WriteAt(buf, int64(i)*bs); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := fb.WriteAt(bytes.Repeat([]byte{byte(i) | 1}, int(bs)), int64(i)*bs); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// BenchmarkList10k lists a 10,000-entry directory with every entry's
// attributes, cold: the reader opened afresh each time, and as the peer
// the kernel on a fresh mount of the same image (getdents + lstat, what
// `ls -l` does).
func BenchmarkList10k(b *testing.B) {
	testenv.NeedRoot(b)
	testenv.NeedTool(b, "mkfs.xfs", "mount", "umount", "losetup")
	dir := b.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	must(b, os.Mkdir(mnt, 0o755))
	run(b, "truncate", "-s", "300M", img)
	run(b, "mkfs.xfs", "-q", "-f", img)
	mounted := false
	b.Cleanup(func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
		detach(img)
	})
	mount := func(opts string) { run(b, "mount", "-o", "loop,"+opts, img, mnt); mounted = true }
	umount := func() { run(b, "umount", mnt); mounted = false; detach(img) }
	mount("rw")
	must(b, os.Mkdir(filepath.Join(mnt, "many"), 0o755))
	for i := 0; i < 10000; i++ {
		must(b, os.WriteFile(filepath.Join(mnt, "many", fmt.Sprintf("entry-%05d", i)), []byte{byte(i)}, 0o644))
	}
	umount()
	b.Run("reader", func(b *testing.B) {
		fh, err := os.Open(img)
		must(b, err)
		defer fh.Close()
		fi, _ := fh.Stat()
		for b.Loop() {
			f, err := Open(context.Background(), fh, fi.Size())
			must(b, err)
			es, err := f.ReadDir(context.Background(), "/many")
			if err != nil || len(es) != 10000 {
				b.Fatalf("%d entries, %v", len(es), err)
			}
		}
	})
	b.Run("kernel", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			mount("ro")
			b.StartTimer()
			names, err := os.ReadDir(filepath.Join(mnt, "many"))
			must(b, err)
			for _, n := range names {
				if _, err := os.Lstat(filepath.Join(mnt, "many", n.Name())); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			umount()
			b.StartTimer()
		}
	})
}

// dirForm names a directory's format from its data fork: shortform (in
// the inode), block (one block), leaf (data blocks and one leaf block at
// the 32 GiB leaf offset) or node (free-index blocks at 64 GiB too).
func dirForm(t *testing.T, f *FS, p string) string {
	t.Helper()
	in, _, err := f.lookup(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if in.format == fmtLocal {
		return "shortform"
	}
	ext, err := f.extents(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	leaf, free := uint64(dirLeafOffset)/uint64(f.sb.bs), uint64(2*dirLeafOffset)/uint64(f.sb.bs)
	last := ext[len(ext)-1].lblk
	switch {
	case last >= free:
		return "node"
	case last >= leaf:
		return "leaf"
	}
	return "block"
}

func checkDirForms(t *testing.T, f *FS, want map[string]string) {
	t.Helper()
	for p, w := range want {
		if got := dirForm(t, f, p); got != w {
			t.Errorf("%s: %s directory, want %s (the test no longer covers it)", p, got, w)
		}
	}
}
