package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/mssql"
	"github.com/rewind-cdp/rewind/parsers/mdf"
)

func newSQLAttachCmd() *cobra.Command {
	var dsn, name, copyTo, serverDir, serverPath string
	var logs []string
	var printOnly, force bool
	var pf pointFileFlags
	cmd := &cobra.Command{
		Use:   "attach [FILE.mdf | --machine M --volume V --at T --path P --copy-to DIR] --to DSN --name DB",
		Short: "Attach a data file from a point in time to a live SQL Server as a new database",
		Long: `Attach a SQL Server data file as a new database on a live server
(CREATE DATABASE ... FOR ATTACH), so every table, view and procedure of that
point in time can be queried next to the production database.

The server opens the data file read-write, and it must be able to reach it:

  In place: FILE.mdf is attached where it lies. Use this on a writable view
  of the backup, so the server's writes land in a copy-on-write overlay and
  the backup never changes:
      rewind mount /mnt/rewind --writable &
      losetup -P -f --show /mnt/rewind/sql1/d/latest/disk.img   # -> /dev/loop5
      mount /dev/loop5p1 /mnt/sql1-d
      rewind sql attach /mnt/sql1-d/SQLData/Sales.mdf --to DSN --name Sales_tuesday
  (the same works for a server in a VM booted from disk.img/disk.vhd).

  Copied: --copy-to DIR first writes the file, sparse, into DIR/NAME.mdf (a
  local directory of a server on this host, or a share the server sees as
  --server-dir). This is the way for --machine/--volume/--path.

Without --log the transaction log is rebuilt (FOR ATTACH_REBUILD_LOG): SQL
Server accepts that for a file that was cleanly shut down or checkpointed
before the backup (rewind bookmark --mssql checkpoints). With --log (paths as
the server sees them) the given log files are attached too.

--print shows the T-SQL without connecting (a --copy-to copy is still written). The DSN is
sqlserver://user:password@host[:port]. A database name already in use is
refused.`,
		Example: `  rewind sql attach --machine sql1 --volume d --at -2d --path /SQLData/Sales.mdf \
      --copy-to /var/opt/mssql/data/restore --to 'sqlserver://sa:pw@localhost' --name Sales_2d_ago
  rewind sql attach --machine sql1 --volume d --path /SQLData/Sales.mdf --copy-to /mnt/share \
      --server-dir 'D:\Restore' --to 'sqlserver://sa:pw@db1' --name Sales_old
  rewind sql attach /mnt/sql1-d/SQLData/Sales.mdf --server-path 'E:\SQLData\Sales.mdf' \
      --to 'sqlserver://sa:pw@db1' --name Sales_tuesday --print`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			if name == "" || dsn == "" && !printOnly {
				return usagef("--name and --to are required (or --print to only show the T-SQL)")
			}
			if serverDir != "" && copyTo == "" {
				return usagef("--server-dir goes with --copy-to")
			}
			if serverPath != "" && copyTo != "" {
				return usagef("--server-path is for attaching FILE in place; with --copy-to use --server-dir")
			}
			if copyTo == "" && pf.given() {
				return usagef("a file inside a backup is attached from a copy: add --copy-to DIR (a directory the server reaches)")
			}
			if len(a) == 0 && !pf.given() {
				return usagef("name the .mdf file, or --machine, --volume, --path and --copy-to")
			}
			var data string
			switch {
			case copyTo != "":
				src, err := openItemFile(ctx, a, &pf, ".mdf")
				if err != nil {
					return err
				}
				defer src.Close()
				if _, err := mdf.Open(ctx, src, src.Size, mdf.Options{IgnoreChecksums: true}); err != nil {
					return fmt.Errorf("%s is not a readable SQL Server data file: %w", src.Name, err)
				}
				dst := filepath.Join(copyTo, name+".mdf")
				if err := sparseCopy(ctx, cmd.ErrOrStderr(), src, dst, force); err != nil {
					return err
				}
				data = dst
				if serverDir != "" {
					data = joinServerPath(serverDir, name+".mdf")
				} else if abs, err := filepath.Abs(dst); err == nil {
					data = abs
				}
			default:
				data = serverPath
				if data == "" {
					abs, err := filepath.Abs(a[0])
					if err != nil {
						return err
					}
					data = abs
				}
				if _, err := os.Stat(a[0]); err != nil {
					return fmt.Errorf("data file: %w", err)
				}
			}
			stmt := mssql.AttachSQL(name, data, logs)
			if printOnly {
				fmt.Fprintln(cmd.OutOrStdout(), stmt)
				return nil
			}
			host, err := mssql.Attach(ctx, dsn, name, data, logs)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "attached %s as database %s on %s\n", data, name, host)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dsn, "to", "", "SQL Server DSN: sqlserver://user:password@host[:port]")
	f.StringVar(&name, "name", "", "name of the new database")
	f.StringVar(&copyTo, "copy-to", "", "write the data file (sparse) into this directory as NAME.mdf first")
	f.StringVar(&serverDir, "server-dir", "", "the --copy-to directory as the server sees it, e.g. D:\\Restore (default: the same path)")
	f.StringVar(&serverPath, "server-path", "", "FILE as the server sees it (default: its absolute path here)")
	f.StringSliceVar(&logs, "log", nil, "log file(s) to attach, as the server sees them (default: rebuild the log)")
	f.BoolVar(&printOnly, "print", false, "print the CREATE DATABASE statement instead of running it")
	f.BoolVar(&force, "force", false, "overwrite an existing NAME.mdf in --copy-to")
	pf.add(cmd)
	return cmd
}

// joinServerPath joins a directory and a file name in the style of the
// server's directory (backslashes for a Windows path).
func joinServerPath(dir, file string) string {
	if strings.Contains(dir, `\`) || len(dir) >= 2 && dir[1] == ':' {
		return strings.TrimRight(dir, `\`) + `\` + file
	}
	return strings.TrimRight(dir, "/") + "/" + file
}

// sparseCopy writes src to dst, leaving all-zero 64 KiB runs as holes.
func sparseCopy(ctx context.Context, stderr io.Writer, src *source, dst string, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	out, err := os.OpenFile(dst, flags, 0o660)
	if err != nil {
		return fmt.Errorf("copy data file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(dst)
		}
	}()
	pg := newProgress(stderr, "copy", src.Size)
	defer pg.Done()
	buf := make([]byte, 1<<16)
	for off := int64(0); off < src.Size; off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(buf)), src.Size-off))
		if m, err := src.ReadAt(buf[:n], off); m < n {
			return fmt.Errorf("read %s at %d: %w", src.Name, off, err)
		}
		if !allZero(buf[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("write %s: %w", dst, err)
			}
		}
		pg.Add(int64(n))
	}
	if err := out.Truncate(src.Size); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	ok = true
	return nil
}
