package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/rewind-cdp/rewind/repository/tape"
)

func newTapeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "tape",
		Short: "Move the repository to tape and back (off-site, long-term)",
		Long: `Write the repository to a tape set and rebuild it from tapes alone.

A set holds the repository's configuration, a consistent snapshot of its
catalog and every pack the snapshot needs, in fixed-size records; each tape is
labelled, a file spans as many tapes as it needs, and every tape ends with its
table of contents (also kept in the catalog). Tapes are tape drives
(/dev/nst0: mt rewinds, writes a file mark and ejects between tapes) or files:
a pattern with %d names the tapes of a set (/backup/tape%d -> tape1, tape2, ...).

  rewind tape write --device /backup/set1-tape%d --capacity 800GB
  rewind tape list --device /backup/set1-tape%d
  rewind tape restore --device /backup/set1-tape%d --repo /srv/rewind-restored`,
	}
	c.AddCommand(newTapeWriteCmd(), newTapeListCmd(), newTapeRestoreCmd())
	return c
}

// nextTapePrompt asks the operator to load tape n into a drive.
func nextTapePrompt(dev string) func(int) error {
	return func(n int) error {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return fmt.Errorf("tape %d is needed in %s and nobody can be asked to load it (stdin is not a terminal); use a %%d file pattern or a changer", n, dev)
		}
		fmt.Fprintf(os.Stderr, "load tape %d into %s and press Enter: ", n, dev)
		_, err := bufio.NewReader(os.Stdin).ReadString('\n')
		return err
	}
}

func newTapeWriteCmd() *cobra.Command {
	var dir, device, capacity, machines, since string
	var recordSize int
	var asJSON bool
	c := &cobra.Command{
		Use:   "write --device DEVICE|PATTERN",
		Short: "Write the repository to a new tape set",
		Long: `Write the repository to a new tape set while the server goes on ingesting: the
catalog is snapshotted first, and the set holds that snapshot and the packs it
needs. Existing tape files are never overwritten.

--capacity bounds each tape (required for files that must fit media of a given
size; a drive otherwise writes until its tape is full). --machines limits the
set to some machines. --since writes only packs created since then: an
incremental set, restored with 'tape restore --add' on top of a full one.`,
		Example: `  rewind tape write --device /backup/weekly-tape%d --capacity 2.5TB
  rewind tape write --device /dev/nst0 --machines web1,db1
  rewind tape write --device /backup/inc-tape%d --since -7d`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if device == "" {
				return usagef("--device is required: a tape drive or a file pattern such as /backup/tape%%d")
			}
			opt := tape.WriteOptions{Device: tape.Device(device), RecordSize: recordSize}
			if capacity != "" {
				n, err := parseSize(capacity)
				if err != nil || n == 0 {
					return usagef("--capacity: %v", err)
				}
				opt.Capacity = n
			}
			if machines != "" {
				opt.Machines = strings.Split(machines, ",")
			}
			if since != "" {
				t, err := parseTime(since, time.Now())
				if err != nil {
					return err
				}
				opt.Since = t
			}
			opt.NextTape = nextTapePrompt(device)
			ctx := cmd.Context()
			repo, err := openRepo(ctx, dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			st, err := repo.Catalog.Stats(ctx)
			if err != nil {
				return err
			}
			pg := newProgress(cmd.ErrOrStderr(), "tape", st.StoredBytes)
			opt.Progress = pg.Add
			start := time.Now()
			set, err := tape.Write(ctx, repo, opt)
			pg.Done()
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), set)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tape set %s: %d files, %s on %d tape(s), in %s\n", set.ID, len(set.Files), humanBytes(set.Bytes), set.Tapes, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&device, "device", "", "tape drive (/dev/nst0) or file pattern with %d (/backup/tape%d)")
	c.Flags().StringVar(&capacity, "capacity", "", "bytes per tape (e.g. 800GB); default: until the medium is full")
	c.Flags().IntVar(&recordSize, "record-size", tape.DefaultRecordSize, "record (tape block) size in bytes")
	c.Flags().StringVar(&machines, "machines", "", "comma-separated machines to write (default: all)")
	c.Flags().StringVar(&since, "since", "", "only packs created since this time (an incremental set)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the set as JSON")
	return c
}

