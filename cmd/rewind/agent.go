//go:build !windows

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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
			return usagef("agent needs a subcommand (protect, protect-dir, protect-qemu, run, status)")
		},
	}
	c.AddCommand(newAgentProtectCmd(), newAgentProtectDirCmd(), newAgentProtectQemuCmd(), newAgentRunCmd(), newAgentStatusCmd())
	return c
}

// volumeFlags are what every protect command takes: the machine and
// volume, and the spool.
type volumeFlags struct {
	machine, volume, spool string
	spoolLimit, blockSize  int64
}

func (v *volumeFlags) add(c *cobra.Command, volumeHelp string) {
	c.Flags().StringVar(&v.machine, "machine", "", "machine name (must match the token)")
	c.Flags().StringVar(&v.volume, "volume", "", volumeHelp)
	c.Flags().StringVar(&v.spool, "spool", "", "spool directory (default /var/lib/rewind/agent/MACHINE-VOLUME)")
	c.Flags().Int64Var(&v.spoolLimit, "spool-limit", 1<<30, "largest the spool may grow, in bytes, while the server is unreachable")
	c.Flags().Int64Var(&v.blockSize, "block-size", 0, "block size for a new volume (default 65536)")
}

// check refuses missing or malformed values, as usage errors.
func (v *volumeFlags) check() error {
	if v.machine == "" || v.volume == "" {
		return usagef("--machine and --volume are required")
	}
	if err := ingest.ValidName(v.volume); err != nil {
		return usageError{fmt.Errorf("volume %w", err)}
	}
	if v.blockSize != 0 {
		if err := ingest.ValidBlockSize(v.blockSize); err != nil {
			return usageError{err}
		}
	}
	if v.spoolLimit < 1<<20 {
		return usagef("--spool-limit must be at least 1 MiB")
	}
	return nil
}

// config is the agent's configuration for the volume, read from source.
func (v *volumeFlags) config(client *ingest.Client, source string) agent.Config {
	spool := v.spool
	if spool == "" {
		spool = agent.DefaultSpoolDir(v.machine, v.volume)
	}
	return agent.Config{Client: client, Machine: v.machine, Volume: v.volume, Source: source, BlockSize: v.blockSize, Spool: spool, SpoolLimit: v.spoolLimit}
}

func newAgentProtectCmd() *cobra.Command {
	var cf clientFlags
	var vf volumeFlags
	var image, device, mount string
	var scanInterval time.Duration
	c := &cobra.Command{
		Use:   "protect",
		Short: "Protect one volume through the block shim (Linux, root)",
		Long: `Protect one volume continuously. The agent serves the volume (an image file or
a block device) as a file through FUSE, attaches a loop device to it and prints
the loop device's path, alone, on stdout; use the loop device instead of the
volume from then on (with --mount the agent mounts its filesystem for you).

Every write, discard and flush reaching the loop device is time-stamped and
journaled in a local spool before it returns, and shipped to the server by a
separate goroutine: a flush becomes a point, and changes waiting half a second
for a flush are cut into a crash-consistent point, so every change is on the
server within a second. The first run sends the whole volume while new writes
are already captured.

If the server is unreachable the spool grows up to --spool-limit; past it the
agent remembers changed blocks and re-sends them when the server is back (a
gap, reported in rewind agent status). After an unclean stop the agent
re-compares the whole volume with the server. Stop it with Ctrl-C or SIGTERM:
it unmounts, detaches the loop device and keeps what it could not ship.

Needs root and /dev/fuse. For a volume nothing can shim (a device in use
elsewhere, a snapshot), --scan-interval instead compares the whole volume with
the server every interval and sends what changed: its recovery point is the
interval, and it needs neither root nor FUSE.`,
		Example: `  rewind agent protect --token "$TOKEN" --machine web1 --volume data --image /srv/data.img --mount /srv/data
  rewind agent protect --token "$TOKEN" --machine db1 --volume sdb --device /dev/sdb
  rewind agent protect --token "$TOKEN" --machine old1 --volume sdc --device /dev/sdc --scan-interval 30s`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := vf.check(); err != nil {
				return err
			}
			if (image == "") == (device == "") {
				return usagef("give exactly one of --image FILE or --device DEV")
			}
			if scanInterval != 0 && (scanInterval < time.Second || mount != "") {
				return usagef("--scan-interval must be at least 1s, and does not go with --mount")
			}
			if scanInterval == 0 && os.Geteuid() != 0 {
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
			out := cmd.OutOrStdout()
			cfg := vf.config(client, src)
			cfg.Mount = mount
			if scanInterval != 0 {
				return agent.RunScan(cmd.Context(), cfg, scanInterval)
			}
			return agent.Run(cmd.Context(), cfg, func(loop string) { fmt.Fprintln(out, loop) })
		},
	}
	cf.add(c)
	vf.add(c, "volume name")
	c.Flags().StringVar(&image, "image", "", "protect this image file")
	c.Flags().StringVar(&device, "device", "", "protect this block device")
	c.Flags().StringVar(&mount, "mount", "", "mount the volume's filesystem here")
	c.Flags().DurationVar(&scanInterval, "scan-interval", 0, "instead of the shim, compare the whole volume with the server every interval (e.g. 30s)")
	return c
}

