// Package export writes rows read by package mdf as CSV (RFC 4180), JSON
// Lines or a T-SQL script that re-creates the table.
package export

import (
	"bufio"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/parsers/mdf"
)

// Formats lists the supported output formats.
var Formats = []string{"csv", "jsonl", "sql"}

// Ext returns the file name extension for a format.
func Ext(format string) string { return "." + format }

// Options tune a writer.
type Options struct {
	// DeletedColumn adds a "_deleted" column (true for ghost and
	// deallocated rows); set it when reading with IncludeDeleted.
	DeletedColumn bool
}

// RowWriter writes the rows of one table.
type RowWriter interface {
	WriteRow(r *mdf.Row) error
	// Close flushes buffered output (it does not close the io.Writer).
	Close() error
}

// NewWriter returns a writer of t's rows in format (csv, jsonl or sql).
func NewWriter(w io.Writer, format string, t *mdf.Table, opts Options) (RowWriter, error) {
	switch format {
	case "csv":
		return newCSV(w, t, opts)
	case "jsonl":
		return &jsonlWriter{w: bufio.NewWriterSize(w, 64<<10), t: t, opts: opts}, nil
	case "sql":
		return newSQL(w, t, opts)
	}
	return nil, fmt.Errorf("unknown format %q (want csv, jsonl or sql)", format)
}

