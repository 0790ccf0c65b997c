package vfs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/ese"
	eseexport "github.com/rewind-cdp/rewind/parsers/ese/export"
	"github.com/rewind-cdp/rewind/parsers/mdf"
	"github.com/rewind-cdp/rewind/parsers/mdf/export"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/test/testenv"
	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/vfstest"
)

// mdfExport is what `rewind sql export` writes for a table of the file.
func mdfExport(t *testing.T, file []byte, table, format string) []byte {
	t.Helper()
	ctx := context.Background()
	db, err := mdf.Open(ctx, bytes.NewReader(file), int64(len(file)), mdf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := db.Table(table)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w, err := export.NewWriter(&b, format, tb, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ReadTable(ctx, tb, w.WriteRow); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// eseExport is what `rewind ese export --format jsonl` writes.
func eseExport(t *testing.T, file []byte, table string) []byte {
	t.Helper()
	ctx := context.Background()
	db, err := ese.Open(ctx, bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := db.Table(table)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := eseexport.Table(ctx, &b, tb, "jsonl", nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// firstPageOf returns the page holding the first row of a table.
func firstPageOf(t *testing.T, file []byte, table string) int64 {
	t.Helper()
	ctx := context.Background()
	db, err := mdf.Open(ctx, bytes.NewReader(file), int64(len(file)), mdf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := db.Table(table)
	if err != nil {
		t.Fatal(err)
	}
	page := int64(-1)
	stop := errors.New("stop")
	db.ReadTable(ctx, tb, func(r *mdf.Row) error { page = int64(r.RID.Page); return stop })
	if page < 0 {
		t.Fatalf("%s has no rows", table)
	}
	return page
}

func readAll(t *testing.T, tree *vfs.FS, p string) ([]byte, error) {
	t.Helper()
	ctx := context.Background()
	a, err := tree.Walk(ctx, p)
	if err != nil {
		return nil, err
	}
	h, err := tree.Open(ctx, a.Ino, false)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	b := make([]byte, a.Size+10)
	n, err := h.Read(ctx, b, 0)
	if err != nil {
		return nil, err
	}
	if int64(n) != a.Size {
		t.Errorf("%s: read %d bytes, stat says %d", p, n, a.Size)
	}
	return b[:n], nil
}

func listNames(t *testing.T, tree *vfs.FS, p string) ([]string, error) {
	t.Helper()
	ctx := context.Background()
	a, err := tree.Walk(ctx, p)
	if err != nil {
		return nil, err
	}
	es, err := tree.Readdir(ctx, a.Ino)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	slices.Sort(out)
	return out, nil
}

// TestAppViews: .mdf and ESE files on an ext4 volume show under sql/ and
// ese/ at each point with the bytes the export commands write; a damaged
// table and an unreadable database give EIO while the rest stays
// readable; listings and opens reach the audit log; a tiny cache drops and
// regenerates files without changing them.
func TestAppViews(t *testing.T) {
	testenv.NeedTool(t, "mkfs.ext4")
	ctx := context.Background()
	northwind := testenv.FixtureBytes(t, "mdf/sql2008_655_northwind_itsligo.mdf")
	pubs := testenv.FixtureBytes(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	srudb := testenv.FixtureBytes(t, "ese/win10_SRUDB.dat")
	basic := testenv.FixtureBytes(t, "ese/dissect_basic.edb.gz")

	work := t.TempDir()
	src := filepath.Join(work, "src")
	put := func(rel string, b []byte) {
		t.Helper()
		p := filepath.Join(src, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("SQLData/Sales.mdf", northwind)
	put("Windows/System32/sru/SRUDB.dat", srudb)
	put("apps/basic.edb", basic)
	put("apps/settings.dat", bytes.Repeat([]byte("not an ESE database "), 1000))
	put("Windows/WinSxS/hidden.mdf", pubs) // skipped by the walk
	// a copy of Northwind with a damaged page in dbo.Orders
	broken := bytes.Clone(northwind)
	pg := firstPageOf(t, broken, "dbo.Orders")
	broken[pg*mdf.PageSize+4000] ^= 0xff
	put("Z-Damaged/Broken.mdf", broken)
	// a file header page, then nothing readable
	garbage := make([]byte, 12*mdf.PageSize)
	copy(garbage, northwind[:mdf.PageSize])
	put("Z-Damaged/Garbage.mdf", garbage)

	img := filepath.Join(work, "fs.img")
	run(t, "mkfs.ext4", "-q", "-F", "-d", src, img, "64M")
	dir := filepath.Join(work, "repo")
	repo, err := repository.Init(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	p1 := vfstest.StoreImage(t, repo, "sql1", "d", img)
	put("SQLData/Sales.mdf", pubs)
	os.Remove(filepath.Join(src, "apps", "basic.edb"))
	run(t, "mkfs.ext4", "-q", "-F", "-d", src, img, "64M")
	time.Sleep(10 * time.Millisecond)
	p2 := vfstest.StoreImage(t, repo, "sql1", "d", img)

	var audit bytes.Buffer
	tree, err := vfs.New(ctx, repo, vfs.Options{Location: time.UTC, CacheSize: 8 << 20, Audit: &audit,
		AppCacheSize: 1, AppCacheDir: filepath.Join(work, "appcache")})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	vfs.SetMaxOpenAppDBs(tree, 1) // databases are dropped and opened again
	ps, err := repo.Catalog.Points(ctx, "sql1", "d")
	if err != nil {
		t.Fatal(err)
	}
	names := vfs.PointNames(ps)
	pt1, pt2 := "/sql1/d/"+names[0], "/sql1/d/"+names[1]
	_ = p1
	_ = p2

	if got, err := listNames(t, tree, pt1); err != nil || !slices.Equal(got, []string{"disk.img", "disk.vhd", "disk.vmdk", "ese", "files", "sql"}) {
		t.Fatalf("ls %s = %v %v", pt1, got, err)
	}
	if got, err := listNames(t, tree, pt1+"/sql"); err != nil || !slices.Equal(got, []string{"Garbage", "NORTHWND", "NORTHWND~2"}) {
		t.Errorf("ls %s/sql = %v %v", pt1, got, err)
	}
	if got, err := listNames(t, tree, pt2+"/sql"); err != nil || !slices.Equal(got, []string{"Garbage", "NORTHWND", "PUBS"}) {
		t.Errorf("ls %s/sql = %v %v", pt2, got, err)
	}
	tables, err := listNames(t, tree, pt1+"/sql/NORTHWND")
	if err != nil || !slices.Contains(tables, "dbo.Customers.csv") || !slices.Contains(tables, "dbo.Order Details.jsonl") || len(tables) != 26 {
		t.Errorf("ls sql/NORTHWND = %v %v", tables, err)
	}
	for _, c := range []struct{ pt, db, table string }{{pt1, "NORTHWND", "dbo.Customers"}, {pt1, "NORTHWND", "dbo.Order Details"}, {pt2, "PUBS", "dbo.authors"}} {
		file := northwind
		if c.db == "PUBS" {
			file = pubs
		}
		for _, format := range []string{"csv", "jsonl"} {
			p := c.pt + "/sql/" + c.db + "/" + c.table + "." + format
			got, err := readAll(t, tree, p)
			if err != nil {
				t.Errorf("read %s: %v", p, err)
				continue
			}
			if want := mdfExport(t, file, c.table, format); !bytes.Equal(got, want) {
				t.Errorf("%s: %d bytes differ from the export's %d", p, len(got), len(want))
			}
		}
	}
	if b, err := readAll(t, tree, pt1+"/sql/NORTHWND/dbo.Customers.csv"); err != nil || !strings.Contains(string(b), "ALFKI,Alfreds Futterkiste,Maria Anders") {
		t.Errorf("Customers.csv lacks ALFKI: %v", err)
	}
	// the damaged copy (same database name: a suffix): Orders fails
	// with EIO, Customers reads
	if _, err := readAll(t, tree, pt1+"/sql/NORTHWND~2/dbo.Orders.csv"); vfs.ErrnoOf(err) != vfs.EIO {
		t.Errorf("sql/NORTHWND~2/dbo.Orders.csv: %v, want EIO", err)
	}
	if got, err := readAll(t, tree, pt1+"/sql/NORTHWND~2/dbo.Customers.jsonl"); err != nil || !bytes.Equal(got, mdfExport(t, northwind, "dbo.Customers", "jsonl")) {
		t.Errorf("sql/NORTHWND~2/dbo.Customers.jsonl: %v", err)
	}
	if tables, err := listNames(t, tree, pt1+"/sql/NORTHWND~2"); err != nil || len(tables) != 26 {
		t.Errorf("ls sql/NORTHWND~2 = %v %v", tables, err)
	}
	if _, err := listNames(t, tree, pt1+"/sql/Garbage"); vfs.ErrnoOf(err) != vfs.EIO {
		t.Errorf("ls sql/Garbage: %v, want EIO", err)
	}

	// ESE
	if got, err := listNames(t, tree, pt1+"/ese"); err != nil || !slices.Equal(got, []string{"SRUDB", "basic"}) {
		t.Errorf("ls %s/ese = %v %v", pt1, got, err)
	}
	if got, err := listNames(t, tree, pt2+"/ese"); err != nil || !slices.Equal(got, []string{"SRUDB"}) {
		t.Errorf("ls %s/ese = %v %v", pt2, got, err)
	}
	db, err := ese.Open(ctx, bytes.NewReader(srudb), int64(len(srudb)))
	if err != nil {
		t.Fatal(err)
	}
	eseTables, _ := listNames(t, tree, pt1+"/ese/SRUDB")
	if len(eseTables) != len(db.Tables()) {
		t.Errorf("ese/SRUDB lists %d files, the database has %d tables", len(eseTables), len(db.Tables()))
	}
	for _, tb := range db.Tables() {
		got, err := readAll(t, tree, pt1+"/ese/SRUDB/"+tb.Name+".jsonl")
		if err != nil {
			t.Errorf("ese/SRUDB/%s.jsonl: %v", tb.Name, err)
			continue
		}
		if want := eseExport(t, srudb, tb.Name); !bytes.Equal(got, want) {
			t.Errorf("ese/SRUDB/%s.jsonl: %d bytes differ from the export's %d", tb.Name, len(got), len(want))
		}
	}

	// concurrent first reads of files of one database (generated once,
	// the database dropped and reopened between them)
	want := map[string][]byte{}
	for _, tb := range []string{"dbo.titles", "dbo.sales", "dbo.publishers", "dbo.employee"} {
		want[pt2+"/sql/PUBS/"+tb+".jsonl"] = mdfExport(t, pubs, tb, "jsonl")
	}
	want[pt2+"/ese/SRUDB/"+db.Tables()[0].Name+".jsonl"] = eseExport(t, srudb, db.Tables()[0].Name)
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p, w := range want {
				if got, err := readAll(t, tree, p); err != nil || !bytes.Equal(got, w) {
					t.Errorf("concurrent read of %s: %d bytes, %v", p, len(got), err)
				}
			}
		}()
	}
	wg.Wait()

	// a names-only listing (FUSE) generates nothing; a full one generates
	// every file to learn its size
	fresh, err := vfs.New(ctx, repo, vfs.Options{Location: time.UTC, AppCacheDir: filepath.Join(work, "fresh")})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	a, err := fresh.Walk(ctx, pt2+"/sql/PUBS")
	if err != nil {
		t.Fatal(err)
	}
	es, err := fresh.Readdir(vfs.WithNamesOnly(ctx), a.Ino)
	gen, _ := filepath.Glob(filepath.Join(work, "fresh", "*", "gen-*"))
	if err != nil || len(es) != 22 || len(gen) != 0 {
		t.Errorf("names-only listing of sql/PUBS: %d entries, %v; %d files generated, want 22 and none", len(es), err, len(gen))
	}
	es, err = fresh.Readdir(ctx, a.Ino)
	gen, _ = filepath.Glob(filepath.Join(work, "fresh", "*", "gen-*"))
	if err != nil || len(es) != 22 || len(gen) != 22 {
		t.Errorf("full listing of sql/PUBS: %d entries, %v; %d files generated, want 22 and 22", len(es), err, len(gen))
	}
	for _, e := range es {
		if e.Attr.Size <= 0 && !strings.HasSuffix(e.Name, ".jsonl") {
			t.Errorf("full listing: %s has size %d", e.Name, e.Attr.Size)
		}
	}

	// not a view: the name only exists where something was found
	if _, err := tree.Walk(ctx, pt1+"/exchange"); vfs.ErrnoOf(err) != vfs.ENOENT {
		t.Errorf("%s/exchange: %v, want ENOENT", pt1, err)
	}

	// the audit log saw the opens and listings
	var sawOpen, sawList bool
	for _, line := range strings.Split(strings.TrimSpace(audit.String()), "\n") {
		var r vfs.AuditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if r.Op == "open" && r.Path == pt1+"/sql/NORTHWND/dbo.Customers.csv" && r.Machine == "sql1" && r.Point == names[0] {
			sawOpen = true
		}
		if r.Op == "list" && r.Path == pt1+"/ese/SRUDB" {
			sawList = true
		}
	}
	if !sawOpen || !sawList {
		t.Errorf("audit log lacks the open (%v) or the listing (%v):\n%s", sawOpen, sawList, audit.String())
	}
	// with a 1-byte cache only the newest file stays on disk
	if fs, _ := filepath.Glob(filepath.Join(work, "appcache", "*", "gen-*")); len(fs) > 1 {
		t.Errorf("the application cache keeps %d files, want at most 1", len(fs))
	}
	tree.Close()
	if fs, _ := filepath.Glob(filepath.Join(work, "appcache", "*")); len(fs) != 0 {
		t.Errorf("Close left %v", fs)
	}
}

// The providers' Match and Probe accept their files and reject others,
// damaged and short ones included, without panicking.
func TestAppProbes(t *testing.T) {
	ctx := context.Background()
	northwind := testenv.FixtureBytes(t, "mdf/sql2008_655_northwind_itsligo.mdf")
	srudb := testenv.FixtureBytes(t, "ese/win10_SRUDB.dat")
	shadowOnly := bytes.Clone(srudb)
	clear(shadowOnly[:4096]) // primary header gone: the shadow copy still says ESE
	sql, es := vfs.SQLApp{}, vfs.ESEApp{}
	for _, c := range []struct {
		name string
		p    vfs.AppProvider
		path string
		b    []byte
		want bool
	}{
		{"mdf", sql, "/d/Sales.MDF", northwind, true},
		{"mdf as .ldf", sql, "/d/Sales_log.ldf", northwind, false},
		{"ese as .mdf", sql, "/d/x.mdf", srudb, false},
		{"short mdf", sql, "/d/x.mdf", northwind[:9*mdf.PageSize], false},
		{"ese", es, "/Windows/System32/sru/SRUDB.dat", srudb, true},
		{"ese, shadow header", es, "/x.edb", shadowOnly, true},
		{"ese as .txt", es, "/x.txt", srudb, false},
		{"mdf as .dat", es, "/x.dat", northwind, false},
		{"zeros as .edb", es, "/x.edb", make([]byte, 64<<10), false},
		{"short ese", es, "/x.edb", srudb[:4096], false},
	} {
		got := c.p.Match(c.path, int64(len(c.b))) && c.p.Probe(ctx, bytes.NewReader(c.b), int64(len(c.b)))
		if got != c.want {
			t.Errorf("%s: %s claims %s: %v, want %v", c.name, c.p.Dir(), c.path, got, c.want)
		}
	}
}
