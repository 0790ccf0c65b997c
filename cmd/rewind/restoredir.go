package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
)

// dirRestore counts what a directory restore wrote.
type dirRestore struct {
	Dirs, Files, Symlinks, Hardlinks int
	Bytes                            int64
}

// dirBytes is the data a restore of f writes (each hard-linked file once).
func dirBytes(f *dirvol.FS) int64 {
	seen := map[int64]bool{}
	var n int64
	for _, e := range f.Manifest().Entries {
		if e.Type == dirvol.File && !seen[e.Slot] {
			seen[e.Slot] = true
			n += e.Size
		}
	}
	return n
}

// restoreDir writes the directory volume f into dst: every directory, file (zero blocks left as holes), hard link and
// symlink, then owners (when root), modes and mtimes, directories last and
// deepest first so that writing into them does not change their mtimes.
func restoreDir(ctx context.Context, f *dirvol.FS, dst string, force bool, progress func(int64)) (dirRestore, error) {
	var res dirRestore
	if err := prepareDirTarget(dst, force); err != nil {
		return res, err
	}
	m := f.Manifest()
	ents := append([]dirvol.Entry(nil), m.Entries...)
	// A parent's path is a prefix of its children's: sorting puts it first.
	sort.Slice(ents, func(i, j int) bool { return ents[i].Path < ents[j].Path })
	target := func(e dirvol.Entry) string {
		if e.Path == "" {
			return dst
		}
		return filepath.Join(dst, filepath.FromSlash(e.Path))
	}
	bySlot := map[int64]string{}
	buf := make([]byte, 1<<20)
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		p := target(e)
		switch e.Type {
		case dirvol.Dir:
			if err := os.Mkdir(p, 0o700); err != nil && !(errors.Is(err, fs.ErrExist) && isDir(p)) {
				if !force {
					return res, fmt.Errorf("restore %s: %w", p, err)
				}
				os.RemoveAll(p)
				if err := os.Mkdir(p, 0o700); err != nil {
					return res, fmt.Errorf("restore %s: %w", p, err)
				}
			}
			res.Dirs++
		case dirvol.Symlink:
			removeForce(p, force)
			if err := os.Symlink(e.Target, p); err != nil {
				return res, fmt.Errorf("restore symlink %s: %w", p, err)
			}
			res.Symlinks++
		case dirvol.File:
			removeForce(p, force)
			if first, ok := bySlot[e.Slot]; ok {
				if err := os.Link(first, p); err != nil {
					return res, fmt.Errorf("restore hard link %s to %s: %w", p, first, err)
				}
				res.Hardlinks++
				continue
			}
			bySlot[e.Slot] = p
			n, err := restoreFile(ctx, f, e, p, buf, progress)
			if err != nil {
				return res, err
			}
			res.Files++
			res.Bytes += n
		}
	}
	// Attributes: files and symlinks, then directories deepest first.
	for i := len(ents) - 1; i >= 0; i-- {
		e := ents[i]
		p := target(e)
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, int(e.UID), int(e.GID)); err != nil {
				return res, fmt.Errorf("restore owner of %s: %w", p, err)
			}
		}
		if e.Type != dirvol.Symlink {
			if err := os.Chmod(p, dirvol.FileMode(e).Perm()|dirvol.FileMode(e)&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return res, fmt.Errorf("restore mode of %s: %w", p, err)
			}
		}
		if err := lutimes(p, e.MtimeTime()); err != nil {
			return res, fmt.Errorf("restore mtime of %s: %w", p, err)
		}
	}
	return res, nil
}

// restoreFile writes one file, leaving all-zero 64 KiB pieces as holes.
func restoreFile(ctx context.Context, f *dirvol.FS, e dirvol.Entry, p string, buf []byte, progress func(int64)) (int64, error) {
	src, err := f.Open(ctx, e.Path)
	if err != nil {
		return 0, err
	}
	out, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, fmt.Errorf("restore %s: %w", p, err)
	}
	const piece = 64 << 10
	var off int64
	for off < e.Size {
		n := int(min(int64(len(buf)), e.Size-off))
		got, err := src.ReadAtContext(ctx, buf[:n], off)
		if got < n {
			out.Close()
			return off, fmt.Errorf("restore %s: %w", p, err)
		}
		for i := 0; i < n; i += piece {
			b := buf[i:min(i+piece, n)]
			if allZero(b) {
				continue
			}
			if _, err := out.WriteAt(b, off+int64(i)); err != nil {
				out.Close()
				return off, fmt.Errorf("restore %s: %w", p, err)
			}
		}
		off += int64(n)
		if progress != nil {
			progress(int64(n))
		}
	}
	if err := out.Truncate(e.Size); err != nil {
		out.Close()
		return off, fmt.Errorf("restore %s: %w", p, err)
	}
	if err := out.Close(); err != nil {
		return off, fmt.Errorf("restore %s: %w", p, err)
	}
	return e.Size, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func isDir(p string) bool {
	st, err := os.Lstat(p)
	return err == nil && st.IsDir()
}

// removeForce clears the way for an entry when restoring over an existing
// tree (--force).
func removeForce(p string, force bool) {
	if force {
		os.RemoveAll(p)
	}
}

// prepareDirTarget makes dst, or checks that it is an empty directory
// (any directory with force).
func prepareDirTarget(dst string, force bool) error {
	st, err := os.Stat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return os.MkdirAll(dst, 0o700)
	case err != nil:
		return fmt.Errorf("target %s: %w", dst, err)
	case !st.IsDir():
		return fmt.Errorf("target %s is not a directory", dst)
	}
	d, err := os.Open(dst)
	if err != nil {
		return fmt.Errorf("target %s: %w", dst, err)
	}
	names, _ := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 && !force {
		return fmt.Errorf("target %s is not empty; pass --force to restore into it (entries of the volume replace what is there)", dst)
	}
	return nil
}
