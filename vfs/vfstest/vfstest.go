// Package vfstest is the conformance suite of the time-travel tree: the
// same checks run against the pure vfs API (Direct) and through a real
// mount (Dir), over a repository whose expected contents are known
// (Expect, built by BuildExt4 from real file systems).
package vfstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/vfs"
)

// Info is what the suite sees of a node.
type Info struct {
	Name  string
	Ino   uint64
	Mode  os.FileMode
	Size  int64
	Nlink uint32
	Mtime time.Time
}

// Tree is the tree under test, by slash-separated paths from its root.
// Lstat and Readlink do not follow a final symbolic link; symbolic links
// the tree makes up (latest, typed times) are followed in the middle of a
// path.
type Tree interface {
	Lstat(p string) (Info, error)
	ReadDir(p string) ([]Info, error)
	Readlink(p string) (string, error)
	// Open returns a reader of a regular file and its size.
	Open(p string) (io.ReaderAt, int64, func() error, error)
	// Errno maps an error of this tree to the error number it stands for.
	Errno(err error) vfs.Errno
}

// Point is what one point of the repository must show.
type Point struct {
	Machine, Volume string
	Name            string    // directory name of the point
	Time            time.Time // the point's time
	DiskSHA256      string    // sha256 of the raw volume
	DiskSize        int64
	Manifest        map[string]fstest.ManifestEntry // files/ as the real file system had it
	Check           fstest.Check
	// Damaged lists paths under files/ that must fail with EIO on open;
	// everything else must still match the manifest.
	Damaged []string
}

// Expect is a repository's expected contents, points oldest first.
type Expect struct {
	Points []Point
}

// RunRepository checks a tree of a whole repository.
func RunRepository(t *testing.T, tr Tree, e Expect) {
	t.Run("layout", func(t *testing.T) { checkLayout(t, tr, e) })
	for i, p := range e.Points {
		dir := "/" + p.Machine + "/" + p.Volume + "/" + p.Name
		t.Run(p.Volume+"/"+p.Name, func(t *testing.T) {
			if len(p.Damaged) > 0 {
				checkDamagedDisk(t, tr, dir)
			} else {
				checkDisks(t, tr, dir, p)
				checkTyped(t, tr, e, i)
			}
			checkFiles(t, tr, dir+"/"+vfs.FilesDir, p)
		})
	}
	t.Run("errors", func(t *testing.T) { checkErrors(t, tr, e) })
}

// RunPoint checks a tree that is one point's file tree at its root.
func RunPoint(t *testing.T, tr Tree, p Point) {
	checkFiles(t, tr, "", p)
}

func checkLayout(t *testing.T, tr Tree, e Expect) {
	machines := map[string]map[string][]Point{}
	for _, p := range e.Points {
		if machines[p.Machine] == nil {
			machines[p.Machine] = map[string][]Point{}
		}
		machines[p.Machine][p.Volume] = append(machines[p.Machine][p.Volume], p)
	}
	root, err := tr.ReadDir("/")
	if err != nil {
		t.Fatalf("list /: %v", err)
	}
	for m, vols := range machines {
		if !hasDir(root, m) {
			t.Errorf("/ lists %v, not machine %s", names(root), m)
		}
		vl, err := tr.ReadDir("/" + m)
		if err != nil {
			t.Fatalf("list /%s: %v", m, err)
		}
		for v, ps := range vols {
			if !hasDir(vl, v) {
				t.Errorf("/%s lists %v, not volume %s", m, names(vl), v)
			}
			dir := "/" + m + "/" + v
			pl, err := tr.ReadDir(dir)
			if err != nil {
				t.Fatalf("list %s: %v", dir, err)
			}
			for _, p := range ps {
				if !hasDir(pl, p.Name) {
					t.Errorf("%s lists %v, not point %s", dir, names(pl), p.Name)
				}
				if _, err := time.Parse(time.RFC3339Nano, p.Name); err != nil {
					t.Errorf("point name %q is not RFC 3339: %v", p.Name, err)
				}
				st, err := tr.Lstat(dir + "/" + p.Name)
				if err != nil || !st.Mode.IsDir() {
					t.Errorf("lstat %s/%s: %v %v", dir, p.Name, st.Mode, err)
				} else if !st.Mtime.Truncate(time.Second).Equal(p.Time.Truncate(time.Second)) {
					t.Errorf("%s/%s: mtime %v, want the point's time %v", dir, p.Name, st.Mtime, p.Time)
				}
			}
			newest := ps[len(ps)-1].Name
			if tg, err := tr.Readlink(dir + "/" + vfs.LatestDir); err != nil || tg != newest {
				t.Errorf("readlink %s/latest = %q %v, want %q", dir, tg, err, newest)
			}
			st, err := tr.Lstat(dir + "/" + vfs.LatestDir)
			if err != nil || st.Mode&os.ModeSymlink == 0 {
				t.Errorf("lstat %s/latest: %v %v, want a symbolic link", dir, st.Mode, err)
			}
			// through the link
			if _, err := tr.Lstat(dir + "/" + vfs.LatestDir + "/" + vfs.DiskImg); err != nil {
				t.Errorf("lstat %s/latest/disk.img: %v", dir, err)
			}
		}
	}
}

