package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
)

// addRepoFlag adds --repo to a command.
func addRepoFlag(c *cobra.Command, dir *string) {
	c.Flags().StringVar(dir, "repo", "", "repository directory (default $REWIND_REPO or ~/.local/share/rewind)")
}

func repoDir(dir string) string {
	if dir != "" {
		return dir
	}
	return repository.DefaultDir()
}

// openRepo opens an existing repository for a read-side command.
func openRepo(ctx context.Context, dir string) (*repository.Repo, error) {
	opt, err := repoOptions("")
	if err != nil {
		return nil, err
	}
	return repository.OpenWith(ctx, repoDir(dir), opt)
}

// lookupVolume finds machine/volume, with an error naming what is missing.
func lookupVolume(ctx context.Context, repo *repository.Repo, machine, volume string) (catalog.Volume, error) {
	if machine == "" || volume == "" {
		return catalog.Volume{}, usagef("--machine and --volume are required")
	}
	v, err := repo.Catalog.Volume(ctx, machine, volume)
	if errors.Is(err, catalog.ErrNotFound) {
		return v, fmt.Errorf("no volume %q of machine %q in %s (see rewind points)", volume, machine, repo.Dir)
	}
	return v, err
}

// progress draws a progress bar with rate and ETA on stderr when stderr is
// a terminal; otherwise it draws nothing.
type progress struct {
	p   *mpb.Progress
	bar *mpb.Bar
}

func newProgress(stderr io.Writer, name string, total int64) *progress {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || total <= 0 {
		return &progress{}
	}
	p := mpb.New(mpb.WithOutput(stderr), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	bar := p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace),
			decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)),
	)
	return &progress{p: p, bar: bar}
}

func (pg *progress) SetTotal(n int64) {
	if pg.bar != nil {
		pg.bar.SetTotal(n, false)
	}
}

func (pg *progress) Add(n int64) {
	if pg.bar != nil {
		pg.bar.IncrInt64(n)
	}
}

func (pg *progress) Done() {
	if pg.bar != nil {
		pg.bar.SetTotal(-1, true)
		pg.p.Wait()
	}
}

// openPointAt opens the repository and resolves machine/volume at at (the
// --at forms) to a point. The caller closes the repository.
func openPointAt(ctx context.Context, dir, machine, volume, at string) (*repository.Repo, catalog.Volume, catalog.Point, error) {
	if _, err := parseAtSyntax(at); err != nil {
		return nil, catalog.Volume{}, catalog.Point{}, err
	}
	repo, err := openRepo(ctx, dir)
	if err != nil {
		return nil, catalog.Volume{}, catalog.Point{}, err
	}
	vol, err := lookupVolume(ctx, repo, machine, volume)
	if err == nil {
		var p catalog.Point
		if p, err = resolveAt(ctx, repo.Catalog, vol, at, time.Now()); err == nil {
			return repo, vol, p, nil
		}
	}
	repo.Close()
	return nil, catalog.Volume{}, catalog.Point{}, err
}

// needDisk refuses a directory volume (rewind agent protect-dir) where a
// disk is needed.
func needDisk(p catalog.Point, what string) error {
	if p.VolumeKind == catalog.VolumeDir {
		return fmt.Errorf("%s/%s is a directory volume, not a disk: %s needs a disk (restore it with restore --to-dir DIR)", p.Machine, p.Volume, what)
	}
	return nil
}
