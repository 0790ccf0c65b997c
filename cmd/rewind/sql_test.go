package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/test/testenv"
)

func runSQL(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSQLInfoJSON(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	code, out, errs := runSQL(t, "sql", "info", f, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var info struct {
		Database string `json:"database"`
		Version  int    `json:"version"`
		Tables   []struct {
			Schema, Name string
			Rows         int64
		} `json:"tables"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Database != `C:\DBS\PUBS.MDF` || info.Version != 655 || len(info.Tables) != 11 {
		t.Errorf("info %+v", info)
	}
	for _, tb := range info.Tables {
		if tb.Schema == "dbo" && tb.Name == "authors" && tb.Rows != 23 {
			t.Errorf("authors rows %d", tb.Rows)
		}
	}
}

func TestSQLInfoText(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2008r2_661_dnn_empty_created2005.mdf")
	code, out, _ := runSQL(t, "sql", "info", f)
	if code != 0 || !strings.Contains(out, "661 (SQL Server 2008 R2)") || !strings.Contains(out, "user tables:  none") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}

func TestSQLExportCSV(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2008_655_northwind_itsligo.mdf")
	code, out, errs := runSQL(t, "sql", "export", f, "--table", "dbo.Customers", "--format", "csv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 92 || recs[0][0] != "CustomerID" {
		t.Fatalf("%d records, header %v", len(recs), recs[0])
	}
	if got := strings.Join(recs[1][:3], "|"); got != "ALFKI|Alfreds Futterkiste|Maria Anders" {
		t.Errorf("first row %s", got)
	}
	if !strings.Contains(out, "\r\n") {
		t.Error("CSV lines should end in CRLF (RFC 4180)")
	}
}

func TestSQLExportJSONL(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2012_706_mvcmovie_shellwe.mdf")
	out := filepath.Join(t.TempDir(), "movies.jsonl")
	code, _, errs := runSQL(t, "sql", "export", f, "--table", "Movies", "--format", "jsonl", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines", len(lines))
	}
	dec := json.NewDecoder(strings.NewReader(lines[1]))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m["ID"] != json.Number("2") || m["Title"] != "Alien" || m["Price"] != json.Number("123.45") || m["ReleaseDate"] != "1970-01-01T00:00:00.000" {
		t.Errorf("row %v", m)
	}
	// binary as base64
	code, o2, _ := runSQL(t, "sql", "export", f, "--table", "__MigrationHistory", "--format", "jsonl")
	if code != 0 || !strings.Contains(o2, `"Model":"H4sI`) {
		t.Errorf("exit %d, model not base64 gzip: %.200s", code, o2)
	}
}

func TestSQLExportSQLScript(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	code, out, errs := runSQL(t, "sql", "export", f, "--table", "authors", "--format", "sql")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"CREATE TABLE [dbo].[authors] (",
		"[au_id] varchar(11) NOT NULL",
		"[contract] bit NOT NULL",
		"VALUES (N'172-32-1176', N'White', N'Johnson', N'408 496-7223', N'10932 Bigge Rd.', N'Menlo Park', N'CA', N'94025', 1);",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("script lacks %q:\n%.600s", want, out)
		}
	}
	if n := strings.Count(out, "INSERT INTO"); n != 23 {
		t.Errorf("%d INSERTs", n)
	}
}

