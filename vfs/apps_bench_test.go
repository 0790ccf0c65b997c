package vfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/mdf"
	"github.com/rewind-cdp/rewind/parsers/mdf/export"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/test/testenv"
	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/vfstest"
)

// BenchmarkAppViews measures, on an ext4 volume of 5,000 files in 50
// directories plus Northwind's .mdf, in one run:
//   - list-point/no-apps vs list-point/apps: a cold listing of the point
//     directory without and with the walk that finds databases;
//   - sql-dir/mount vs sql-dir/direct: generating every table of the
//     database as CSV and JSONL through the tree (cold, the file read from
//     the repository) and exporting the same from the file in memory.
func BenchmarkAppViews(b *testing.B) {
	testenv.NeedTool(b, "mkfs.ext4")
	ctx := context.Background()
	northwind := testenv.FixtureBytes(b, "mdf/sql2008_655_northwind_itsligo.mdf")
	work := b.TempDir()
	src := filepath.Join(work, "src")
	for d := 0; d < 50; d++ {
		dir := filepath.Join(src, fmt.Sprintf("dir%02d", d))
		os.MkdirAll(dir, 0o755)
		for i := 0; i < 100; i++ {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%03d.txt", i)), []byte("x"), 0o644)
		}
	}
	os.MkdirAll(filepath.Join(src, "SQLData"), 0o755)
	os.WriteFile(filepath.Join(src, "SQLData", "Sales.mdf"), northwind, 0o644)
	img := filepath.Join(work, "fs.img")
	run(b, "mkfs.ext4", "-q", "-F", "-d", src, img, "64M")
	repo, err := repository.Init(ctx, filepath.Join(work, "repo"))
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()
	vfstest.StoreImage(b, repo, "sql1", "d", img)
	ps, _ := repo.Catalog.Points(ctx, "sql1", "d")
	pt := "/sql1/d/" + vfs.PointNames(ps)[0]

	list := func(b *testing.B, apps []vfs.AppProvider, p string) {
		for i := 0; i < b.N; i++ {
			tree, err := vfs.New(ctx, repo, vfs.Options{Location: time.UTC, Apps: apps, AppCacheDir: filepath.Join(work, "cache")})
			if err != nil {
				b.Fatal(err)
			}
			a, err := tree.Walk(ctx, p)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tree.Readdir(ctx, a.Ino); err != nil {
				b.Fatal(err)
			}
			tree.Close()
		}
	}
	b.Run("list-point/no-apps", func(b *testing.B) { list(b, []vfs.AppProvider{}, pt) })
	b.Run("list-point/apps", func(b *testing.B) { list(b, nil, pt) })
	b.Run("sql-dir/mount", func(b *testing.B) {
		b.SetBytes(int64(len(northwind)))
		list(b, nil, pt+"/sql/NORTHWND")
	})
	b.Run("sql-dir/direct", func(b *testing.B) {
		b.SetBytes(int64(len(northwind)))
		for i := 0; i < b.N; i++ {
			db, err := mdf.Open(ctx, bytes.NewReader(northwind), int64(len(northwind)), mdf.Options{})
			if err != nil {
				b.Fatal(err)
			}
			for _, t := range db.Tables() {
				for _, f := range []string{"csv", "jsonl"} {
					var out bytes.Buffer
					w, _ := export.NewWriter(&out, f, t, export.Options{})
					db.ReadTable(ctx, t, w.WriteRow)
					w.Close()
				}
			}
		}
	})
}
