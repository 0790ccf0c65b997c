package mdf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/test/testenv"
)

var fixtureFiles = []string{
	"sql2005_611_pubs_orig2000.mdf",
	"sql2005_611_renthouse_big5_varchar.mdf",
	"sql2008_655_northwind_itsligo.mdf",
	"sql2008_655_pubs_itsligo.mdf",
	"sql2008r2_661_dnn_empty_created2005.mdf",
	"sql2012_706_mvcmovie_shellwe.mdf",
	"sql2014_782_sqlbulkupsert_testdb.mdf",
}

// openFixture opens a fixture in place (read-only) and returns the database.
func openFixture(t testing.TB, name string, opts Options) *Database {
	t.Helper()
	path := testenv.Fixture(t, "mdf/"+name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(context.Background(), f, st.Size(), opts)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return db
}

// readAll decodes every row of a table, failing on unreadable pages.
func readAll(t testing.TB, db *Database, name string) (*Table, []*Row) {
	t.Helper()
	tb, err := db.Table(name)
	if err != nil {
		t.Fatal(err)
	}
	var rows []*Row
	res, err := db.ReadTable(context.Background(), tb, func(r *Row) error {
		rows = append(rows, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Unreadable) > 0 {
		t.Fatalf("%s: unreadable: %v", name, res.Unreadable)
	}
	for _, r := range rows {
		if len(r.Errors) > 0 {
			t.Fatalf("%s row %s: %v", name, r.RID, r.Errors)
		}
	}
	return tb, rows
}

type groundTruth struct {
	Files map[string]struct {
		DBIVersion    int             `json:"dbi_version"`
		CreateVersion int             `json:"create_version"`
		DBName        string          `json:"db_name"`
		PageVerify    string          `json:"page_verify"`
		Tables        json.RawMessage `json:"tables"`
	} `json:"files"`
	Northwind map[string]int64 `json:"_northwind"`
	Pubs      map[string]int64 `json:"_pubs"`
}

// extraTables lists user tables a fixture holds beyond its documented
// sample schema (found in sysschobjs and on data pages; the ground truth
// lists the sample tables only).
var extraTables = map[string]map[string]int64{
	"sql2005_611_pubs_orig2000.mdf": {"dbo.Menus": 6, "dbo.Users": 0},
}

func TestFixtureTablesAndRowCounts(t *testing.T) {
	raw := testenv.FixtureBytes(t, "mdf/groundtruth/mdf-expected.json")
	var gt groundTruth
	if err := json.Unmarshal(raw, &gt); err != nil {
		t.Fatal(err)
	}
	for _, name := range fixtureFiles {
		t.Run(name, func(t *testing.T) {
			exp, ok := gt.Files[name]
			if !ok {
				t.Fatalf("no ground truth for %s", name)
			}
			want := map[string]int64{}
			var ref string
			if json.Unmarshal(exp.Tables, &ref) == nil {
				src := map[string]map[string]int64{"_northwind": gt.Northwind, "_pubs": gt.Pubs}[ref]
				for k, v := range src {
					want["dbo."+k] = v
				}
			} else if err := json.Unmarshal(exp.Tables, &want); err != nil {
				t.Fatal(err)
			}
			// The Big5 file's second table is unnamed in the ground truth.
			if n, ok := want["(second user table, AU 94)"]; ok {
				delete(want, "(second user table, AU 94)")
				want["dbo.RentRecord"] = n
			}
			for k, v := range extraTables[name] {
				want[k] = v
			}
			db := openFixture(t, name, Options{})
			if db.Boot.Version != exp.DBIVersion || db.Boot.CreateVersion != exp.CreateVersion {
				t.Errorf("versions %d/%d, want %d/%d", db.Boot.Version, db.Boot.CreateVersion, exp.DBIVersion, exp.CreateVersion)
			}
			if exp.DBName != "" && db.Boot.Name != exp.DBName {
				t.Errorf("database name %q, want %q", db.Boot.Name, exp.DBName)
			}
			if db.Boot.PageVerify != exp.PageVerify {
				t.Errorf("page verify %q, want %q", db.Boot.PageVerify, exp.PageVerify)
			}
			got := map[string]int64{}
			for _, tb := range db.Tables() {
				n, res, err := db.CountRows(context.Background(), tb)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Unreadable) > 0 {
					t.Errorf("%s: unreadable pages: %v", tb.FullName(), res.Unreadable)
				}
				got[tb.FullName()] = n
			}
			for k, v := range want {
				g, ok := got[k]
				if !ok {
					t.Errorf("table %s missing (have %v)", k, got)
					continue
				}
				if g != v {
					t.Errorf("table %s: %d rows, want %d", k, g, v)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("unexpected table %s", k)
				}
			}
			if errs := db.CatalogErrors(); len(errs) > 0 {
				t.Errorf("catalog errors: %v", errs)
			}
		})
	}
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return "<NULL>"
	case interface{ String() string }:
		return x.String()
	}
	return "?"
}

func TestNorthwindCustomers(t *testing.T) {
	db := openFixture(t, "sql2008_655_northwind_itsligo.mdf", Options{})
	tb, rows := readAll(t, db, "dbo.Customers")
	if len(rows) != 91 {
		t.Fatalf("%d rows", len(rows))
	}
	idx := map[string]int{}
	for i, c := range tb.Columns {
		idx[c.Name] = i
	}
	r := rows[0].Values
	if r[idx["CustomerID"]] != "ALFKI" || r[idx["CompanyName"]] != "Alfreds Futterkiste" || r[idx["ContactName"]] != "Maria Anders" {
		t.Errorf("first customer %v", r)
	}
	if r[idx["Region"]] != nil {
		t.Errorf("Region should be NULL, got %v", r[idx["Region"]])
	}
	// Non-ASCII nvarchar.
	if got := rows[1].Values[idx["Address"]]; got != "Avda. de la Constitución 2222" {
		t.Errorf("ANATR address %q", got)
	}
	_, prods := readAll(t, db, "Products")
	if p := prods[0].Values; p[1] != "Chai" || str(p[5]) != "18.0000" || p[9] != false {
		t.Errorf("Chai row %v", p)
	}
	_, od := readAll(t, db, "Order Details")
	if v := od[0].Values; v[0] != int64(10248) || str(v[2]) != "14.0000" || v[4] != float32(0) {
		t.Errorf("first order detail %v", v)
	}
	_, orders := readAll(t, db, "Orders")
	if d, ok := orders[0].Values[3].(time.Time); !ok || !d.Equal(time.Date(1996, 7, 4, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("first order date %v", orders[0].Values[3])
	}
	// LOB columns: ntext and image through text pointers.
	_, cats := readAll(t, db, "Categories")
	if d := cats[0].Values[2]; d != "Soft drinks, coffees, teas, beers, and ales" {
		t.Errorf("category description %q", d)
	}
	if pic, ok := cats[0].Values[3].([]byte); !ok || len(pic) < 1000 || !bytes.HasPrefix(pic, []byte{0x15, 0x1c}) {
		t.Errorf("category picture: %T len %d", cats[0].Values[3], len(cats[0].Values[3].([]byte)))
	}
}

func TestPubsAuthors(t *testing.T) {
	for _, name := range []string{"sql2008_655_pubs_itsligo.mdf", "sql2005_611_pubs_orig2000.mdf"} {
		t.Run(name, func(t *testing.T) {
			db := openFixture(t, name, Options{})
			_, rows := readAll(t, db, "dbo.authors")
			r := rows[0].Values
			if r[0] != "172-32-1176" || r[1] != "White" || r[2] != "Johnson" || r[8] != true {
				t.Errorf("first author %v", r)
			}
			// Non-unique clustered index (uniquifier) and key-first layout.
			_, emp := readAll(t, db, "employee")
			found := false
			for _, e := range emp {
				if e.Values[0] == "PMA42628M" {
					found = true
					if e.Values[1] != "Paolo" || e.Values[2] != "M" || e.Values[3] != "Accorti" {
						t.Errorf("employee %v", e.Values)
					}
				}
			}
			if !found {
				t.Error("employee PMA42628M missing")
			}
			// text column over several LOB fragments.
			_, info := readAll(t, db, "pub_info")
			for _, r := range info {
				s, _ := r.Values[2].(string)
				if !strings.HasPrefix(s, "This is sample text data for ") {
					t.Errorf("pub_info %v pr_info %q", r.Values[0], s)
				}
				if logo, ok := r.Values[1].([]byte); !ok || !bytes.HasPrefix(logo, []byte("GIF89a")) {
					t.Errorf("pub_info %v logo is not a GIF", r.Values[0])
				}
			}
		})
	}
}

func TestBig5Varchar(t *testing.T) {
	db := openFixture(t, "sql2005_611_renthouse_big5_varchar.mdf", Options{})
	tb, rows := readAll(t, db, "dbo.Renter")
	if tb.Columns[2].CodePage != 950 {
		t.Errorf("code page %d, want 950", tb.Columns[2].CodePage)
	}
	want := []string{"小明", "小華", "小李", "123", "AAA", "QQQ", "1800123"}
	for i, w := range want {
		if rows[i].Values[2] != w {
			t.Errorf("row %d name %q, want %q", i, rows[i].Values[2], w)
		}
	}
	_, rr := readAll(t, db, "RentRecord")
	if d := rr[0].Values[2].(time.Time); d.Format("2006-01-02") != "2014-02-09" || rr[0].Values[4] != int64(686000) {
		t.Errorf("first rent record %v", rr[0].Values)
	}
}

func TestMvcMovies(t *testing.T) {
	db := openFixture(t, "sql2012_706_mvcmovie_shellwe.mdf", Options{})
	_, rows := readAll(t, db, "dbo.Movies")
	want := [][]string{{"1", "Aliens", "1986-05-02", "Action", "3.50"}, {"2", "Alien", "1970-01-01", "Horror", "123.45"}, {"3", "Throw momma from the train", "1982-01-02", "Comedy", "8.77"}}
	for i, w := range want {
		v := rows[i].Values
		if v[0] != int64(i+1) || v[1] != w[1] || v[2].(time.Time).Format("2006-01-02") != w[2] || v[3] != w[3] || str(v[4]) != w[4] {
			t.Errorf("movie %d: %v", i, v)
		}
	}
	_, mh := readAll(t, db, "__MigrationHistory")
	if v := mh[0].Values; v[0] != "201507170627590_InitialCreate" || v[1] != "MvcMovie.Models.MovieDBContext" || v[3] != "6.1.1-30610" {
		t.Errorf("migration history %v", v)
	}
	if model, ok := mh[0].Values[2].([]byte); !ok || !bytes.HasPrefix(model, []byte{0x1f, 0x8b}) {
		t.Errorf("model is not a gzip blob")
	}
}

func Test2014DateTimeOffsetMoneyImage(t *testing.T) {
	db := openFixture(t, "sql2014_782_sqlbulkupsert_testdb.mdf", Options{})
	tb, rows := readAll(t, db, "dbo.TestUpsert")
	if len(rows) != 10 {
		t.Fatalf("%d rows", len(rows))
	}
	types := []string{}
	for _, c := range tb.Columns {
		types = append(types, c.SQLType())
	}
	if got := strings.Join(types[:8], ","); got != "nchar(4),smallint,nvarchar(50),int,datetimeoffset(7),money,varbinary(max),image" {
		t.Errorf("column types %s", got)
	}
	for i, r := range rows {
		n := int64(i + 1)
		v := r.Values
		if v[0] != "TEST" || v[1] != n || v[3] != n {
			t.Errorf("row %d keys: %v", i, v)
		}
		if want := "some text here " + strconv.FormatInt(n, 10); v[2] != want {
			t.Errorf("row %d text %q, want %q", i, v[2], want)
		}
		dto, ok := v[4].(time.Time)
		if !ok {
			t.Fatalf("row %d datetimeoffset %T", i, v[4])
		}
		if _, off := dto.Zone(); off != int(n)*3600 {
			t.Errorf("row %d offset %d s, want %d", i, off, n*3600)
		}
		if dto.Format("2006-01-02T15:04:05") != "2010-11-14T12:00:00" {
			t.Errorf("row %d datetimeoffset %v", i, dto)
		}
		// money, varbinary(max) are NULL in the null bitmap; the image
		// column holds a 16-byte text pointer to a NULL LOB root.
		if v[5] != nil || v[6] != nil || v[7] != nil {
			t.Errorf("row %d money/varbinary/image %v %v %v, want NULL", i, v[5], v[6], v[7])
		}
	}
}

func TestVerifyPages(t *testing.T) {
	// Checksum-verified pages per file (groundtruth/page-checksum-scan.txt).
	want := map[string]int{
		"sql2005_611_renthouse_big5_varchar.mdf":  170,
		"sql2008_655_northwind_itsligo.mdf":       376,
		"sql2008_655_pubs_itsligo.mdf":            224,
		"sql2008r2_661_dnn_empty_created2005.mdf": 164,
		"sql2012_706_mvcmovie_shellwe.mdf":        273,
		"sql2014_782_sqlbulkupsert_testdb.mdf":    270,
	}
	for _, name := range fixtureFiles {
		db := openFixture(t, name, Options{})
		rep, err := db.VerifyPages(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Bad) > 0 {
			t.Errorf("%s: bad pages %v", name, rep.Bad)
		}
		if w, ok := want[name]; ok && rep.ChecksumOK != w {
			t.Errorf("%s: %d checksum-verified pages, want %d", name, rep.ChecksumOK, w)
		}
		if name == "sql2005_611_pubs_orig2000.mdf" && rep.TornOK != 239 {
			t.Errorf("%s: %d torn-bit pages, want 239", name, rep.TornOK)
		}
	}
}

// memFile is an in-memory io.ReaderAt.
type memFile []byte

func (m memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m)) {
		return 0, errors.New("out of range")
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, errors.New("short read")
	}
	return n, nil
}