// Text renders a value as text: the form CSV uses. NULL is the empty
// string; binary is 0x-prefixed hex.
func Text(c *mdf.Column, v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		if x {
			return "1"
		}
		return "0"
	case int64:
		return strconv.FormatInt(x, 10)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case []byte:
		return "0x" + strings.ToUpper(hex.EncodeToString(x))
	case time.Time:
		return formatTime(c, x)
	case mdf.Variant:
		return Text(&mdf.Column{TypeID: x.Type}, x.Value)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

// formatTime renders date and time types in RFC 3339 forms: a full-date
// for date, date-time with offset for datetimeoffset, and date-time
// without offset (SQL Server keeps none) for the others.
func formatTime(c *mdf.Column, t time.Time) string {
	switch c.TypeID {
	case mdf.TypeDate:
		return t.Format("2006-01-02")
	case mdf.TypeDateTimeOffset:
		return t.Format("2006-01-02T15:04:05" + frac(c.Scale) + "Z07:00")
	case mdf.TypeSmallDateTime:
		return t.Format("2006-01-02T15:04:05")
	case mdf.TypeDateTime:
		return t.Format("2006-01-02T15:04:05.000")
	case mdf.TypeDateTime2:
		return t.Format("2006-01-02T15:04:05" + frac(c.Scale))
	}
	return t.Format(time.RFC3339Nano)
}

func frac(scale int) string {
	if scale <= 0 {
		return ""
	}
	if scale > 7 {
		scale = 7
	}
	return "." + strings.Repeat("0", scale)
}

// ---- CSV

type csvWriter struct {
	w    *csv.Writer
	t    *mdf.Table
	opts Options
	rec  []string
}

func newCSV(w io.Writer, t *mdf.Table, opts Options) (*csvWriter, error) {
	cw := &csvWriter{w: csv.NewWriter(w), t: t, opts: opts}
	cw.w.UseCRLF = true // RFC 4180 line breaks
	var head []string
	for _, c := range t.Columns {
		head = append(head, c.Name)
	}
	if opts.DeletedColumn {
		head = append(head, "_deleted")
	}
	return cw, cw.w.Write(head)
}

func (cw *csvWriter) WriteRow(r *mdf.Row) error {
	cw.rec = cw.rec[:0]
	for i, c := range cw.t.Columns {
		cw.rec = append(cw.rec, Text(c, r.Values[i]))
	}
	if cw.opts.DeletedColumn {
		cw.rec = append(cw.rec, strconv.FormatBool(r.Deleted))
	}
	return cw.w.Write(cw.rec)
}

func (cw *csvWriter) Close() error {
	cw.w.Flush()
	return cw.w.Error()
}

// ---- JSON Lines

type jsonlWriter struct {
	w    *bufio.Writer
	t    *mdf.Table
	opts Options
	buf  []byte
}

// JSONValue returns the JSON form of a value: numbers as numbers
// (decimals exactly, as json.Number), binary as base64, times as RFC 3339
// strings, GUIDs as strings, NULL as null.
func JSONValue(c *mdf.Column, v any) any {
	switch x := v.(type) {
	case nil, string, bool, int64:
		return x
	case float32:
		if math.IsInf(float64(x), 0) || math.IsNaN(float64(x)) {
			return nil
		}
		return json.Number(strconv.FormatFloat(float64(x), 'g', -1, 32))
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil
		}
		return x
	case mdf.Decimal:
		return json.Number(x.String())
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	case time.Time:
		return formatTime(c, x)
	case mdf.Variant:
		return JSONValue(&mdf.Column{TypeID: x.Type}, x.Value)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

func (jw *jsonlWriter) WriteRow(r *mdf.Row) error {
	b := jw.buf[:0]
	b = append(b, '{')
	for i, c := range jw.t.Columns {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(c.Name)
		b = append(b, k...)
		b = append(b, ':')
		v, err := json.Marshal(JSONValue(c, r.Values[i]))
		if err != nil {
			return fmt.Errorf("column %s: %w", c.Name, err)
		}
		b = append(b, v...)
	}
	if jw.opts.DeletedColumn {
		b = append(b, `,"_deleted":`...)
		b = strconv.AppendBool(b, r.Deleted)
	}
	b = append(b, '}', '\n')
	jw.buf = b
	_, err := jw.w.Write(b)
	return err
}

func (jw *jsonlWriter) Close() error { return jw.w.Flush() }

// ---- T-SQL script

type sqlWriter struct {
	w        *bufio.Writer
	t        *mdf.Table
	cols     []int // indexes of the columns an INSERT can set
	identity bool
	prefix   string
}

// QuoteName quotes an identifier with brackets.
func QuoteName(s string) string { return "[" + strings.ReplaceAll(s, "]", "]]") + "]" }

// CreateTable returns a CREATE TABLE statement for t. Computed columns
// (whose definitions are not decoded) are left out.
func CreateTable(t *mdf.Table) string { return CreateTableAs(t, t.Schema, t.Name) }

// CreateTableAs is CreateTable under another schema and name.
func CreateTableAs(t *mdf.Table, schema, name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE %s.%s (\n", QuoteName(schema), QuoteName(name))
	first := true
	for _, c := range t.Columns {
		if c.Computed {
			continue
		}
		if !first {
			b.WriteString(",\n")
		}
		first = false
		fmt.Fprintf(&b, "    %s %s", QuoteName(c.Name), c.SQLType())
		if c.Identity {
			b.WriteString(" IDENTITY")
		}
		if c.Sparse {
			b.WriteString(" SPARSE")
		}
		if c.Nullable {
			b.WriteString(" NULL")
		} else {
			b.WriteString(" NOT NULL")
		}
	}
	b.WriteString("\n);\n")
	return b.String()
}

// insertable returns the columns an INSERT can set (not computed, not
// rowversion), the INSERT prefix for the table full, and whether one of
// them is an identity column.
func insertable(t *mdf.Table, full string) (cols []int, prefix string, identity bool) {
	var names []string
	for i, c := range t.Columns {
		if c.Computed || c.TypeID == mdf.TypeTimestamp {
			continue // computed and rowversion values cannot be inserted
		}
		if c.Identity {
			identity = true
		}
		cols = append(cols, i)
		names = append(names, QuoteName(c.Name))
	}
	return cols, "INSERT INTO " + full + " (" + strings.Join(names, ", ") + ") VALUES ", identity
}

func newSQL(w io.Writer, t *mdf.Table, opts Options) (*sqlWriter, error) {
	sw := &sqlWriter{w: bufio.NewWriterSize(w, 64<<10), t: t}
	full := QuoteName(t.Schema) + "." + QuoteName(t.Name)
	sw.cols, sw.prefix, sw.identity = insertable(t, full)
	sw.prefix += "("
	fmt.Fprintf(sw.w, "-- Recovered by rewind from a SQL Server data file.\n")
	if opts.DeletedColumn {
		fmt.Fprintf(sw.w, "-- Deleted (ghost or deallocated) rows are included, each marked by a comment.\n")
	}
	sw.w.WriteString(CreateTable(t))
	if sw.identity {
		fmt.Fprintf(sw.w, "SET IDENTITY_INSERT %s ON;\n", full)
	}
	return sw, nil
}

// SQLLiteral renders a value as a T-SQL literal.
func SQLLiteral(c *mdf.Column, v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		return "N'" + strings.ReplaceAll(x, "'", "''") + "'"
	case bool:
		if x {
			return "1"
		}
		return "0"
	case []byte:
		if len(x) == 0 {
			return "0x"
		}
		return "0x" + strings.ToUpper(hex.EncodeToString(x))
	case time.Time, mdf.GUID, mdf.TimeOfDay:
		return "'" + Text(c, x) + "'"
	case mdf.Variant:
		return SQLLiteral(&mdf.Column{TypeID: x.Type}, x.Value)
	case float32, float64:
		s := Text(c, x)
		if strings.ContainsAny(s, "eE") {
			return s
		}
		return s + "E0"
	}
	return Text(c, v)
}

func (sw *sqlWriter) WriteRow(r *mdf.Row) error {
	if r.Deleted {
		sw.w.WriteString("-- deleted row:\n")
	}
	sw.w.WriteString(sw.prefix)
	writeValues(sw.w, sw.t, sw.cols, r)
	_, err := sw.w.WriteString(");\n")
	return err
}

// writeValues writes the literals of r's insertable columns, separated by
// commas.
func writeValues(w io.StringWriter, t *mdf.Table, cols []int, r *mdf.Row) {
	for k, i := range cols {
		if k > 0 {
			w.WriteString(", ")
		}
		w.WriteString(SQLLiteral(t.Columns[i], r.Values[i]))
	}
}

// Batcher turns the rows of a table into multi-row INSERT statements for
// a target table (at most 1000 rows, the T-SQL limit, and about MaxBytes
// of text each), to be run against a live server.
type Batcher struct {
	t            *mdf.Table
	schema, name string
	Target       string // [schema].[name]
	cols         []int
	prefix       string
	identity     bool
	MaxBytes     int
	buf          strings.Builder
	rows         int
}

// NewBatcher returns a Batcher of t's rows into schema.name.
func NewBatcher(t *mdf.Table, schema, name string) *Batcher {
	b := &Batcher{t: t, schema: schema, name: name, Target: QuoteName(schema) + "." + QuoteName(name), MaxBytes: 1 << 20}
	b.cols, b.prefix, b.identity = insertable(t, b.Target)
	return b
}

// Setup returns the statements that prepare the target: CREATE TABLE and,
// when the table has an identity column, SET IDENTITY_INSERT ON (which
// holds for the session: run everything on one connection).
func (b *Batcher) Setup() []string {
	s := []string{CreateTableAs(b.t, b.schema, b.name)}
	if b.identity {
		s = append(s, "SET IDENTITY_INSERT "+b.Target+" ON;")
	}
	return s
}

// Finish returns the statements that end the copy.
func (b *Batcher) Finish() []string {
	if b.identity {
		return []string{"SET IDENTITY_INSERT " + b.Target + " OFF;"}
	}
	return nil
}

// Add adds a row and returns a complete statement when a batch is full
// ("" otherwise).
func (b *Batcher) Add(r *mdf.Row) string {
	if b.rows == 0 {
		b.buf.WriteString(b.prefix)
	} else {
		b.buf.WriteString(",\n")
	}
	b.buf.WriteString("(")
	writeValues(&b.buf, b.t, b.cols, r)
	b.buf.WriteString(")")
	b.rows++
	if b.rows >= 1000 || b.buf.Len() >= b.MaxBytes {
		return b.Flush()
	}
	return ""
}

// Flush returns the statement of the rows added since the last one, or ""
// when there are none.
func (b *Batcher) Flush() string {
	if b.rows == 0 {
		return ""
	}
	s := b.buf.String() + ";"
	b.buf.Reset()
	b.rows = 0
	return s
}

func (sw *sqlWriter) Close() error {
	if sw.identity {
		fmt.Fprintf(sw.w, "SET IDENTITY_INSERT %s.%s OFF;\n", QuoteName(sw.t.Schema), QuoteName(sw.t.Name))
	}
	return sw.w.Flush()
}
