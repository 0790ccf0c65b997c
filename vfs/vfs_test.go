package vfs_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/vfstest"
)

func TestConformance(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	e := vfstest.BuildExt4(t, dir)
	repo, err := repository.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	tree, err := vfs.New(ctx, repo, vfs.Options{Location: time.UTC, CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	vfstest.RunRepository(t, vfstest.Direct(tree), e)
	st := tree.Stats()
	t.Logf("cache: %+v", st)
}
