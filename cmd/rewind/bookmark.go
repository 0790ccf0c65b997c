//go:build !windows

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/capture/agent"
	"github.com/rewind-cdp/rewind/mssql"
)

// Linux ioctls that freeze and thaw a mounted filesystem.
const (
	fifreeze = 0xC0045877
	fithaw   = 0xC0045878
)

func newBookmarkCmd() *cobra.Command {
	var machine, volume, label, spoolDir, mount, mssqlDSN string
	var timeout time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "bookmark",
		Short: "Take an application-consistent, labelled point of a protected volume",
		Long: `Take an application-consistent point of a volume the agent protects: the
mounted filesystem is frozen (FIFREEZE: everything written is flushed and new
writes wait), the running agent journals a bookmark, and once the server holds
the bookmark point durably the filesystem is thawed. The point has kind
bookmark and the label given. The freeze lasts as long as that round trip,
usually well under a second; --timeout bounds it.

With --mssql DSN, SQL Server is asked to CHECKPOINT first (the database the
DSN names, or every online user database), so every committed transaction is
in the data files at the bookmark and a restored .mdf attaches without a long
recovery. A DSN looks like sqlserver://user:password@host:1433?database=Sales;
if SQL Server cannot be reached, nothing is frozen and no bookmark is taken.

The mount point is the agent's --mount, or --mount here. Needs root.`,
		Example: `  rewind bookmark --machine web1 --volume data --label "before upgrade"
  rewind bookmark --machine sql1 --volume data --label "month end" \
      --mssql 'sqlserver://backup:secret@localhost?database=Ledger'`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if machine == "" || volume == "" || label == "" {
				return usagef("--machine, --volume and --label are required")
			}
			if len(label) > 1024 {
				return usagef("--label is longer than 1024 bytes")
			}
			if spoolDir == "" {
				spoolDir = agent.DefaultSpoolDir(machine, volume)
			}
			raw, err := os.ReadFile(filepath.Join(spoolDir, "status.json"))
			if err != nil {
				return fmt.Errorf("no agent protects %s/%s here (no status in %s)", machine, volume, spoolDir)
			}
			var st agent.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("agent status in %s: %w", spoolDir, err)
			}
			if st.State == "stopped" || time.Since(st.Updated) > 5*time.Second || syscall.Kill(st.PID, 0) != nil {
				return fmt.Errorf("the agent for %s/%s is not running", machine, volume)
			}
			if mount == "" {
				mount = st.Mount
			}
			if mount == "" {
				return usagef("--mount is required: the agent does not know where the volume is mounted")
			}
			var checkpointed []string
			if mssqlDSN != "" {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				checkpointed, err = mssql.Checkpoint(ctx, mssqlDSN)
				cancel()
				if err != nil {
					return fmt.Errorf("no bookmark taken: %w", err)
				}
			}
			dir, err := os.Open(mount)
			if err != nil {
				return fmt.Errorf("open mount point: %w", err)
			}
			defer dir.Close()
			if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, dir.Fd(), fifreeze, 0); e != 0 {
				return fmt.Errorf("freeze %s: %v", mount, e)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			p, reqErr := agent.RequestBookmark(ctx, spoolDir, label)
			cancel()
			if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, dir.Fd(), fithaw, 0); e != 0 && reqErr == nil {
				return fmt.Errorf("thaw %s: %v (run: fsfreeze --unfreeze %s)", mount, e, mount)
			}
			if reqErr != nil {
				return reqErr
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"id": p.ID, "machine": machine, "volume": volume,
					"time": pointTime(p.Time), "kind": "bookmark", "label": label, "checkpointed": checkpointed})
			}
			if len(checkpointed) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "SQL Server CHECKPOINT: %s\n", strings.Join(checkpointed, ", "))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "bookmark point %d of %s/%s at %s: %s\n", p.ID, machine, volume, pointTime(p.Time), label)
			return nil
		},
	}
	c.Flags().StringVar(&machine, "machine", "", "machine name")
	c.Flags().StringVar(&volume, "volume", "", "volume name")
	c.Flags().StringVar(&label, "label", "", "label of the point")
	c.Flags().StringVar(&spoolDir, "spool", "", "the agent's spool directory (default /var/lib/rewind/agent/MACHINE-VOLUME)")
	c.Flags().StringVar(&mount, "mount", "", "where the volume's filesystem is mounted (default: the agent's --mount)")
	c.Flags().StringVar(&mssqlDSN, "mssql", "", "SQL Server DSN to CHECKPOINT before the freeze (sqlserver://user:password@host[:port][?database=NAME])")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "longest the filesystem stays frozen")
	c.Flags().BoolVar(&asJSON, "json", false, "print the point as JSON")
	return c
}
