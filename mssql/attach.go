package mssql

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/rewind-cdp/rewind/parsers/mdf/export"
)

// AttachSQL returns the statement that attaches a data file (and its log
// files, when given) as database name. Paths are as the SQL Server sees
// them. Without a log file the log is rebuilt (FOR ATTACH_REBUILD_LOG),
// which SQL Server allows for a database that was shut down cleanly, or
// whose file was checkpointed before the backup (see rewind bookmark
// --mssql).
func AttachSQL(name, data string, logs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE DATABASE %s ON (FILENAME = %s)", export.QuoteName(name), unicodeLiteral(data))
	if len(logs) == 0 {
		b.WriteString(" FOR ATTACH_REBUILD_LOG;")
		return b.String()
	}
	b.WriteString(" LOG ON ")
	for i, l := range logs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(FILENAME = %s)", unicodeLiteral(l))
	}
	b.WriteString(" FOR ATTACH;")
	return b.String()
}

// unicodeLiteral quotes s as an N'...' literal.
func unicodeLiteral(s string) string { return "N'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Attach connects to the SQL Server named by dsn and attaches the data
// file at data (a path on the server) as database name, with the given
// log files or a rebuilt log. It refuses a name already in use.
func Attach(ctx context.Context, dsn, name, data string, logs []string) (host string, err error) {
	db, conn, host, err := connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer db.Close()
	defer conn.Close()
	var id sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT DB_ID(@p1)", name).Scan(&id); err != nil {
		return host, fmt.Errorf("look up database %s on %s: %w", name, host, err)
	}
	if id.Valid {
		return host, fmt.Errorf("database %s already exists on %s; choose another --name", name, host)
	}
	stmt := AttachSQL(name, data, logs)
	if _, err := conn.ExecContext(ctx, stmt); err != nil {
		return host, fmt.Errorf("attach %s on %s: %w (statement: %s)", data, host, err, stmt)
	}
	return host, nil
}
