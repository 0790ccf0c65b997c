// Package fstest holds the checks the file system reader tests share: a
// differential comparison against The Sleuth Kit (fls/icat), a generator of
// test trees with a reference manifest taken from the real source
// directory, and a walker comparing a reader with that manifest.
package fstest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

// TSKEntry is one line of `fls -r -p`.
type TSKEntry struct {
	Type  byte   // 'r', 'd', 'l', ... (the meta type, after the slash)
	Inode string // "13" or "41-128-1"
	Path  string
}

// FLS runs `fls -r -p` on an image (with -o sector offset) and returns its
// allocated, non-virtual entries.
func FLS(t testing.TB, image string, sectorOff int64, extra ...string) []TSKEntry {
	t.Helper()
	args := append([]string{"-r", "-p", "-o", strconv.FormatInt(sectorOff, 10)}, extra...)
	out, err := exec.Command("fls", append(args, image)...).Output()
	if err != nil {
		t.Fatalf("fls %v: %v", args, err)
	}
	var es []TSKEntry
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		tab := strings.IndexByte(line, '\t')
		if tab < 0 || len(line) < 4 {
			continue
		}
		head, p := line[:tab], line[tab+1:]
		f := strings.Fields(head)
		if len(f) < 2 || strings.Contains(head, "*") || strings.HasPrefix(f[0], "v") || strings.HasPrefix(f[0], "V") || strings.HasSuffix(p, "(Volume Label Entry)") {
			continue // deleted or virtual
		}
		ino := strings.TrimSuffix(f[len(f)-1], ":")
		ino = strings.TrimSuffix(ino, "(realloc)")
		typ := f[0][len(f[0])-1]
		es = append(es, TSKEntry{Type: typ, Inode: ino, Path: p})
	}
	return es
}

// ICAT returns the content of an inode as icat prints it.
func ICAT(t testing.TB, image string, sectorOff int64, inode string) []byte {
	t.Helper()
	out, err := exec.Command("icat", "-o", strconv.FormatInt(sectorOff, 10), image, inode).Output()
	if err != nil {
		t.Fatalf("icat %s: %v", inode, err)
	}
	return out
}

// Walk lists every path in f (without the root) with its entry.
func Walk(ctx context.Context, t testing.TB, f filesystem.FS) map[string]filesystem.Entry {
	t.Helper()
	out := map[string]filesystem.Entry{}
	var walk func(string)
	walk = func(p string) {
		es, err := f.ReadDir(ctx, p)
		if err != nil {
			t.Errorf("ReadDir(%q): %v", p, err)
			return
		}
		for _, e := range es {
			cp := strings.TrimPrefix(p+"/"+e.Name, "/")
			out[cp] = e
			if e.IsDir() {
				walk("/" + cp)
			}
		}
	}
	walk("")
	return out
}

