package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/ingest"
	"github.com/rewind-cdp/rewind/repository"
)

func newPeerCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "peer",
		Short: "Allow other Rewind servers to replicate into this repository",
		Args:  args(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return usagef("peer needs a subcommand (add, list)") },
	}
	var dir string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Register a source server and print its replication token, alone, on stdout",
		Long: `Register a source server allowed to replicate into this repository (the
target) and print a new replication token for it, alone, on stdout. The token is
shown once: the repository keeps only its hash. Give it to 'rewind replicate' on
the source.

A replication token may create and write replicated machines of this peer and
nothing else: it cannot back up, cannot write the machines this server protects
itself, nor those another peer replicates here. Machine tokens cannot replicate.
A replicated machine keeps its name; a name already taken here (a local machine
or another peer's) is refused with an error naming the owner.

Works while the server runs. Creates the repository when the directory is absent
or empty.`,
		Example: `  # on the target (the off-site server)
  TOKEN=$(rewind peer add site-a --repo /srv/rewind)
  # on the source
  rewind replicate --to https://offsite:7420 --ca offsite.crt --token "$TOKEN"`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			name := a[0]
			if err := ingest.ValidName(name); err != nil {
				return usageError{fmt.Errorf("peer %w", err)}
			}
			repo, err := repository.OpenOrInit(cmd.Context(), repoDir(dir))
			if err != nil {
				return err
			}
			defer repo.Close()
			tok := ingest.NewToken()
			if _, err := repo.Catalog.AddPeer(cmd.Context(), name, ingest.HashToken(tok)); err != nil {
				if errors.Is(err, catalog.ErrExists) {
					return fmt.Errorf("peer %q is already registered", name)
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	addRepoFlag(add, &dir)
	var ldir string
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the peers allowed to replicate here and the machines they replicate",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := openRepo(cmd.Context(), ldir)
			if err != nil {
				return err
			}
			defer repo.Close()
			ps, err := repo.Catalog.Peers(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if ps == nil {
					ps = []catalog.Peer{}
				}
				return writeJSON(cmd.OutOrStdout(), ps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PEER\tREGISTERED\tMACHINES")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, p.Created.Format(time.RFC3339), strings.Join(p.Machines, ","))
			}
			return tw.Flush()
		},
	}
	addRepoFlag(list, &ldir)
	list.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	c.AddCommand(add, list)
	return c
}

