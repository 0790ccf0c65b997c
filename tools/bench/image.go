package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Categories of content in the volume image.
const (
	catText       = "text"       // man pages (decompressed), docs, licenses
	catSource     = "source"     // Go source tree
	catBinary     = "binary"     // executables and shared libraries
	catCompressed = "compressed" // .gz/.xz/.bz2/.zst files as found
	catRandom     = "random"     // deterministic pseudo-random data
)

var categories = []string{catText, catSource, catBinary, catCompressed, catRandom}

// share of the image size each category gets; the rest (about 30 % of the
// image after file-system metadata and block rounding) stays empty.
var budgetShare = map[string]float64{
	catText: 0.11, catSource: 0.13, catBinary: 0.17, catCompressed: 0.05, catRandom: 0.07,
}

// safeName keeps names that debugfs's command parser takes as one word.
var safeName = regexp.MustCompile(`^[A-Za-z0-9._+,@=-]+$`)

// imgFile is one file in the image, as the change rounds know it.
type imgFile struct {
	dir, name string // directory in the image (absolute) and base name
	cat       string
	size      int64
	cur       string // local file holding its current content
}

// catStat counts what went into one category.
type catStat struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// volume is the benchmark's volume image and its change history.
type volume struct {
	work    string
	image   string
	size    int64
	staging string
	files   []*imgFile
	Content map[string]*catStat `json:"content"`
	// EmptyFraction is the share of the file system's blocks left free.
	EmptyFraction float64       `json:"empty_fraction"`
	Rounds        []roundResult `json:"rounds"`
	hashes        []uint64      // per 4 KiB block of the image, for change measurement
	seed          maphash.Seed
	logf          func(string, ...any)
	run           *runner
}

type roundResult struct {
	Round           int     `json:"round"`
	Ops             string  `json:"ops"`
	BytesWritten    int64   `json:"bytes_written"`     // file data written by debugfs
	Changed4K       float64 `json:"changed_4k"`        // fraction of 4 KiB blocks that differ
	Changed64K      float64 `json:"changed_64k"`       // fraction of 64 KiB blocks that differ
	ChangedBytes4K  int64   `json:"changed_bytes_4k"`  // bytes in changed 4 KiB blocks
	ChangedBytes64K int64   `json:"changed_bytes_64k"` // bytes in changed 64 KiB blocks
}

func newVolume(work string, size int64, run *runner, logf func(string, ...any)) *volume {
	return &volume{
		work: work, image: filepath.Join(work, "disk.img"), size: size,
		staging: filepath.Join(work, "staging"), Content: map[string]*catStat{},
		seed: maphash.MakeSeed(), run: run, logf: logf,
	}
}

// stager copies files into one category of the staging tree until its
// budget is used up.
type stager struct {
	v      *volume
	cat    string
	budget int64
	used   int64
	seen   map[[2]uint64]bool // device+inode already taken (hard links)
}

func (s *stager) full() bool { return s.used >= s.budget }

// add stores data read from r as staging/<cat>/<rel>.
func (s *stager) add(rel string, r io.Reader, srcPath string) error {
	dst := filepath.Join(s.v.staging, s.cat, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("stage %s: %w", srcPath, err)
	}
	s.used += n
	st := s.v.Content[s.cat]
	st.Files++
	st.Bytes += n
	imgDir := "/" + path.Join(s.cat, filepath.ToSlash(filepath.Dir(rel)))
	s.v.files = append(s.v.files, &imgFile{dir: imgDir, name: filepath.Base(rel), cat: s.cat, size: n, cur: dst})
	return nil
}

