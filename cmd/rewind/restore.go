package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/repository/directio"
)

func newRestoreCmd() *cobra.Command {
	var dir, machine, volume, at, to, toDir, knownAt string
	var force, full, grow, asJSON bool
	c := &cobra.Command{
		Use:   "restore",
		Short: "Restore a volume as it was at any point to a file, device or directory",
		Long: `Restore a volume exactly as it was at a point in time, to an image file or a
block device (--to), or — for a directory volume captured by rewind agent
protect-dir — to a directory (--to-dir). Every block is checked against its
content hash before it is written: damage stops the restore with an error
naming the pack, never with wrong data. A file target is written beside itself and renamed into place only
once complete (run sync before power-cycling if it must be on stable storage);
a device target is synced before the command returns.

Rollback in place: when the target already holds a state of the volume — a
block device, or with --force an image file of exactly the volume's size — only
the blocks that differ are written. The target is read and every block's hash
compared with the point's; with --target-point, naming the point the target is
known to hold (for example the last point its agent shipped), the differing
blocks come from the catalog alone and the target is not read. --full writes
every block instead.

A device of another size: on a larger device the volume is written at its
start and a GPT's backup header moved to the new end; --grow also extends the
last partition and its file system (resize2fs, ntfsresize or xfs_growfs). A
smaller device is accepted only when every partition fits in it; what lies
beyond (free space, the old GPT backup) is left out. Otherwise it is refused
before anything is written.

--at takes RFC 3339 (2026-11-20T10:15:00Z), "YYYY-MM-DD HH:MM[:SS]" in local
time, a relative time (-15m, -2h, -3d), latest (the default), or a point id; a
time resolves to the newest point at or before it.

--to-dir recreates every directory, file, hard link and symlink of a
directory volume with its size, mode, mtime and (as root) owner; zero blocks
become holes. DIR must be empty or missing unless --force, which restores into
it (entries of the volume replace what is there; other files stay).`,
		Example: `  rewind restore --machine web1 --volume root --at -15m --to root.img
  rewind restore --machine web1 --volume root --at "2026-11-20 10:15" --to /dev/sdc
  rewind restore --machine web1 --volume root --at 42 --to root.img --force
  rewind restore --machine web1 --volume data --at -2h --to /dev/sdb --target-point latest
  rewind restore --machine web1 --volume root --to /dev/nvme1n1 --grow

  rewind restore --machine db1 --volume pgdata --at -15m --to-dir /srv/pgdata-15m`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if (to == "") == (toDir == "") {
				return usagef("--to is required (an image file or a block device), or --to-dir DIR for a directory volume; not both")
			}
			repo, vol, p, err := openPointAt(ctx, dir, machine, volume, at)
			if err != nil {
				return err
			}
			defer repo.Close()
			if toDir != "" {
				return restoreToDir(cmd, repo, p, toDir, force, asJSON)
			}
			if err := needDisk(p, "--to"); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "restoring %s/%s point %d (%s, %s)\n", p.Machine, p.Volume, p.ID, pointTime(p.Time), p.Kind)
			start := time.Now()
			pg := newProgress(cmd.ErrOrStderr(), "restore", p.Size)
			if knownAt != "" && full {
				return usagef("--target-point and --full exclude each other")
			}
			devSize, isDev, err := deviceSize(to)
			if err != nil {
				return err
			}
			if isDev && devSize != p.Size {
				if knownAt != "" {
					return usagef("--target-point needs a target of the volume's size; %s holds %s, the volume %s", to, humanBytes(devSize), humanBytes(p.Size))
				}
				res, err := restoreDissimilar(ctx, repo, p, to, devSize, grow, full, pg.Add)
				pg.Done()
				if err != nil {
					return fmt.Errorf("restore to %s: %w", to, err)
				}
				el := time.Since(start)
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), map[string]any{
						"point": pointJSON{p.ID, p.Machine, p.Volume, pointTime(p.Time), p.Kind, p.Label, p.Size},
						"to":    to, "bytes": p.Size, "device_bytes": devSize, "partition_table": res.Resized.Scheme,
						"grown": res.Grown, "in_place": res.Rollback != nil, "seconds": el.Seconds(),
					})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "restored %s/%s point %d (%s, %s) to %s (%s) in %s\n", p.Machine, p.Volume, p.ID, pointTime(p.Time),
					humanBytes(p.Size), to, humanBytes(devSize), el.Round(time.Millisecond))
				if res.Grown != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "grew %s to the end of %s\n", res.Grown, to)
				}
				return nil
			}
			if grow {
				return usagef("--grow needs a block device larger than the volume")
			}
			var inPlace *os.File
			if !full {
				if inPlace, err = openInPlace(to, p.Size, force); err != nil {
					return err
				}
			}
			if inPlace == nil && knownAt != "" {
				return fmt.Errorf("--target-point: %s is not a device or an existing image of the volume's size (with --force)", to)
			}
			if inPlace != nil {
				st, err := rollback(ctx, repo, vol, p, inPlace, knownAt, pg.Add)
				pg.Done()
				if err != nil {
					return fmt.Errorf("roll %s back: %w", to, err)
				}
				el := time.Since(start)
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), map[string]any{
						"point": pointJSON{p.ID, p.Machine, p.Volume, pointTime(p.Time), p.Kind, p.Label, p.Size},
						"to":    to, "bytes": p.Size, "in_place": true, "blocks": st.Blocks, "blocks_written": st.Written,
						"bytes_written": st.BytesWritten, "bytes_compared": st.BytesRead, "seconds": el.Seconds(),
						"mb_per_s": float64(p.Size) / 1e6 / max(el.Seconds(), 1e-9),
					})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "rolled %s back to %s/%s point %d (%s) in place: %d of %d blocks differed, %s written, in %s\n", to, p.Machine, p.Volume, p.ID, pointTime(p.Time),
					st.Written, st.Blocks, humanBytes(st.BytesWritten), el.Round(time.Millisecond))
				return nil
			}
			tgt, err := openTarget(to, p.Size, force)
			if err != nil {
				return err
			}
			err = repo.Restore(ctx, p, tgt.w, repository.RestoreOptions{SkipZeros: tgt.fresh, Progress: pg.Add})
			pg.Done()
			if err = tgt.finish(err); err != nil {
				return fmt.Errorf("restore to %s: %w", to, err)
			}
			el := time.Since(start)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{
					"point": pointJSON{p.ID, p.Machine, p.Volume, pointTime(p.Time), p.Kind, p.Label, p.Size},
					"to":    to, "bytes": p.Size, "seconds": el.Seconds(), "mb_per_s": float64(p.Size) / 1e6 / max(el.Seconds(), 1e-9),
				})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s/%s point %d (%s) to %s: %s in %s (%s/s)\n", p.Machine, p.Volume, p.ID, pointTime(p.Time), to,
				humanBytes(p.Size), el.Round(time.Millisecond), humanBytes(int64(float64(p.Size)/max(el.Seconds(), 1e-9))))
			return nil
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&machine, "machine", "", "machine name")
	c.Flags().StringVar(&volume, "volume", "", "volume name")
	c.Flags().StringVar(&at, "at", "latest", "point to restore: a time, a relative time, latest, or a point id")
	c.Flags().StringVar(&to, "to", "", "target image file or block device")
	c.Flags().StringVar(&toDir, "to-dir", "", "target directory, for a directory volume (empty or missing unless --force)")
	c.Flags().BoolVar(&force, "force", false, "overwrite an existing target file (in place when it has the volume's size), or restore into a non-empty directory")
	c.Flags().StringVar(&knownAt, "target-point", "", "the point the target already holds (a time or point id): write the blocks that differ without reading the target")
	c.Flags().BoolVar(&grow, "grow", false, "on a larger device, extend the last partition and its file system to the end")
	c.Flags().BoolVar(&full, "full", false, "write every block, even where the target already holds it")
	c.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return c
}