func hasDir(es []Info, name string) bool {
	for _, e := range es {
		if e.Name == name {
			return true
		}
	}
	return false
}

func names(es []Info) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

func sum(t *testing.T, tr Tree, p string) (string, int64, []byte) {
	t.Helper()
	r, size, closeFn, err := tr.Open(p)
	if err != nil {
		t.Errorf("open %s: %v", p, err)
		return "", 0, nil
	}
	defer closeFn()
	h := sha256.New()
	head := make([]byte, min(size, 4096))
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		t.Errorf("read %s: %v", p, err)
	}
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		t.Errorf("read %s: %v", p, err)
		return "", size, head
	}
	return hex.EncodeToString(h.Sum(nil)), size, head
}

func checkDisks(t *testing.T, tr Tree, dir string, p Point) {
	es, err := tr.ReadDir(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	for _, n := range []string{vfs.DiskImg, vfs.DiskVHD, vfs.DiskVMDK, vfs.FilesDir} {
		if !hasDir(es, n) {
			t.Errorf("%s lists %v, not %s", dir, names(es), n)
		}
	}
	got, size, _ := sum(t, tr, dir+"/"+vfs.DiskImg)
	if got != p.DiskSHA256 || size != p.DiskSize {
		t.Errorf("%s/disk.img: sha256 %s size %d, want %s %d", dir, got, size, p.DiskSHA256, p.DiskSize)
	}
	st, err := tr.Lstat(dir + "/" + vfs.DiskImg)
	if err != nil || st.Size != p.DiskSize || !st.Mode.IsRegular() {
		t.Errorf("lstat %s/disk.img: %+v %v", dir, st, err)
	}
	// disk.vhd: the raw disk, then a footer
	r, vsize, closeFn, err := tr.Open(dir + "/" + vfs.DiskVHD)
	if err != nil {
		t.Errorf("open disk.vhd: %v", err)
	} else {
		padded := (p.DiskSize + 511) &^ 511
		if vsize != padded+512 {
			t.Errorf("disk.vhd: size %d, want %d", vsize, padded+512)
		}
		foot := make([]byte, 512)
		if _, err := r.ReadAt(foot, vsize-512); err != nil && err != io.EOF {
			t.Errorf("read disk.vhd footer: %v", err)
		} else if !bytes.HasPrefix(foot, []byte("conectix")) {
			t.Errorf("disk.vhd footer starts %q", foot[:8])
		}
		h := sha256.New()
		io.Copy(h, io.NewSectionReader(r, 0, p.DiskSize))
		if hex.EncodeToString(h.Sum(nil)) != p.DiskSHA256 {
			t.Errorf("disk.vhd: data differs from the volume")
		}
		closeFn()
	}
	_, _, head := sum(t, tr, dir+"/"+vfs.DiskVMDK)
	if !bytes.HasPrefix(head, []byte("# Disk DescriptorFile")) || !bytes.Contains(head, []byte(`"disk.img"`)) {
		t.Errorf("disk.vmdk: not a descriptor naming disk.img:\n%s", head)
	}
}

// checkDamagedDisk reads a disk.img with a damaged block in the repository:
// EIO, never wrong data.
func checkDamagedDisk(t *testing.T, tr Tree, dir string) {
	r, size, closeFn, err := tr.Open(dir + "/" + vfs.DiskImg)
	if err != nil {
		t.Fatalf("open %s/disk.img: %v", dir, err)
	}
	defer closeFn()
	_, err = io.Copy(io.Discard, io.NewSectionReader(r, 0, size))
	if n := tr.Errno(err); n != vfs.EIO {
		t.Errorf("reading %s/disk.img with a damaged block: %v (errno %d), want EIO", dir, err, n)
	}
}

func checkFiles(t *testing.T, tr Tree, dir string, p Point) {
	st, err := tr.Lstat(dir)
	if dir != "" && (err != nil || !st.Mode.IsDir()) {
		t.Fatalf("lstat %s: %v %v", dir, st.Mode, err)
	}
	damaged := map[string]bool{}
	for _, d := range p.Damaged {
		damaged[d] = true
		_, _, closeFn, err := tr.Open(dir + "/" + d)
		if err == nil {
			closeFn()
			// a reader may notice the damage on read rather than open
			r, size, closeFn, err2 := tr.Open(dir + "/" + d)
			if err2 == nil {
				_, err = io.Copy(io.Discard, io.NewSectionReader(r, 0, max(size, 1)))
				closeFn()
			}
		}
		if err == nil {
			t.Errorf("damaged file %s reads without an error", d)
		} else if n := tr.Errno(err); n != vfs.EIO {
			t.Errorf("damaged file %s: error %v (errno %d), want EIO", d, err, n)
		}
	}
	m := map[string]fstest.ManifestEntry{}
	for k, v := range p.Manifest {
		if !damaged[k] {
			m[k] = v
		}
	}
	c := p.Check
	skip := c.SkipRoot
	c.SkipRoot = func(s string) bool { return damaged[s] || (skip != nil && skip(s)) }
	fstest.CompareManifest(t, &treeFS{tr: tr, root: dir}, m, c)
}

func checkTyped(t *testing.T, tr Tree, e Expect, i int) {
	p := e.Points[i]
	dir := "/" + p.Machine + "/" + p.Volume
	var typed []string
	next := time.Time{}
	if i+1 < len(e.Points) {
		next = e.Points[i+1].Time
	}
	if i+1 < len(e.Points) && (e.Points[i+1].Machine != p.Machine || e.Points[i+1].Volume != p.Volume) {
		next = time.Time{}
	}
	// Times from this point's to just before the next one resolve to it.
	for _, tm := range []time.Time{p.Time, p.Time.Add(time.Nanosecond), p.Time.Add(999 * time.Microsecond)} {
		if !next.IsZero() && !tm.Before(next) {
			continue
		}
		typed = append(typed, tm.UTC().Format(time.RFC3339Nano))
	}
	if next.IsZero() || next.Sub(p.Time) > 2*time.Second {
		s := p.Time.Add(time.Second).UTC().Truncate(time.Second)
		if next.IsZero() || s.Before(next) {
			typed = append(typed, s.Format("2006-01-02T15:04:05Z"), s.Format("2006-01-02 15:04:05Z"), s.In(time.FixedZone("", 3600)).Format(time.RFC3339))
		}
	}
	for _, name := range typed {
		tg, err := tr.Readlink(dir + "/" + name)
		if err != nil || tg != p.Name {
			t.Errorf("readlink %s/%s = %q %v, want %q", dir, name, tg, err, p.Name)
			continue
		}
		if got, _, _ := sum(t, tr, dir+"/"+name+"/"+vfs.DiskImg); got != p.DiskSHA256 {
			t.Errorf("%s/%s/disk.img is not the point's volume", dir, name)
		}
	}
	if i == 0 || e.Points[i-1].Volume != p.Volume || e.Points[i-1].Machine != p.Machine {
		before := p.Time.Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)
		if _, err := tr.Lstat(dir + "/" + before); tr.Errno(err) != vfs.ENOENT {
			t.Errorf("lstat %s/%s (before the first point): %v, want ENOENT", dir, before, err)
		}
	}
}

