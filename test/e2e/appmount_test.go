//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/mdf"
	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// dirFiles reads every file of a directory (one level) by name.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	out := map[string][]byte{}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Errorf("read %s: %v", filepath.Join(dir, e.Name()), err)
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil || fi.Size() != int64(len(b)) {
			t.Errorf("%s: stat size %v (%v), read %d bytes", e.Name(), fi.Size(), err, len(b))
		}
		out[e.Name()] = b
	}
	return out
}

// firstPage returns the page holding the first row of a table.
func firstPage(t *testing.T, file []byte, table string) int {
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
	page := -1
	stop := errors.New("stop")
	db.ReadTable(ctx, tb, func(r *mdf.Row) error { page = int(r.RID.Page); return stop })
	if page < 0 {
		t.Fatalf("%s has no rows", table)
	}
	return page
}

func fileNames(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// An .mdf on an NTFS volume image (mkntfs, written through ntfs-3g),
// backed up, replaced by another .mdf, backed up again: sql/ in the mount
// shows each point's database with every table's CSV and JSONL equal to
// `rewind sql export-all` of the same file at that point. ESE databases
// on the volume show under ese/ with every table equal to
// `rewind ese export`. A damaged copy of the .mdf shows with EIO on the
// damaged table only. Opens and listings reach the audit log.
func TestMountApplicationViews(t *testing.T) {
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "mkntfs", "ntfs-3g")
	northwind := testenv.Fixture(t, "mdf/sql2008_655_northwind_itsligo.mdf")
	pubs := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	srudb := testenv.Fixture(t, "ese/win10_SRUDB.dat")
	basic := testenv.FixtureBytes(t, "ese/dissect_basic.edb.gz")

	dir := t.TempDir()
	img := filepath.Join(dir, "ntfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	mustCmd(t, "mkntfs", "-F", "-Q", "-q", img)
	vmnt := filepath.Join(dir, "ntfs")
	os.Mkdir(vmnt, 0o755)
	// write files through the NTFS driver
	write := func(files map[string][]byte) {
		t.Helper()
		unmount := ntfs3gMount(t, img, vmnt)
		for rel, b := range files {
			p := filepath.Join(vmnt, filepath.FromSlash(rel))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		unmount()
	}
	read := func(p string) []byte {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// a copy of Northwind with one damaged page in dbo.Orders
	broken := read(northwind)
	broken[firstPage(t, broken, "dbo.Orders")*mdf.PageSize+4000] ^= 0xff
	write(map[string][]byte{
		"SQLData/Sales.mdf":              read(northwind),
		"ZBad/Broken.mdf":                broken,
		"Windows/System32/sru/SRUDB.dat": read(srudb),
		"Apps/basic.edb":                 basic,
		"Apps/readme.txt":                []byte("not a database\n"),
	})
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "sql1")
	p1 := mustBackup(t, s, tok, "sql1", "data", img)
	write(map[string][]byte{"SQLData/Sales.mdf": read(pubs)})
	p2 := mustBackup(t, s, tok, "sql1", "data", img)

	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	audit := filepath.Join(dir, "audit.jsonl")
	startMount(t, mnt, "--repo", repo, "--audit-log", audit)

	// the point directories by their ids' times, through typed names
	pointDir := func(b backupSummary) string {
		return filepath.Join(mnt, "sql1", "data", b.Point.Time)
	}
	for _, c := range []struct {
		p  backupSummary
		db string
	}{{p1, "NORTHWND"}, {p2, "PUBS"}} {
		pd := pointDir(c.p)
		es, err := os.ReadDir(pd)
		if err != nil {
			t.Fatalf("ls %s: %v", pd, err)
		}
		var got []string
		for _, e := range es {
			got = append(got, e.Name())
		}
		if !slices.Contains(got, "sql") || !slices.Contains(got, "ese") || !slices.Contains(got, "files") {
			t.Errorf("ls %s = %v, want sql, ese and files", pd, got)
		}
		dbs, err := os.ReadDir(filepath.Join(pd, "sql"))
		// with the damaged copy of Northwind (at point 1 its name clashes)
		want := []string{"NORTHWND", "NORTHWND~2"}
		if c.db == "PUBS" {
			want = []string{"NORTHWND", "PUBS"}
		}
		if err != nil || len(dbs) != 2 || dbs[0].Name() != want[0] || dbs[1].Name() != want[1] {
			t.Errorf("ls %s/sql = %v %v, want %v", pd, dbs, err, want)
			continue
		}
		view := dirFiles(t, filepath.Join(pd, "sql", c.db))
		for _, format := range []string{"csv", "jsonl"} {
			out := filepath.Join(dir, fmt.Sprintf("export-%d-%s", c.p.Point.ID, format))
			h.MustRun(t, nil, "sql", "export-all", "--repo", repo, "--machine", "sql1", "--volume", "data",
				"--at", fmt.Sprint(c.p.Point.ID), "--path", "/SQLData/Sales.mdf", "--dir", out, "--format", format)
			want := dirFiles(t, out)
			if len(want) == 0 {
				t.Fatalf("export-all wrote nothing into %s", out)
			}
			for name, b := range want {
				if got, ok := view[name]; !ok {
					t.Errorf("%s/sql/%s lacks %s (has %v)", pd, c.db, name, fileNames(view))
				} else if !bytes.Equal(got, b) {
					t.Errorf("%s/sql/%s/%s: %d bytes, differ from rewind sql export's %d", pd, c.db, name, len(got), len(b))
				}
			}
		}
		if n := len(view); n%2 != 0 || n == 0 {
			t.Errorf("%s/sql/%s holds %d files, want a .csv and a .jsonl per table", pd, c.db, n)
		}
	}
	if b, err := os.ReadFile(filepath.Join(pointDir(p1), "sql", "NORTHWND", "dbo.Customers.csv")); err != nil ||
		!strings.Contains(string(b), "ALFKI,Alfreds Futterkiste,Maria Anders") {
		t.Errorf("sql/NORTHWND/dbo.Customers.csv at point 1 lacks ALFKI: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(pointDir(p2), "sql", "PUBS", "dbo.authors.csv")); err != nil ||
		!strings.Contains(string(b), "172-32-1176,White,Johnson") {
		t.Errorf("sql/PUBS/dbo.authors.csv at point 2 lacks 172-32-1176: %v", err)
	}

	// the damaged copy: dbo.Orders fails with EIO through the mount,
	// the other tables read
	bad := filepath.Join(pointDir(p1), "sql", "NORTHWND~2")
	if _, err := os.ReadFile(filepath.Join(bad, "dbo.Orders.csv")); !errors.Is(err, syscall.EIO) {
		t.Errorf("read %s/dbo.Orders.csv: %v, want EIO", bad, err)
	}
	if _, err := os.Stat(filepath.Join(bad, "dbo.Orders.jsonl")); !errors.Is(err, syscall.EIO) {
		t.Errorf("stat %s/dbo.Orders.jsonl: %v, want EIO", bad, err)
	}
	if b, err := os.ReadFile(filepath.Join(bad, "dbo.Customers.csv")); err != nil || !strings.Contains(string(b), "ALFKI") {
		t.Errorf("read %s/dbo.Customers.csv: %v", bad, err)
	}

	// ESE: every table of both databases equals rewind ese export
	for _, c := range []struct{ db, path string }{{"SRUDB", "/Windows/System32/sru/SRUDB.dat"}, {"basic", "/Apps/basic.edb"}} {
		r := h.MustRun(t, nil, "ese", "tables", "--repo", repo, "--machine", "sql1", "--volume", "data",
			"--at", fmt.Sprint(p1.Point.ID), "--path", c.path, "--json")
		var tables []struct{ Name string }
		if err := json.Unmarshal([]byte(r.Stdout), &tables); err != nil || len(tables) == 0 {
			t.Fatalf("ese tables --json: %v %q", err, r.Stdout)
		}
		view := dirFiles(t, filepath.Join(pointDir(p1), "ese", c.db))
		if len(view) != len(tables) {
			t.Errorf("ese/%s holds %v, want one .jsonl per table (%d)", c.db, fileNames(view), len(tables))
		}
		for _, tb := range tables {
			r := h.MustRun(t, nil, "ese", "export", "--repo", repo, "--machine", "sql1", "--volume", "data",
				"--at", fmt.Sprint(p1.Point.ID), "--path", c.path, "--table", tb.Name, "--format", "jsonl")
			if got, ok := view[tb.Name+".jsonl"]; !ok || string(got) != r.Stdout {
				t.Errorf("ese/%s/%s.jsonl (%d bytes, present %v) differs from rewind ese export (%d bytes)", c.db, tb.Name, len(got), ok, len(r.Stdout))
			}
		}
	}

	b, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	var opened, listed bool
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r struct{ Op, Machine, Volume, Point, Path string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if r.Op == "open" && r.Machine == "sql1" && r.Volume == "data" && strings.HasSuffix(r.Path, "/sql/NORTHWND/dbo.Customers.csv") {
			opened = true
		}
		if r.Op == "list" && strings.HasSuffix(r.Path, "/ese/SRUDB") {
			listed = true
		}
	}
	if !opened || !listed {
		t.Errorf("audit log lacks the open of sql/NORTHWND/dbo.Customers.csv (%v) or the listing of ese/SRUDB (%v)", opened, listed)
	}
}
