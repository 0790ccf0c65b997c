package ese

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// overlay reads base with one page replaced by page.
type overlay struct {
	base []byte
	off  int64
	page []byte
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(o.base)) {
		return 0, io.EOF
	}
	n := copy(p, o.base[off:])
	for i := range n {
		at := off + int64(i) - o.off
		if at >= 0 && at < int64(len(o.page)) {
			p[i] = o.page[at]
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readAll reads every value of every table, the way an export does.
func readAll(db *DB) {
	ctx := context.Background()
	for _, tb := range db.Tables() {
		_ = tb.Records(ctx, func(r *Record) error {
			for _, v := range r.Values(ctx) {
				_ = v.Any()
			}
			return nil
		})
	}
}

// fuzzPages are the pages of the multi-value fixture worth mutating: the
// catalog root, the table's records and its long values.
func fuzzBase(f *testing.F) ([]byte, []uint32) {
	b := testenv.FixtureBytes(f, "ese/dissect_multi.edb.gz")
	db := openBytes(f, b)
	tb, err := db.Table("multi")
	if err != nil {
		f.Fatal(err)
	}
	return b, []uint32{catalogFDP, tb.FDP, tb.LVFDP, tb.LVFDP + 1, 1}
}

// FuzzPage replaces one page of a real database with the fuzz input and
// reads the whole database: nothing may panic.
func FuzzPage(f *testing.F) {
	base, pages := fuzzBase(f)
	ps := 4096
	for i, pg := range pages {
		off := int(pg+1) * ps
		f.Add(base[off:off+ps], uint8(i))
	}
	f.Add(base[:ps], uint8(255)) // the header
	f.Fuzz(func(t *testing.T, page []byte, which uint8) {
		off := int64(0)
		if int(which) < len(pages) {
			off = int64(pages[which]+1) * int64(ps)
		}
		r := &overlay{base: base, off: off, page: page[:min(len(page), ps)]}
		db, err := Open(context.Background(), r, int64(len(base)))
		if err != nil {
			return
		}
		readAll(db)
		db.checkPage(r.page, 1)
	})
}

// FuzzRecord decodes the fuzz input as a record of the multi-value table
// (long-value references resolve against the real long-value tree).
func FuzzRecord(f *testing.F) {
	base, _ := fuzzBase(f)
	db := openBytes(f, base)
	for _, name := range []string{"multi", "MSysObjects"} {
		tb, _ := db.Table(name)
		_ = tb.Records(context.Background(), func(r *Record) error {
			f.Add(append([]byte(nil), r.raw.data...), name == "multi")
			return nil
		})
	}
	multi, _ := db.Table("multi")
	f.Fuzz(func(t *testing.T, data []byte, isMulti bool) {
		tb := db.catalog
		if isMulti {
			tb = multi
		}
		raw, err := parseRecord(data, false)
		if err != nil {
			return
		}
		r := &Record{table: tb, raw: raw}
		for _, v := range r.Values(context.Background()) {
			_ = v.Any()
		}
	})
}

// FuzzDecompress feeds ESE's decompressor: the seeds are the compressed
// values and long-value chunks found in the fixtures.
func FuzzDecompress(f *testing.F) {
	for _, fx := range []string{"ese/dissect_multi.edb.gz", "ese/dissect_text.edb.gz", "ese/dissect_binary.edb.gz"} {
		b := testenv.FixtureBytes(f, fx)
		db := openBytes(f, b)
		for _, tb := range db.Tables() {
			_ = tb.Records(context.Background(), func(r *Record) error {
				for _, tf := range r.raw.tagged {
					if tf.flags&tagCompressed != 0 {
						f.Add(bytes.Clone(tf.data))
					}
				}
				return nil
			})
			if tb.LVFDP != 0 {
				_ = db.walk(context.Background(), tb.LVFDP, func(n node) error {
					if len(n.data) > 0 && n.data[0]>>3 >= 1 && n.data[0]>>3 <= 7 {
						f.Add(bytes.Clone(n.data))
					}
					return nil
				})
			}
		}
	}
	f.Add([]byte{0x18, 0x2c, 0x01, 0xff, 0xff, 0xff, 0x1f, 0x61, 0x62, 0x63, 0x17, 0x00, 0x0f, 0xff, 0x26, 0x01})
	f.Add([]byte{0x38, 12, 0, 0x35, 'a', 'b', 'c', 3, 0})
	f.Add([]byte{0x30, 0x2c, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Decompress(b)
		if err == nil && len(out) > 2*maxDecompressed {
			t.Fatalf("%d bytes out", len(out))
		}
	})
}
