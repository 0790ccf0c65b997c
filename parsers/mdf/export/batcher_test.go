package export

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/mdf"
	"github.com/rewind-cdp/rewind/test/testenv"
)

func openFixture(t *testing.T, name string) *mdf.Database {
	t.Helper()
	f, err := os.Open(testenv.Fixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	db, err := mdf.Open(context.Background(), f, st.Size(), mdf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// batches runs every row of table through a Batcher into target.
func batches(t *testing.T, db *mdf.Database, table string, maxBytes int) (*Batcher, []string, int64) {
	t.Helper()
	tb, err := db.Table(table)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatcher(tb, "restore", tb.Name+"_copy")
	if maxBytes > 0 {
		b.MaxBytes = maxBytes
	}
	var stmts []string
	res, err := db.ReadTable(context.Background(), tb, func(r *mdf.Row) error {
		if s := b.Add(r); s != "" {
			stmts = append(stmts, s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := b.Flush(); s != "" {
		stmts = append(stmts, s)
	}
	return b, stmts, res.Rows
}

// Rows become multi-row INSERTs into the target table: at most 1000 rows
// each, every row exactly once, literals as the script writer renders them.
func TestBatcherStatements(t *testing.T) {
	db := openFixture(t, "mdf/sql2008_655_northwind_itsligo.mdf")
	b, stmts, rows := batches(t, db, "dbo.Order Details", 0)
	if rows != 2155 {
		t.Fatalf("Order Details has %d rows, want 2155", rows)
	}
	if len(stmts) != 3 {
		t.Errorf("%d statements for 2155 rows, want 3 (1000, 1000, 155)", len(stmts))
	}
	var n int
	for _, s := range stmts {
		if !strings.HasPrefix(s, "INSERT INTO [restore].[Order Details_copy] ([OrderID], [ProductID], [UnitPrice], [Quantity], [Discount]) VALUES (") || !strings.HasSuffix(s, ");") {
			t.Fatalf("statement shape: %.200s … %s", s, s[max(0, len(s)-40):])
		}
		k := strings.Count(s, "\n") + 1
		if k > 1000 {
			t.Errorf("a statement holds %d rows", k)
		}
		n += k
	}
	if n != 2155 {
		t.Errorf("statements hold %d rows, want 2155", n)
	}
	if !strings.Contains(stmts[0], "(10248, 11, 14.0000, 12, 0E0)") {
		t.Errorf("first batch lacks order 10248 product 11 as literals: %.300s", stmts[0])
	}
	if setup := b.Setup(); len(setup) != 1 || !strings.HasPrefix(setup[0], "CREATE TABLE [restore].[Order Details_copy] (") {
		t.Errorf("setup: %q", setup)
	}
	if b.Finish() != nil {
		t.Errorf("a table without identity needs no finish statements: %q", b.Finish())
	}

	// A small byte budget splits batches earlier; identity columns are
	// inserted explicitly between IDENTITY_INSERT ON and OFF.
	b, stmts, rows = batches(t, db, "dbo.Orders", 20000)
	if len(stmts) < 5 {
		t.Errorf("%d statements with a 20000-byte budget for %d rows", len(stmts), rows)
	}
	setup := b.Setup()
	if len(setup) != 2 || !strings.HasPrefix(setup[0], "CREATE TABLE [restore].[Orders_copy] (") || setup[1] != "SET IDENTITY_INSERT [restore].[Orders_copy] ON;" {
		t.Errorf("setup of an identity table: %q", setup)
	}
	if f := b.Finish(); len(f) != 1 || f[0] != "SET IDENTITY_INSERT [restore].[Orders_copy] OFF;" {
		t.Errorf("finish of an identity table: %q", f)
	}
	if !strings.Contains(stmts[0], "[OrderID]") {
		t.Error("the identity column is not inserted explicitly")
	}
}

func TestBatcherQuotesStrings(t *testing.T) {
	db := openFixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	_, stmts, _ := batches(t, db, "dbo.authors", 0)
	if !strings.Contains(stmts[0], "N'172-32-1176', N'White', N'Johnson'") {
		t.Errorf("authors batch lacks 172-32-1176 White Johnson: %.400s", stmts[0])
	}
	if strings.Contains(stmts[0], "N'O'Leary'") || !strings.Contains(stmts[0], "N'O''Leary'") {
		t.Errorf("a quote inside a string is not doubled: %.2000s", stmts[0])
	}
}

func TestQuoteName(t *testing.T) {
	for in, want := range map[string]string{
		"Sales":      "[Sales]",
		"odd]name":   "[odd]]name]",
		"a]]b":       "[a]]]]b]",
		"with space": "[with space]",
		"Ünïcode 名前": "[Ünïcode 名前]",
	} {
		if got := QuoteName(in); got != want {
			t.Errorf("QuoteName(%q) = %q, want %q", in, got, want)
		}
	}
}
