//go:build !cgo || sqlite_purego

package catalog

import (
	"net/url"

	_ "modernc.org/sqlite" // the SQLite driver (pure Go)
)

// driverName is the database/sql driver the catalog opens: modernc.org/sqlite
// (SQLite translated to Go) where cgo is off — the Windows build, which
// cross-compiles with CGO_ENABLED=0 — or with the sqlite_purego build tag.
// Both drivers read and write the same SQLite file format.
const driverName = "sqlite"

// dsn sets the same connection settings as the cgo driver's dsn, spelled as
// this driver's _pragma parameters.
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(30000)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "cache_size(-32000)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	}
	q.Set("_txlock", "immediate")
	// A plain path (no "file:" URI) keeps Windows drive letters and
	// backslashes as they are; the driver cuts the query off at the '?'.
	return path + "?" + q.Encode()
}