func newReplicateCmd() *cobra.Command {
	var dir, to, token, ca, machines, bwlimit string
	var once, asJSON bool
	var interval, retryFor time.Duration
	var workers int
	c := &cobra.Command{
		Use:   "replicate",
		Short: "Push this repository's points to another Rewind server, continuously",
		Long: `Push every point of this repository that the target server lacks to it, oldest
first, then follow new points as they are committed (polling every --interval).

Each point travels as the blocks that changed since the point before it; the
target answers which of those it lacks (by content hash, across all its
machines), and only those are sent, as stored here (compressed). The target
creates a point only once all its blocks are durable there, with the source's
time, kind and label, so it restores, mounts and exports exactly as here. A
point the target holds already is never sent or created twice.

After any interruption (network, target restart) it retries, asks the target
what it holds, and resumes: blocks that arrived durably are not sent again.
Following retries forever; --once retries for --retry-for without progress.

The target's token comes from 'rewind peer add NAME' on the target. Replicated
machines keep their names there; a name the target uses for a machine of its
own is refused. What each target acknowledged is kept in this repository's
catalog: see 'rewind replicate status'.

--once replicates what exists now and exits (0 on success), printing a
summary (--json for JSON), with a progress bar when stderr is a terminal.`,
		Example: `  rewind replicate --to https://offsite:7420 --ca offsite.crt --token "$TOKEN"
  rewind replicate --to https://offsite:7420 --ca offsite.crt --token "$TOKEN" \
      --machines web1,db1 --bwlimit 50MB/s
  rewind replicate --once --json --to https://offsite:7420 --token "$TOKEN"
  rewind replicate status`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return usagef("--to URL of the target server is required")
			}
			token = firstOf(token, os.Getenv("REWIND_REPLICATION_TOKEN"))
			if token == "" {
				return usagef("--token is required (or set $REWIND_REPLICATION_TOKEN); 'rewind peer add NAME' on the target prints one")
			}
			var limit int64
			if bwlimit != "" {
				n, err := parseSize(strings.TrimSuffix(strings.TrimSpace(bwlimit), "/s"))
				if err != nil || n <= 0 {
					return usagef("--bwlimit %q: give bytes per second, e.g. 50MB/s or 10MiB/s", bwlimit)
				}
				limit = n
			}
			if interval <= 0 || retryFor <= 0 || workers <= 0 {
				return usagef("--interval, --retry-for and --workers must be positive")
			}
			var ms []string
			for _, m := range strings.Split(machines, ",") {
				if m = strings.TrimSpace(m); m != "" {
					ms = append(ms, m)
				}
			}
			tlsCfg, err := ingest.ClientTLS(firstOf(ca, os.Getenv("REWIND_CA")))
			if err != nil {
				return err
			}
			client, err := ingest.NewClient(to, token, tlsCfg)
			if err != nil {
				return usageError{err}
			}
			client.SetBandwidth(limit)
			repo, err := openRepo(cmd.Context(), dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			opt := ingest.ReplicateOptions{Target: strings.TrimRight(to, "/"), Machines: ms, Once: once, Interval: interval, RetryFor: retryFor, Workers: workers}
			var pg *progress
			if once {
				total, err := unsentTotal(cmd.Context(), repo, opt.Target, ms)
				if err != nil {
					return err
				}
				pg = newProgress(cmd.ErrOrStderr(), "replicate", total)
				opt.Progress = pg.Add
			} else {
				slog.Info("following new points", "target", opt.Target, "every", interval.String())
			}
			res, err := client.Replicate(cmd.Context(), repo, opt)
			if pg != nil {
				pg.Done()
			}
			if err != nil {
				return fmt.Errorf("replicate to %s: %w", to, err)
			}
			if !once {
				return nil
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{
					"points": res.Points, "skipped": res.Skipped, "blocks_sent": res.BlocksSent, "bytes_sent": res.BytesSent,
					"wire_bytes": res.WireBytes, "retries": res.Retries, "seconds": res.Elapsed.Seconds(),
				})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "replicated %d points (%d held by the target already): sent %d blocks, %s stored bytes, %s on the wire in %s\n",
				res.Points, res.Skipped, res.BlocksSent, humanBytes(res.BytesSent), humanBytes(res.WireBytes), res.Elapsed.Round(time.Millisecond))
			return nil
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&to, "to", "", "URL of the target server, https://host:port")
	c.Flags().StringVar(&token, "token", "", "replication token from 'rewind peer add' on the target (default $REWIND_REPLICATION_TOKEN)")
	c.Flags().StringVar(&ca, "ca", "", "CA certificate to trust for the target (default $REWIND_CA, else the system's roots)")
	c.Flags().StringVar(&machines, "machines", "", "comma-separated machines to replicate (default: every machine)")
	c.Flags().StringVar(&bwlimit, "bwlimit", "", "average bandwidth limit, e.g. 50MB/s or 10MiB/s (default: none)")
	c.Flags().BoolVar(&once, "once", false, "replicate the points that exist now and exit")
	c.Flags().BoolVar(&asJSON, "json", false, "with --once: print the summary as JSON")
	c.Flags().DurationVar(&interval, "interval", 250*time.Millisecond, "how often to look for new points (one indexed query of the local catalog)")
	c.Flags().DurationVar(&retryFor, "retry-for", 2*time.Minute, "with --once: give up after this long without progress")
	c.Flags().IntVar(&workers, "workers", 4, "offers of one point in flight")
	c.AddCommand(newReplicateStatusCmd())
	return c
}

