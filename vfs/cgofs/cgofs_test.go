//go:build linux && cgo && fuse3

package cgofs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/test/testenv"
	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/cgofs"
	"github.com/rewind-cdp/rewind/vfs/vfstest"
)

// The Windows adapter cannot run here (no WinFsp), but cgofuse serves the
// same interface through libfuse3 on Linux: these tests run the adapter's
// code through a real kernel mount with the tree's conformance suite.
// Run them with: go test -tags fuse3 ./vfs/cgofs (needs libfuse3-dev).

func mount(t *testing.T, repoDir string, opt vfs.Options, co cgofs.Options) string {
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
	srv, err := cgofs.Mount(tree, mnt, co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	return mnt
}

// fixture is one repository shared by the tests of this package.
var fixture struct {
	once sync.Once
	dir  string
	e    vfstest.Expect
	ok   bool
}

func build(t *testing.T) (string, vfstest.Expect) {
	t.Helper()
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "mkfs.ext4", "debugfs")
	fixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "rewind-cgofs-test-")
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

func TestConformanceThroughCgofuse(t *testing.T) {
	dir, e := build(t)
	mnt := mount(t, dir, vfs.Options{}, cgofs.Options{})
	vfstest.RunRepository(t, vfstest.Dir(mnt), e)

	// Nothing changes a backup.
	p := e.Points[0]
	d := filepath.Join(mnt, p.Machine, p.Volume, p.Name)
	for _, err := range []error{
		os.WriteFile(filepath.Join(d, "files", "new.txt"), []byte("x"), 0o644),
		os.Mkdir(filepath.Join(d, "files", "newdir"), 0o755),
		os.Remove(filepath.Join(d, "disk.img")),
		func() error {
			f, err := os.OpenFile(filepath.Join(d, "disk.img"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}(),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("a change to the read-only tree gave %v, want EROFS", err)
		}
	}
}

func TestOnePointThroughCgofuse(t *testing.T) {
	dir, e := build(t)
	p := e.Points[1]
	repo, err := repository.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := repo.Catalog.Points(context.Background(), p.Machine, p.Volume)
	repo.Close()
	if err != nil {
		t.Fatal(err)
	}
	pt := ps[1]
	mnt := mount(t, dir, vfs.Options{Point: &pt}, cgofs.Options{})
	vfstest.RunPoint(t, vfstest.Dir(mnt), p)
}
