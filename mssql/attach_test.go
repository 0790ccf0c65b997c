package mssql

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/mdf"
	"github.com/rewind-cdp/rewind/parsers/mdf/export"
	"github.com/rewind-cdp/rewind/test/testenv"
)

func TestAttachSQL(t *testing.T) {
	for _, c := range []struct {
		name, data string
		logs       []string
		want       string
	}{
		{"Sales_tuesday", `D:\Restore\Sales.mdf`, nil,
			`CREATE DATABASE [Sales_tuesday] ON (FILENAME = N'D:\Restore\Sales.mdf') FOR ATTACH_REBUILD_LOG;`},
		{"a]b", "/var/opt/mssql/data/o'brien.mdf", []string{"/var/opt/mssql/data/o'brien_log.ldf"},
			`CREATE DATABASE [a]]b] ON (FILENAME = N'/var/opt/mssql/data/o''brien.mdf') LOG ON (FILENAME = N'/var/opt/mssql/data/o''brien_log.ldf') FOR ATTACH;`},
		{"x", "x.mdf", []string{"1.ldf", "2.ldf"},
			`CREATE DATABASE [x] ON (FILENAME = N'x.mdf') LOG ON (FILENAME = N'1.ldf'), (FILENAME = N'2.ldf') FOR ATTACH;`},
	} {
		if got := AttachSQL(c.name, c.data, c.logs); got != c.want {
			t.Errorf("AttachSQL(%q, %q, %q)\n got %s\nwant %s", c.name, c.data, c.logs, got, c.want)
		}
	}
}

func TestBulkColumns(t *testing.T) {
	tb := &mdf.Table{Columns: []*mdf.Column{
		{Name: "id", TypeID: mdf.TypeInt},
		{Name: "calc", TypeID: mdf.TypeInt, Computed: true},
		{Name: "ver", TypeID: mdf.TypeTimestamp},
		{Name: "name", TypeID: mdf.TypeNVarChar, MaxLength: 80},
	}}
	cols, ok, why := BulkColumns(tb)
	if !ok || why != "" || fmt.Sprint(cols) != "[0 3]" {
		t.Errorf("BulkColumns = %v %v %q", cols, ok, why)
	}
	for _, c := range []*mdf.Column{
		{Name: "n", TypeID: mdf.TypeInt, Identity: true},
		{Name: "price", TypeID: mdf.TypeMoney},
		{Name: "v", TypeID: mdf.TypeSQLVariant},
	} {
		tb2 := &mdf.Table{Columns: append([]*mdf.Column{{Name: "a", TypeID: mdf.TypeInt}}, c)}
		if _, ok, why := BulkColumns(tb2); ok || !strings.Contains(why, c.Name) {
			t.Errorf("BulkColumns with %s %s: ok %v, why %q", c.Name, c.SQLType(), ok, why)
		}
	}
}

func TestBulkValue(t *testing.T) {
	at := time.Date(2014, 3, 1, 10, 0, 0, 0, time.FixedZone("+01:00", 3600))
	g := mdf.GUID{1, 2, 3}
	for _, c := range []struct {
		col  *mdf.Column
		in   any
		want string
	}{
		{&mdf.Column{TypeID: mdf.TypeInt}, int64(-7), "int64 -7"},
		{&mdf.Column{TypeID: mdf.TypeBit}, true, "bool true"},
		{&mdf.Column{TypeID: mdf.TypeReal}, float32(1.5), "float64 1.5"},
		{&mdf.Column{TypeID: mdf.TypeDecimal, Precision: 10, Scale: 2}, mdf.Decimal{Unscaled: big.NewInt(-12345), Scale: 2}, "string -123.45"},
		{&mdf.Column{TypeID: mdf.TypeDateTimeOffset}, at, "time.Time 2014-03-01 10:00:00 +0100 +01:00"},
		{&mdf.Column{TypeID: mdf.TypeTime, Scale: 7}, mdf.TimeOfDay{D: 90 * time.Minute, Scale: 7}, "time.Time 0001-01-01 01:30:00 +0000 UTC"},
		{&mdf.Column{TypeID: mdf.TypeUniqueIdentifier}, g, "[]uint8 [1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0]"},
		{&mdf.Column{TypeID: mdf.TypeNVarChar}, "Zoë", "string Zoë"},
		{&mdf.Column{TypeID: mdf.TypeVarChar, CodePage: 1252}, "Zoë", "[]uint8 [90 111 235]"},
		{&mdf.Column{TypeID: mdf.TypeChar, CodePage: 950}, "台", "[]uint8 [165 120]"},
		{&mdf.Column{TypeID: mdf.TypeVarBinary}, []byte{9}, "[]uint8 [9]"},
		{&mdf.Column{TypeID: mdf.TypeInt}, nil, "<nil> <nil>"},
	} {
		v, err := BulkValue(c.col, c.in)
		if err != nil {
			t.Errorf("BulkValue(%s, %v): %v", c.col.SQLType(), c.in, err)
			continue
		}
		if got := fmt.Sprintf("%T %v", v, v); got != c.want {
			t.Errorf("BulkValue(%s, %v) = %s, want %s", c.col.SQLType(), c.in, got, c.want)
		}
	}
	if _, err := BulkValue(&mdf.Column{Name: "c", TypeID: mdf.TypeVarChar, CodePage: 1252}, "台"); err == nil {
		t.Error("a character code page 1252 cannot hold was accepted")
	}
}

