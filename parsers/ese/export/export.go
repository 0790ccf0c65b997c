// Package export writes the rows of an ESE table (package ese) as JSON
// Lines or CSV (RFC 4180): the format `rewind ese export` prints and the
// mount's ese/ directories hold.
package export

import (
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/rewind-cdp/rewind/parsers/ese"
)

// Warn receives a value that could not be decoded (written as NULL): the
// 1-based row number, the column and the error.
type Warn func(row int, column string, err error)

// Table writes every row of t to w in format ("jsonl" or "csv"). warn may
// be nil.
//
// JSON Lines: one object per row, keys in column order; numbers as
// numbers, Bit as true/false, binary as base64, DateTime as RFC 3339 (UTC),
// GUIDs as strings, NULL as null, multi-valued columns as arrays. CSV: a
// header row of column names, CRLF line ends, NULL an empty field, binary
// base64, multi-valued columns a JSON array.
func Table(ctx context.Context, w io.Writer, t *ese.Table, format string, warn Warn) error {
	if format != "jsonl" && format != "csv" {
		return fmt.Errorf("unknown format %q (want jsonl or csv)", format)
	}
	var cw *csv.Writer
	if format == "csv" {
		cw = csv.NewWriter(w)
		cw.UseCRLF = true
		head := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			head[i] = c.Name
		}
		if err := cw.Write(head); err != nil {
			return err
		}
	}
	keys := make([][]byte, len(t.Columns))
	for i, c := range t.Columns {
		keys[i], _ = json.Marshal(c.Name)
	}
	row := 0
	var line []byte
	fields := make([]string, len(t.Columns))
	err := t.Records(ctx, func(r *ese.Record) error {
		row++
		vals := r.Values(ctx)
		line = append(line[:0], '{')
		for i, v := range vals {
			if v.Err != nil && warn != nil {
				warn(row, v.Column.Name, v.Err)
			}
			x := JSONValue(v.Any())
			if cw != nil {
				fields[i] = CSVField(x)
				continue
			}
			if i > 0 {
				line = append(line, ',')
			}
			b, err := json.Marshal(x)
			if err != nil {
				return err
			}
			line = append(append(append(line, keys[i]...), ':'), b...)
		}
		if cw != nil {
			return cw.Write(fields)
		}
		line = append(line, '}', '\n')
		_, err := w.Write(line)
		return err
	})
	if err != nil {
		return fmt.Errorf("table %s: %w", t.Name, err)
	}
	if cw != nil {
		cw.Flush()
		return cw.Error()
	}
	return nil
}

// JSONValue maps a decoded value (ese.Value.Any) to what encoding/json
// should print.
func JSONValue(x any) any {
	switch v := x.(type) {
	case time.Time:
		if v.IsZero() {
			return nil
		}
		return v.UTC().Format(time.RFC3339Nano)
	case float32:
		return jsonFloat(float64(v), 32)
	case float64:
		return jsonFloat(v, 64)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = JSONValue(e)
		}
		return out
	}
	return x
}

// jsonFloat keeps finite floats numbers (printed at their own precision)
// and spells out NaN and infinities, which JSON cannot hold.
func jsonFloat(f float64, bits int) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, bits))
}

// CSVField renders a JSONValue result as a CSV field.
func CSVField(x any) string {
	switch v := x.(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return base64.StdEncoding.EncodeToString(v)
	case json.Number:
		return string(v)
	case []any:
		b, _ := json.Marshal(v)
		return string(b)
	}
	return fmt.Sprint(x)
}