// CompareTSK checks that f lists exactly the allocated names fls lists
// (skip reports names to leave out, such as NTFS metafiles), with the same
// types, and that every regular file reads exactly as icat prints it.
// With sameIno the inode numbers must match too.
func CompareTSK(t *testing.T, f filesystem.FS, image string, sectorOff int64, sameIno bool, skip func(TSKEntry) bool) {
	t.Helper()
	ctx := context.Background()
	tsk := FLS(t, image, sectorOff)
	ours := Walk(ctx, t, f)
	seen := map[string]bool{}
	checked := 0
	for _, te := range tsk {
		if skip != nil && skip(te) {
			continue
		}
		seen[te.Path] = true
		e, ok := ours[te.Path]
		if !ok {
			t.Errorf("fls lists %q (%c %s); reader does not", te.Path, te.Type, te.Inode)
			continue
		}
		var want os.FileMode
		switch te.Type {
		case 'd':
			want = os.ModeDir
		case 'l':
			want = os.ModeSymlink
		case 'r':
			want = 0
		default:
			continue
		}
		if te.Type == 'r' && e.Mode.Type() == os.ModeSymlink {
			// Interix symlinks (ntfs-3g) are regular files to TSK.
			continue
		}
		if e.Mode.Type() != want {
			t.Errorf("%s: type %v, fls says %c", te.Path, e.Mode.Type(), te.Type)
		}
		if sameIno {
			num, _, _ := strings.Cut(te.Inode, "-")
			if strconv.FormatUint(e.Ino, 10) != num {
				t.Errorf("%s: inode %d, fls says %s", te.Path, e.Ino, te.Inode)
			}
		}
		if te.Type == 'r' {
			got, err := filesystem.ReadFile(ctx, f, te.Path)
			if err != nil {
				t.Errorf("read %s: %v", te.Path, err)
				continue
			}
			exp := ICAT(t, image, sectorOff, te.Inode)
			if !bytes.Equal(got, exp) {
				t.Errorf("%s: content differs from icat (%d vs %d bytes)", te.Path, len(got), len(exp))
			}
			if e.Size != int64(len(exp)) {
				t.Errorf("%s: size %d, icat gives %d bytes", te.Path, e.Size, len(exp))
			}
			checked++
		}
		if te.Type == 'l' {
			tgt, err := f.Readlink(ctx, te.Path)
			exp := ICAT(t, image, sectorOff, te.Inode)
			if len(exp) > 0 && len(bytes.Trim(exp, "\x00")) == 0 {
				// icat prints zeros for ext4 fast symlinks (target in the
				// inode): only the length can be compared.
				exp = []byte(tgt)[:min(len(tgt), len(exp))]
				if len(tgt) != len(exp) {
					exp = nil
				}
			}
			if err != nil || tgt != string(exp) {
				t.Errorf("%s: readlink %q, %v; icat %q", te.Path, tgt, err, exp)
			}
		}
	}
	for p := range ours {
		if !seen[p] {
			te := TSKEntry{Path: p}
			if skip != nil && skip(te) {
				continue
			}
			t.Errorf("reader lists %q; fls does not", p)
		}
	}
	t.Logf("compared %d names (%d file contents) with fls/icat", len(seen), checked)
}

// ManifestEntry is the reference for one path of a source tree.
type ManifestEntry struct {
	Mode   os.FileMode
	Size   int64
	Mtime  time.Time
	SHA256 string
	Target string // symlink target
	Link   string // first path sharing this inode (hard links)
}

// Manifest is taken from a real directory with lstat.
func Manifest(t testing.TB, root string) map[string]ManifestEntry {
	t.Helper()
	m := map[string]ManifestEntry{}
	inodes := map[uint64]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		me := ManifestEntry{Mode: fi.Mode(), Size: fi.Size(), Mtime: fi.ModTime()}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			me.Target, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			me.SHA256 = hex.EncodeToString(s[:])
			if ino, nlink := inodeOf(fi); nlink > 1 {
				if first, ok := inodes[ino]; ok {
					me.Link = first
				} else {
					inodes[ino] = rel
				}
			}
		}
		m[rel] = me
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Check says which attributes a file system keeps.
type Check struct {
	Mode      bool // permission bits
	Symlinks  bool
	Hardlinks bool
	MtimeGran time.Duration // 1s, or 2s for FAT
	DirSize   bool
	SkipRoot  func(string) bool // paths the file system adds (lost+found)
}