// TestBulkCopyLive copies the Northwind fixture's dbo.Customers into a new
// table of a real SQL Server when REWIND_TEST_MSSQL_DSN names one.
func TestBulkCopyLive(t *testing.T) {
	dsn := os.Getenv("REWIND_TEST_MSSQL_DSN")
	if dsn == "" {
		t.Skip("REWIND_TEST_MSSQL_DSN is not set: no SQL Server to copy into")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := testenv.FixtureBytes(t, "mdf/sql2008_655_northwind_itsligo.mdf")
	db, err := mdf.Open(ctx, bytesReader(data), int64(len(data)), mdf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := db.Table("dbo.Customers")
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("rewind_test_%d", time.Now().UnixNano())
	target := "[dbo].[" + name + "]"
	cp, err := BeginCopy(ctx, dsn, target)
	if err != nil {
		t.Fatal(err)
	}
	cols, ok, why := BulkColumns(tb)
	if !ok {
		t.Fatalf("Customers not bulk-copyable: %s", why)
	}
	if err := cp.Exec(ctx, export.CreateTableAs(tb, "dbo", name)); err != nil {
		t.Fatal(err)
	}
	b, err := cp.BeginBulk(ctx, tb, cols, target)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ReadTable(ctx, tb, func(r *mdf.Row) error { return b.Add(ctx, r) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cp.Commit(); err != nil {
		t.Fatal(err)
	}
	sdb, err := sql.Open("sqlserver", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	defer sdb.ExecContext(context.Background(), "DROP TABLE "+target)
	var n int
	var company string
	if err := sdb.QueryRowContext(ctx, "SELECT COUNT(*), MAX(CASE WHEN CustomerID = 'ALFKI' THEN CompanyName END) FROM "+target).Scan(&n, &company); err != nil {
		t.Fatal(err)
	}
	if n != 91 || company != "Alfreds Futterkiste" {
		t.Errorf("copied %d rows, ALFKI is %q; want 91, Alfreds Futterkiste", n, company)
	}
}

// TestAttachLive attaches a copy of the pubs fixture when
// REWIND_TEST_MSSQL_DSN names a server and REWIND_TEST_MSSQL_DIR is a
// directory that server reads at the same path (a server on this host).
func TestAttachLive(t *testing.T) {
	dsn, dir := os.Getenv("REWIND_TEST_MSSQL_DSN"), os.Getenv("REWIND_TEST_MSSQL_DIR")
	if dsn == "" || dir == "" {
		t.Skip("REWIND_TEST_MSSQL_DSN and REWIND_TEST_MSSQL_DIR are not both set: no SQL Server to attach to")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := fmt.Sprintf("rewind_attach_%d", time.Now().UnixNano())
	path := filepath.Join(dir, name+".mdf")
	if err := os.WriteFile(path, testenv.FixtureBytes(t, "mdf/sql2008_655_pubs_itsligo.mdf"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(ctx, dsn, name, path, nil); err != nil {
		t.Fatal(err)
	}
	sdb, err := sql.Open("sqlserver", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	defer sdb.ExecContext(context.Background(), "DROP DATABASE ["+name+"]")
	var n int
	if err := sdb.QueryRowContext(ctx, "SELECT COUNT(*) FROM ["+name+"].dbo.authors").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 23 {
		t.Errorf("attached pubs has %d authors, want 23", n)
	}
}

type bytesReader []byte

func (b bytesReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, fmt.Errorf("read past end")
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, fmt.Errorf("short read")
	}
	return n, nil
}
