//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// dataVolume is one file system the must-show data test makes, fills,
// changes and backs up.
type dataVolume struct {
	name string // volume name in the repository
	size string // image size for truncate
	mkfs []string
	// mount mounts the image for writing; nil for FAT, which mtools writes.
	mount func(t *testing.T, img, mnt string) (unmount func())
	tree  h.TreeOptions
	cmp   h.Compare
}

// Each tree holds 5,000 files at step 0 (more at steps 1 and 2): sizes
// from 0 B to one 64 MiB file, a 600-entry directory, directories 12
// levels deep and Unicode names everywhere; sparse files, symlinks, hard
// links and modes where the file system has them.
const (
	dataFiles  = 5000
	dataBig    = 64 << 20
	dataBigDir = 600
)

func dataVolumes() []dataVolume {
	all := h.TreeOptions{Files: dataFiles, Big: dataBig, BigDirLen: dataBigDir}
	posix := all
	posix.Symlinks, posix.Hardlinks, posix.Sparse, posix.Modes = true, true, true, true
	ntfs := all
	ntfs.Symlinks, ntfs.Hardlinks, ntfs.Sparse = true, true, true
	fat := all
	fat.FATNames, fat.EvenTimes, fat.Sparse = true, true, true
	return []dataVolume{
		{name: "ext4", size: "256M", mkfs: []string{"mkfs.ext4", "-q", "-F", "-L", "REWIND"}, mount: kernelMount, tree: posix,
			cmp: h.Compare{Modes: true, DirMtimes: true}},
		{name: "xfs", size: "320M", mkfs: []string{"mkfs.xfs", "-q", "-f", "-L", "REWIND"}, mount: kernelMount, tree: posix,
			cmp: h.Compare{Modes: true, DirMtimes: true}},
		{name: "ntfs", size: "256M", mkfs: []string{"mkntfs", "-F", "-Q", "-q", "-L", "REWIND"}, mount: ntfs3gMount, tree: ntfs,
			cmp: h.Compare{DirMtimes: true}},
		{name: "fat32", size: "256M", mkfs: []string{"mkfs.vfat", "-F", "32", "-n", "REWIND"}, tree: fat,
			cmp: h.Compare{MtimeGran: 2 * time.Second}},
	}
}

// kernelMount loop-mounts an image (ext4, XFS) read-write.
func kernelMount(t *testing.T, img, mnt string) func() {
	t.Helper()
	mounted := true
	unmount := func() {
		if mounted {
			mounted = false
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", mnt, err, out)
				exec.Command("umount", "-l", mnt).Run()
			}
		}
		detachLoops(img)
	}
	t.Cleanup(unmount)
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		mounted = false
		t.Fatalf("mount %s: %v: %s", img, err, out)
	}
	return unmount
}

