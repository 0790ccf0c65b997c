package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/parsers/mdf"
	"github.com/rewind-cdp/rewind/parsers/mdf/export"
)

func newSQLCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sql",
		Short: "Read tables straight out of SQL Server data files (.mdf), no server needed",
		Long: `Read SQL Server primary data files (.mdf) written by SQL Server 2005 to 2022
(databases created on SQL Server 2000 and upgraded included) without a server:
list the tables, export one or all of them as CSV, JSON Lines or a T-SQL
script, and check every page's checksum. ROW and PAGE compressed tables,
sparse columns and xml are decoded too. restore-table and attach put a table
or the whole file back into a live server.

  rewind sql info Northwind.mdf                     # tables and row counts
  rewind sql export Northwind.mdf --table dbo.Customers --format csv
  rewind sql export-all Northwind.mdf --dir out --format jsonl
  rewind sql verify Northwind.mdf                   # page checksums / torn bits
  rewind sql restore-table Northwind.mdf --table dbo.Customers --to 'sqlserver://sa:pw@db1?database=Northwind'
  rewind sql attach Northwind.mdf --name Northwind_old --to 'sqlserver://sa:pw@localhost'

Each command also reads the file straight from a backup at any point in time:
  rewind sql info --machine sql1 --volume d --at "2026-11-20 10:15" --path /SQLData/Sales.mdf

The file is only read. Pages that fail their checksum are skipped and
reported; every other row still comes out.`,
	}
	cmd.AddCommand(newSQLInfoCmd(), newSQLExportCmd(), newSQLExportAllCmd(), newSQLVerifyCmd(), newSQLRestoreTableCmd(), newSQLAttachCmd())
	return cmd
}

// sqlOpenFlags are the reading options every sql subcommand shares.
type sqlOpenFlags struct {
	point           pointFileFlags
	includeDeleted  bool
	ignoreChecksums bool
	codePage        int
}

func (f *sqlOpenFlags) add(cmd *cobra.Command, deleted bool) {
	f.point.add(cmd)
	if deleted {
		cmd.Flags().BoolVar(&f.includeDeleted, "include-deleted", false, "also output deleted rows still on the pages (ghost records, deallocated pages), marked in a _deleted column")
	}
	cmd.Flags().BoolVar(&f.ignoreChecksums, "ignore-checksums", false, "decode pages whose checksum or torn bits are wrong instead of skipping them")
	cmd.Flags().IntVar(&f.codePage, "codepage", 0, "decode char/varchar/text with this Windows code page (e.g. 950, 1252, 1258) instead of the one the collation implies")
}

// sqlOpenMDF opens the .mdf named by the argument or by the point flags
// and reads its catalog.
func sqlOpenMDF(ctx context.Context, a []string, f sqlOpenFlags) (*mdf.Database, func(), error) {
	if f.codePage != 0 && !mdf.SupportedCodePage(f.codePage) {
		return nil, nil, usagef("--codepage %d is not supported (try 874, 932, 936, 949, 950, 1250-1258, 437, 850)", f.codePage)
	}
	src, err := openItemFile(ctx, a, &f.point, ".mdf")
	if err != nil {
		return nil, nil, err
	}
	db, err := mdf.Open(ctx, src, src.Size, mdf.Options{
		IncludeDeleted: f.includeDeleted, IgnoreChecksums: f.ignoreChecksums, CodePage: f.codePage,
	})
	if err != nil {
		src.Close()
		return nil, nil, fmt.Errorf("%s: %w", src.Name, err)
	}
	return db, src.Close, nil
}

type sqlTableInfo struct {
	Schema     string `json:"schema"`
	Name       string `json:"name"`
	Rows       int64  `json:"rows"`
	Unreadable int    `json:"unreadable_pages,omitempty"`
}

type sqlInfo struct {
	Database      string         `json:"database"`
	Version       int            `json:"version"`
	CreateVersion int            `json:"create_version"`
	PageVerify    string         `json:"page_verify"`
	Tables        []sqlTableInfo `json:"tables"`
}