func checkErrors(t *testing.T, tr Tree, e Expect) {
	p := e.Points[0]
	dir := "/" + p.Machine + "/" + p.Volume + "/" + p.Name
	for _, c := range []struct {
		path string
		want vfs.Errno
	}{
		{"/no-such-machine", vfs.ENOENT},
		{"/" + p.Machine + "/no-such-volume", vfs.ENOENT},
		{"/" + p.Machine + "/" + p.Volume + "/not-a-time", vfs.ENOENT},
		{"/" + p.Machine + "/" + p.Volume + "/1999-01-01T00:00:00Z", vfs.ENOENT},
		{dir + "/disk.raw", vfs.ENOENT},
		{dir + "/disk.img/x", vfs.ENOTDIR},
		{dir + "/files/no such file", vfs.ENOENT},
	} {
		_, err := tr.Lstat(c.path)
		if got := tr.Errno(err); got != c.want {
			t.Errorf("lstat %s: %v (errno %d), want errno %d", c.path, err, got, c.want)
		}
	}
	if _, err := tr.ReadDir(dir + "/disk.img"); tr.Errno(err) != vfs.ENOTDIR {
		t.Errorf("list disk.img: %v, want ENOTDIR", err)
	}
}

// treeFS shows a directory of a Tree as a filesystem.FS, so that the file
// system readers' manifest comparison runs on it.
type treeFS struct {
	tr   Tree
	root string
}

