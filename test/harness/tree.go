package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// TreeOptions shapes a test tree written by WriteTree. Every choice is
// deterministic, so the same options and step give the same tree.
type TreeOptions struct {
	Files     int   // regular files written at step 0 (step 1 and 2 add more than they delete)
	Big       int64 // size of one large file (e.g. 64 MiB); 0 for none
	BigDirLen int   // entries of one large directory ("many/"), part of Files
	Symlinks  bool  // relative, absolute, dangling, chained, Unicode and long targets
	Hardlinks bool
	Sparse    bool // files with holes (written with holes; a file system without them stores zeros)
	Modes     bool // vary permission bits, including setuid, setgid and sticky
	FATNames  bool // names FAT and mtools keep: no characters beyond the BMP
	EvenTimes bool // mtimes on even seconds (FAT keeps 2 s)
}

// treeBase is the first mtime a tree uses; steps move forward from it.
var treeBase = time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC)

func treeNames(o TreeOptions) []string {
	n := []string{"plain", "Grüße", "日本語のファイル", "emoji-😀", "ünïcødé Ω", "space name", "x.tar.gz", "résumé", "Ελληνικά", "кириллица", "עברית", "中文目录"}
	if o.FATNames {
		n[3] = "snow-☃"
	}
	return n
}

// fileSize draws a size: mostly small files, some medium, a few large, so
// a tree of thousands of files stays a few tens of megabytes.
func fileSize(r *rand.Rand) int {
	switch x := r.IntN(10000); {
	case x < 300:
		return 0
	case x < 7800:
		return r.IntN(2048)
	case x < 9880:
		return 2048 + r.IntN(14<<10)
	case x < 9996:
		return 16<<10 + r.IntN(240<<10)
	default:
		return 1<<20 + r.IntN(3<<20)
	}
}

// fill returns n bytes of content: random, or text for a fifth of files.
func fill(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	if r.IntN(5) == 0 {
		w := []byte("the quick brown fox jumps over the lazy dog 0123456789\n")
		for i := range b {
			b[i] = w[i%len(w)]
		}
		return b
	}
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(r.Uint32())
	}
	rand.NewChaCha8(seed).Read(b)
	return b
}

// WriteTree writes step 0 of a test tree into root (an empty directory or
// a freshly made file system), or applies the changes of step 1, 2, ...
// to the tree a previous step left there: rewritten, appended, truncated,
// deleted, new and renamed files, changed modes, links and holes, a
// changed middle of the large file. It returns the paths it wrote or
// created (relative, slash-separated) and those it removed.
func WriteTree(root string, o TreeOptions, step int) (written, removed []string, err error) {
	w := &treeWriter{root: root, o: o, r: rand.New(rand.NewPCG(uint64(step)+1, 0x5eed)), names: treeNames(o), step: step}
	if step == 0 {
		err = w.create()
	} else {
		err = w.change()
	}
	if err != nil {
		return nil, nil, err
	}
	if err := w.setTimes(); err != nil {
		return nil, nil, err
	}
	return w.written, w.removed, nil
}

type treeWriter struct {
	root    string
	o       TreeOptions
	r       *rand.Rand
	names   []string
	step    int
	written []string
	removed []string
	touched []string // paths whose mtime to set, in order
}

func (w *treeWriter) abs(rel string) string { return filepath.Join(w.root, filepath.FromSlash(rel)) }

func (w *treeWriter) mkdir(rel string, perm os.FileMode) error {
	if err := os.Mkdir(w.abs(rel), 0o755); err != nil {
		return err
	}
	w.written = append(w.written, rel)
	w.touched = append(w.touched, rel)
	if w.o.Modes && perm != 0o755 {
		return os.Chmod(w.abs(rel), perm)
	}
	return nil
}

