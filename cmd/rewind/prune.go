package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
)

// policyFlags are the --keep-* flags of a retention policy.
type policyFlags struct {
	within                                   time.Duration
	minutely, hourly, daily, weekly, monthly int
}

func (f *policyFlags) add(c *cobra.Command) {
	c.Flags().DurationVar(&f.within, "keep-within", 0, "keep every point of this last stretch of time (e.g. 24h)")
	c.Flags().IntVar(&f.minutely, "keep-minutely", 0, "then the newest point of each of the last N minutes that have points")
	c.Flags().IntVar(&f.hourly, "keep-hourly", 0, "… of each of the last N hours")
	c.Flags().IntVar(&f.daily, "keep-daily", 0, "… of each of the last N days")
	c.Flags().IntVar(&f.weekly, "keep-weekly", 0, "… of each of the last N weeks")
	c.Flags().IntVar(&f.monthly, "keep-monthly", 0, "… of each of the last N months")
}

func (f *policyFlags) policy() (catalog.Policy, error) {
	if f.within < 0 || f.minutely < 0 || f.hourly < 0 || f.daily < 0 || f.weekly < 0 || f.monthly < 0 {
		return catalog.Policy{}, usagef("--keep-* values must not be negative")
	}
	p := catalog.Policy{Within: catalog.Duration(f.within), Minutely: f.minutely, Hourly: f.hourly, Daily: f.daily, Weekly: f.weekly, Monthly: f.monthly}
	if p.Empty() {
		return p, usagef("give at least one --keep-* rule (bookmarks and the newest point are always kept)")
	}
	return p, nil
}

func describePolicy(p catalog.Policy) string {
	var parts []string
	if p.Within > 0 {
		parts = append(parts, "all of the last "+time.Duration(p.Within).String())
	}
	for _, x := range []struct {
		n    int
		what string
	}{{p.Minutely, "minutes"}, {p.Hourly, "hours"}, {p.Daily, "days"}, {p.Weekly, "weeks"}, {p.Monthly, "months"}} {
		if x.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", x.n, x.what))
		}
	}
	return strings.Join(parts, ", ") + ", bookmarks"
}

func newRetentionCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "retention",
		Short: "Set and show the retention policies that prune applies",
	}
	var dir, machine, volume string
	var pf policyFlags
	set := &cobra.Command{
		Use:   "set --machine M [--volume V] --keep-…",
		Short: "Set the retention policy of a machine (all its volumes) or of one volume",
		Long: `Set which points prune keeps for a machine's volumes (or one volume, whose own
policy wins over its machine's): every point of --keep-within, then the newest
point of each of the last --keep-minutely minutes, --keep-hourly hours,
--keep-daily days, --keep-weekly weeks and --keep-monthly months that have
points. Bookmarks and the newest point are always kept. Volumes without a
policy are never pruned.`,
		Example: `  rewind retention set --machine web1 --keep-within 24h --keep-hourly 72 --keep-daily 30 --keep-monthly 12
  rewind retention set --machine db1 --volume logs --keep-within 2h --keep-daily 7`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if machine == "" {
				return usagef("--machine is required")
			}
			p, err := pf.policy()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			repo, err := openRepo(ctx, dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			ms, err := repo.Catalog.Machines(ctx)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(ms, func(m catalog.Machine) bool { return m.Name == machine }) {
				return fmt.Errorf("no machine %q in %s (see rewind machines)", machine, repo.Dir)
			}
			if err := repo.Catalog.SetPolicy(ctx, machine, volume, p); err != nil {
				return err
			}
			target := machine + " (all volumes)"
			if volume != "" {
				target = machine + "/" + volume
			}
			fmt.Fprintf(cmd.OutOrStdout(), "retention of %s: %s\n", target, describePolicy(p))
			return nil
		},
	}
	addRepoFlag(set, &dir)
	set.Flags().StringVar(&machine, "machine", "", "machine name")
	set.Flags().StringVar(&volume, "volume", "", "volume name (default: every volume of the machine)")
	pf.add(set)

	var sdir string
	var asJSON bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Show the retention policies",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			repo, err := openRepo(ctx, sdir)
			if err != nil {
				return err
			}
			defer repo.Close()
			ps, err := repo.Catalog.Policies(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), ps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "MACHINE/VOLUME\tKEEPS")
			for k, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\n", strings.TrimSuffix(k, "/")+map[bool]string{true: " (all volumes)", false: ""}[strings.HasSuffix(k, "/")], describePolicy(p))
			}
			return tw.Flush()
		},
	}
	addRepoFlag(show, &sdir)
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.AddCommand(set, show)
	return c
}

func newPruneCmd() *cobra.Command {
	var dir string
	var dryRun, asJSON bool
	var minDead float64
	var packs string
	c := &cobra.Command{
		Use:   "prune",
		Short: "Thin points by the retention policies and free what no point needs",
		Long: `Apply the retention policies (rewind retention set): drop the points a policy
does not keep, merging their block versions into the next point so every kept
point reads exactly as before, then forget the chunks no point needs and
delete packs left without chunks; packs whose dead share reaches
--rewrite-dead are rewritten with their live entries only. Runs beside a
running server, its ingest and mounts; --dry-run lists what would be dropped.
The server also prunes by itself every --prune-every (rewind server --help).`,
		Example: `  rewind prune --dry-run
  rewind prune --json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if minDead <= 0 || minDead > 1 {
				return usagef("--rewrite-dead must be in (0, 1]")
			}
			opt, err := repoOptions(packs)
			if err != nil {
				return err
			}
			repo, err := repository.OpenWith(ctx, repoDir(dir), opt)
			if err != nil {
				return err
			}
			defer repo.Close()
			res, err := repo.Prune(ctx, time.Now(), repository.PruneOptions{DryRun: dryRun, MinDead: minDead})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			out := cmd.OutOrStdout()
			if len(res.Volumes) == 0 {
				fmt.Fprintln(out, "no retention policy set: nothing to prune (see rewind retention set)")
				return nil
			}
			verb := "dropped"
			if dryRun {
				verb = "would drop"
			}
			for _, v := range res.Volumes {
				fmt.Fprintf(out, "%s/%s: keeps %d points, %s %d", v.Machine, v.Volume, v.Kept, verb, len(v.Dropped))
				if len(v.Skipped) > 0 {
					fmt.Fprintf(out, " (%d kept for now: a point in progress follows them)", len(v.Skipped))
				}
				fmt.Fprintln(out)
			}
			if !dryRun {
				fmt.Fprintf(out, "freed %d chunks (%s stored); deleted %d packs, rewrote %d (%s of dead entries freed)\n",
					res.Chunks, humanBytes(res.FreedBytes), res.PacksDeleted, res.PacksRewritten, humanBytes(res.CompactedBytes))
			}
			return nil
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "only list the points that would be dropped")
	addPacksFlag(c, &packs)
	c.Flags().Float64Var(&minDead, "rewrite-dead", 0.1, "rewrite a pack once this share of it is dead (1: only delete wholly dead packs)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