func newSQLInfoCmd() *cobra.Command {
	var asJSON, all bool
	var of sqlOpenFlags
	cmd := &cobra.Command{
		Use:   "info [FILE.mdf | --machine M --volume V --path P]",
		Short: "Show database name, version, page verify option and user tables with row counts",
		Long: `Show what a SQL Server data file holds: database name (attached databases
often carry their file path here), internal version (611 = 2005, 655 = 2008,
661 = 2008 R2, 706 = 2012, 782 = 2014), the version that created it, the page
verify option, and every user table with its row count (counted on the data
pages, not taken from the possibly stale catalog).

  rewind sql info pubs.mdf
  rewind sql info pubs.mdf --json | jq '.tables[] | select(.rows > 0)'
  rewind sql info pubs.mdf --all        # also dbo.sysdiagrams / dtproperties`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			db, done, err := sqlOpenMDF(ctx, a, of)
			if err != nil {
				return err
			}
			defer done()
			info := sqlInfo{Database: db.Boot.Name, Version: db.Boot.Version, CreateVersion: db.Boot.CreateVersion,
				PageVerify: db.Boot.PageVerify, Tables: []sqlTableInfo{}}
			tables := db.Tables()
			if all {
				tables = db.AllTables()
			}
			for _, t := range tables {
				n, res, err := db.CountRows(ctx, t)
				if err != nil {
					return fmt.Errorf("count rows of %s: %w", t.FullName(), err)
				}
				info.Tables = append(info.Tables, sqlTableInfo{Schema: t.Schema, Name: t.Name, Rows: n, Unreadable: len(res.Unreadable)})
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, info)
			}
			fmt.Fprintf(out, "database:     %s\n", info.Database)
			fmt.Fprintf(out, "version:      %d (%s)\n", info.Version, mdf.VersionName(info.Version))
			fmt.Fprintf(out, "created by:   %d (%s)\n", info.CreateVersion, mdf.VersionName(info.CreateVersion))
			fmt.Fprintf(out, "page verify:  %s\n", info.PageVerify)
			if len(info.Tables) == 0 {
				fmt.Fprintln(out, "user tables:  none")
				return nil
			}
			fmt.Fprintf(out, "user tables:  %d\n\n", len(info.Tables))
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TABLE\tROWS")
			for _, t := range info.Tables {
				if t.Unreadable > 0 {
					fmt.Fprintf(tw, "%s.%s\t%d\t(%d unreadable pages or records)\n", t.Schema, t.Name, t.Rows, t.Unreadable)
					continue
				}
				fmt.Fprintf(tw, "%s.%s\t%d\n", t.Schema, t.Name, t.Rows)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"database","version","create_version","page_verify","tables":[{"schema","name","rows"}]} as JSON`)
	cmd.Flags().BoolVar(&all, "all", false, "also list the support tables SQL Server's tools create (dbo.sysdiagrams, dbo.dtproperties)")
	of.add(cmd, false)
	return cmd
}

// sqlTable finds a user table, with an error listing the tables.
func sqlTable(db *mdf.Database, name string) (*mdf.Table, error) {
	t, err := db.Table(name)
	if err == nil {
		return t, nil
	}
	var names []string
	for _, t := range db.Tables() {
		names = append(names, t.FullName())
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%v: the database has no user tables", err)
	}
	return nil, fmt.Errorf("%v; tables: %s", err, strings.Join(names, ", "))
}

func sqlCheckFormat(format string) error {
	if !slices.Contains(export.Formats, format) {
		return usagef("--format %q is not supported: use csv, jsonl or sql", format)
	}
	return nil
}

// sqlExportTable writes one table to w and reports unreadable pages on stderr.
func sqlExportTable(ctx context.Context, db *mdf.Database, t *mdf.Table, format string, deleted bool, w io.Writer, stderr io.Writer) (int64, error) {
	rw, err := export.NewWriter(w, format, t, export.Options{DeletedColumn: deleted})
	if err != nil {
		return 0, err
	}
	var fails int64
	res, err := db.ReadTable(ctx, t, func(r *mdf.Row) error {
		for _, e := range r.Errors {
			if fails < 10 {
				fmt.Fprintf(stderr, "rewind: warning: %s row %s: %v\n", t.FullName(), r.RID, e)
			}
			fails++
		}
		return rw.WriteRow(r)
	})
	if cerr := rw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("export %s: %w", t.FullName(), err)
	}
	for _, u := range res.Unreadable {
		fmt.Fprintf(stderr, "rewind: warning: %s: skipped unreadable data: %v\n", t.FullName(), u)
	}
	if fails > 10 {
		fmt.Fprintf(stderr, "rewind: warning: %s: %d column values could not be decoded (written as NULL)\n", t.FullName(), fails)
	}
	return res.Rows, nil
}

func newSQLExportCmd() *cobra.Command {
	var table, format, out string
	var of sqlOpenFlags
	cmd := &cobra.Command{
		Use:   "export FILE.mdf --table [SCHEMA.]NAME [--format csv|jsonl|sql] [--out FILE]",
		Short: "Export one table as CSV, JSON Lines or a T-SQL script",
		Long: `Export the rows of one user table.

  csv    RFC 4180, a header line of column names; NULL is an empty field,
         binary is 0x-prefixed hex, times are ISO 8601 / RFC 3339
  jsonl  one JSON object per row with typed values: numbers as numbers
         (decimal and money exact), binary as base64, times as RFC 3339
  sql    CREATE TABLE plus one INSERT per row, re-creating the table

Examples:
  rewind sql export Northwind.mdf --table dbo.Customers --format csv --out customers.csv
  rewind sql export Northwind.mdf --table "Order Details" --format jsonl
  rewind sql export pubs.mdf --table authors --format sql | sqlcmd -d restored
  rewind sql export pubs.mdf --table sales --include-deleted --format csv`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if table == "" {
				return usagef("--table is required: name the table to export, e.g. --table dbo.Customers")
			}
			if err := sqlCheckFormat(format); err != nil {
				return err
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
			var w io.Writer = cmd.OutOrStdout()
			var f *os.File
			if out != "" && out != "-" {
				f, err = os.Create(out)
				if err != nil {
					return fmt.Errorf("create output: %w", err)
				}
				w = f
			}
			n, err := sqlExportTable(ctx, db, t, format, of.includeDeleted, w, cmd.ErrOrStderr())
			if f != nil {
				if cerr := f.Close(); err == nil && cerr != nil {
					err = fmt.Errorf("write %s: %w", out, cerr)
				}
				if err == nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d rows written to %s\n", t.FullName(), n, out)
				}
			}
			return err
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "table to export: SCHEMA.NAME, or NAME when unique")
	cmd.Flags().StringVar(&format, "format", "csv", "output format: csv, jsonl or sql")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write to this file instead of standard output")
	of.add(cmd, true)
	return cmd
}

var sqlUnsafeFileChars = regexp.MustCompile(`[^\p{L}\p{N} ._()\-]`)

// sqlExportFileName gives a file name for a table that cannot escape the
// output directory.
func sqlExportFileName(t *mdf.Table, format string) string {
	name := sqlUnsafeFileChars.ReplaceAllString(t.Schema+"."+t.Name, "_")
	if strings.HasPrefix(name, ".") {
		name = "_" + name
	}
	return name + export.Ext(format)
}

func newSQLExportAllCmd() *cobra.Command {
	var dir, format string
	var all bool
	var of sqlOpenFlags
	cmd := &cobra.Command{
		Use:   "export-all FILE.mdf --dir OUT [--format csv|jsonl|sql]",
		Short: "Export every user table, one file per table",
		Long: `Export every user table of the data file into OUT/SCHEMA.NAME.FORMAT
(characters unsafe in file names become _). The directory is created when
missing; existing files of the same name are replaced.

  rewind sql export-all Northwind.mdf --dir northwind-csv
  rewind sql export-all pubs.mdf --dir pubs-sql --format sql
  rewind sql export-all pubs.mdf --dir pubs-json --format jsonl --include-deleted`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if dir == "" {
				return usagef("--dir is required: the directory to write one file per table into")
			}
			if err := sqlCheckFormat(format); err != nil {
				return err
			}
			ctx := cmd.Context()
			db, done, err := sqlOpenMDF(ctx, a, of)
			if err != nil {
				return err
			}
			defer done()
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create output directory: %w", err)
			}
			tables := db.Tables()
			if all {
				tables = db.AllTables()
			}
			stderr := cmd.ErrOrStderr()
			for _, t := range tables {
				path := filepath.Join(dir, sqlExportFileName(t, format))
				f, err := os.Create(path)
				if err != nil {
					return fmt.Errorf("create output: %w", err)
				}
				n, err := sqlExportTable(ctx, db, t, format, of.includeDeleted, f, stderr)
				if cerr := f.Close(); err == nil && cerr != nil {
					err = fmt.Errorf("write %s: %w", path, cerr)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%d rows\n", path, n)
			}
			if len(tables) == 0 {
				fmt.Fprintln(stderr, "rewind: the database has no user tables; nothing written")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write the files into")
	cmd.Flags().StringVar(&format, "format", "csv", "output format: csv, jsonl or sql")
	cmd.Flags().BoolVar(&all, "all", false, "also export the tools' support tables (dbo.sysdiagrams, dbo.dtproperties)")
	of.add(cmd, true)
	return cmd
}

func newSQLVerifyCmd() *cobra.Command {
	of := sqlOpenFlags{ignoreChecksums: true}
	cmd := &cobra.Command{
		Use:   "verify [FILE.mdf | --machine M --volume V --path P]",
		Short: "Check every page's checksum or torn-page bits",
		Long: `Check every page of the data file: CHECKSUM pages against their checksum,
TORN_PAGE_DETECTION pages against their torn bits. Prints a summary and one
line per damaged page (page id and byte offset); exits 1 when any page is
damaged.

  rewind sql verify Northwind.mdf`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			db, done, err := sqlOpenMDF(ctx, a, of)
			if err != nil {
				return err
			}
			defer done()
			rep, err := db.VerifyPages(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "pages: %d  checksum ok: %d  torn bits ok: %d  unprotected: %d  unused: %d  damaged: %d\n",
				rep.Pages, rep.ChecksumOK, rep.TornOK, rep.Unprotected, rep.Unused, len(rep.Bad))
			for _, b := range rep.Bad {
				fmt.Fprintf(out, "damaged: %v\n", b)
			}
			if len(rep.Bad) > 0 {
				return errors.New("damaged pages found")
			}
			return nil
		},
	}
	of.point.add(cmd)
	return cmd
}