// CompareManifest checks every path of f against the manifest.
func CompareManifest(t *testing.T, f filesystem.FS, m map[string]ManifestEntry, c Check) {
	t.Helper()
	ctx := context.Background()
	ours := Walk(ctx, t, f)
	for p := range ours {
		if c.SkipRoot != nil && c.SkipRoot(p) {
			continue
		}
		if _, ok := m[p]; !ok {
			t.Errorf("reader lists %q, not in the source tree", p)
		}
	}
	files := 0
	for p, me := range m {
		e, ok := ours[p]
		if !ok {
			t.Errorf("missing %q", p)
			continue
		}
		if me.Mode.Type() != e.Mode.Type() {
			t.Errorf("%s: type %v, want %v", p, e.Mode.Type(), me.Mode.Type())
			continue
		}
		if c.Mode && me.Mode.Perm() != e.Mode.Perm() {
			t.Errorf("%s: mode %v, want %v", p, e.Mode, me.Mode)
		}
		if me.Mode.Type() == 0 || (me.Mode.Type() == os.ModeSymlink && c.Symlinks) {
			g := c.MtimeGran
			if g == 0 {
				g = time.Second
			}
			d := e.Mtime.Sub(me.Mtime.Truncate(g))
			if d < 0 || d >= g {
				t.Errorf("%s: mtime %v, want %v", p, e.Mtime, me.Mtime)
			}
		}
		switch {
		case me.Mode.Type() == os.ModeSymlink:
			tgt, err := f.Readlink(ctx, p)
			if err != nil || tgt != me.Target {
				t.Errorf("%s: readlink %q %v, want %q", p, tgt, err, me.Target)
			}
		case me.Mode.IsRegular():
			files++
			if e.Size != me.Size {
				t.Errorf("%s: size %d, want %d", p, e.Size, me.Size)
			}
			fl, err := f.Open(ctx, p)
			if err != nil {
				t.Errorf("open %s: %v", p, err)
				continue
			}
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(fl, 0, fl.Size())); err != nil {
				t.Errorf("read %s: %v", p, err)
				continue
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != me.SHA256 {
				t.Errorf("%s: sha256 %s, want %s", p, got, me.SHA256)
			}
			if c.Hardlinks && me.Link != "" {
				if o := ours[me.Link]; o.Ino != e.Ino || e.Nlink < 2 {
					t.Errorf("%s: hard link to %s: inode %d/%d nlink %d", p, me.Link, e.Ino, o.Ino, e.Nlink)
				}
			}
		}
	}
	t.Logf("compared %d paths (%d files) with the source manifest", len(m), files)
}

// TreeOptions shapes MakeTree.
type TreeOptions struct {
	Files     int  // regular files (a few hundred)
	Symlinks  bool // relative, absolute, dangling and chained symlinks
	Hardlinks bool
	Sparse    bool // a sparse file with holes
	FATNames  bool // only names mtools can write (no characters beyond the BMP)
	EvenTimes bool // mtimes on even seconds (FAT)
	BigFile   int64
}

