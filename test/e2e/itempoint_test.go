package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// An .mdf on an NTFS volume, backed up, replaced by another, backed up
// again: `rewind sql info --machine --volume --at --path` shows each
// point's tables, read straight from the backup; a missing path names
// what was searched.
func TestSQLInfoAtPointInTime(t *testing.T) {
	testenv.NeedTool(t, "mkntfs")
	testenv.NeedTool(t, "ntfscp")
	northwind := testenv.Fixture(t, "mdf/sql2008_655_northwind_itsligo.mdf")
	pubs := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	dir := t.TempDir()
	img := filepath.Join(dir, "ntfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 48<<20)
	mustCmd(t, "mkntfs", "-F", "-Q", "-q", img)
	mustCmd(t, "ntfscp", "-f", img, northwind, "Sales.mdf")
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "sql1")
	p1 := mustBackup(t, s, tok, "sql1", "data", img)
	mustCmd(t, "ntfscp", "-f", img, pubs, "Sales.mdf")
	p2 := mustBackup(t, s, tok, "sql1", "data", img)

	tables := func(at int64) []string {
		t.Helper()
		r := h.MustRun(t, nil, "sql", "info", "--repo", repo, "--machine", "sql1", "--volume", "data", "--at", fmt.Sprint(at), "--path", "/Sales.mdf", "--json")
		var info struct {
			Tables []struct{ Schema, Name string }
		}
		if err := json.Unmarshal([]byte(r.Stdout), &info); err != nil {
			t.Fatalf("sql info --json: %v\n%s", err, r.Stdout)
		}
		var names []string
		for _, tb := range info.Tables {
			names = append(names, tb.Schema+"."+tb.Name)
		}
		return names
	}
	if n := tables(p1.Point.ID); !slices.Contains(n, "dbo.Customers") || slices.Contains(n, "dbo.authors") {
		t.Errorf("point 1 (Northwind) lists %v", n)
	}
	if n := tables(p2.Point.ID); !slices.Contains(n, "dbo.authors") || slices.Contains(n, "dbo.Customers") {
		t.Errorf("point 2 (pubs) lists %v", n)
	}
	r := h.MustRun(t, nil, "sql", "export", "--repo", repo, "--machine", "sql1", "--volume", "data", "--at", fmt.Sprint(p1.Point.ID),
		"--path", "/Sales.mdf", "--table", "dbo.Customers", "--format", "csv")
	if !containsAll(r.Stdout, "ALFKI", "Alfreds Futterkiste", "Maria Anders") {
		t.Errorf("export of dbo.Customers at point 1 lacks ALFKI: %.300s", r.Stdout)
	}
	bad := h.Run(t, nil, "sql", "info", "--repo", repo, "--machine", "sql1", "--volume", "data", "--path", "/nope.mdf")
	if bad.Code != 1 || !containsAll(bad.Stderr, "/nope.mdf", "ntfs") {
		t.Errorf("sql info of a missing path: exit %d, %q", bad.Code, bad.Stderr)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