// walk stages the regular files under root (in lexical order) for which
// want returns true, under prefix; gunzip decompresses .gz files first.
func (s *stager) walk(root, prefix string, want func(p string) bool, gunzip bool) error {
	if s.seen == nil {
		s.seen = map[[2]uint64]bool{}
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if d != nil && d.IsDir() && p != root {
				return fs.SkipDir
			}
			return nil
		}
		if s.full() {
			return fs.SkipAll
		}
		if d.IsDir() {
			if p != root && !safeName.MatchString(d.Name()) {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !safeName.MatchString(d.Name()) || !want(p) {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Size() == 0 || info.Size() > s.budget-s.used+(1<<20) {
			return nil
		}
		if ino, ok := inodeOf(info); ok {
			if s.seen[ino] {
				return nil
			}
			s.seen[ino] = true
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.Join(prefix, rel)
		f, err := os.Open(p)
		if err != nil {
			return nil // unreadable: skip
		}
		defer f.Close()
		var r io.Reader = f
		if gunzip && strings.HasSuffix(p, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				return nil
			}
			// check it decompresses before staging it
			b, err := io.ReadAll(zr)
			if err != nil || len(b) == 0 {
				return nil
			}
			r = bytes.NewReader(b)
			rel = strings.TrimSuffix(rel, ".gz")
		}
		if _, err := os.Lstat(filepath.Join(s.v.staging, s.cat, rel)); err == nil {
			return nil
		}
		return s.add(rel, r, p)
	})
}

func hasSuffix(sufs ...string) func(string) bool {
	return func(p string) bool {
		for _, s := range sufs {
			if strings.HasSuffix(p, s) {
				return true
			}
		}
		return false
	}
}

func all(string) bool { return true }

// stage fills the staging tree deterministically from files on this
// system plus seeded pseudo-random data.
func (v *volume) stage() error {
	if err := os.MkdirAll(v.staging, 0o755); err != nil {
		return err
	}
	for _, c := range categories {
		v.Content[c] = &catStat{}
		if err := os.MkdirAll(filepath.Join(v.staging, c), 0o755); err != nil {
			return err
		}
	}
	budget := func(c string) int64 { return int64(budgetShare[c] * float64(v.size)) }
	notGz := func(p string) bool { return !hasSuffix(".gz", ".xz", ".bz2", ".zst")(p) }

	text := &stager{v: v, cat: catText, budget: budget(catText)}
	for _, src := range []struct {
		root, prefix string
		want         func(string) bool
		gunzip       bool
	}{
		{"/usr/share/common-licenses", "licenses", all, false},
		{"/usr/share/doc", "doc", notGz, false},
		{"/usr/share/man", "man", hasSuffix(".gz"), true},
		{"/usr/share/doc", "doc-gz", hasSuffix(".gz"), true},
		{"/usr/local/go/doc", "go-doc", all, false},
	} {
		if err := text.walk(src.root, src.prefix, src.want, src.gunzip); err != nil {
			return err
		}
	}

	source := &stager{v: v, cat: catSource, budget: budget(catSource)}
	if err := source.walk("/usr/local/go/src", "go/src", all, false); err != nil {
		return err
	}
	if err := source.walk("/usr/local/go/test", "go/test", all, false); err != nil {
		return err
	}

	bin := &stager{v: v, cat: catBinary, budget: budget(catBinary)}
	for _, src := range [][2]string{
		{"/usr/local/go/bin", "go-bin"}, {"/usr/local/go/pkg/tool", "go-tool"},
		{"/usr/bin", "usr-bin"}, {"/usr/sbin", "usr-sbin"}, {"/usr/lib/x86_64-linux-gnu", "lib"},
	} {
		if err := bin.walk(src[0], src[1], all, false); err != nil {
			return err
		}
	}

	comp := &stager{v: v, cat: catCompressed, budget: budget(catCompressed)}
	for _, src := range [][2]string{{"/usr/share/doc", "doc"}, {"/usr/share", "share"}, {"/usr/lib", "lib"}, {"/var", "var"}} {
		if err := comp.walk(src[0], src[1], hasSuffix(".gz", ".xz", ".bz2", ".zst"), false); err != nil {
			return err
		}
	}

	rnd := &stager{v: v, cat: catRandom, budget: budget(catRandom)}
	src := rand.NewChaCha8([32]byte{'r', 'e', 'w', 'i', 'n', 'd'})
	rng := rand.New(src)
	for i := 0; !rnd.full(); i++ {
		n := min(int64(64<<10+rng.IntN(8<<20)), rnd.budget-rnd.used)
		if err := rnd.add(fmt.Sprintf("data/blob-%04d.bin", i), io.LimitReader(src, n), "random"); err != nil {
			return err
		}
	}
	// A fixed time on everything keeps the image independent of when it
	// was made.
	fixed := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return filepath.WalkDir(v.staging, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, fixed, fixed)
	})
}

