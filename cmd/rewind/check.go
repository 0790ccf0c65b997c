package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/repository"
)

// errDamage makes check exit 1 after printing its report.
var errDamage = errors.New("the repository is damaged")

func newCheckCmd() *cobra.Command {
	var dir string
	var readData, asJSON bool
	c := &cobra.Command{
		Use:   "check",
		Short: "Prove the catalog and the packs agree, and optionally every block",
		Long: `Check the repository: every pack the catalog names exists and has a valid
index, every chunk is where the catalog says, every block version names a
stored chunk. With --read-data every block is read back, decompressed and
re-hashed.

Exits 1 on any damage, naming the damaged packs and every machine, volume and
point affected. Works while the server runs.`,
		Example: `  rewind check
  rewind check --read-data --json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := openRepo(cmd.Context(), dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			pg := newProgress(cmd.ErrOrStderr(), "check", 0)
			res, err := repo.Check(cmd.Context(), repository.CheckOptions{ReadData: readData, Total: pg.SetTotal, Progress: pg.Add})
			pg.Done()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := writeJSON(out, res); err != nil {
					return err
				}
			} else {
				what := "headers"
				if readData {
					what = "data"
				}
				fmt.Fprintf(out, "checked %d packs, %d chunks (%s, %s read)\n", res.Packs, res.Chunks, what, humanBytes(res.BytesRead))
				for _, w := range res.Warnings {
					fmt.Fprintf(out, "warning: %s\n", w)
				}
				for _, d := range res.Damage {
					if d.Pack != "" {
						fmt.Fprintf(out, "damaged: pack %s at offset %d: %s\n", d.Pack, d.Offset, d.Problem)
					} else {
						fmt.Fprintf(out, "damaged: %s\n", d.Problem)
					}
				}
				for _, p := range res.Affected {
					fmt.Fprintf(out, "affected: %s/%s point %d (%s)\n", p.Machine, p.Volume, p.ID, pointTime(p.Time))
				}
				if res.OK() {
					fmt.Fprintln(out, "no damage found")
				}
			}
			if !res.OK() {
				return fmt.Errorf("%w: %d problems in %d packs, %d points affected", errDamage, len(res.Damage), len(res.DamagedPacks), len(res.Affected))
			}
			return nil
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().BoolVar(&readData, "read-data", false, "read, decompress and re-hash every block")
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}
