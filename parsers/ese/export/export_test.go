package export

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/ese"
	"github.com/rewind-cdp/rewind/test/testenv"
)

func TestValues(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 500, time.FixedZone("x", 3600))
	for _, c := range []struct {
		in       any
		json     string
		csvField string
	}{
		{nil, `null`, ""},
		{ts, `"2024-05-06T06:08:09.0000005Z"`, "2024-05-06T06:08:09.0000005Z"},
		{time.Time{}, `null`, ""},
		{float32(0.1), `0.1`, "0.1"},
		{math.NaN(), `"NaN"`, "NaN"},
		{math.Inf(-1), `"-Inf"`, "-Inf"},
		{[]byte{1, 2, 3}, `"AQID"`, "AQID"},
		{[]any{int64(1), "a"}, `[1,"a"]`, `[1,"a"]`},
		{true, `true`, "true"},
	} {
		v := JSONValue(c.in)
		b, err := json.Marshal(v)
		if err != nil || string(b) != c.json {
			t.Errorf("JSONValue(%#v) marshals to %s %v, want %s", c.in, b, err, c.json)
		}
		if f := CSVField(v); f != c.csvField {
			t.Errorf("CSVField(JSONValue(%#v)) = %q, want %q", c.in, f, c.csvField)
		}
	}
}

func TestTable(t *testing.T) {
	ctx := context.Background()
	b := testenv.FixtureBytes(t, "ese/dissect_basic.edb.gz")
	db, err := ese.Open(ctx, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var tb *ese.Table
	for _, x := range db.Tables() {
		if n, _ := x.Count(ctx); n > 0 && !strings.HasPrefix(x.Name, "MSys") {
			tb = x
			break
		}
	}
	if tb == nil {
		t.Fatal("no user table with rows")
	}
	rows, _ := tb.Count(ctx)
	var jl, cv bytes.Buffer
	if err := Table(ctx, &jl, tb, "jsonl", nil); err != nil {
		t.Fatal(err)
	}
	if err := Table(ctx, &cv, tb, "csv", nil); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(jl.String(), "\n"), "\n")
	if len(lines) != rows {
		t.Errorf("%s: %d JSON lines, %d rows", tb.Name, len(lines), rows)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || len(m) != len(tb.Columns) {
			t.Errorf("line %q: %v, %d keys for %d columns", l, err, len(m), len(tb.Columns))
		}
	}
	if n := strings.Count(cv.String(), "\r\n"); n < rows+1 {
		t.Errorf("CSV has %d lines, want a header and %d rows", n, rows)
	}
	if err := Table(ctx, &jl, tb, "xml", nil); err == nil {
		t.Error("format xml accepted")
	}
}
