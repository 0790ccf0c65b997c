// Package detect probes a volume's boot sector or superblock, opens it with
// the matching reader (NTFS, exFAT, XFS, ext2/3/4, FAT12/16/32, or the
// manifest of a directory volume) wrapped so
// that no reader panic escapes, and lists the volumes of a whole disk
// through its partition table.
package detect

import (
	"context"
	"fmt"
	"io"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
	"github.com/rewind-cdp/rewind/parsers/filesystem/exfat"
	"github.com/rewind-cdp/rewind/parsers/filesystem/ext4"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fat"
	"github.com/rewind-cdp/rewind/parsers/filesystem/ntfs"
	"github.com/rewind-cdp/rewind/parsers/filesystem/xfs"
	"github.com/rewind-cdp/rewind/parsers/partition"
)

// Detect opens the file system found in r (a volume, not a whole disk).
func Detect(ctx context.Context, r io.ReaderAt, size int64) (fs filesystem.FS, err error) {
	defer func() {
		if p := recover(); p != nil {
			fs, err = nil, &filesystem.Error{FS: "detect", Op: "probe", Off: 0, Err: fmt.Errorf("%w: %v", filesystem.ErrCorrupt, p)}
		}
	}()
	var f filesystem.FS
	switch {
	case dirvol.Probe(r, size):
		// A directory volume (rewind agent protect-dir): its manifest at
		// offset 0 lists the files of the sparse address space.
		f, err = dirvol.Open(ctx, r, size)
	case ntfs.Probe(r, size):
		f, err = ntfs.Open(ctx, r, size)
	case exfat.Probe(r, size):
		f, err = exfat.Open(ctx, r, size)
	case xfs.Probe(r, size):
		f, err = xfs.Open(ctx, r, size)
	case ext4.Probe(r, size):
		f, err = ext4.Open(ctx, r, size)
	case fat.Probe(r, size):
		f, err = fat.Open(ctx, r, size)
	default:
		return nil, &filesystem.Error{FS: "detect", Op: "probe", Off: 0, Err: filesystem.ErrUnknown}
	}
	if err != nil {
		return nil, err
	}
	return filesystem.Safe(f), nil
}

// Volume is one partition of a disk and its file system (nil with Err set
// when it could not be opened).
type Volume struct {
	Partition partition.Partition
	FS        filesystem.FS
	Err       error
}

// Volumes reads the partition table of a whole disk (or takes the disk as
// one volume when it has none) and opens every partition's file system.
func Volumes(ctx context.Context, r io.ReaderAt, size int64) ([]Volume, error) {
	parts, err := partition.Read(r, size)
	if err != nil {
		return nil, err
	}
	out := make([]Volume, 0, len(parts))
	for _, p := range parts {
		v := Volume{Partition: p}
		v.FS, v.Err = Detect(ctx, p.Section(r), p.Length)
		out = append(out, v)
	}
	return out, nil
}
