package exchange

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rewind-cdp/rewind/parsers/ese"
	"github.com/rewind-cdp/rewind/parsers/mapi"
)

// Source is the view of a database the schema mapping reads: named tables
// of rows whose columns are looked up by name. parsers/ese provides it for
// real files (FromESE); tests provide it with in-memory tables.
type Source interface {
	// TableNames lists every table.
	TableNames() []string
	// Rows calls fn for each row of the named table; fn may return
	// ErrStop to end the scan early without an error.
	Rows(ctx context.Context, table string, fn func(Row) error) error
}

// Row is one row of a Source table.
type Row interface {
	// Value returns a column's value as int64 (every integer type), bool,
	// string, []byte, time.Time, float64, [][]byte (multi-valued binary)
	// or []any (other multi-valued columns); nil when the value is NULL
	// or the table has no such column.
	Value(ctx context.Context, column string) (any, error)
}

// ErrStop ends a Rows scan early.
var ErrStop = errors.New("exchange: stop scan")

// FromESE adapts an ESE database to Source.
func FromESE(db *ese.DB) Source { return eseSource{db} }

type eseSource struct{ db *ese.DB }

func (s eseSource) TableNames() []string {
	out := make([]string, 0, len(s.db.Tables()))
	for _, t := range s.db.Tables() {
		out = append(out, t.Name)
	}
	return out
}

func (s eseSource) Rows(ctx context.Context, table string, fn func(Row) error) error {
	t, err := s.db.Table(table)
	if err != nil {
		return err
	}
	err = t.Records(ctx, func(r *ese.Record) error { return fn(eseRow{t, r}) })
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

type eseRow struct {
	t *ese.Table
	r *ese.Record
}

func (r eseRow) Value(ctx context.Context, column string) (any, error) {
	c := r.t.Column(column)
	if c == nil {
		return nil, nil
	}
	v := r.r.Get(ctx, c)
	if v.Err != nil {
		return nil, v.Err
	}
	return normalize(v.Any()), nil
}

// normalize maps ese.Value.Any results to the types Row documents.
func normalize(x any) any {
	switch v := x.(type) {
	case uint8:
		return int64(v)
	case int16:
		return int64(v)
	case uint16:
		return int64(v)
	case int32:
		return int64(v)
	case uint32:
		return int64(v)
	case float32:
		return float64(v)
	case []any:
		bins := make([][]byte, 0, len(v))
		for _, e := range v {
			b, ok := e.([]byte)
			if !ok {
				out := make([]any, len(v))
				for i, e := range v {
					out[i] = normalize(e)
				}
				return out
			}
			bins = append(bins, b)
		}
		return bins
	}
	return x
}

// row reads logical fields of one row through a table mapping.
type row struct {
	ctx context.Context
	r   Row
	m   *tableMap
	err error // first error met, kept sticky
}

func (r *row) raw(field string) any {
	col := r.m.cols[field]
	if col == "" || r.err != nil {
		return nil
	}
	v, err := r.r.Value(r.ctx, col)
	if err != nil {
		r.err = fmt.Errorf("%s.%s: %w", r.m.table, col, err)
		return nil
	}
	return v
}

func (r *row) int(field string) (int64, bool) {
	switch v := r.raw(field).(type) {
	case int64:
		return v, true
	case int:
		return int64(v), true
	case bool:
		if v {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func (r *row) str(field string) string {
	switch v := r.raw(field).(type) {
	case string:
		return v
	case []byte:
		return mapi.UTF16(v)
	}
	return ""
}

func (r *row) bytes(field string) []byte {
	switch v := r.raw(field).(type) {
	case []byte:
		return v
	case string:
		return []byte(v)
	}
	return nil
}

func (r *row) multiBytes(field string) [][]byte {
	switch v := r.raw(field).(type) {
	case [][]byte:
		return v
	case []byte:
		return [][]byte{v}
	}
	return nil
}

func (r *row) bool(field string) bool {
	n, _ := r.int(field)
	return n != 0
}

func (r *row) time(field string) time.Time { return asTime(r.raw(field)) }

// asTime reads a date column: a DateTime, or a FILETIME kept in a 64-bit
// integer column.
func asTime(x any) time.Time {
	switch v := x.(type) {
	case time.Time:
		return v.UTC()
	case int64:
		if v > 0 {
			return mapi.FileTime(uint64(v))
		}
	case float64:
		return mapi.FloatingTime(v)
	}
	return time.Time{}
}

// Columns lists the columns of an ESE table.
func (s eseSource) Columns(table string) []string {
	t, err := s.db.Table(table)
	if err != nil {
		return nil
	}
	out := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		out[i] = c.Name
	}
	return out
}
