package catalog

import (
	"context"
	"path/filepath"
	"testing"
)

// Both SQLite drivers (cgo by default, pure Go without cgo or with the
// sqlite_purego tag) must give every connection the same settings.
func TestConnectionSettings(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "catalog.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	t.Logf("driver %s", driverName)
	want := map[string]string{
		"journal_mode": "wal",
		"busy_timeout": "30000",
		"synchronous":  "2", // FULL
		"foreign_keys": "1",
		"cache_size":   "-32000",
	}
	for _, c := range []struct {
		name     string
		queryOne func(q string) (string, error)
		readOnly bool
	}{
		{"writer", func(q string) (s string, err error) { err = db.w.QueryRowContext(ctx, q).Scan(&s); return }, false},
		{"reader", func(q string) (s string, err error) { err = db.r.QueryRowContext(ctx, q).Scan(&s); return }, true},
	} {
		for p, v := range want {
			got, err := c.queryOne("PRAGMA " + p)
			if err != nil {
				t.Fatalf("%s: PRAGMA %s: %v", c.name, p, err)
			}
			if got != v {
				t.Errorf("%s connection: %s = %s, want %s", c.name, p, got, v)
			}
		}
		got, err := c.queryOne("PRAGMA query_only")
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]string{true: "1", false: "0"}[c.readOnly]; got != want {
			t.Errorf("%s connection: query_only = %s, want %s", c.name, got, want)
		}
	}
	if _, err := db.r.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES('x', 'y')`); err == nil {
		t.Error("a reader connection accepted a write")
	}
}
