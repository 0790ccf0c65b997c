package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/capture/agent"
	"github.com/rewind-cdp/rewind/ingest"
)

func newAgentCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "agent",
		Short: "Protect volumes continuously: every write reaches the server within a second",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("agent needs a subcommand (protect, status)")
		},
	}
	c.AddCommand(newAgentProtectCmd(), newAgentStatusCmd())
	return c
}

func newAgentProtectCmd() *cobra.Command {
	var cf clientFlags
	var machine, volume, image, device, spoolDir, mount string
	var spoolLimit, blockSize int64
	c := &cobra.Command{
		Use:   "protect",
		Short: "Protect one volume through the block shim (Linux, root)",
		Long: `Protect one volume continuously. The agent serves the volume (an image file or
a block device) as a file through FUSE, attaches a loop device to it and prints
the loop device's path, alone, on stdout; use the loop device instead of the
volume from then on (with --mount the agent mounts its filesystem for you).

Every write, discard and flush reaching the loop device is time-stamped and
journaled in a local spool before it returns, and shipped to the server by a
separate goroutine: a flush becomes a point, and changes waiting more than a
second for a flush are cut into a crash-consistent point. The first run sends
the whole volume while new writes are already captured.

If the server is unreachable the spool grows up to --spool-limit; past it the
agent remembers changed blocks and re-sends them when the server is back (a
gap, reported in rewind agent status). After an unclean stop the agent
re-compares the whole volume with the server. Stop it with Ctrl-C or SIGTERM:
it unmounts, detaches the loop device and keeps what it could not ship.

Needs root and /dev/fuse.`,
		Example: `  rewind agent protect --token "$TOKEN" --machine web1 --volume data --image /srv/data.img --mount /srv/data
  rewind agent protect --token "$TOKEN" --machine db1 --volume sdb --device /dev/sdb`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if machine == "" || volume == "" {
				return usagef("--machine and --volume are required")
			}
			if err := ingest.ValidName(volume); err != nil {
				return usageError{fmt.Errorf("volume %w", err)}
			}
			if (image == "") == (device == "") {
				return usagef("give exactly one of --image FILE or --device DEV")
			}
			if blockSize != 0 {
				if err := ingest.ValidBlockSize(blockSize); err != nil {
					return usageError{err}
				}
			}
			if spoolLimit < 1<<20 {
				return usagef("--spool-limit must be at least 1 MiB")
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("agent protect needs root (it mounts FUSE directly and attaches a loop device)")
			}
			src := firstOf(image, device)
			f, _, err := openSource(src)
			if err != nil {
				return err
			}
			f.Close()
			client, err := cf.client()
			if err != nil {
				return err
			}
			if spoolDir == "" {
				spoolDir = agent.DefaultSpoolDir(machine, volume)
			}
			out := cmd.OutOrStdout()
			return agent.Run(cmd.Context(), agent.Config{
				Client: client, Machine: machine, Volume: volume, Source: src, BlockSize: blockSize,
				Spool: spoolDir, SpoolLimit: spoolLimit, Mount: mount,
			}, func(loop string) { fmt.Fprintln(out, loop) })
		},
	}
	cf.add(c)
	c.Flags().StringVar(&machine, "machine", "", "machine name (must match the token)")
	c.Flags().StringVar(&volume, "volume", "", "volume name")
	c.Flags().StringVar(&image, "image", "", "protect this image file")
	c.Flags().StringVar(&device, "device", "", "protect this block device")
	c.Flags().StringVar(&spoolDir, "spool", "", "spool directory (default /var/lib/rewind/agent/MACHINE-VOLUME)")
	c.Flags().Int64Var(&spoolLimit, "spool-limit", 1<<30, "largest the spool may grow, in bytes, while the server is unreachable")
	c.Flags().StringVar(&mount, "mount", "", "mount the volume's filesystem here")
	c.Flags().Int64Var(&blockSize, "block-size", 0, "block size for a new volume (default 65536)")
	return c
}

func newAgentStatusCmd() *cobra.Command {
	var spools []string
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show each protected volume: state, lag, spool, last point, gaps",
		Long: `Show the state of every volume an agent protects on this host: its state
(scanning, streaming, outage, resynchronising, stopped), the lag in seconds
(age of the oldest change not yet in a durable point on the server), spool
bytes, the last acknowledged point and any gaps. Reads the status each running
agent writes into its spool directory every second.`,
		Example: `  rewind agent status
  rewind agent status --json --spool /var/lib/rewind/agent/web1-data`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dirs := spools
			if len(dirs) == 0 {
				dirs, _ = filepath.Glob(filepath.Join(filepath.Dir(agent.DefaultSpoolDir("m", "v")), "*"))
			}
			var all []agent.Status
			for _, d := range dirs {
				b, err := os.ReadFile(filepath.Join(d, "status.json"))
				if err != nil {
					if len(spools) > 0 {
						return fmt.Errorf("no agent status in %s", d)
					}
					continue
				}
				var st agent.Status
				if err := json.Unmarshal(b, &st); err != nil {
					return fmt.Errorf("agent status %s: %w", d, err)
				}
				if st.State != "stopped" && (time.Since(st.Updated) > 5*time.Second || syscall.Kill(st.PID, 0) != nil) {
					st.State = "not running"
				}
				all = append(all, st)
			}
			if asJSON {
				if all == nil {
					all = []agent.Status{}
				}
				return writeJSON(cmd.OutOrStdout(), all)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MACHINE\tVOLUME\tSTATE\tLAG\tSPOOL\tLAST POINT\tOPEN GAPS\tLOOP")
			for _, st := range all {
				last := "-"
				if st.LastPoint != nil {
					last = fmt.Sprintf("%d (%s)", st.LastPoint.ID, pointTime(st.LastPoint.Time))
				}
				open := 0
				for _, g := range st.Gaps {
					if g.To == nil {
						open++
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.1fs\t%s\t%s\t%d\t%s\n", st.Machine, st.Volume, st.State, st.LagSeconds, humanBytes(st.SpoolBytes), last, open, st.LoopDevice)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringArrayVar(&spools, "spool", nil, "spool directory of an agent (repeatable; default all under /var/lib/rewind/agent)")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}