func (f *treeFS) p(name string) string {
	c := filesystem.Clean(name)
	if c == "/" {
		if f.root == "" {
			return "/"
		}
		return f.root
	}
	return f.root + c
}

func (f *treeFS) Type() string  { return "vfs" }
func (f *treeFS) Label() string { return "" }
func (f *treeFS) Root(ctx context.Context) (filesystem.Entry, error) {
	return f.Stat(ctx, "/")
}

func toEntry(i Info) filesystem.Entry {
	return filesystem.Entry{Name: i.Name, Ino: i.Ino, Mode: i.Mode, Size: i.Size, Nlink: i.Nlink, Mtime: i.Mtime}
}

func (f *treeFS) Stat(ctx context.Context, name string) (filesystem.Entry, error) {
	i, err := f.tr.Lstat(f.p(name))
	if err != nil {
		return filesystem.Entry{}, err
	}
	e := toEntry(i)
	e.Name = path.Base(filesystem.Clean(name))
	return e, nil
}

func (f *treeFS) ReadDir(ctx context.Context, name string) ([]filesystem.Entry, error) {
	is, err := f.tr.ReadDir(f.p(name))
	if err != nil {
		return nil, err
	}
	out := make([]filesystem.Entry, 0, len(is))
	for _, i := range is {
		if i.Name == "." || i.Name == ".." {
			continue
		}
		out = append(out, toEntry(i))
	}
	return out, nil
}

func (f *treeFS) Readlink(ctx context.Context, name string) (string, error) {
	return f.tr.Readlink(f.p(name))
}

func (f *treeFS) Open(ctx context.Context, name string) (filesystem.File, error) {
	r, size, closeFn, err := f.tr.Open(f.p(name))
	if err != nil {
		return nil, err
	}
	defer closeFn()
	// the manifest comparison reads each file once, whole
	b := make([]byte, size)
	if n, err := r.ReadAt(b, 0); n < len(b) {
		return nil, err
	}
	return &treeFile{r: bytes.NewReader(b), size: size}, nil
}

