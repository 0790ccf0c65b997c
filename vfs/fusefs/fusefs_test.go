//go:build linux

package fusefs_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/test/testenv"
	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/fusefs"
	"github.com/rewind-cdp/rewind/vfs/vfstest"
)

// fixture is one repository shared by the tests of this package.
var fixture struct {
	once sync.Once
	dir  string
	e    vfstest.Expect
	ok   bool
}

func setup(t *testing.T) (string, vfstest.Expect) {
	t.Helper()
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "mkfs.ext4", "debugfs")
	fixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "rewind-fusefs-test-")
		if err != nil {
			t.Fatal(err)
		}
		fixture.dir = filepath.Join(dir, "repo")
		fixture.e = vfstest.BuildExt4(t, fixture.dir)
		fixture.ok = true
	})
	if !fixture.ok {
		t.Fatal("building the test repository failed (see the first test)")
	}
	return fixture.dir, fixture.e
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(filepath.Dir(fixture.dir))
	}
	os.Exit(code)
}

// mount serves a tree of repoDir at a new directory, unmounting in
// t.Cleanup also when the test fails.
func mount(t *testing.T, repoDir string, opt vfs.Options, fo fusefs.Options) (string, *vfs.FS, *repository.Repo) {
	t.Helper()
	ctx := context.Background()
	repo, err := repository.Open(ctx, repoDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close() })
	if opt.Location == nil {
		opt.Location = time.UTC
	}
	tree, err := vfs.New(ctx, repo, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tree.Close() })
	mnt := t.TempDir()
	srv, err := fusefs.Mount(tree, mnt, fo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mnt, tree, repo
}

func TestConformanceThroughMount(t *testing.T) {
	dir, e := setup(t)
	mnt, _, _ := mount(t, dir, vfs.Options{}, fusefs.Options{})
	vfstest.RunRepository(t, vfstest.Dir(mnt), e)
}

func TestQemuImgCompare(t *testing.T) {
	testenv.NeedTool(t, "qemu-img")
	dir, e := setup(t)
	mnt, _, _ := mount(t, dir, vfs.Options{}, fusefs.Options{})
	for _, p := range e.Points {
		if len(p.Damaged) > 0 {
			continue
		}
		d := filepath.Join(mnt, p.Machine, p.Volume, p.Name)
		for _, c := range [][]string{
			{"compare", "-f", "vpc", "-F", "raw", filepath.Join(d, "disk.vhd"), filepath.Join(d, "disk.img")},
			{"compare", "-f", "vmdk", "-F", "raw", filepath.Join(d, "disk.vmdk"), filepath.Join(d, "disk.img")},
		} {
			out, err := exec.Command("qemu-img", c...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Images are identical") {
				t.Errorf("qemu-img %s: %v\n%s", strings.Join(c, " "), err, out)
			}
		}
		for _, c := range [][]string{{"-f", "vpc", "disk.vhd", "file format: vpc"}, {"-f", "vmdk", "disk.vmdk", "file format: vmdk"}} {
			out, err := exec.Command("qemu-img", "info", c[0], c[1], filepath.Join(d, c[2])).CombinedOutput()
			if err != nil || !strings.Contains(string(out), c[3]) {
				t.Errorf("qemu-img info %s: %v\n%s", c[2], err, out)
			}
		}
	}
}

func TestOnePointMount(t *testing.T) {
	dir, e := setup(t)
	p := e.Points[1]
	repo, err := repository.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	ps, err := repo.Catalog.Points(context.Background(), p.Machine, p.Volume)
	if err != nil {
		t.Fatal(err)
	}
	pt := ps[1]
	mnt, _, _ := mount(t, dir, vfs.Options{Point: &pt}, fusefs.Options{})
	vfstest.RunPoint(t, vfstest.Dir(mnt), p)
}