// restoreToDir restores a directory volume's point into a directory.
func restoreToDir(cmd *cobra.Command, repo *repository.Repo, p catalog.Point, dst string, force, asJSON bool) error {
	if p.VolumeKind != catalog.VolumeDir {
		return fmt.Errorf("%s/%s is a disk volume: restore it with --to FILE|DEVICE (or browse its files/ in rewind mount)", p.Machine, p.Volume)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "restoring %s/%s point %d (%s, %s) to %s\n", p.Machine, p.Volume, p.ID, pointTime(p.Time), p.Kind, dst)
	start := time.Now()
	f, err := dirvol.Open(cmd.Context(), repo.OpenPoint(p), p.Size)
	if err != nil {
		return fmt.Errorf("%s/%s point %d: %w", p.Machine, p.Volume, p.ID, err)
	}
	pg := newProgress(cmd.ErrOrStderr(), "restore", dirBytes(f))
	res, err := restoreDir(cmd.Context(), f, dst, force, pg.Add)
	pg.Done()
	if err != nil {
		return fmt.Errorf("restore to %s: %w", dst, err)
	}
	el := time.Since(start)
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), map[string]any{
			"point":  pointJSON{p.ID, p.Machine, p.Volume, pointTime(p.Time), p.Kind, p.Label, p.Size},
			"to_dir": dst, "dirs": res.Dirs, "files": res.Files, "hardlinks": res.Hardlinks, "symlinks": res.Symlinks,
			"bytes": res.Bytes, "seconds": el.Seconds(),
		})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "restored %s/%s point %d (%s) to %s: %d directories, %d files (%s), %d hard links, %d symlinks in %s\n",
		p.Machine, p.Volume, p.ID, pointTime(p.Time), dst, res.Dirs, res.Files, humanBytes(res.Bytes), res.Hardlinks, res.Symlinks, el.Round(time.Millisecond))
	return nil
}

