package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/ingest"
)

func newMachineCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "machine",
		Short: "Register protected machines",
		Args:  args(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return usagef("machine needs a subcommand (add)") },
	}
	var dir string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Register a machine and print its new token, alone, on stdout",
		Long: `Register a machine and print a new token for it, alone, on stdout. The token
is shown once: the repository keeps only its hash. An agent or rewind backup
presents it to the server, and it may write only this machine's volumes.

Works while the server runs. Creates the repository when the directory is absent
or empty.`,
		Example: `  TOKEN=$(rewind machine add web1)
  rewind backup --token "$TOKEN" --machine web1 --volume root /dev/sdb`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			name := a[0]
			if err := ingest.ValidName(name); err != nil {
				return usageError{fmt.Errorf("machine %w", err)}
			}
			repo, err := openRepoWriting(cmd.Context(), repoDir(dir), "")
			if err != nil {
				return err
			}
			defer repo.Close()
			tok := ingest.NewToken()
			if _, err := repo.Catalog.AddMachine(cmd.Context(), name, ingest.HashToken(tok)); err != nil {
				if errors.Is(err, catalog.ErrExists) {
					return fmt.Errorf("machine %q is already registered", name)
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	addRepoFlag(add, &dir)
	c.AddCommand(add)
	return c
}

func newMachinesCmd() *cobra.Command {
	var dir string
	var asJSON bool
	c := &cobra.Command{
		Use:   "machines",
		Short: "List protected machines",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := openRepo(cmd.Context(), dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			ms, err := repo.Catalog.Machines(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if ms == nil {
					ms = []catalog.Machine{}
				}
				return writeJSON(cmd.OutOrStdout(), ms)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MACHINE\tVOLUMES\tPOINTS\tREGISTERED")
			for _, m := range ms {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", m.Name, m.Volumes, m.Points, m.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}