type treeFile struct {
	r    io.ReaderAt
	size int64
}

func (f *treeFile) ReadAt(p []byte, off int64) (int, error) { return f.r.ReadAt(p, off) }
func (f *treeFile) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	return f.r.ReadAt(p, off)
}
func (f *treeFile) Size() int64 { return f.size }
func (f *treeFile) DataRanges(ctx context.Context) ([]filesystem.Range, error) {
	return []filesystem.Range{{Off: 0, Len: f.size}}, nil
}

// Direct is the pure tree as a Tree.
func Direct(t *vfs.FS) Tree { return direct{t} }

type direct struct{ t *vfs.FS }

func info(name string, a vfs.Attr) Info {
	return Info{Name: name, Ino: a.Ino, Mode: a.Mode, Size: a.Size, Nlink: a.Nlink, Mtime: a.Mtime}
}

func (d direct) Lstat(p string) (Info, error) {
	a, err := d.t.Walk(context.Background(), p)
	return info(path.Base(p), a), err
}

func (d direct) ReadDir(p string) ([]Info, error) {
	ctx := context.Background()
	a, err := d.t.Walk(ctx, p)
	if err != nil {
		return nil, err
	}
	if a.Mode&os.ModeSymlink != 0 {
		t, err := d.t.Readlink(ctx, a.Ino)
		if err != nil {
			return nil, err
		}
		return d.ReadDir(path.Join(path.Dir(p), t))
	}
	es, err := d.t.Readdir(ctx, a.Ino)
	if err != nil {
		return nil, err
	}
	out := make([]Info, len(es))
	for i, e := range es {
		out[i] = info(e.Name, e.Attr)
	}
	return out, nil
}

func (d direct) Readlink(p string) (string, error) {
	ctx := context.Background()
	a, err := d.t.Walk(ctx, p)
	if err != nil {
		return "", err
	}
	return d.t.Readlink(ctx, a.Ino)
}

func (d direct) Open(p string) (io.ReaderAt, int64, func() error, error) {
	ctx := context.Background()
	a, err := d.t.Walk(ctx, p)
	if err != nil {
		return nil, 0, nil, err
	}
	h, err := d.t.Open(ctx, a.Ino, false)
	if err != nil {
		return nil, 0, nil, err
	}
	return handleReader{h}, h.Size(), h.Close, nil
}

func (d direct) Errno(err error) vfs.Errno { return vfs.ErrnoOf(err) }

type handleReader struct{ h *vfs.Handle }

func (r handleReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.h.Read(context.Background(), p, off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

// Dir is a directory of the real file system (a mount point) as a Tree.
func Dir(root string) Tree { return osDir(root) }

type osDir string

func (d osDir) p(p string) string { return string(d) + filesystem.Clean(p) }

func osInfo(fi os.FileInfo) Info {
	ino, nlink := statIno(fi)
	return Info{Name: fi.Name(), Ino: ino, Mode: fi.Mode(), Size: fi.Size(), Nlink: nlink, Mtime: fi.ModTime()}
}

func (d osDir) Lstat(p string) (Info, error) {
	fi, err := os.Lstat(d.p(p))
	if err != nil {
		return Info{}, err
	}
	return osInfo(fi), nil
}

func (d osDir) ReadDir(p string) ([]Info, error) {
	es, err := os.ReadDir(d.p(p))
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(es))
	for _, e := range es {
		fi, err := e.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, osInfo(fi))
	}
	return out, nil
}

func (d osDir) Readlink(p string) (string, error) { return os.Readlink(d.p(p)) }

func (d osDir) Open(p string) (io.ReaderAt, int64, func() error, error) {
	f, err := os.Open(d.p(p))
	if err != nil {
		return nil, 0, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, err
	}
	return f, fi.Size(), f.Close, nil
}

func (d osDir) Errno(err error) vfs.Errno {
	if err == nil {
		return vfs.OK
	}
	if errors.Is(err, fs.ErrNotExist) {
		return vfs.ENOENT
	}
	return errnoOf(err)
}
