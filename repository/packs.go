package repository

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
	"github.com/rewind-cdp/rewind/repository/packstore"
)

// Where a pack is, with a pack store other than the directory: while it
// is open, and after it is sealed until the store holds it, in the
// repository directory; once the catalog records it sealed, in the store
// only (the local file is removed). A pack the catalog records sealed is
// therefore always in the store.

// Packs returns the repository's pack store.
func (r *Repo) Packs() packstore.Store { return r.packs }

// packReader returns a reader of a pack: its local file when there is
// one, else the store's object.
func (r *Repo) packReader(ctx context.Context, id int64) (*pack.Reader, error) {
	path, name := r.PackPath(id), r.PackName(id)
	if r.packs.Local() {
		return r.files.reader(path, name, nil)
	}
	return r.files.reader(path, name, func() (io.ReaderAt, int64, error) {
		return r.packs.Open(ctx, name)
	})
}

// OpenPack returns a reader of a whole pack, its size, and a function
// releasing it: the local file when there is one, else the store's object.
// A missing pack is an error wrapping fs.ErrNotExist.
func (r *Repo) OpenPack(ctx context.Context, id int64) (io.ReaderAt, int64, func(), error) {
	f, err := os.Open(r.PackPath(id))
	if err == nil {
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, nil, fmt.Errorf("open pack %s: %w", r.PackName(id), err)
		}
		return f, st.Size(), func() { f.Close() }, nil
	}
	if !errors.Is(err, fs.ErrNotExist) || r.packs.Local() {
		return nil, 0, nil, fmt.Errorf("open pack %s: %w", r.PackName(id), err)
	}
	ra, size, err := r.packs.Open(ctx, r.PackName(id))
	if err != nil {
		return nil, 0, nil, err
	}
	return ra, size, func() {}, nil
}

// uploadPack puts a sealed pack into the store (nothing for the directory).
func (r *Repo) uploadPack(ctx context.Context, id int64) error {
	if r.packs.Local() {
		return nil
	}
	return r.packs.Upload(ctx, r.PackName(id), r.PackPath(id))
}

// dropLocal removes the local file of a pack the store holds and the
// catalog records sealed. Readers holding the file open keep reading it.
func (r *Repo) dropLocal(id int64) {
	if r.packs.Local() {
		return
	}
	path := r.PackPath(id)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		slog.Warn("could not remove the local copy of an uploaded pack", "pack", r.PackName(id), "err", err)
	}
	r.files.drop(path)
}

// deletePack removes a pack the catalog no longer names: its local file
// and its object in the store.
func (r *Repo) deletePack(ctx context.Context, id int64) error {
	path := r.PackPath(id)
	r.files.drop(path)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete pack %s: %w", r.PackName(id), err)
	}
	if r.packs.Local() {
		return nil
	}
	return r.packs.Delete(ctx, r.PackName(id))
}

// syncSealedPacks uploads every sealed pack still in the directory (a
// crash between upload and removal, or a repository whose packs were local
// before it was given a store) and removes the local files.
func (r *Repo) syncSealedPacks(ctx context.Context) error {
	if r.packs.Local() {
		return nil
	}
	packs, err := r.Catalog.Packs(ctx)
	if err != nil {
		return err
	}
	var n int
	for _, p := range packs {
		if p.State != catalog.PackSealed {
			continue
		}
		if _, err := os.Stat(r.PackPath(p.ID)); err != nil {
			continue
		}
		if err := r.uploadPack(ctx, p.ID); err != nil {
			return err
		}
		r.dropLocal(p.ID)
		n++
	}
	if n > 0 {
		slog.Info("uploaded sealed packs left in the repository directory", "packs", n, "store", r.packs.String())
	}
	return nil
}
