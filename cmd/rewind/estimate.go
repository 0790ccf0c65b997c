package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
)

// parseSize parses a byte size: 1234, 500MB, 1.5GiB, 2TB (B, KB/KiB, MB/MiB,
// GB/GiB, TB/TiB; decimal units are powers of 1000, binary ones of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	mult := map[string]float64{"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1 << 10, "m": 1e6, "mb": 1e6, "mib": 1 << 20,
		"g": 1e9, "gb": 1e9, "gib": 1 << 30, "t": 1e12, "tb": 1e12, "tib": 1 << 40}[strings.ToLower(unit)]
	if err != nil || mult == 0 || v < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 500GB, 1.5TiB)", s)
	}
	return int64(v * mult), nil
}

type estimateMachine struct {
	Machine         string  `json:"machine"`
	Volumes         int     `json:"volumes"`
	Points          int     `json:"points"`
	HistoryDays     float64 `json:"history_days"`
	BaseStored      int64   `json:"base_stored_bytes"`
	DailyChange     float64 `json:"daily_change_bytes"`
	ChangeReduction float64 `json:"change_stored_per_byte"`
	Need            int64   `json:"need_bytes"`

	changedLogical, changedStored int64
}

func newEstimateCmd() *cobra.Command {
	var dir, addSize, addChange string
	var days float64
	var asJSON bool
	c := &cobra.Command{
		Use:   "estimate",
		Short: "Compute the disk a backup server needs from what it has observed",
		Long: `Estimate the disk the repository needs to keep --days of history, from what it
has observed of every machine: the initial copy of each volume as stored
(after de-duplication and compression), plus the data written per day since
(measured between the first and the last point) times --days times the
measured stored bytes per written byte, plus a 10 % pad.

With --add-size (and --add-change, bytes per day or a percentage of the size
per day) it also prices a new machine, using the reduction measured on the
machines already protected.`,
		Example: `  rewind estimate --days 30
  rewind estimate --days 90 --add-size 2TB --add-change 3% --json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if days <= 0 {
				return usagef("--days must be positive")
			}
			var newSize, newChange int64
			if addSize != "" {
				var err error
				if newSize, err = parseSize(addSize); err != nil || newSize == 0 {
					return usagef("--add-size: %v", err)
				}
				switch {
				case strings.HasSuffix(addChange, "%"):
					pct, err := strconv.ParseFloat(strings.TrimSuffix(addChange, "%"), 64)
					if err != nil || pct < 0 || pct > 100 {
						return usagef("--add-change %q: want a percentage of the size per day (3%%) or bytes per day (20GB)", addChange)
					}
					newChange = int64(float64(newSize) * pct / 100)
				case addChange != "":
					if newChange, err = parseSize(strings.TrimSuffix(addChange, "/day")); err != nil {
						return usagef("--add-change: %v", err)
					}
				}
			} else if addChange != "" {
				return usagef("--add-change needs --add-size")
			}
			ctx := cmd.Context()
			repo, err := openRepo(ctx, dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			us, err := repo.Catalog.Usage(ctx)
			if err != nil {
				return err
			}
			byMachine := map[string]*estimateMachine{}
			var order []string
			var total, baseStored, volBytes, chLog, chStored float64
			for _, u := range us {
				m := byMachine[u.Machine]
				if m == nil {
					m = &estimateMachine{Machine: u.Machine}
					byMachine[u.Machine] = m
					order = append(order, u.Machine)
				}
				need := u.Need(days)
				m.Volumes++
				m.Points += u.Points
				m.HistoryDays = max(m.HistoryDays, u.Days())
				m.BaseStored += u.BaseStored
				m.DailyChange += u.DailyChange()
				m.Need += int64(need * 1.1)
				m.changedLogical += u.ChangedLogical
				m.changedStored += u.ChangedStored
				total += need
				if u.Kind != catalog.VolumeDir { // a directory volume's size is an address space
					baseStored += float64(u.BaseStored)
					volBytes += float64(u.Size)
				}
				chLog += float64(u.ChangedLogical)
				chStored += float64(u.ChangedStored)
			}
			var ms []estimateMachine
			for _, name := range order {
				m := byMachine[name]
				if m.changedLogical > 0 {
					m.ChangeReduction = float64(m.changedStored) / float64(m.changedLogical)
				}
				ms = append(ms, *m)
			}
			res := map[string]any{"days": days, "machines": ms, "need_bytes": int64(total * 1.1), "pad": 0.1}
			var addNeed int64
			if newSize > 0 {
				if volBytes == 0 {
					return fmt.Errorf("no machine has been backed up yet: nothing measured to price a new one by")
				}
				red := 1.0
				if chLog > 0 {
					red = chStored / chLog
				}
				addNeed = int64((float64(newSize)*baseStored/volBytes + float64(newChange)*days*red) * 1.1)
				res["add_machine"] = map[string]any{"size_bytes": newSize, "daily_change_bytes": newChange, "need_bytes": addNeed}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			out := cmd.OutOrStdout()
			if len(ms) == 0 {
				fmt.Fprintln(out, "no points yet: back a machine up first, then estimate from what it writes")
			} else {
				tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "MACHINE\tVOLUMES\tPOINTS\tHISTORY\tINITIAL COPY\tWRITTEN/DAY\tSTORED PER BYTE\tNEED FOR %g DAYS\n", days)
				for _, m := range ms {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f d\t%s\t%s\t%.2f\t%s\n", m.Machine, m.Volumes, m.Points, m.HistoryDays, humanBytes(m.BaseStored),
						humanBytes(int64(m.DailyChange)), m.ChangeReduction, humanBytes(m.Need))
				}
				tw.Flush()
				fmt.Fprintf(out, "\nthe repository needs %s for %g days of history (10 %% pad included)\n", humanBytes(int64(total*1.1)), days)
			}
			if newSize > 0 {
				fmt.Fprintf(out, "a new machine of %s writing %s a day adds %s\n", humanBytes(newSize), humanBytes(newChange), humanBytes(addNeed))
			}
			return nil
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().Float64Var(&days, "days", 30, "days of history to keep")
	c.Flags().StringVar(&addSize, "add-size", "", "also price a new machine of this size (e.g. 2TB)")
	c.Flags().StringVar(&addChange, "add-change", "", "the new machine's writes per day: bytes (20GB) or a percentage of its size (3%)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