func TestDamagedPageListedOtherRowsKept(t *testing.T) {
	data := testenv.FixtureBytes(t, "mdf/sql2008_655_northwind_itsligo.mdf")
	db, err := Open(context.Background(), memFile(data), int64(len(data)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := db.Table("Orders")
	// Find a data page of Orders and damage it (as a crash mid-write would).
	var victim PageID
	_, err = db.ReadTable(context.Background(), tb, func(r *Row) error {
		if r.RID.Page > victim.Page && victim.Page == 0 && r.RID.Slot == 5 {
			victim = r.RID.PageID
		}
		return nil
	})
	if err != nil || victim.Page == 0 {
		t.Fatalf("no victim page: %v", err)
	}
	bad := append([]byte(nil), data...)
	copy(bad[int(victim.Page)*PageSize+2000:], bytes.Repeat([]byte{0xAB}, 600))
	db2, err := Open(context.Background(), memFile(bad), int64(len(bad)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	tb2, _ := db2.Table("Orders")
	n := 0
	res, err := db2.ReadTable(context.Background(), tb2, func(r *Row) error { n++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Unreadable) != 1 {
		t.Fatalf("unreadable %v, want the one damaged page", res.Unreadable)
	}
	var pe *PageError
	if !errors.As(res.Unreadable[0], &pe) || pe.Page != victim || pe.Offset != int64(victim.Page)*PageSize {
		t.Errorf("error %v does not name page %s", res.Unreadable[0], victim)
	}
	if n == 0 || n >= 830 {
		t.Errorf("%d rows out of 830 after damaging one page", n)
	}
	rep, _ := db2.VerifyPages(context.Background())
	if len(rep.Bad) != 1 || rep.Bad[0].Page != victim {
		t.Errorf("VerifyPages bad = %v", rep.Bad)
	}
}

func TestIncludeDeleted(t *testing.T) {
	for _, name := range fixtureFiles {
		db := openFixture(t, name, Options{IncludeDeleted: true})
		live := openFixture(t, name, Options{})
		for _, tb := range db.Tables() {
			res, err := db.ReadTable(context.Background(), tb, func(r *Row) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			lt, _ := live.Table(tb.FullName())
			n, _, _ := live.CountRows(context.Background(), lt)
			if res.Rows-res.Deleted != n {
				t.Errorf("%s %s: %d rows with deleted minus %d deleted != %d live", name, tb.FullName(), res.Rows, res.Deleted, n)
			}
		}
	}
}

func TestCorruptedFilesNeverPanic(t *testing.T) {
	data := testenv.FixtureBytes(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	seed := uint32(1)
	rnd := func() uint32 { seed = seed*1664525 + 1013904223; return seed }
	for round := 0; round < 40; round++ {
		bad := append([]byte(nil), data...)
		for i := 0; i < 200; i++ {
			bad[int(rnd())%len(bad)] = byte(rnd())
		}
		db, err := Open(context.Background(), memFile(bad), int64(len(bad)), Options{IgnoreChecksums: round%2 == 0, IncludeDeleted: round%3 == 0})
		if err != nil {
			continue
		}
		for _, tb := range db.AllTables() {
			db.ReadTable(context.Background(), tb, func(r *Row) error { return nil })
		}
	}
	// Truncated file.
	if _, err := Open(context.Background(), memFile(data[:20*PageSize+77]), 20*PageSize+77, Options{}); err == nil {
		t.Log("truncated file opened (catalog pages present)")
	}
	if _, err := Open(context.Background(), memFile(data[:5000]), 5000, Options{}); err == nil {
		t.Error("5000-byte file opened")
	}
}

func TestNotAnMDF(t *testing.T) {
	junk := make([]byte, 20*PageSize)
	_, err := Open(context.Background(), memFile(junk), int64(len(junk)), Options{})
	if err == nil || !errors.Is(err, ErrFormat) {
		t.Errorf("err = %v", err)
	}
}

func TestDecimalString(t *testing.T) {
	for _, c := range []struct {
		b     []byte
		scale int
		want  string
	}{
		{[]byte{1, 0x5e, 0x01, 0, 0}, 2, "3.50"},
		{[]byte{0, 0x05, 0, 0, 0}, 3, "-0.005"},
		{[]byte{1, 0, 0, 0, 0}, 0, "0"},
	} {
		v, _ := decodeDecimal(c.b, c.scale)
		if got := v.(Decimal).String(); got != c.want {
			t.Errorf("%x scale %d: %s, want %s", c.b, c.scale, got, c.want)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	type fx struct {
		db   *Database
		size int64
	}
	var fxs []fx
	var total int64
	for _, name := range fixtureFiles {
		path := testenv.Fixture(b, "mdf/"+name)
		data, err := os.ReadFile(filepath.Clean(path))
		if err != nil {
			b.Fatal(err)
		}
		db, err := Open(context.Background(), memFile(data), int64(len(data)), Options{})
		if err != nil {
			b.Fatal(err)
		}
		fxs = append(fxs, fx{db, int64(len(data))})
	}
	b.ResetTimer()
	pages := 0
	for i := 0; i < b.N; i++ {
		for _, f := range fxs {
			for _, tb := range f.db.AllTables() {
				res, err := f.db.ReadTable(context.Background(), tb, func(r *Row) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				total += res.BytesRead
				pages += res.Pages
			}
		}
	}
	b.SetBytes(total / int64(b.N))
	b.ReportMetric(float64(pages)/b.Elapsed().Seconds(), "pages/s")
}