func TestAuditLog(t *testing.T) {
	dir, e := setup(t)
	var buf syncBuffer
	mnt, _, _ := mount(t, dir, vfs.Options{Audit: &buf}, fusefs.Options{})
	p := e.Points[0]
	pd := filepath.Join(mnt, p.Machine, p.Volume, p.Name)
	if _, err := os.ReadDir(filepath.Join(pd, "files")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(pd, "files", "hardlink-a")); err != nil {
		t.Fatal(err)
	}
	var recs []vfs.AuditRecord
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		var r vfs.AuditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	want := map[string]bool{"list /" + p.Machine + "/" + p.Volume + "/" + p.Name + "/files": false}
	for _, r := range recs {
		if r.PID == 0 || r.Time.IsZero() {
			t.Errorf("audit record without caller or time: %+v", r)
		}
		if r.UID != uint32(os.Getuid()) {
			t.Errorf("audit record uid %d, want %d", r.UID, os.Getuid())
		}
		if r.Op == "open" && strings.Contains(r.Path, "/files/") {
			want["open"] = true
			if r.Machine != p.Machine || r.Volume != p.Volume || r.Point != p.Name {
				t.Errorf("open record: %+v", r)
			}
		}
		if _, ok := want[r.Op+" "+r.Path]; ok {
			want[r.Op+" "+r.Path] = true
		}
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("no audit record %q in\n%s", k, buf.String())
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func sha(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestWritableOverlay(t *testing.T) {
	dir, e := setup(t)
	p := e.Points[2]
	scratch := t.TempDir()
	mnt, _, _ := mount(t, dir, vfs.Options{Writable: true, Scratch: scratch}, fusefs.Options{Writable: true})
	pd := filepath.Join(mnt, p.Machine, p.Volume, p.Name)
	img := filepath.Join(pd, "disk.img")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("written through the overlay")
	// unaligned, across a granule boundary
	if _, err := f.WriteAt(msg, 3*4096-5); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, len(msg))
	for _, name := range []string{"disk.img", "disk.vhd"} {
		g, err := os.Open(filepath.Join(pd, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.ReadAt(got, 3*4096-5); err != nil || !bytes.Equal(got, msg) {
			t.Errorf("%s after the write: %q %v", name, got, err)
		}
		g.Close()
	}
	if sha(t, img) == p.DiskSHA256 {
		t.Error("disk.img unchanged after the write")
	}
	if err := os.WriteFile(filepath.Join(pd, "files", "new"), nil, 0o644); err == nil {
		t.Error("created a file in files/ of a writable mount")
	}
	ents, _ := os.ReadDir(scratch)
	if len(ents) != 1 {
		t.Errorf("scratch holds %d files, want one overlay", len(ents))
	}
	// the repository did not change: a read-only tree reads the point as stored
	ro, _, _ := mount(t, dir, vfs.Options{}, fusefs.Options{})
	if got := sha(t, filepath.Join(ro, p.Machine, p.Volume, p.Name, "disk.img")); got != p.DiskSHA256 {
		t.Errorf("the point changed in the repository: %s, want %s", got, p.DiskSHA256)
	}
}

func TestNewPointsAppear(t *testing.T) {
	dir, e := setup(t)
	// a repository of its own: this test adds a point
	own := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command("cp", "-a", dir, own).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	mnt, _, repo := mount(t, own, vfs.Options{Refresh: 100 * time.Millisecond}, fusefs.Options{Timeout: 100 * time.Millisecond})
	vd := filepath.Join(mnt, vfstest.Machine, vfstest.Volume)
	before, err := os.Readlink(filepath.Join(vd, "latest"))
	if err != nil {
		t.Fatal(err)
	}
	if before != e.Points[2].Name {
		t.Fatalf("latest -> %s, want %s", before, e.Points[2].Name)
	}
	img := filepath.Join(t.TempDir(), "new.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	np := vfstest.StoreImage(t, repo, vfstest.Machine, vfstest.Volume, img)
	deadline := time.Now().Add(5 * time.Second)
	for {
		after, err := os.Readlink(filepath.Join(vd, "latest"))
		if err == nil && after != before {
			if ts, _ := time.Parse(time.RFC3339Nano, after); !ts.Truncate(time.Millisecond).Equal(np.Time.Truncate(time.Millisecond)) {
				t.Errorf("latest -> %s, want the new point at %v", after, np.Time)
			}
			ents, err := os.ReadDir(vd)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, en := range ents {
				found = found || en.Name() == after
			}
			if !found {
				t.Errorf("listing does not show the new point %s", after)
			}
			if _, err := os.Stat(filepath.Join(vd, after, "files", "lost+found")); err != nil {
				t.Errorf("new point's files: %v", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("latest still -> %s (%v) 5 s after a new point", after, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
