package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/mssql"
	"github.com/rewind-cdp/rewind/parsers/mdf"
	"github.com/rewind-cdp/rewind/parsers/mdf/export"
)

func newSQLRestoreTableCmd() *cobra.Command {
	var table, dsn, target string
	var of sqlOpenFlags
	cmd := &cobra.Command{
		Use:   "restore-table [FILE.mdf | --machine M --volume V --path P] --table [SCHEMA.]NAME --to DSN",
		Short: "Put one recovered table back into a live SQL Server",
		Long: `Create a table on a live SQL Server from the schema recovered from a data file
and copy every row into it, on one connection, in one transaction, so the new
table appears complete or not at all. Rows go by bulk copy (the TDS bulk load
go-mssqldb implements, like bcp) when the driver can carry every column
exactly; tables with an identity column (whose values must be kept, with
IDENTITY_INSERT), money, smallmoney, sql_variant, xml or CLR columns go by
multi-row INSERT statements (1000 rows at most each) instead.

The target is --target-table ([SCHEMA.]NAME) in the DSN's database; by default
the original name with a _restored suffix, in the original schema. An
existing table is never touched: the command refuses to start.

The DSN is sqlserver://user:password@host[:port]?database=NAME.`,
		Example: `  rewind sql restore-table Northwind.mdf --table dbo.Customers \
      --to 'sqlserver://sa:secret@db1?database=Northwind'
  rewind sql restore-table --machine sql1 --volume d --at -2d --path /SQLData/Sales.mdf \
      --table dbo.Orders --target-table recovered.Orders --to 'sqlserver://sa:secret@db1?database=Sales'`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if table == "" || dsn == "" {
				return usagef("--table and --to are required")
			}
			ctx := cmd.Context()
			db, done, err := sqlOpenMDF(ctx, a, of)
			if err != nil {
				return err
			}
			defer done()
			t, err := sqlTable(db, table)
			if err != nil {
				return err
			}
			schema, name := t.Schema, t.Name+"_restored"
			if target != "" {
				schema, name = splitTableName(target, t.Schema)
			}
			b := export.NewBatcher(t, schema, name)
			start := time.Now()
			cp, err := mssql.BeginCopy(ctx, dsn, b.Target)
			if err != nil {
				return err
			}
			for _, s := range b.Setup() {
				if err := cp.Exec(ctx, s); err != nil {
					cp.Rollback()
					return err
				}
			}
			bulkCols, bulkOK, why := mssql.BulkColumns(t)
			method := "bulk copy"
			var bulk *mssql.Bulk
			if bulkOK {
				if bulk, err = cp.BeginBulk(ctx, t, bulkCols, b.Target); err != nil {
					cp.Rollback()
					return err
				}
			} else {
				method = "INSERT statements: " + why
			}
			res, err := db.ReadTable(ctx, t, func(r *mdf.Row) error {
				if bulk != nil {
					return bulk.Add(ctx, r)
				}
				if s := b.Add(r); s != "" {
					return cp.Exec(ctx, s)
				}
				return nil
			})
			if err == nil && bulk != nil {
				_, err = bulk.Finish(ctx)
			}
			if err == nil {
				stmts := append([]string{b.Flush()}, b.Finish()...)
				for _, s := range stmts {
					if s != "" {
						if err = cp.Exec(ctx, s); err != nil {
							break
						}
					}
				}
			}
			if err != nil {
				cp.Rollback()
				return fmt.Errorf("restore %s into %s: %w", t.FullName(), b.Target, err)
			}
			if err := cp.Commit(); err != nil {
				return err
			}
			for _, u := range res.Unreadable {
				fmt.Fprintf(cmd.ErrOrStderr(), "rewind: warning: %s: skipped unreadable data: %v\n", t.FullName(), u)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s (%d rows) into %s on %s in %s (%s)\n", t.FullName(), res.Rows, b.Target, cp.Host, time.Since(start).Round(time.Millisecond), method)
			return nil
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "table to restore: SCHEMA.NAME, or NAME when unique")
	cmd.Flags().StringVar(&dsn, "to", "", "SQL Server DSN: sqlserver://user:password@host[:port]?database=NAME")
	cmd.Flags().StringVar(&target, "target-table", "", "table to create: [SCHEMA.]NAME (default: NAME_restored in the original schema)")
	of.add(cmd, false)
	return cmd
}

// splitTableName splits [SCHEMA.]NAME (either part may be in brackets),
// defaulting the schema.
func splitTableName(s, defSchema string) (schema, name string) {
	unq := func(x string) string {
		if strings.HasPrefix(x, "[") && strings.HasSuffix(x, "]") {
			return strings.ReplaceAll(x[1:len(x)-1], "]]", "]")
		}
		return x
	}
	sep := strings.Index(s, ".")
	if strings.HasPrefix(s, "[") {
		if sep = strings.Index(s, "]."); sep > 0 {
			sep++
		}
	}
	if sep <= 0 {
		return defSchema, unq(s)
	}
	return unq(s[:sep]), unq(s[sep+1:])
}
