// Package mssql brings SQL Server databases to a consistent state on disk
// before a bookmark: it connects with go-mssqldb and issues CHECKPOINT, so
// every committed change is in the data files and a restored point attaches
// without a long recovery.
package mssql

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"

	_ "github.com/microsoft/go-mssqldb" // registers the "sqlserver" driver
)

// Checkpoint connects to the SQL Server named by dsn
// (sqlserver://user:password@host:port?database=NAME) and checkpoints the
// database the DSN names or, when it names none, every online user
// database. It returns the databases checkpointed.
func Checkpoint(ctx context.Context, dsn string) ([]string, error) {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme != "sqlserver" || u.Host == "" {
		return nil, fmt.Errorf("SQL Server DSN %q: want sqlserver://user:password@host[:port][?database=NAME]", redact(dsn))
	}
	db, err := sql.Open("sqlserver", dsn)
	if err != nil {
		return nil, fmt.Errorf("SQL Server %s: %w", u.Host, err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to SQL Server %s: %w", u.Host, err)
	}
	defer conn.Close()

	var names []string
	if name := u.Query().Get("database"); name != "" {
		names = []string{name}
	} else {
		rows, err := conn.QueryContext(ctx, "SELECT name FROM sys.databases WHERE database_id > 4 AND state = 0 AND is_read_only = 0 ORDER BY name")
		if err != nil {
			return nil, fmt.Errorf("list databases on %s: %w", u.Host, err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("list databases on %s: %w", u.Host, err)
			}
			names = append(names, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("list databases on %s: %w", u.Host, err)
		}
	}
	for _, n := range names {
		if _, err := conn.ExecContext(ctx, "USE "+QuoteName(n)+"; CHECKPOINT;"); err != nil {
			return nil, fmt.Errorf("CHECKPOINT of database %s on %s: %w", n, u.Host, err)
		}
	}
	return names, nil
}

// QuoteName quotes a SQL Server identifier as QUOTENAME does: in brackets,
// with every closing bracket doubled.
func QuoteName(name string) string {
	return "[" + strings.ReplaceAll(name, "]", "]]") + "]"
}

// redact hides the password of a DSN for error messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