func newAgentRunCmd() *cobra.Command {
	var cfgPath string
	c := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Protect every volume of a configuration file, as a daemon",
		Long: `Protect every volume listed in a TOML configuration file until stopped — the
way to run the agent as a service (a systemd unit is in docs/rewind-agent.service).
Prints "VOLUME LOOP-DEVICE" for each shim-protected volume once it is served
("VOLUME MOUNT" for a directory).

  server     = "https://backup.example:7420"
  ca         = "/etc/rewind/server.crt"
  token_file = "/etc/rewind/token"      # or token = "rwd_..."
  machine    = "web1"

  [[volume]]
  name  = "data"
  image = "/srv/data.img"               # or device = "/dev/sdb"
  mount = "/srv/data"                   # optional
  spool_limit = 1073741824              # optional, bytes (default 1 GiB)

  [[volume]]
  name = "legacy"
  device = "/dev/sdc"
  scan_interval = "30s"                 # compare every 30 s instead of the shim

  [[volume]]
  name  = "appdata"
  dir   = "/var/lib/app.real"           # the directory shim (see protect-dir)
  mount = "/var/lib/app"`,
		Example: `  rewind agent run --config /etc/rewind/agent.toml`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return usagef("--config is required")
			}
			fc, err := agent.LoadConfig(cfgPath)
			if err != nil {
				return usageError{err}
			}
			cf := clientFlags{server: fc.Server, token: fc.Token, ca: fc.CA}
			client, err := cf.client()
			if err != nil {
				return err
			}
			for _, v := range fc.Volumes {
				if v.Interval() == 0 && os.Geteuid() != 0 {
					return fmt.Errorf("volume %s: shim protection needs root", v.Name)
				}
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			out := cmd.OutOrStdout()
			var mu sync.Mutex
			errs := make(chan error, len(fc.Volumes))
			for _, v := range fc.Volumes {
				cfg := agent.Config{Client: client, Machine: fc.Machine, Volume: v.Name, Source: v.Source(), BlockSize: v.BlockSize,
					Spool: v.Spool, SpoolLimit: v.SpoolLimit, Mount: v.Mount}
				go func() {
					var err error
					if d := v.Interval(); d > 0 {
						err = agent.RunScan(ctx, cfg, d)
					} else if v.Dir != "" {
						err = agent.RunDir(ctx, cfg, func() {
							mu.Lock()
							fmt.Fprintf(out, "%s %s\n", v.Name, v.Mount)
							mu.Unlock()
						})
					} else {
						err = agent.Run(ctx, cfg, func(loop string) {
							mu.Lock()
							fmt.Fprintf(out, "%s %s\n", v.Name, loop)
							mu.Unlock()
						})
					}
					if err != nil {
						err = fmt.Errorf("volume %s: %w", v.Name, err)
						cancel() // one volume failing stops the others cleanly
					}
					errs <- err
				}()
			}
			var all []error
			for range fc.Volumes {
				if err := <-errs; err != nil {
					all = append(all, err)
				}
			}
			return errors.Join(all...)
		},
	}
	c.Flags().StringVar(&cfgPath, "config", "", "TOML configuration file")
	return c
}

func newAgentStatusCmd() *cobra.Command {
	var spools []string
	var cfgPath string
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
			if cfgPath != "" {
				fc, err := agent.LoadConfig(cfgPath)
				if err != nil {
					return usageError{err}
				}
				for _, v := range fc.Volumes {
					dirs = append(dirs, v.Spool)
				}
			}
			if len(dirs) == 0 {
				dirs, _ = filepath.Glob(filepath.Join(filepath.Dir(agent.DefaultSpoolDir("m", "v")), "*"))
			}
			var all []agent.Status
			for _, d := range dirs {
				b, err := os.ReadFile(filepath.Join(d, "status.json"))
				if err != nil {
					if len(spools) > 0 || cfgPath != "" {
						return fmt.Errorf("no agent status in %s (has the agent run?)", d)
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
			fmt.Fprintln(tw, "MACHINE\tVOLUME\tSTATE\tLAG\tSPOOL\tLAST POINT\tOPEN GAPS\tLOOP/MOUNT")
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
				dev := st.LoopDevice
				if st.Kind == "dir" {
					dev = st.Mount
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%.1fs\t%s\t%s\t%d\t%s\n", st.Machine, st.Volume, st.State, st.LagSeconds, humanBytes(st.SpoolBytes), last, open, dev)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringArrayVar(&spools, "spool", nil, "spool directory of an agent (repeatable; default all under /var/lib/rewind/agent)")
	c.Flags().StringVar(&cfgPath, "config", "", "the volumes of this agent configuration file")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}
