package exchange

import (
	"context"
	"fmt"
	"sort"
)

// MemSource is an in-memory Source: tables of rows keyed by column name.
// Tests (here and in cmd/rewind) use it to stand in for an Exchange
// database, which cannot be written without Exchange.
type MemSource struct {
	Tables map[string]*MemTable
}

// MemTable is one table of a MemSource.
type MemTable struct {
	Cols []string
	Rows []map[string]any
}

// TableNames lists the tables in name order.
func (s *MemSource) TableNames() []string {
	out := make([]string, 0, len(s.Tables))
	for n := range s.Tables {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Columns lists a table's columns.
func (s *MemSource) Columns(table string) []string {
	if t := s.Tables[table]; t != nil {
		return t.Cols
	}
	return nil
}

// Rows calls fn for each row of the table.
func (s *MemSource) Rows(ctx context.Context, table string, fn func(Row) error) error {
	t := s.Tables[table]
	if t == nil {
		return fmt.Errorf("no table %q", table)
	}
	for _, r := range t.Rows {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(memRow(r)); err != nil {
			if err == ErrStop {
				return nil
			}
			return err
		}
	}
	return nil
}

// Add appends a row, adding its columns to the table's column list.
func (s *MemSource) Add(table string, row map[string]any) {
	if s.Tables == nil {
		s.Tables = map[string]*MemTable{}
	}
	t := s.Tables[table]
	if t == nil {
		t = &MemTable{}
		s.Tables[table] = t
	}
	for k := range row {
		found := false
		for _, c := range t.Cols {
			if c == k {
				found = true
			}
		}
		if !found {
			t.Cols = append(t.Cols, k)
		}
	}
	t.Rows = append(t.Rows, row)
}

type memRow map[string]any

func (r memRow) Value(_ context.Context, col string) (any, error) {
	if e, ok := r[col].(error); ok {
		return nil, e
	}
	return r[col], nil
}
