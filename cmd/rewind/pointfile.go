package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/parsers/filesystem/detect"
)

// pointFileFlags name a file inside a volume at a point in time: the item
// recovery commands (sql, ese) read it straight from the backup.
type pointFileFlags struct {
	repo, machine, volume, at, path string
}

func (f *pointFileFlags) add(c *cobra.Command) {
	addRepoFlag(c, &f.repo)
	c.Flags().StringVar(&f.machine, "machine", "", "read the file from this machine's backup (with --volume and --path)")
	c.Flags().StringVar(&f.volume, "volume", "", "volume holding the file")
	c.Flags().StringVar(&f.at, "at", "latest", "point in time: a time, a relative time, latest, or a point id")
	c.Flags().StringVar(&f.path, "path", "", "path of the file inside the volume's file system, e.g. /SQLData/Sales.mdf")
}

func (f *pointFileFlags) given() bool { return f.machine != "" || f.volume != "" || f.path != "" }

// source is an open input file: a local file or a file inside a point.
type source struct {
	io.ReaderAt
	Size  int64
	Name  string
	close func()
}

func (s *source) Close() {
	if s.close != nil {
		s.close()
	}
}

// openItemFile opens the FILE argument, or the file --path names inside
// --machine/--volume at --at.
func openItemFile(ctx context.Context, a []string, f *pointFileFlags, what string) (*source, error) {
	switch {
	case len(a) == 1 && f.given():
		return nil, usagef("name either a %s file or --machine/--volume/--path, not both", what)
	case len(a) == 1:
		file, err := os.Open(a[0])
		if err != nil {
			return nil, fmt.Errorf("open %s file: %w", what, err)
		}
		st, err := file.Stat()
		if err == nil && st.IsDir() {
			err = fmt.Errorf("%s is a directory, not a %s file", a[0], what)
		}
		if err != nil {
			file.Close()
			return nil, err
		}
		return &source{ReaderAt: file, Size: st.Size(), Name: a[0], close: func() { file.Close() }}, nil
	case !f.given():
		return nil, usagef("name the %s file, or --machine, --volume and --path of one inside a backup", what)
	case f.machine == "" || f.volume == "" || f.path == "":
		return nil, usagef("--machine, --volume and --path go together")
	}
	repo, _, p, err := openPointAt(ctx, f.repo, f.machine, f.volume, f.at)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			repo.Close()
		}
	}()
	disk := repo.OpenPoint(p)
	vols, err := detect.Volumes(ctx, disk, p.Size)
	if err != nil {
		return nil, fmt.Errorf("%s/%s point %d: %w", p.Machine, p.Volume, p.ID, err)
	}
	name := strings.TrimPrefix(f.path, "/")
	var tried []string
	for _, v := range vols {
		if v.FS == nil {
			continue
		}
		st, err := v.FS.Stat(ctx, name)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, fmt.Sprintf("partition %d (%s)", v.Partition.Index, v.FS.Type()))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s in %s/%s point %d: %w", f.path, p.Machine, p.Volume, p.ID, err)
		}
		if st.IsDir() {
			return nil, fmt.Errorf("%s in %s/%s point %d is a directory, not a %s file", f.path, p.Machine, p.Volume, p.ID, what)
		}
		file, err := v.FS.Open(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("open %s in %s/%s point %d: %w", f.path, p.Machine, p.Volume, p.ID, err)
		}
		ok = true
		label := fmt.Sprintf("%s/%s@%d:%s", p.Machine, p.Volume, p.ID, f.path)
		return &source{ReaderAt: file, Size: file.Size(), Name: label, close: func() { repo.Close() }}, nil
	}
	if len(tried) == 0 {
		return nil, fmt.Errorf("%s/%s point %d holds no file system this rewind can read", p.Machine, p.Volume, p.ID)
	}
	return nil, fmt.Errorf("no %s in %s/%s point %d (%s) (looked in %s)", f.path, p.Machine, p.Volume, p.ID, pointTime(p.Time), strings.Join(tried, ", "))
}
