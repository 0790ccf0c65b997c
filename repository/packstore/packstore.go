// Package packstore says where a repository's sealed packs live: in the
// repository directory itself (the embedded default, Dir) or in an
// S3-compatible object store (S3), read back with ranged GETs through a
// bounded cache of hot pack segments.
//
// Packs are always written into the repository directory while they are
// open; a store only receives a pack once it is sealed (Upload), and from
// then on serves reads of it (Open), lists it (List) and deletes it
// (Delete). Packs are named by their path inside the repository directory
// ("packs/ab/00000000000000ab.pack"); an S3 store keeps them under the
// same name below its prefix.
package packstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Store keeps sealed packs.
type Store interface {
	// Upload makes the sealed pack file at path durable in the store under
	// name. It returns only once the store holds every byte of it.
	Upload(ctx context.Context, name, path string) error
	// Open returns a reader of the pack and its size; a pack the store
	// lacks is an error wrapping fs.ErrNotExist.
	Open(ctx context.Context, name string) (io.ReaderAt, int64, error)
	// Delete removes a pack; a missing pack is not an error.
	Delete(ctx context.Context, name string) error
	// List calls fn with the name and size of every pack in the store.
	List(ctx context.Context, fn func(name string, size int64)) error
	// Local reports whether the store is the repository directory itself
	// (packs never leave it).
	Local() bool
	// String describes the store to people.
	String() string
}

// Location is where the packs of a repository live, stored in the
// repository (packs.json) so that every command finds them. Credentials are
// never stored.
type Location struct {
	URL      string `json:"url"` // s3://bucket/prefix
	Endpoint string `json:"endpoint"`
	Region   string `json:"region,omitempty"`
	Insecure bool   `json:"insecure,omitempty"` // http instead of https
}

// LocationFile is the file in the repository directory that records a
// pack store other than the directory itself.
const LocationFile = "packs.json"

// Options open a store: the location and what is not stored with it.
type Options struct {
	Location
	AccessKey, SecretKey string
	// CacheSize bounds the bytes of pack segments kept in memory (0: the
	// default, 256 MiB; negative: no cache).
	CacheSize int64
}

// DefaultCacheSize is the default bound of the S3 read cache.
const DefaultCacheSize = 256 << 20

// ParseURL splits s3://bucket/prefix.
func ParseURL(s string) (bucket, prefix string, err error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return "", "", fmt.Errorf("pack store %q: want s3://bucket/prefix", s)
	}
	return u.Host, strings.Trim(u.Path, "/"), nil
}

// ReadLocation reads the location recorded in a repository directory; ok
// is false when there is none (packs live in the directory).
func ReadLocation(dir string) (loc Location, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, LocationFile))
	if errors.Is(err, fs.ErrNotExist) {
		return loc, false, nil
	}
	if err != nil {
		return loc, false, fmt.Errorf("read pack store location: %w", err)
	}
	if err := json.Unmarshal(b, &loc); err != nil {
		return loc, false, fmt.Errorf("read pack store location %s: %w", filepath.Join(dir, LocationFile), err)
	}
	if _, _, err := ParseURL(loc.URL); err != nil {
		return loc, false, fmt.Errorf("%s: %w", filepath.Join(dir, LocationFile), err)
	}
	return loc, true, nil
}

// WriteLocation records loc in a repository directory (atomically, synced).
func WriteLocation(dir string, loc Location) error {
	b, _ := json.MarshalIndent(loc, "", "  ")
	tmp := filepath.Join(dir, LocationFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record pack store location: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, LocationFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("record pack store location: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Dir is the embedded default: packs stay in the repository directory.
type Dir struct{ Root string }

var _ Store = Dir{}

// Upload does nothing: a sealed pack is already in place and synced.
func (Dir) Upload(context.Context, string, string) error { return nil }

// Open opens the pack file.
func (d Dir) Open(_ context.Context, name string) (io.ReaderAt, int64, error) {
	f, err := os.Open(filepath.Join(d.Root, filepath.FromSlash(name)))
	if err != nil {
		return nil, 0, fmt.Errorf("open pack %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open pack %s: %w", name, err)
	}
	return f, st.Size(), nil
}

// Delete removes the pack file.
func (d Dir) Delete(_ context.Context, name string) error {
	if err := os.Remove(filepath.Join(d.Root, filepath.FromSlash(name))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete pack %s: %w", name, err)
	}
	return nil
}

// List walks the packs directory.
func (d Dir) List(ctx context.Context, fn func(string, int64)) error {
	return filepath.WalkDir(filepath.Join(d.Root, "packs"), func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || !strings.HasSuffix(path, ".pack") {
			return ctx.Err()
		}
		rel, err := filepath.Rel(d.Root, path)
		if err != nil {
			return err
		}
		var size int64
		if info, err := e.Info(); err == nil {
			size = info.Size()
		}
		fn(filepath.ToSlash(rel), size)
		return ctx.Err()
	})
}

// Local is true.
func (Dir) Local() bool { return true }

func (d Dir) String() string { return d.Root }

// Open opens the store opt names; an empty URL is the directory dir.
func Open(ctx context.Context, dir string, opt Options) (Store, error) {
	if opt.URL == "" {
		return Dir{Root: dir}, nil
	}
	return NewS3(ctx, opt)
}