// replStatus is one volume's replication to one target.
type replStatus struct {
	Target  string `json:"target"`
	Machine string `json:"machine"`
	Volume  string `json:"volume"`
	// LastPoint is the newest point the target acknowledged (0: none).
	LastPoint     int64  `json:"last_point"`
	LastPointTime string `json:"last_point_time,omitempty"`
	NewestLocal   string `json:"newest_local_time,omitempty"`
	// LagSeconds is the newest local point's time minus the newest point
	// the target acknowledged (when none was: the oldest point's age).
	LagSeconds float64 `json:"lag_seconds"`
	// UnsentBytes is the stored size of the blocks of the points not yet
	// acknowledged (an upper bound: the target may hold some).
	UnsentBytes int64  `json:"unsent_bytes"`
	BytesSent   int64  `json:"bytes_sent"`
	Updated     string `json:"updated,omitempty"`
}

// replicationStatus computes every volume's status for each target
// recorded in the catalog (only target when given).
func replicationStatus(ctx context.Context, repo *repository.Repo, target string, machines []string) ([]replStatus, error) {
	states, err := repo.Catalog.Replication(ctx)
	if err != nil {
		return nil, err
	}
	vols, err := repo.Catalog.Volumes(ctx, "")
	if err != nil {
		return nil, err
	}
	type key struct {
		target string
		vol    int64
	}
	by := map[key]catalog.ReplState{}
	var targets []string
	for _, s := range states {
		by[key{s.Target, s.VolumeID}] = s
		if len(targets) == 0 || targets[len(targets)-1] != s.Target {
			targets = append(targets, s.Target)
		}
	}
	if target != "" {
		targets = []string{target}
	}
	out := []replStatus{}
	for _, t := range targets {
		for _, v := range vols {
			if len(machines) > 0 && !contains(machines, v.Machine) {
				continue
			}
			st := replStatus{Target: t, Machine: v.Machine, Volume: v.Name}
			newest, err := repo.Catalog.NewestPointTime(ctx, v.ID)
			if err != nil {
				return nil, err
			}
			if newest.IsZero() {
				continue // nothing to replicate yet
			}
			st.NewestLocal = pointTime(newest)
			var after int64
			s, ok := by[key{t, v.ID}]
			if ok {
				after = s.PointID
				st.LastPoint, st.LastPointTime, st.BytesSent, st.Updated = s.PointID, pointTime(s.Time), s.BytesSent, s.Updated.Format(time.RFC3339)
				st.LagSeconds = max(0, newest.Sub(s.Time).Seconds())
			} else if first, err := repo.Catalog.PointsAfter(ctx, v.ID, 0); err == nil && len(first) > 0 {
				// Nothing acknowledged: the oldest point has waited this long.
				st.LagSeconds = max(0, time.Since(first[0].Time).Seconds())
			}
			if st.UnsentBytes, err = repo.Catalog.UnsentBytes(ctx, v.ID, after); err != nil {
				return nil, err
			}
			out = append(out, st)
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// unsentTotal is what replicating to target would send at most.
func unsentTotal(ctx context.Context, repo *repository.Repo, target string, machines []string) (int64, error) {
	sts, err := replicationStatus(ctx, repo, target, machines)
	var n int64
	for _, s := range sts {
		n += s.UnsentBytes
	}
	return n, err
}

func newReplicateStatusCmd() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show per machine and volume how far each replication target is behind",
		Long: `Show, for every target this repository replicates to and every volume: the
newest point the target acknowledged, the lag in seconds (the newest local
point's time minus that point's time; when the target acknowledged nothing
yet, the age of the oldest point) and the bytes not yet sent (the stored
size of the blocks of the points not yet acknowledged: an upper bound, as the
target may hold some of them already). Works while replication runs.`,
		Example: `  rewind replicate status
  rewind replicate status --json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := openRepo(cmd.Context(), dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			sts, err := replicationStatus(cmd.Context(), repo, "", nil)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), sts)
			}
			if len(sts) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing replicated yet (see rewind replicate --help)")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TARGET\tMACHINE\tVOLUME\tLAST POINT\tLAST POINT TIME\tLAG\tUNSENT")
			for _, s := range sts {
				last, lt := "-", "-"
				if s.LastPoint != 0 {
					last, lt = fmt.Sprint(s.LastPoint), s.LastPointTime
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1fs\t%s\n", s.Target, s.Machine, s.Volume, last, lt, s.LagSeconds, humanBytes(s.UnsentBytes))
			}
			return tw.Flush()
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}
