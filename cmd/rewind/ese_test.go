package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// eseFile writes a (decompressed) fixture to a temporary file.
func eseFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(rel), ".gz"))
	if err := os.WriteFile(p, testenv.FixtureBytes(t, rel), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runESE(t *testing.T, a ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), a, &out, &errb)
	return code, out.String(), errb.String()
}

func TestESETablesJSON(t *testing.T) {
	db := eseFile(t, "ese/dissect_basic.edb.gz")
	code, out, errs := runESE(t, "ese", "tables", db, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var tables []struct {
		Name    string `json:"name"`
		Rows    int    `json:"rows"`
		Columns []struct {
			ID   uint32 `json:"id"`
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"columns"`
	}
	if err := json.Unmarshal([]byte(out), &tables); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	found := false
	for _, tb := range tables {
		if tb.Name == "basic" {
			found = true
			if tb.Rows != 2 || len(tb.Columns) != 13 || tb.Columns[0].Name != "Id" || tb.Columns[0].Type != "Long" || tb.Columns[11].Type != "GUID" {
				t.Errorf("basic: %+v", tb)
			}
		}
	}
	if !found || len(tables) != 5 {
		t.Errorf("tables: %+v", tables)
	}

	code, out, _ = runESE(t, "ese", "tables", db)
	if code != 0 || !strings.Contains(out, "basic") || !strings.Contains(out, "ROWS") {
		t.Errorf("text listing (exit %d):\n%s", code, out)
	}
}

func TestESEExportJSONL(t *testing.T) {
	db := eseFile(t, "ese/dissect_multi.edb.gz")
	code, out, errs := runESE(t, "ese", "export", db, "--table", "multi", "--format", "jsonl")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	var rec map[string]any
	dec := json.NewDecoder(strings.NewReader(lines[0]))
	dec.UseNumber()
	if err := dec.Decode(&rec); err != nil {
		t.Fatal(err)
	}
	if rec["Id"] != json.Number("1") {
		t.Errorf("Id %#v", rec["Id"])
	}
	if got := rec["Currency"].([]any)[2]; got != json.Number("9223372036854775807") {
		t.Errorf("Currency %v", got)
	}
	if got := rec["Bit"].([]any); got[0] != false || got[1] != true {
		t.Errorf("Bit %v", got)
	}
	if got := rec["DateTime"].([]any)[1]; got != "2077-04-01T00:00:00Z" {
		t.Errorf("DateTime %v", got)
	}
	bin, _ := base64.StdEncoding.DecodeString(rec["Binary"].([]any)[0].(string))
	if string(bin) != "Some binary data that has multiple values, this is value 1" {
		t.Errorf("Binary %q", bin)
	}
	if got := rec["GUID"].([]any)[0]; got != "03402861-fad3-4ce5-986e-d31df852f2a7" {
		t.Errorf("GUID %v", got)
	}
	if !strings.HasPrefix(lines[1], `{"Id":2,"Bit":null,`) {
		t.Errorf("row 2 key order or NULLs: %.60s", lines[1])
	}
}

func TestESEExportCSV(t *testing.T) {
	db := eseFile(t, "ese/dissect_text.edb.gz")
	outFile := filepath.Join(t.TempDir(), "text.csv")
	code, out, errs := runESE(t, "ese", "export", db, "--table", "text", "--format", "csv", "--out", outFile)
	if code != 0 || out != "" {
		t.Fatalf("exit %d, stdout %q: %s", code, out, errs)
	}
	raw, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("\r\n")) {
		t.Error("CSV lines do not end in CRLF")
	}
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0][0] != "Id" || recs[1][0] != "1" {
		t.Fatalf("records %v", recs)
	}
	col := map[string]string{}
	for i, name := range recs[0] {
		col[name] = recs[1][i]
	}
	if col["Unicode"] != "Simple Unicode text 🦊" || col["NullableASCII"] != "" ||
		col["LongCompressedASCII"] != "Long compressed ASCII text "+strings.Repeat("a", 1024) {
		t.Errorf("values: %q / %q / %.40q", col["Unicode"], col["NullableASCII"], col["LongCompressedASCII"])
	}
}

func TestESEErrors(t *testing.T) {
	db := eseFile(t, "ese/dissect_basic.edb.gz")
	junk := filepath.Join(t.TempDir(), "junk.edb")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not ese "), 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ese", "tables"}, 2, "--machine, --volume and --path"},
		{[]string{"ese", "tables", filepath.Join(t.TempDir(), "missing.edb")}, 1, "no such file"},
		{[]string{"ese", "tables", junk}, 1, "not a readable ESE database"},
		{[]string{"ese", "export", db}, 2, "required flag"},
		{[]string{"ese", "export", db, "--table", "nope"}, 2, `no table "nope"`},
		{[]string{"ese", "export", db, "--table", "basic", "--format", "xml"}, 2, "--format must be jsonl or csv"},
	}
	for _, c := range cases {
		code, _, errs := runESE(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q on one line", c.args, code, errs, c.code, c.want)
		}
	}
}

func TestESEHelp(t *testing.T) {
	code, out, _ := runESE(t, "ese", "export", "--help")
	if code != 0 || !strings.Contains(out, "rewind ese export") || !strings.Contains(out, "RFC 4180") {
		t.Errorf("help (exit %d):\n%s", code, out)
	}
}