// ntfs3gMount runs ntfs-3g in the foreground as our child, so unmounting
// waits until it has written everything and exited.
func ntfs3gMount(t *testing.T, img, mnt string) func() {
	t.Helper()
	cmd := exec.Command("ntfs-3g", "-o", "no_detach", img, mnt)
	logf, _ := os.Create(filepath.Join(t.TempDir(), "ntfs-3g.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	unmount := func() {
		select {
		case <-done:
			return
		default:
		}
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Errorf("ntfs-3g did not exit 60 s after umount; killing it")
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(unmount)
	for i := 0; ; i++ {
		if isMountPoint(mnt) {
			return unmount
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("ntfs-3g exited before mounting: %s", b)
		case <-time.After(50 * time.Millisecond):
		}
		if i > 600 {
			t.Fatal("ntfs-3g did not mount in 30 s")
		}
	}
}

func isMountPoint(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mounts")
	return strings.Contains(string(b), " "+dir+" ")
}

// detachLoops detaches loop devices still backed by img.
func detachLoops(img string) {
	out, err := exec.Command("losetup", "-j", img).Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(dev, "/dev/loop") {
			exec.Command("losetup", "-d", dev).Run()
		}
	}
}

func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// preparedVolume is an image changed in three steps, with the reference
// manifest of each step read from the real file system, and the point
// each step was backed up as.
type preparedVolume struct {
	dataVolume
	img       string
	manifests []h.Manifest
	points    []backupSummary
}

// prepare makes the file system, writes step 0 and applies steps 1 and 2,
// taking the reference manifest and a backup after each.
func (v dataVolume) prepare(t *testing.T, dir string, s *h.Server, token, machine string) *preparedVolume {
	t.Helper()
	p := &preparedVolume{dataVolume: v, img: filepath.Join(dir, v.name+".img")}
	if v.mount == nil { // mkfs.vfat -C makes the image file itself
		runTool(t, v.mkfs[0], append(append([]string{"-C"}, v.mkfs[1:]...), p.img, sizeKiB(v.size))...)
	} else {
		runTool(t, "truncate", "-s", v.size, p.img)
		runTool(t, v.mkfs[0], append(v.mkfs[1:], p.img)...)
	}
	mirror := filepath.Join(dir, v.name+"-mirror") // FAT: the tree mtools copies in
	mnt := filepath.Join(dir, v.name+"-mnt")
	for _, d := range []string{mirror, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for step := range 3 {
		start := time.Now()
		var m h.Manifest
		if v.mount != nil {
			unmount := v.mount(t, p.img, mnt)
			if _, _, err := h.WriteTree(mnt, v.tree, step); err != nil {
				unmount()
				t.Fatalf("%s step %d: %v", v.name, step, err)
			}
			var errs []error
			m, errs = h.TakeManifest(mnt)
			unmount()
			if len(errs) > 0 {
				t.Fatalf("%s step %d: manifest of the real file system: %v", v.name, step, errs)
			}
		} else {
			written, removed, err := h.WriteTree(mirror, v.tree, step)
			if err != nil {
				t.Fatalf("%s step %d: %v", v.name, step, err)
			}
			mtoolsSync(t, p.img, mirror, written, removed, step)
			m = mtoolsManifest(t, p.img, filepath.Join(dir, fmt.Sprintf("%s-extract%d", v.name, step)))
		}
		if n := m.Files(); n < dataFiles {
			t.Fatalf("%s step %d: %d regular files, want at least %d", v.name, step, n, dataFiles)
		}
		p.manifests = append(p.manifests, m)
		p.points = append(p.points, mustBackup(t, s, token, machine, v.name, p.img))
		t.Logf("%s step %d: %d paths (%d files) written and backed up as point %d in %v", v.name, step, len(m), m.Files(), p.points[step].Point.ID, time.Since(start).Round(time.Millisecond))
	}
	return p
}

func sizeKiB(size string) string {
	var n int64
	fmt.Sscanf(strings.TrimSuffix(size, "M"), "%d", &n)
	return fmt.Sprint(n << 10)
}

// mtoolsSync makes the FAT image hold what mirror holds for the paths a
// step wrote or removed: removed paths deleted, new directories made,
// files copied with their mtimes (mcopy -m). Step 0 (nothing removed,
// everything written) is one recursive copy.
func mtoolsSync(t *testing.T, img, mirror string, written, removed []string, step int) {
	t.Helper()
	if step == 0 {
		ents, err := os.ReadDir(mirror)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"-s", "-m", "-i", img}
		for _, e := range ents {
			args = append(args, filepath.Join(mirror, e.Name()))
		}
		runTool(t, "mcopy", append(args, "::/")...)
		return
	}
	byDir := map[string][]string{}
	var dirs, gone []string
	seen := map[string]bool{}
	for _, p := range append(append([]string(nil), written...), removed...) {
		if seen[p] {
			continue
		}
		seen[p] = true
		fi, err := os.Lstat(filepath.Join(mirror, filepath.FromSlash(p)))
		switch {
		case err != nil:
			gone = append(gone, "::/"+p)
		case fi.IsDir():
			dirs = append(dirs, "::/"+p)
		default:
			d := filepath.ToSlash(filepath.Dir(filepath.FromSlash(p)))
			byDir[d] = append(byDir[d], filepath.Join(mirror, filepath.FromSlash(p)))
		}
	}
	if len(gone) > 0 {
		runTool(t, "mdel", append([]string{"-i", img}, gone...)...)
	}
	if len(dirs) > 0 {
		sort.Strings(dirs) // parents before children
		runTool(t, "mmd", append([]string{"-i", img}, dirs...)...)
	}
	keys := make([]string, 0, len(byDir))
	for d := range byDir {
		keys = append(keys, d)
	}
	sort.Strings(keys)
	for _, d := range keys {
		dst := "::/"
		if d != "." {
			dst += d + "/"
		}
		runTool(t, "mcopy", append(append([]string{"-o", "-m", "-i", img}, byDir[d]...), dst)...)
	}
}

// mtoolsManifest reads the FAT image back with mtools (an independent FAT
// implementation) into dir and returns the manifest of what it extracted.
func mtoolsManifest(t *testing.T, img, dir string) h.Manifest {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	runTool(t, "mcopy", "-s", "-m", "-n", "-i", img, "::/*", dir+"/")
	m, errs := h.TakeManifest(dir)
	if len(errs) > 0 {
		t.Fatalf("manifest of the mtools extraction: %v", errs)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMountShowsEveryFileAtEveryPoint is the must-show of the time-travel
// file system: ext4, XFS, NTFS and FAT32 volumes of 5,000+ files each,
// backed up at three points with changes between them; through
// `rewind mount` every file at every point matches the manifest taken from
// the real file system at that moment.
func TestMountShowsEveryFileAtEveryPoint(t *testing.T) {
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "mkfs.ext4", "mkfs.xfs", "mkntfs", "ntfs-3g", "mkfs.vfat", "mcopy", "mmd", "mdel", "mount", "umount", "losetup", "truncate")
	t.Setenv("TZ", "UTC") // FAT keeps local time; mtools and the reader agree on UTC
	t.Setenv("LC_ALL", "C.UTF-8")
	t.Setenv("MTOOLS_SKIP_CHECK", "1")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "host1")
	// The volumes are made side by side: the work waits mostly on I/O.
	dvs := dataVolumes()
	vols := make([]*preparedVolume, len(dvs))
	t.Run("prepare", func(t *testing.T) {
		for i, v := range dvs {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				vols[i] = v.prepare(t, dir, s, tok, "host1")
			})
		}
	})
	if t.Failed() {
		return
	}
	checkThroughMount(t, repo, "host1", vols)
}