// build stages the content and makes the ext4 image from it.
func (v *volume) build() error {
	if err := v.stage(); err != nil {
		return err
	}
	var files int
	var bytes int64
	for _, c := range categories {
		st := v.Content[c]
		files += st.Files
		bytes += st.Bytes
		v.logf("  %-10s %6d files %10s", c, st.Files, humanBytes(st.Bytes))
	}
	v.logf("  %-10s %6d files %10s (%.0f %% of the image size)", "total", files, humanBytes(bytes), 100*float64(bytes)/float64(v.size))
	if err := os.WriteFile(v.image, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(v.image, v.size); err != nil {
		return err
	}
	const uuid = "5eb1a5e0-0000-4000-8000-00000000be11"
	inodes := files*5/4 + 8192
	env := []string{"E2FSPROGS_FAKE_TIME=1767225600"}
	if _, err := v.run.run("", env, "mkfs.ext4", "-q", "-F", "-b", "4096", "-N", strconv.Itoa(inodes),
		"-U", uuid, "-E", "hash_seed="+uuid, "-d", v.staging, v.image, strconv.FormatInt(v.size/4096, 10)); err != nil {
		return err
	}
	if err := v.fsck(); err != nil {
		return err
	}
	free, total, err := v.freeBlocks()
	if err != nil {
		return err
	}
	v.EmptyFraction = float64(free) / float64(total)
	v.logf("  ext4 image %s: %d of %d blocks free (%.1f %% empty)", humanBytes(v.size), free, total, 100*v.EmptyFraction)
	v.hashes, err = v.blockHashes()
	return err
}

// fsck fails unless e2fsck -fn finds the image clean.
func (v *volume) fsck() error {
	if _, err := v.run.run("", nil, "e2fsck", "-fn", v.image); err != nil {
		return fmt.Errorf("file system in %s is damaged: %w", v.image, err)
	}
	return nil
}

func (v *volume) freeBlocks() (free, total int64, err error) {
	res, err := v.run.run("", nil, "dumpe2fs", "-h", v.image)
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(res.Stdout))
	for sc.Scan() {
		k, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		switch k {
		case "Free blocks":
			free = n
		case "Block count":
			total = n
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("dumpe2fs -h %s: no block count", v.image)
	}
	return free, total, nil
}

// blockHashes hashes every 4 KiB block of the image.
func (v *volume) blockHashes() ([]uint64, error) {
	f, err := os.Open(v.image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make([]uint64, 0, v.size/4096)
	buf := make([]byte, 4<<20)
	for {
		n, err := io.ReadFull(f, buf)
		for off := 0; off+4096 <= n; off += 4096 {
			out = append(out, maphash.Bytes(v.seed, buf[off:off+4096]))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// change applies round r's deterministic changes (about 2 % of the image)
// with debugfs, checks the file system and measures what changed.
func (v *volume) change(r int) (roundResult, error) {
	res := roundResult{Round: r}
	rng := rand.New(rand.NewPCG(uint64(r), 0x5eed))
	dir := filepath.Join(v.work, "rounds", fmt.Sprintf("r%02d", r))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	// About 2 % of the image's blocks should change. debugfs often puts a
	// rewritten file back into the blocks it just freed, where the parts
	// that did not change leave their blocks as they were, so write a
	// little more than 2 %; the printed figures are measured, not assumed.
	target := v.size * 26 / 1000
	var cmds strings.Builder
	cwd := ""
	cd := func(d string) {
		if d != cwd {
			fmt.Fprintf(&cmds, "cd %s\n", d)
			cwd = d
		}
	}
	var nMod, nNew, nDel int
	var delBytes int64
	touched := map[*imgFile]bool{}
	pick := func(cats ...string) *imgFile {
		for range 200 {
			f := v.files[rng.IntN(len(v.files))]
			if touched[f] || f.size < 4096 {
				continue
			}
			for _, c := range cats {
				if f.cat == c {
					return f
				}
			}
		}
		return nil
	}
	// Delete about 0.4 % of the image's bytes in whole files.
	for tries := 0; delBytes < v.size/250 && tries < 10000; tries++ {
		f := pick(catText, catSource, catBinary, catCompressed, catRandom)
		if f == nil || f.size > v.size/100 {
			continue
		}
		touched[f] = true
		cd(f.dir)
		fmt.Fprintf(&cmds, "rm %s\n", f.name)
		delBytes += f.size
		nDel++
	}
	// Modify files and add new ones until about 2 % has been written.
	for i := 0; res.BytesWritten < target; i++ {
		if i > 100000 {
			return res, fmt.Errorf("round %d: found too few files to change", r)
		}
		local := filepath.Join(dir, fmt.Sprintf("%04d", i))
		var f *imgFile
		var data []byte
		switch k := rng.IntN(100); {
		case k < 35: // edit a text or source file
			if f = pick(catText, catSource); f == nil {
				continue
			}
			old, err := os.ReadFile(f.cur)
			if err != nil {
				return res, err
			}
			data = editText(rng, old)
		case k < 65: // replace a binary with a "new build": a few changed regions
			if f = pick(catBinary); f == nil || f.size > 8<<20 {
				continue
			}
			old, err := os.ReadFile(f.cur)
			if err != nil {
				return res, err
			}
			data = patchBinary(rng, old)
		case k < 80: // rewrite part of a random data file
			if f = pick(catRandom); f == nil {
				continue
			}
			old, err := os.ReadFile(f.cur)
			if err != nil {
				return res, err
			}
			data = old
			off := rng.IntN(len(data))
			n := min(len(data)-off, 64<<10+rng.IntN(1<<20))
			fillRandom(rng, data[off:off+n])
		default: // a new random file
			data = make([]byte, 16<<10+rng.IntN(2<<20))
			fillRandom(rng, data)
			f = &imgFile{dir: "/" + catRandom + "/data", name: fmt.Sprintf("new-r%02d-%04d.bin", r, i), cat: catRandom}
			v.files = append(v.files, f)
			nNew++
		}
		if err := os.WriteFile(local, data, 0o644); err != nil {
			return res, err
		}
		cd(f.dir)
		if f.cur != "" {
			fmt.Fprintf(&cmds, "rm %s\n", f.name)
			nMod++
		}
		fmt.Fprintf(&cmds, "write %s %s\n", local, f.name)
		touched[f] = true
		f.cur, f.size = local, int64(len(data))
		res.BytesWritten += int64(len(data))
	}
	// Forget the deleted files (those touched without a new version).
	kept := v.files[:0]
	for _, f := range v.files {
		if !touched[f] || strings.HasPrefix(f.cur, dir) {
			kept = append(kept, f)
		}
	}
	v.files = kept
	res.Ops = fmt.Sprintf("%d modified, %d new, %d deleted", nMod, nNew, nDel)

	cmdFile := filepath.Join(dir, "debugfs.cmd")
	if err := os.WriteFile(cmdFile, []byte(cmds.String()), 0o644); err != nil {
		return res, err
	}
	cmd := exec.CommandContext(v.run.ctx, "debugfs", "-w", "-f", cmdFile, v.image)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("debugfs round %d: %w\n%s", r, err, tail(stderr.String(), 20))
	}
	// debugfs reports failed commands on stderr but still exits 0.
	for _, line := range strings.Split(stderr.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "debugfs ") {
			continue
		}
		return res, fmt.Errorf("debugfs round %d: %s (commands in %s)", r, line, cmdFile)
	}
	if got, want := strings.Count(stdout.String(), "Allocated inode:"), nNew+nMod; got != want {
		return res, fmt.Errorf("debugfs round %d wrote %d files, expected %d (commands in %s)", r, got, want, cmdFile)
	}
	if err := v.fsck(); err != nil {
		return res, fmt.Errorf("after round %d: %w", r, err)
	}
	hashes, err := v.blockHashes()
	if err != nil {
		return res, err
	}
	var c4, c64 int64
	for i := range hashes {
		if hashes[i] != v.hashes[i] {
			c4++
		}
	}
	for i := 0; i < len(hashes); i += 16 {
		for j := i; j < min(i+16, len(hashes)); j++ {
			if hashes[j] != v.hashes[j] {
				c64++
				break
			}
		}
	}
	v.hashes = hashes
	n4, n64 := int64(len(hashes)), (int64(len(hashes))+15)/16
	res.Changed4K, res.Changed64K = float64(c4)/float64(n4), float64(c64)/float64(n64)
	res.ChangedBytes4K, res.ChangedBytes64K = c4*4096, c64*65536
	v.Rounds = append(v.Rounds, res)
	return res, nil
}

var words = strings.Fields(`the of and to in is that for it as with was on be by this are or from
at an not which have has but all can will one more if when there their use data file block backup
restore server volume point time change value error system return function type struct package
import string int64 buffer read write close open sync flush check hash chunk pack index catalog`)

// editText changes a text file the way a person or a package upgrade
// would: a few lines replaced, inserted and deleted, a paragraph appended.
func editText(rng *rand.Rand, old []byte) []byte {
	lines := bytes.SplitAfter(old, []byte("\n"))
	line := func() []byte {
		var b []byte
		for n := 3 + rng.IntN(12); n > 0; n-- {
			b = append(b, words[rng.IntN(len(words))]...)
			b = append(b, ' ')
		}
		return append(b[:len(b)-1], '\n')
	}
	for n := 1 + rng.IntN(6); n > 0; n-- {
		i := rng.IntN(len(lines))
		switch rng.IntN(3) {
		case 0:
			lines[i] = line()
		case 1:
			lines = append(lines[:i], append([][]byte{line()}, lines[i:]...)...)
		default:
			if len(lines) > 1 {
				lines = append(lines[:i], lines[i+1:]...)
			}
		}
	}
	for n := rng.IntN(20); n > 0; n-- {
		lines = append(lines, line())
	}
	return bytes.Join(lines, nil)
}

// patchBinary rewrites a few regions of a binary, as a rebuild with small
// source changes does, and sometimes grows it.
func patchBinary(rng *rand.Rand, old []byte) []byte {
	b := bytes.Clone(old)
	for n := 1 + rng.IntN(8); n > 0; n-- {
		off := rng.IntN(len(b))
		fillRandom(rng, b[off:min(len(b), off+256+rng.IntN(16<<10))])
	}
	if rng.IntN(3) == 0 {
		extra := make([]byte, rng.IntN(64<<10))
		fillRandom(rng, extra)
		b = append(b, extra...)
	}
	return b
}

func fillRandom(rng *rand.Rand, b []byte) {
	for len(b) >= 8 {
		u := rng.Uint64()
		for i := range 8 {
			b[i] = byte(u >> (8 * i))
		}
		b = b[8:]
	}
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// sortedCats is the categories in print order.
func sortedCats(m map[string]*catStat) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return indexOf(categories, out[i]) < indexOf(categories, out[j]) })
	return out
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return len(s)
}
