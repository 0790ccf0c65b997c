// Package mssql talks to live SQL Servers through go-mssqldb: CHECKPOINT
// before a bookmark (so every committed change is in the data files and a
// restored point attaches without a long recovery), and putting recovered
// tables back (CopyTable).
package mssql

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	_ "github.com/microsoft/go-mssqldb" // registers the "sqlserver" driver

	"github.com/rewind-cdp/rewind/parsers/mdf/export"
)

// Checkpoint connects to the SQL Server named by dsn
// (sqlserver://user:password@host:port?database=NAME) and checkpoints the
// database the DSN names or, when it names none, every online user
// database. It returns the databases checkpointed.
func Checkpoint(ctx context.Context, dsn string) ([]string, error) {
	db, conn, host, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	defer conn.Close()
	u, _ := url.Parse(dsn)

	var names []string
	if name := u.Query().Get("database"); name != "" {
		names = []string{name}
	} else {
		rows, err := conn.QueryContext(ctx, "SELECT name FROM sys.databases WHERE database_id > 4 AND state = 0 AND is_read_only = 0 ORDER BY name")
		if err != nil {
			return nil, fmt.Errorf("list databases on %s: %w", host, err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("list databases on %s: %w", host, err)
			}
			names = append(names, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("list databases on %s: %w", host, err)
		}
	}
	for _, n := range names {
		if _, err := conn.ExecContext(ctx, "USE "+export.QuoteName(n)+"; CHECKPOINT;"); err != nil {
			return nil, fmt.Errorf("CHECKPOINT of database %s on %s: %w", n, host, err)
		}
	}
	return names, nil
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

// connect opens a single connection to the server a DSN names.
func connect(ctx context.Context, dsn string) (*sql.DB, *sql.Conn, string, error) {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme != "sqlserver" || u.Host == "" {
		return nil, nil, "", fmt.Errorf("SQL Server DSN %q: want sqlserver://user:password@host[:port][?database=NAME]", redact(dsn))
	}
	host := u.Host
	db, err := sql.Open("sqlserver", dsn)
	if err != nil {
		return nil, nil, "", fmt.Errorf("SQL Server %s: %w", host, err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, "", fmt.Errorf("connect to SQL Server %s: %w", host, err)
	}
	return db, conn, host, nil
}

// Copy is a table copy into a live server: statements run in order on one
// connection inside one transaction.
type Copy struct {
	Host string
	db   *sql.DB
	conn *sql.Conn
	tx   *sql.Tx
}

// BeginCopy connects to dsn, checks that table (quoted [schema].[name])
// does not exist yet, and starts the transaction the copy runs in.
func BeginCopy(ctx context.Context, dsn, table string) (*Copy, error) {
	db, conn, host, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	c := &Copy{Host: host, db: db, conn: conn}
	var id sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT OBJECT_ID(@p1, N'U')", table).Scan(&id); err != nil {
		c.close()
		return nil, fmt.Errorf("look up %s on %s: %w", table, host, err)
	}
	if id.Valid {
		c.close()
		return nil, fmt.Errorf("%s already exists on %s; choose another --target-table", table, host)
	}
	if c.tx, err = conn.BeginTx(ctx, nil); err != nil {
		c.close()
		return nil, fmt.Errorf("begin transaction on %s: %w", host, err)
	}
	return c, nil
}

// Exec runs one statement of the copy.
func (c *Copy) Exec(ctx context.Context, stmt string) error {
	if _, err := c.tx.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("on %s: %w (statement: %.200s)", c.Host, err, stmt)
	}
	return nil
}

// Commit makes the copy visible; Rollback abandons it.
func (c *Copy) Commit() error {
	defer c.close()
	if err := c.tx.Commit(); err != nil {
		return fmt.Errorf("commit on %s: %w", c.Host, err)
	}
	return nil
}

// Rollback abandons the copy: the target table is not created.
func (c *Copy) Rollback() {
	c.tx.Rollback()
	c.close()
}

func (c *Copy) close() {
	c.conn.Close()
	c.db.Close()
}
