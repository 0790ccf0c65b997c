package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
)

// openInPlace opens a target that already holds a state of the volume for
// an in-place rollback: a block device (restore sends devices of another
// size to restoreDissimilar first), or, with force, a regular file of
// exactly the volume's size. It returns nil when the target is anything
// else (a new file, a file of another size): then the restore writes
// everything.
func openInPlace(path string, size int64, force bool) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil
	}
	if st.Mode()&fs.ModeDevice == 0 && !(st.Mode().IsRegular() && force && st.Size() == size) {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open target %s: %w", path, err)
	}
	return f, nil
}

// rollback brings the target f to point p in place, writing only the
// blocks that differ; known is the point the target is known to hold
// (--target-point), or "" to compare by hash.
func rollback(ctx context.Context, repo *repository.Repo, vol catalog.Volume, p catalog.Point, f *os.File, known string, progress func(int64)) (repository.RollbackStats, error) {
	opt := repository.RollbackOptions{Progress: progress}
	if known != "" {
		k, err := resolveAt(ctx, repo.Catalog, vol, known, p.Time)
		if err != nil {
			return repository.RollbackStats{}, fmt.Errorf("--target-point: %w", err)
		}
		opt.Known = &k
	}
	st, err := repo.Rollback(ctx, p, f, opt)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return st, err
}
