//go:build !windows

package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/capture/agent"
)

func newAgentProtectDirCmd() *cobra.Command {
	var cf clientFlags
	var vf volumeFlags
	var data, mount string
	c := &cobra.Command{
		Use:   "protect-dir",
		Short: "Protect one directory through the directory shim (Linux, root)",
		Long: `Protect a data directory continuously, file by file. The agent serves --dir at
--mount through FUSE (a passthrough of the directory, usable by every user, with
the directory's own permissions) and prints the mount point, alone, on stdout
once it serves. Point the application at the mount instead of the directory —
for applications whose data folder can be moved behind a mount (a database's
data directory, a mail store) — and never change the directory behind it.

Every write is time-stamped and journaled in a local spool before it returns,
at its file's place in a directory volume: a sparse address space where each
file has its own slot (1 TiB, never reused) and slot 0 holds a manifest of
every name, type, size, mode, owner, mtime and symlink target. An fsync of any
file or directory is a flush point; changes waiting half a second for one are
cut into a crash-consistent point. The manifest is journaled before every
point, so each point holds a consistent directory.

The first run compares every file with the server while changes are already
captured (only what the server lacks is sent). After an unclean stop every
file is compared again (a gap, shown in rewind agent status); after a clean
stop only files whose size or mtime changed meanwhile. Server outages and a
full spool are handled as for rewind agent protect. Stop with Ctrl-C or
SIGTERM: the agent unmounts (waiting up to 10 s for open files), cuts a last
point and keeps what it could not ship.

Captured: regular files (with holes and hard links), directories, symlinks,
their modes, owners and mtimes. Not captured: extended attributes, special
files (refused through the mount), atimes.

Restore with rewind restore --to-dir; a directory volume is never a disk image.`,
		Example: `  rewind agent protect-dir --token "$TOKEN" --machine db1 --volume pgdata \
      --dir /srv/pgdata.real --mount /var/lib/postgresql/16/main
  rewind restore --machine db1 --volume pgdata --at -15m --to-dir /tmp/pgdata`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := vf.check(); err != nil {
				return err
			}
			if data == "" || mount == "" {
				return usagef("--dir DATA and --mount MNT are required")
			}
			if st, err := os.Stat(data); err != nil || !st.IsDir() {
				return usagef("--dir %s is not a directory", data)
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("agent protect-dir needs root (it mounts FUSE directly)")
			}
			client, err := cf.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			cfg := vf.config(client, data)
			cfg.Mount = mount
			return agent.RunDir(cmd.Context(), cfg, func() { fmt.Fprintln(out, mount) })
		},
	}
	cf.add(c)
	vf.add(c, "volume name (a new name: a directory volume is never a disk)")
	c.Flags().StringVar(&data, "dir", "", "the data directory to protect")
	c.Flags().StringVar(&mount, "mount", "", "where to serve it (created if missing; must be outside --dir)")
	return c
}