// parseAtSyntax rejects an unparsable --at before anything is opened.
func parseAtSyntax(at string) (time.Time, error) {
	if at == "" || at == "latest" {
		return time.Time{}, nil
	}
	for _, c := range at {
		if c < '0' || c > '9' {
			return parseTime(at, time.Now())
		}
	}
	return time.Time{}, nil // a point id
}

// target is where a restore writes: a device in place, or a new file
// written beside the destination and renamed over it when complete.
type target struct {
	f     *os.File
	w     *directio.WriterAt // f, with aligned blocks written around the page cache
	path  string
	tmp   string
	fresh bool // a new sparse file: zero blocks need not be written
}

func openTarget(path string, size int64, force bool) (*target, error) {
	st, err := os.Stat(path)
	switch {
	case err == nil && st.Mode()&fs.ModeDevice != 0:
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open target device %s: %w", path, err)
		}
		dsize, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("size of target device %s: %w", path, err)
		}
		if dsize < size {
			f.Close()
			return nil, fmt.Errorf("target device %s holds %s, the volume needs %s", path, humanBytes(dsize), humanBytes(size))
		}
		return &target{f: f, w: directio.NewWriterAt(f, path), path: path}, nil
	case err == nil && st.IsDir():
		return nil, fmt.Errorf("target %s is a directory; name an image file or a device", path)
	case err == nil && !force:
		return nil, fmt.Errorf("target %s exists; pass --force to overwrite it", path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("target %s: %w", path, err)
	}
	tmp := path + ".rewind-partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create target %s: %w", tmp, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("size target %s: %w", tmp, err)
	}
	return &target{f: f, w: directio.NewWriterAt(f, tmp), path: path, tmp: tmp, fresh: true}, nil
}

// finish closes the target: a device is synced first; a file is renamed
// into place on success and removed on failure (not synced, as cp and
// tar do not: its pages reach the disk with the kernel's writeback).
func (t *target) finish(err error) error {
	if err == nil && t.tmp == "" {
		err = t.f.Sync()
	}
	t.w.Close()
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	if t.tmp == "" {
		return err
	}
	if err != nil {
		os.Remove(t.tmp)
		return err
	}
	return os.Rename(t.tmp, t.path)
}
