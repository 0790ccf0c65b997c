package mssql

import (
	"context"
	"fmt"
	"time"

	mssqldb "github.com/microsoft/go-mssqldb"
	"golang.org/x/text/encoding"

	"github.com/rewind-cdp/rewind/parsers/mdf"
)

// BulkColumns returns the columns a bulk copy of t sets (not computed, not
// rowversion), and whether go-mssqldb's bulk copy can carry every one of
// them with the values kept exactly. It cannot for money and smallmoney
// (not implemented by the driver's bulk copy), sql_variant, xml and CLR
// types, and for identity columns (INSERT BULK as the driver sends it has
// no KEEP_IDENTITY option, so the server would number the rows anew):
// restore-table then falls back to batched INSERT statements.
func BulkColumns(t *mdf.Table) (cols []int, ok bool, why string) {
	ok = true
	for i, c := range t.Columns {
		if c.Computed || c.TypeID == mdf.TypeTimestamp {
			continue
		}
		cols = append(cols, i)
		if !ok {
			continue
		}
		switch {
		case c.Identity:
			ok, why = false, fmt.Sprintf("identity column %s (bulk copy would renumber it)", c.Name)
		case c.TypeID == mdf.TypeMoney || c.TypeID == mdf.TypeSmallMoney:
			ok, why = false, fmt.Sprintf("%s column %s (not supported by the driver's bulk copy)", c.SQLType(), c.Name)
		case c.TypeID == mdf.TypeSQLVariant || c.TypeID == mdf.TypeXML || c.TypeID == mdf.TypeCLR:
			ok, why = false, fmt.Sprintf("%s column %s (not supported by the driver's bulk copy)", c.SQLType(), c.Name)
		}
	}
	return cols, ok, why
}

// BulkValue converts a decoded value of column c to what go-mssqldb's bulk
// copy expects for the column's type: integers as int64, decimal and
// numeric as their exact decimal string, char/varchar/text as bytes in the
// column's code page (the server stores them as they are), times as
// time.Time, uniqueidentifier as its 16 stored bytes.
func BulkValue(c *mdf.Column, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch x := v.(type) {
	case int64, bool, float64:
		return x, nil
	case float32:
		return float64(x), nil
	case mdf.Decimal:
		return x.String(), nil
	case time.Time:
		return x, nil
	case mdf.TimeOfDay:
		return time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Add(x.D), nil
	case mdf.GUID:
		return x[:], nil
	case []byte:
		return x, nil
	case string:
		switch c.TypeID {
		case mdf.TypeChar, mdf.TypeVarChar, mdf.TypeText:
			enc := codePageEncoder(c.CodePage)
			if enc == nil {
				return []byte(x), nil
			}
			b, err := enc.NewEncoder().Bytes([]byte(x))
			if err != nil {
				return nil, fmt.Errorf("column %s: %q has characters code page %d cannot hold: %w", c.Name, x, c.CodePage, err)
			}
			return b, nil
		}
		return x, nil
	}
	return nil, fmt.Errorf("column %s: no bulk copy mapping for %T", c.Name, v)
}

func codePageEncoder(cp int) encoding.Encoding {
	if cp == 0 {
		cp = 1252
	}
	return mdf.CodePageEncoding(cp)
}

// Bulk is a bulk copy of rows into a table, inside the copy's transaction.
type Bulk struct {
	c    *Copy
	t    *mdf.Table
	cols []int
	exec func(ctx context.Context, args ...any) error
	done func(ctx context.Context) (int64, error)
	Rows int64
}

// BeginBulk prepares a bulk copy of t's columns cols into target (quoted
// [schema].[name], already created in the copy's transaction).
func (c *Copy) BeginBulk(ctx context.Context, t *mdf.Table, cols []int, target string) (*Bulk, error) {
	names := make([]string, len(cols))
	for i, k := range cols {
		names[i] = t.Columns[k].Name
	}
	st, err := c.tx.PrepareContext(ctx, mssqldb.CopyIn(target, mssqldb.BulkOptions{Tablock: true, KeepNulls: true}, names...))
	if err != nil {
		return nil, fmt.Errorf("start bulk copy into %s on %s: %w", target, c.Host, err)
	}
	b := &Bulk{c: c, t: t, cols: cols}
	b.exec = func(ctx context.Context, args ...any) error {
		_, err := st.ExecContext(ctx, args...)
		return err
	}
	b.done = func(ctx context.Context) (int64, error) {
		defer st.Close()
		r, err := st.ExecContext(ctx)
		if err != nil {
			return 0, err
		}
		return r.RowsAffected()
	}
	return b, nil
}

// Add sends one row.
func (b *Bulk) Add(ctx context.Context, r *mdf.Row) error {
	args := make([]any, len(b.cols))
	for i, k := range b.cols {
		v, err := BulkValue(b.t.Columns[k], r.Values[k])
		if err != nil {
			return err
		}
		args[i] = v
	}
	if err := b.exec(ctx, args...); err != nil {
		return fmt.Errorf("bulk copy row %s on %s: %w", r.RID, b.c.Host, err)
	}
	b.Rows++
	return nil
}

// Finish flushes the rows and returns how many the server took.
func (b *Bulk) Finish(ctx context.Context) (int64, error) {
	n, err := b.done(ctx)
	if err != nil {
		return n, fmt.Errorf("finish bulk copy on %s: %w", b.c.Host, err)
	}
	return n, nil
}