// MakeTree fills dir with a reproducible tree: nested directories 12
// levels deep, Unicode names, files from 0 bytes up, and the options' extras.
func MakeTree(t testing.TB, dir string, o TreeOptions) {
	t.Helper()
	rng := rand.New(rand.NewSource(42))
	must := func(err error) {
		if err != nil {
			t.Helper()
			t.Fatal(err)
		}
	}
	names := []string{"plain", "Grüße", "日本語のファイル", "emoji-😀", "ünïcødé Ω", "space name", "x.tar.gz", "résumé"}
	if o.FATNames {
		// mtools writes only BMP characters into long names
		names[3] = "snow-☃"
	}
	dirs := []string{""}
	deep := ""
	for i := 0; i < 12; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("level%02d-%s", i, names[i%len(names)]))
		must(os.MkdirAll(filepath.Join(dir, deep), 0o755))
		dirs = append(dirs, deep)
	}
	for i := 0; i < 10; i++ {
		d := fmt.Sprintf("dir%02d", i)
		must(os.MkdirAll(filepath.Join(dir, d, "sub"), 0o750))
		dirs = append(dirs, d, filepath.Join(d, "sub"))
	}
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	var files []string
	for i := 0; i < o.Files; i++ {
		d := dirs[rng.Intn(len(dirs))]
		nm := fmt.Sprintf("%s-%03d.dat", names[rng.Intn(len(names))], i)
		if i%7 == 0 {
			nm = fmt.Sprintf("f%d", i)
		}
		var size int
		switch r := rng.Intn(10); {
		case r < 2:
			size = rng.Intn(64)
		case r < 7:
			size = rng.Intn(8192)
		case r < 9:
			size = rng.Intn(200000)
		default:
			size = rng.Intn(2 << 20)
		}
		if i == 0 {
			size = 0
		}
		b := make([]byte, size)
		rng.Read(b)
		if i%5 == 0 {
			for j := range b {
				b[j] = byte('a' + j%26) // compressible text too
			}
		}
		p := filepath.Join(dir, d, nm)
		must(os.WriteFile(p, b, 0o644))
		if i%3 == 0 {
			must(os.Chmod(p, 0o600))
		}
		if i%11 == 0 {
			must(os.Chmod(p, 0o755))
		}
		files = append(files, p)
	}
	if o.BigFile > 0 {
		p := filepath.Join(dir, "big.bin")
		f, err := os.Create(p)
		must(err)
		buf := make([]byte, 1<<20)
		for w := int64(0); w < o.BigFile; w += int64(len(buf)) {
			rng.Read(buf)
			_, err := f.Write(buf[:min(int64(len(buf)), o.BigFile-w)])
			must(err)
		}
		must(f.Close())
		files = append(files, p)
	}
	if o.Sparse {
		p := filepath.Join(dir, "sparse.img")
		f, err := os.Create(p)
		must(err)
		must(f.Truncate(16 << 20))
		_, err = f.WriteAt([]byte("start"), 0)
		must(err)
		_, err = f.WriteAt(bytes.Repeat([]byte("middle"), 1000), 8<<20)
		must(err)
		_, err = f.WriteAt([]byte("end"), 16<<20-3)
		must(err)
		must(f.Close())
		files = append(files, p)
		p2 := filepath.Join(dir, "dir01", "all-hole.bin")
		must(os.WriteFile(p2, nil, 0o644))
		must(os.Truncate(p2, 3<<20))
		files = append(files, p2)
	}
	if o.Hardlinks {
		must(os.Link(files[1], filepath.Join(dir, "hardlink-a")))
		must(os.Link(files[1], filepath.Join(dir, "dir02", "hardlink-b")))
		must(os.Link(files[2], filepath.Join(dir, deep, "hardlink-deep")))
	}
	if o.Symlinks {
		must(os.Symlink("dir00/sub", filepath.Join(dir, "link-dir")))
		rel, _ := filepath.Rel(filepath.Join(dir, "dir03"), files[3])
		must(os.Symlink(rel, filepath.Join(dir, "dir03", "link-rel")))
		must(os.Symlink("/etc/passwd", filepath.Join(dir, "link-abs")))
		must(os.Symlink("does/not/exist", filepath.Join(dir, "link-dangling")))
		must(os.Symlink("link-dir", filepath.Join(dir, "link-chain")))
		must(os.Symlink(strings.Repeat("long-target/", 30)+"end", filepath.Join(dir, "link-slow")))
		must(os.Symlink("日本語", filepath.Join(dir, "link-unicode")))
	}
	// mtimes last, deepest first, so directory writes do not change them
	var all []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != dir {
			all = append(all, p)
		}
		return nil
	})
	sort.Sort(sort.Reverse(sort.StringSlice(all)))
	for i, p := range all {
		mt := base.Add(time.Duration(i*7919) * time.Second)
		if o.EvenTimes {
			mt = mt.Truncate(2 * time.Second)
		}
		fi, _ := os.Lstat(p)
		if fi.Mode()&os.ModeSymlink != 0 {
			ts := []syscall.Timespec{syscall.NsecToTimespec(mt.UnixNano()), syscall.NsecToTimespec(mt.UnixNano())}
			_ = lutimes(p, ts)
			continue
		}
		must(os.Chtimes(p, mt, mt))
	}
}

// Run runs a command and fails the test with its output on error.
func Run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Exercise walks f (up to maxEntries entries), stats, reads links and
// reads up to 64 KiB of every file, ignoring errors: fuzz targets use it to
// reach every code path that corrupted input can steer.
func Exercise(ctx context.Context, f filesystem.FS, maxEntries int) {
	seen := 0
	buf := make([]byte, 64<<10)
	var walk func(p string, depth int)
	walk = func(p string, depth int) {
		if depth > 16 {
			return
		}
		es, err := f.ReadDir(ctx, p)
		if err != nil {
			return
		}
		for _, e := range es {
			if seen++; seen > maxEntries {
				return
			}
			cp := p + "/" + e.Name
			_, _ = f.Stat(ctx, cp)
			switch {
			case e.IsDir():
				walk(cp, depth+1)
			case e.Mode&os.ModeSymlink != 0:
				_, _ = f.Readlink(ctx, cp)
			default:
				if fl, err := f.Open(ctx, cp); err == nil {
					_, _ = fl.ReadAtContext(ctx, buf, 0)
					if fl.Size() > int64(len(buf)) {
						_, _ = fl.ReadAtContext(ctx, buf[:4096], fl.Size()-4096)
					}
					_, _ = fl.DataRanges(ctx)
				}
			}
		}
	}
	_, _ = f.Root(ctx)
	walk("", 0)
	_, _ = f.Stat(ctx, "/does/not/exist")
}