func TestSQLExportAll(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2005_611_renthouse_big5_varchar.mdf")
	dir := t.TempDir()
	code, out, errs := runSQL(t, "sql", "export-all", f, "--dir", dir, "--format", "csv")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(filepath.Join(dir, "dbo.Renter.csv"))
	if err != nil {
		t.Fatalf("%v (output %s)", err, out)
	}
	if !strings.Contains(string(b), "1,18001,小明\r\n") {
		t.Errorf("Renter.csv:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "dbo.RentRecord.csv")); err != nil {
		t.Error(err)
	}
}

func TestSQLUsageErrors(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"sql", "info"}, 2, "name the .mdf file, or --machine, --volume and --path"},
		{[]string{"sql", "info", f, "--machine", "m"}, 2, "not both"},
		{[]string{"sql", "info", "--machine", "m", "--path", "/x.mdf"}, 2, "go together"},
		{[]string{"sql", "info", "a.mdf", "b.mdf"}, 2, "accepts at most 1 arg"},
		{[]string{"sql", "export", f}, 2, "--table is required"},
		{[]string{"sql", "export", f, "--table", "authors", "--format", "xml"}, 2, "--format \"xml\" is not supported"},
		{[]string{"sql", "export-all", f}, 2, "--dir is required"},
		{[]string{"sql", "export", f, "--table", "nosuch"}, 1, "no user table named \"nosuch\""},
		{[]string{"sql", "info", f, "--codepage", "12345"}, 2, "--codepage 12345 is not supported"},
		{[]string{"sql", "info", "/nonexistent/x.mdf"}, 1, "open .mdf file"},
		{[]string{"sql", "info", os.Args[0]}, 1, "malformed data"},
	} {
		code, _, errs := runSQL(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d with %q", c.args, code, errs, c.code, c.msg)
		}
		if strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: error is not one line: %q", c.args, errs)
		}
	}
}

func TestSQLVerify(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2005_611_pubs_orig2000.mdf")
	code, out, _ := runSQL(t, "sql", "verify", f)
	if code != 0 || !strings.Contains(out, "torn bits ok: 239") || !strings.Contains(out, "damaged: 0") {
		t.Errorf("exit %d: %s", code, out)
	}
}

func TestSplitTableName(t *testing.T) {
	for in, want := range map[string][2]string{
		"Orders":               {"dbo", "Orders"},
		"sales.Orders":         {"sales", "Orders"},
		"[my schema].[a.b]":    {"my schema", "a.b"},
		"[Order Details]":      {"dbo", "Order Details"},
		"recovered.[x]]y]":     {"recovered", "x]y"},
		"[odd]]name].Customer": {"odd]name", "Customer"},
	} {
		s, n := splitTableName(in, "dbo")
		if s != want[0] || n != want[1] {
			t.Errorf("splitTableName(%q) = %q, %q; want %q, %q", in, s, n, want[0], want[1])
		}
	}
}

func TestSQLRestoreTableErrors(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"sql", "restore-table", f, "--table", "authors"}, 2, "--table and --to are required"},
		{[]string{"sql", "restore-table", f, "--table", "nosuch", "--to", "sqlserver://sa:pw@127.0.0.1:1"}, 1, "no user table named \"nosuch\""},
		{[]string{"sql", "restore-table", f, "--table", "authors", "--to", "server=x;user=sa"}, 1, "DSN"},
		{[]string{"sql", "restore-table", f, "--table", "authors", "--to", "sqlserver://sa:Secret9@127.0.0.1:1?dial+timeout=2"}, 1, "127.0.0.1:1"},
	} {
		code, _, errs := runSQL(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) || strings.Contains(errs, "Secret9") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d with %q (and no password)", c.args, code, errs, c.code, c.msg)
		}
	}
}

// TestSQLRestoreTableLive puts pubs' authors into a real SQL Server when
// REWIND_TEST_MSSQL_DSN names one; no SQL Server runs on the CI machine.
func TestSQLRestoreTableLive(t *testing.T) {
	dsn := os.Getenv("REWIND_TEST_MSSQL_DSN")
	if dsn == "" {
		t.Skip("REWIND_TEST_MSSQL_DSN is not set: no SQL Server to restore into")
	}
	f := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	target := fmt.Sprintf("dbo.rewind_test_authors_%d", time.Now().UnixNano())
	code, out, errs := runSQL(t, "sql", "restore-table", f, "--table", "authors", "--to", dsn, "--target-table", target)
	if code != 0 || !strings.Contains(out, "(23 rows)") {
		t.Fatalf("restore-table: exit %d, %q %q", code, out, errs)
	}
}