// pointDirName is the directory name the tree gives a point: RFC 3339 UTC
// with milliseconds.
func pointDirName(t *testing.T, rfc3339 string) string {
	t.Helper()
	pt, err := time.Parse(time.RFC3339Nano, rfc3339)
	if err != nil {
		t.Fatalf("point time %q: %v", rfc3339, err)
	}
	return pt.UTC().Format("2006-01-02T15:04:05.000Z")
}

// checkThroughMount mounts the whole repository and compares every file of
// every point of every volume with its reference manifest; then mounts
// one point alone (the drive-letter use) and compares it too.
func checkThroughMount(t *testing.T, repo, machine string, vols []*preparedVolume) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	startMount(t, mnt, "--repo", repo)
	t.Run("through mount", func(t *testing.T) {
		for _, v := range vols {
			t.Run(v.name, func(t *testing.T) {
				t.Parallel()
				checkVolume(t, mnt, machine, v)
			})
		}
	})
	// One point alone at the mount root, chosen by a typed time between
	// the second and third points of the first volume.
	v := vols[0]
	second, _ := time.Parse(time.RFC3339Nano, v.points[1].Point.Time)
	one := filepath.Join(t.TempDir(), "one")
	if err := os.Mkdir(one, 0o755); err != nil {
		t.Fatal(err)
	}
	startMount(t, one, "--repo", repo, "--machine", machine, "--volume", v.name,
		"--at", second.Add(time.Millisecond).UTC().Format(time.RFC3339Nano))
	got, errs := h.TakeManifest(one)
	diffs := h.Diff(v.manifests[1], got, v.cmp)
	report(t, v.name+" point 2 mounted alone", errs, diffs)
	t.Logf("%s point 2 mounted alone: %d paths, %d errors, %d differences", v.name, len(got), len(errs), len(diffs))
}

// checkVolume compares the three points of one volume under the mount of
// the whole repository with their manifests.
func checkVolume(t *testing.T, mnt, machine string, v *preparedVolume) {
	volDir := filepath.Join(mnt, machine, v.name)
	var names []string
	for _, p := range v.points {
		names = append(names, pointDirName(t, p.Point.Time))
	}
	ents, err := os.ReadDir(volDir)
	if err != nil {
		t.Errorf("list %s: %v", volDir, err)
	}
	var listed []string
	for _, e := range ents {
		listed = append(listed, e.Name())
	}
	if want := append(append([]string(nil), names...), "latest"); strings.Join(listed, " ") != strings.Join(want, " ") {
		t.Errorf("%s lists %q, want %q", volDir, listed, want)
	}
	if tgt, err := os.Readlink(filepath.Join(volDir, "latest")); err != nil || filepath.Base(tgt) != names[2] {
		t.Errorf("%s/latest -> %q (%v), want the third point %s", volDir, tgt, err, names[2])
	}
	for i, name := range names {
		start := time.Now()
		got, errs := h.TakeManifest(filepath.Join(volDir, name, "files"))
		diffs := h.Diff(v.manifests[i], got, v.cmp)
		report(t, fmt.Sprintf("%s point %d (%s)", v.name, i+1, name), errs, diffs)
		t.Logf("%s point %d: %d paths through the mount, %d errors, %d differences (%v)", v.name, i+1, len(got), len(errs), len(diffs), time.Since(start).Round(time.Millisecond))
	}
}

// report fails the test with the first errors and differences found.
func report(t *testing.T, what string, errs []error, diffs []string) {
	t.Helper()
	for i, e := range errs {
		if i == 10 {
			t.Errorf("%s: … %d more errors", what, len(errs)-10)
			break
		}
		t.Errorf("%s: %v", what, e)
	}
	for i, d := range diffs {
		if i == 20 {
			t.Errorf("%s: … %d more differences", what, len(diffs)-20)
			break
		}
		t.Errorf("%s: %s", what, d)
	}
}