func (w *treeWriter) writeFile(rel string, b []byte) error {
	if err := os.WriteFile(w.abs(rel), b, 0o644); err != nil {
		return err
	}
	w.written = append(w.written, rel)
	w.touched = append(w.touched, rel)
	return nil
}

func (w *treeWriter) perm() os.FileMode {
	if !w.o.Modes {
		return 0o644
	}
	return []os.FileMode{0o644, 0o600, 0o755, 0o640, 0o444, 0o700, 0o664, 0o400}[w.r.IntN(8)]
}

func (w *treeWriter) create() error {
	var dirs []string
	deep := ""
	for i := range 12 {
		deep = pathJoin(deep, fmt.Sprintf("level%02d-%s", i+1, w.names[i%len(w.names)]))
		if err := w.mkdir(deep, 0o755); err != nil {
			return err
		}
		dirs = append(dirs, deep)
	}
	for i := range 40 {
		d := fmt.Sprintf("d%02d-%s", i, w.names[i%len(w.names)])
		perm := os.FileMode(0o755)
		switch {
		case i == 3:
			perm = 0o750
		case i == 4:
			perm = 0o700
		case i == 5:
			perm = os.ModeSticky | 0o777
		case i == 6:
			perm = os.ModeSetgid | 0o775
		}
		if err := w.mkdir(d, perm); err != nil {
			return err
		}
		dirs = append(dirs, d)
		for j := range 2 {
			s := pathJoin(d, fmt.Sprintf("sub%d-%s", j, w.names[(i+j+3)%len(w.names)]))
			if err := w.mkdir(s, 0o755); err != nil {
				return err
			}
			dirs = append(dirs, s)
		}
	}
	if w.o.BigDirLen > 0 {
		if err := w.mkdir("many", 0o755); err != nil {
			return err
		}
	}
	n := 0
	for i := range w.o.BigDirLen {
		if err := w.newFile(pathJoin("many", fmt.Sprintf("entry-%05d-%s.txt", i, w.names[i%len(w.names)])), fileSize(w.r)); err != nil {
			return err
		}
		n++
	}
	special := 0
	if w.o.Big > 0 {
		special++
	}
	if w.o.Sparse {
		special += 2
	}
	for i := 0; n < w.o.Files-special; i++ {
		d := dirs[w.r.IntN(len(dirs))]
		nm := fmt.Sprintf("%s-%05d.dat", w.names[w.r.IntN(len(w.names))], i)
		if i%7 == 0 {
			nm = fmt.Sprintf("f%05d", i)
		}
		if err := w.newFile(pathJoin(d, nm), fileSize(w.r)); err != nil {
			return err
		}
		n++
	}
	if w.o.Big > 0 {
		if err := w.bigFile("big.bin"); err != nil {
			return err
		}
	}
	if w.o.Sparse {
		if err := w.sparse("sparse.img", 12<<20, []int64{0, 5 << 20, 12<<20 - 5000}); err != nil {
			return err
		}
		if err := w.sparse(pathJoin(dirs[20], "all-hole.bin"), 3<<20, nil); err != nil {
			return err
		}
	}
	if w.o.Hardlinks {
		files, err := w.regularFiles()
		if err != nil {
			return err
		}
		for i, l := range []string{"hardlink-a", pathJoin(dirs[14], "hardlink-b"), pathJoin(deep, "hardlink-deep")} {
			if err := os.Link(w.abs(files[10+i%2]), w.abs(l)); err != nil {
				return err
			}
			w.written = append(w.written, l)
		}
	}
	if w.o.Symlinks {
		for _, l := range [][2]string{
			{"link-dir", dirs[12]},
			{pathJoin(dirs[13], "link-rel"), "../" + dirs[15]},
			{"link-abs", "/etc/passwd"},
			{"link-dangling", "does/not/exist"},
			{"link-chain", "link-dir"},
			{"link-long", strings.Repeat("long-target/", 30) + "end"},
			{"link-unicode", "日本語/Grüße"},
			{pathJoin(deep, "link-up"), strings.Repeat("../", 12) + "big.bin"},
		} {
			if err := w.symlink(l[1], l[0]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *treeWriter) newFile(rel string, size int) error {
	if err := w.writeFile(rel, fill(w.r, size)); err != nil {
		return err
	}
	if p := w.perm(); p != 0o644 {
		return os.Chmod(w.abs(rel), p)
	}
	return nil
}

func (w *treeWriter) symlink(target, rel string) error {
	if err := os.Symlink(target, w.abs(rel)); err != nil {
		return err
	}
	w.written = append(w.written, rel)
	w.touched = append(w.touched, rel)
	return nil
}

func (w *treeWriter) bigFile(rel string) error {
	f, err := os.Create(w.abs(rel))
	if err != nil {
		return err
	}
	var seed [32]byte
	seed[0] = 0xb1
	c := rand.NewChaCha8(seed)
	buf := make([]byte, 1<<20)
	for off := int64(0); off < w.o.Big; off += int64(len(buf)) {
		c.Read(buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), w.o.Big-off)]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	w.written = append(w.written, rel)
	w.touched = append(w.touched, rel)
	return nil
}

// sparse writes a size-byte file with data only at the given offsets.
func (w *treeWriter) sparse(rel string, size int64, at []int64) error {
	f, err := os.Create(w.abs(rel))
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	for i, off := range at {
		if err == nil {
			_, err = f.WriteAt(fill(w.r, 4000+i), off)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	w.written = append(w.written, rel)
	w.touched = append(w.touched, rel)
	return nil
}

// regularFiles lists the tree's regular files (sorted), leaving out the
// large and sparse files that change in their own way.
func (w *treeWriter) regularFiles() ([]string, error) {
	var out []string
	err := filepath.WalkDir(w.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, w.root+string(filepath.Separator)))
		switch {
		case rel == "big.bin", rel == "sparse.img", strings.HasSuffix(rel, "all-hole.bin"), strings.Contains(rel, "hardlink"), strings.HasPrefix(rel, "lost+found"):
			return nil
		}
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out, err
}

func (w *treeWriter) change() error {
	files, err := w.regularFiles()
	if err != nil {
		return err
	}
	// Pick distinct files for each kind of change.
	perm := w.r.Perm(len(files))
	next := 0
	pick := func(n int) []string {
		var out []string
		for ; n > 0 && next < len(perm); n-- {
			out = append(out, files[perm[next]])
			next++
		}
		return out
	}
	for _, p := range pick(60) { // rewritten with new content and size
		if err := w.writeFile(p, fill(w.r, fileSize(w.r))); err != nil {
			return err
		}
	}
	for _, p := range pick(20) { // appended
		f, err := os.OpenFile(w.abs(p), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = f.Write(fill(w.r, 1+w.r.IntN(5000)))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		w.written = append(w.written, p)
		w.touched = append(w.touched, p)
	}
	for i, p := range pick(10) { // truncated to nothing or to half
		fi, err := os.Stat(w.abs(p))
		if err != nil {
			return err
		}
		if err := os.Truncate(w.abs(p), fi.Size()/2*int64(i%2)); err != nil {
			return err
		}
		w.written = append(w.written, p)
		w.touched = append(w.touched, p)
	}
	if w.o.Modes {
		for _, p := range pick(20) { // new permission bits only
			if err := os.Chmod(w.abs(p), w.perm()|[]os.FileMode{0, os.ModeSetuid}[w.r.IntN(2)]); err != nil {
				return err
			}
		}
	}
	for _, p := range pick(40) { // deleted
		if err := os.Remove(w.abs(p)); err != nil {
			return err
		}
		w.removed = append(w.removed, p)
	}
	for i, p := range pick(10) { // renamed into another directory
		dst := pathJoin(filepath.ToSlash(filepath.Dir(filepath.FromSlash(files[perm[len(perm)-1-i]]))), fmt.Sprintf("renamed-%d-%d-%s", w.step, i, w.names[i%len(w.names)]))
		if err := os.Rename(w.abs(p), w.abs(dst)); err != nil {
			return err
		}
		w.removed = append(w.removed, p)
		w.written = append(w.written, dst)
		w.touched = append(w.touched, dst)
	}
	d := fmt.Sprintf("new-in-step%d-%s", w.step, w.names[w.step%len(w.names)])
	if err := w.mkdir(d, 0o755); err != nil {
		return err
	}
	for i := range 60 { // new files, some in a new directory
		dir := filepath.ToSlash(filepath.Dir(filepath.FromSlash(files[w.r.IntN(len(files))])))
		if i%3 == 0 {
			dir = d
		}
		if err := w.newFile(pathJoin(dir, fmt.Sprintf("added-%d-%03d-%s", w.step, i, w.names[i%len(w.names)])), fileSize(w.r)); err != nil {
			return err
		}
	}
	if w.o.Big > 0 { // one MiB in the middle of the large file
		f, err := os.OpenFile(w.abs("big.bin"), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteAt(fill(w.r, 1<<20), int64(w.step)*(w.o.Big/4))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		w.written = append(w.written, "big.bin")
		w.touched = append(w.touched, "big.bin")
	}
	if w.o.Sparse { // data into a hole
		f, err := os.OpenFile(w.abs("sparse.img"), os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteAt(fill(w.r, 3000), int64(w.step)*(3<<20)+12345)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		w.written = append(w.written, "sparse.img")
		w.touched = append(w.touched, "sparse.img")
	}
	if w.o.Symlinks { // one link retargeted, one removed, one added
		if err := os.Remove(w.abs("link-chain")); err != nil {
			return err
		}
		if err := w.symlink(fmt.Sprintf("step-%d/target", w.step), "link-chain"); err != nil {
			return err
		}
		if w.step == 1 {
			if err := os.Remove(w.abs("link-dangling")); err != nil {
				return err
			}
			w.removed = append(w.removed, "link-dangling")
		}
		if err := w.symlink("../"+files[w.r.IntN(len(files))], pathJoin(d, "link-new")); err != nil {
			return err
		}
	}
	return nil
}

// setTimes gives every path written in this step its own mtime, deepest
// paths first so that setting a file's time never changes its directory's.
func (w *treeWriter) setTimes() error {
	paths := append([]string(nil), w.touched...)
	sort.Slice(paths, func(i, j int) bool { return paths[i] > paths[j] })
	base := treeBase.Add(time.Duration(w.step) * 30 * 24 * time.Hour)
	for i, p := range paths {
		mt := base.Add(time.Duration(i)*7919*time.Second + time.Duration(i%1000)*time.Millisecond)
		if w.o.EvenTimes {
			mt = mt.Truncate(2 * time.Second)
		}
		fi, err := os.Lstat(w.abs(p))
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, w.abs(p), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
			continue
		}
		if err := os.Chtimes(w.abs(p), mt, mt); err != nil {
			return err
		}
	}
	return nil
}

func pathJoin(a, b string) string {
	if a == "" {
		return b
	}
	return a + "/" + b
}

// FileInfo is what a manifest records about one path.
type FileInfo struct {
	Mode   os.FileMode // type, permission, setuid, setgid and sticky bits
	Size   int64       // regular files only
	Mtime  time.Time
	SHA256 string // regular files only
	Target string // symbolic links only
}

// Manifest maps slash-separated paths relative to a tree's root to what
// they hold.
type Manifest map[string]FileInfo

// Files counts the regular files of m.
func (m Manifest) Files() int {
	n := 0
	for _, e := range m {
		if e.Mode.IsRegular() {
			n++
		}
	}
	return n
}

// TakeManifest walks root with lstat (symbolic links are not followed) and
// hashes every regular file. A path that cannot be listed, stat'ed, read
// or resolved is reported in errs and left out; the walk goes on.
func TakeManifest(root string) (m Manifest, errs []error) {
	m = Manifest{}
	buf := make([]byte, 1<<20)
	var walk func(rel string)
	walk = func(rel string) {
		ents, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			errs = append(errs, fmt.Errorf("list %q: %w", rel, err))
			return
		}
		for _, de := range ents {
			cr := pathJoin(rel, de.Name())
			p := filepath.Join(root, filepath.FromSlash(cr))
			fi, err := os.Lstat(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("lstat %q: %w", cr, err))
				continue
			}
			e := FileInfo{Mode: fi.Mode() & (os.ModeType | os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky), Mtime: fi.ModTime()}
			switch {
			case fi.Mode()&os.ModeSymlink != 0:
				if e.Target, err = os.Readlink(p); err != nil {
					errs = append(errs, fmt.Errorf("readlink %q: %w", cr, err))
					continue
				}
			case fi.Mode().IsRegular():
				e.Size = fi.Size()
				sum, n, err := hashFile(p, buf)
				if err != nil {
					errs = append(errs, fmt.Errorf("read %q: %w", cr, err))
					continue
				}
				if n != fi.Size() {
					errs = append(errs, fmt.Errorf("read %q: %d bytes, stat says %d", cr, n, fi.Size()))
					continue
				}
				e.SHA256 = sum
			}
			m[cr] = e
			if fi.IsDir() {
				walk(cr)
			}
		}
	}
	walk("")
	return m, errs
}

func hashFile(p string, buf []byte) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, f, buf)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Compare says which attributes a file system keeps and so which must match.
type Compare struct {
	Modes     bool          // permission, setuid, setgid and sticky bits
	DirMtimes bool          // directory mtimes (FAT does not keep them up to date)
	MtimeGran time.Duration // mtimes agree to this granularity (default 1 s)
	Ignore    func(path string) bool
}

// Diff lists every way got differs from want (empty when they match): paths
// missing or extra, and per path type, mode, size, sha256, mtime and link
// target.
func Diff(want, got Manifest, c Compare) []string {
	gran := c.MtimeGran
	if gran == 0 {
		gran = time.Second
	}
	var out []string
	for p, w := range want {
		if c.Ignore != nil && c.Ignore(p) {
			continue
		}
		g, ok := got[p]
		if !ok {
			out = append(out, fmt.Sprintf("%s: missing", p))
			continue
		}
		if w.Mode.Type() != g.Mode.Type() {
			out = append(out, fmt.Sprintf("%s: type %v, want %v", p, g.Mode.Type(), w.Mode.Type()))
			continue
		}
		if c.Modes && w.Mode != g.Mode {
			out = append(out, fmt.Sprintf("%s: mode %v, want %v", p, g.Mode, w.Mode))
		}
		if w.Size != g.Size {
			out = append(out, fmt.Sprintf("%s: size %d, want %d", p, g.Size, w.Size))
		}
		if w.SHA256 != g.SHA256 {
			out = append(out, fmt.Sprintf("%s: sha256 %.16s…, want %.16s…", p, g.SHA256, w.SHA256))
		}
		if w.Target != g.Target {
			out = append(out, fmt.Sprintf("%s: link target %q, want %q", p, g.Target, w.Target))
		}
		if (!w.Mode.IsDir() || c.DirMtimes) && !w.Mtime.Truncate(gran).Equal(g.Mtime.Truncate(gran)) {
			out = append(out, fmt.Sprintf("%s: mtime %s, want %s", p, g.Mtime.UTC().Format(time.RFC3339Nano), w.Mtime.UTC().Format(time.RFC3339Nano)))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok && (c.Ignore == nil || !c.Ignore(p)) {
			out = append(out, fmt.Sprintf("%s: not in the reference", p))
		}
	}
	sort.Strings(out)
	return out
}
