//go:build cgo && !sqlite_purego

package catalog

import (
	"fmt"

	_ "github.com/mattn/go-sqlite3" // the SQLite driver (cgo)
)

// driverName is the database/sql driver the catalog opens: mattn/go-sqlite3
// wherever cgo is available (the default build on Linux).
const driverName = "sqlite3"

// dsn sets WAL, a 30 s busy timeout, full synchronous commits, foreign
// keys, immediate write transactions and a 32 MB page cache on every
// connection; readOnly connections refuse writes.
func dsn(path string, readOnly bool) string {
	s := fmt.Sprintf("file:%s?_journal_mode=WAL&_busy_timeout=30000&_synchronous=FULL&_foreign_keys=1&_txlock=immediate&_cache_size=-32000", path)
	if readOnly {
		s += "&_query_only=1"
	}
	return s
}
