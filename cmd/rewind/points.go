package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
)

type pointJSON struct {
	ID      int64  `json:"id"`
	Machine string `json:"machine"`
	Volume  string `json:"volume"`
	Time    string `json:"time"`
	Kind    string `json:"kind"`
	Label   string `json:"label"`
	Size    int64  `json:"size"`
}

func newPointsCmd() *cobra.Command {
	var dir, machine, volume string
	var asJSON bool
	c := &cobra.Command{
		Use:   "points",
		Short: "List the points in time that can be restored",
		Long: `List the committed points of every volume, oldest first. Times are RFC 3339 UTC
with nanoseconds. Works while the server runs.`,
		Example: `  rewind points --machine web1
  rewind points --machine web1 --volume root --json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			repo, err := openRepo(cmd.Context(), dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			ps, err := repo.Catalog.Points(cmd.Context(), machine, volume)
			if err != nil {
				return err
			}
			out := make([]pointJSON, 0, len(ps))
			for _, p := range ps {
				out = append(out, pointJSON{p.ID, p.Machine, p.Volume, pointTime(p.Time), p.Kind, p.Label, p.Size})
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTIME\tMACHINE\tVOLUME\tKIND\tSIZE\tLABEL")
			for i, p := range out {
				size := humanBytes(p.Size)
				if ps[i].VolumeKind == catalog.VolumeDir {
					size = "directory" // a sparse address space, not a disk
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Time, p.Machine, p.Volume, p.Kind, size, p.Label)
			}
			return tw.Flush()
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&machine, "machine", "", "only this machine")
	c.Flags().StringVar(&volume, "volume", "", "only volumes of this name")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return c
}
