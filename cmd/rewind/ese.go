package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/parsers/ese"
	eseexport "github.com/rewind-cdp/rewind/parsers/ese/export"
)

func newESECmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ese",
		Short: "Read ESE databases: Exchange .edb, ntds.dit, SRUDB.dat, UAL .mdb",
		Long: `Read databases of the Extensible Storage Engine (ESE, "JET Blue"), the engine
behind Exchange mailbox databases (.edb), Active Directory (ntds.dit), Windows
Search, SRUM (SRUDB.dat) and User Access Logging (.mdb) - without Windows.

The file is read, never written. Instead of a FILE, --machine, --volume,
--path (and --at) read it straight from a volume's backup at a point in time. A damaged header falls back to its shadow
copy; page checksums are verified and failures reported as warnings.`,
		Example: `  rewind ese tables SRUDB.dat
  rewind ese tables ntds.dit --json
  rewind ese export SRUDB.dat --table SruDbIdMapTable --format csv --out idmap.csv
  rewind ese export Current.mdb --table CLIENTS --format jsonl | jq .AuthenticatedUserName
  rewind ese tables --machine dc1 --volume c --at -1d --path /Windows/NTDS/ntds.dit`,
	}
	cmd.AddCommand(newESETablesCmd(), newESEExportCmd())
	return cmd
}

func newESETablesCmd() *cobra.Command {
	var asJSON bool
	var pf pointFileFlags
	cmd := &cobra.Command{
		Use:   "tables [FILE | --machine M --volume V --path P]",
		Short: "List the tables of an ESE database with their row counts and columns",
		Long: `List every table of an ESE database (including the MSys* system tables) with
its number of rows and its columns. With --json the output is an array of
{"name", "rows", "columns": [{"id", "name", "type"}]} objects.`,
		Example: `  rewind ese tables SRUDB.dat
  rewind ese tables Current.mdb --json | jq '.[] | select(.rows > 0) | .name'`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			db, name, closeFn, err := openESE(ctx, a, &pf)
			if err != nil {
				return err
			}
			defer closeFn()
			type col struct {
				ID   uint32 `json:"id"`
				Name string `json:"name"`
				Type string `json:"type"`
			}
			type table struct {
				Name    string `json:"name"`
				Rows    int    `json:"rows"`
				Columns []col  `json:"columns"`
			}
			out := []table{}
			for _, t := range db.Tables() {
				n, err := t.Count(ctx)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				tb := table{Name: t.Name, Rows: n, Columns: []col{}}
				for _, c := range t.Columns {
					tb.Columns = append(tb.Columns, col{ID: c.ID, Name: c.Name, Type: c.Type.String()})
				}
				out = append(out, tb)
			}
			warnESE(cmd.ErrOrStderr(), name, db)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TABLE\tROWS\tCOLUMNS")
			for _, t := range out {
				fmt.Fprintf(tw, "%s\t%d\t%d\n", t.Name, t.Rows, len(t.Columns))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	pf.add(cmd)
	return cmd
}

func newESEExportCmd() *cobra.Command {
	var table, format, outPath string
	var pf pointFileFlags
	cmd := &cobra.Command{
		Use:   "export FILE --table T --format jsonl|csv",
		Short: "Export the rows of one table as JSON Lines or CSV",
		Long: `Export every row of one table of an ESE database.

--format jsonl writes one JSON object per row, keys in column order: numbers
as numbers, Bit as true/false, binary values base64, DateTime as RFC 3339
(UTC), GUIDs as strings, NULL as null, multi-valued columns as arrays.

--format csv writes RFC 4180 CSV (CRLF line ends) with a header row of column
names; NULL is an empty field, binary is base64, multi-valued columns hold a
JSON array.

Values that cannot be decoded are written as NULL with a warning on stderr.`,
		Example: `  rewind ese export SRUDB.dat --table SruDbIdMapTable --format jsonl
  rewind ese export ntds.dit --table datatable --format csv --out datatable.csv`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if format != "jsonl" && format != "csv" {
				return usagef("--format must be jsonl or csv, not %q", format)
			}
			ctx := cmd.Context()
			db, name, closeFn, err := openESE(ctx, a, &pf)
			if err != nil {
				return err
			}
			defer closeFn()
			t, err := db.Table(table)
			if err != nil {
				names := make([]string, 0, len(db.Tables()))
				for _, t := range db.Tables() {
					names = append(names, t.Name)
				}
				return usagef("%s has no table %q (tables: %s)", name, table, strings.Join(names, ", "))
			}
			w := cmd.OutOrStdout()
			var file *os.File
			if outPath != "" {
				if file, err = os.Create(outPath); err != nil {
					return err
				}
				defer file.Close()
				w = file
			}
			if err := exportTable(ctx, w, cmd.ErrOrStderr(), t, format); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			warnESE(cmd.ErrOrStderr(), name, db)
			if file != nil {
				return file.Close()
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "table to export (see 'rewind ese tables')")
	cmd.Flags().StringVar(&format, "format", "jsonl", "output format: jsonl or csv")
	cmd.Flags().StringVar(&outPath, "out", "", "write to this file instead of stdout")
	_ = cmd.MarkFlagRequired("table")
	pf.add(cmd)
	return cmd
}

// openESE opens the ESE database named by the argument or the point flags.
func openESE(ctx context.Context, a []string, pf *pointFileFlags) (*ese.DB, string, func(), error) {
	src, err := openItemFile(ctx, a, pf, "ESE database")
	if err != nil {
		return nil, "", nil, err
	}
	db, err := ese.Open(ctx, src, src.Size)
	if err != nil {
		src.Close()
		if errors.Is(err, ese.ErrCorrupt) {
			return nil, "", nil, fmt.Errorf("%s is not a readable ESE database: %w", src.Name, err)
		}
		return nil, "", nil, fmt.Errorf("%s: %w", src.Name, err)
	}
	return db, src.Name, src.Close, nil
}

// warnESE reports a damaged header and pages whose checksum failed.
func warnESE(w io.Writer, path string, db *ese.DB) {
	if db.Header.FromShadow {
		fmt.Fprintf(w, "warning: %s: primary header damaged, read the shadow copy (%v)\n", path, db.Header.PrimaryErr)
	}
	if bad := db.BadPages(); len(bad) > 0 {
		fmt.Fprintf(w, "warning: %s: %d page(s) failed checksum verification; first: %v\n", path, len(bad), bad[0])
	}
}

func exportTable(ctx context.Context, w, warn io.Writer, t *ese.Table, format string) error {
	return eseexport.Table(ctx, w, t, format, func(row int, col string, err error) {
		fmt.Fprintf(warn, "warning: table %s row %d column %s: %v\n", t.Name, row, col, err)
	})
}