func newTapeListCmd() *cobra.Command {
	var dir, device string
	var asJSON bool
	c := &cobra.Command{
		Use:   "list [--device DEVICE|PATTERN]",
		Short: "Show tapes: their labels and tables of contents, or the sets the catalog knows",
		Example: `  rewind tape list --device /backup/weekly-tape%d
  rewind tape list               # the tape sets written from this repository`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if device == "" {
				repo, err := openRepo(ctx, dir)
				if err != nil {
					return err
				}
				defer repo.Close()
				sets, err := repo.Catalog.TapeSets(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(out, sets)
				}
				tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SET\tWRITTEN\tTAPES\tFILES\tBYTES")
				for _, s := range sets {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", s.ID, s.Written.UTC().Format(time.RFC3339), s.Tapes, len(s.Files), humanBytes(s.Bytes))
				}
				return tw.Flush()
			}
			infos, err := tape.List(ctx, tape.Device(device))
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(out, infos)
			}
			for _, i := range infos {
				last := ""
				if i.Last {
					last = ", last of its set"
				}
				fmt.Fprintf(out, "%s: tape %d of set %s, written %s, %d records of %d bytes%s\n", i.Path, i.Tape, i.Set, i.Written.Format(time.RFC3339), i.Records, i.RecordSize, last)
				for _, f := range i.Files {
					fmt.Fprintf(out, "  %-40s %12d bytes  from record %d\n", f.Name, f.Size, f.Record)
				}
			}
			return nil
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&device, "device", "", "tape drive or file pattern with %d to read; without it, list the sets in the catalog")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func newTapeRestoreCmd() *cobra.Command {
	var dir, device string
	var add, asJSON bool
	c := &cobra.Command{
		Use:   "restore --device DEVICE|PATTERN --repo DIR",
		Short: "Rebuild a repository from a tape set alone (disaster recovery)",
		Long: `Rebuild a repository from the tapes of a set, with no catalog needed: the
configuration, the catalog snapshot and the packs come off the tapes, every
record's CRC and every file's SHA-256 checked. --repo must be new or empty;
with --add, an incremental set (tape write --since) is added to a repository
restored from a full set (missing packs added, the catalog replaced by the
newer snapshot, the old one kept beside it). Run 'rewind check --read-data'
afterwards to verify every block.`,
		Example: `  rewind tape restore --device /backup/weekly-tape%d --repo /srv/rewind
  rewind tape restore --device /backup/inc-tape%d --repo /srv/rewind --add`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if device == "" || dir == "" {
				return usagef("--device and --repo are required")
			}
			ctx := cmd.Context()
			if add {
				unlock, err := lockRepo(dir)
				if err != nil {
					return err
				}
				defer unlock()
			}
			pg := newProgress(cmd.ErrOrStderr(), "tape", 0)
			start := time.Now()
			res, err := tape.Restore(ctx, tape.RestoreOptions{Device: tape.Device(device), Dir: dir, Add: add, NextTape: nextTapePrompt(device), Progress: pg.Add})
			pg.Done()
			if err != nil {
				return fmt.Errorf("restore from tape: %w", err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored tape set %s into %s: %d files, %s from %d tape(s) in %s\n", res.Set, dir, res.Files, humanBytes(res.Bytes), res.Tapes, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "repo", "", "repository directory to rebuild (new or empty)")
	c.Flags().StringVar(&device, "device", "", "tape drive or file pattern with %d")
	c.Flags().BoolVar(&add, "add", false, "add an incremental set to an existing repository")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}
