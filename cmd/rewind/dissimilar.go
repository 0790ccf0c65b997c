package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/parsers/partition"
	"github.com/rewind-cdp/rewind/repository"
)

// deviceSize returns the size of path when it is a block device.
func deviceSize(path string) (int64, bool, error) {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&fs.ModeDevice == 0 {
		return 0, false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, true, fmt.Errorf("open target device %s: %w", path, err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, true, fmt.Errorf("size of target device %s: %w", path, err)
	}
	return n, true, nil
}

// dissimilarResult says what a restore to a device of another size did.
type dissimilarResult struct {
	Rollback *repository.RollbackStats
	Resized  partition.Resized
	Grown    string // what was grown, e.g. "partition 2 and its ext4 file system"
}

// restoreDissimilar restores point p to a block device of devSize bytes,
// which differs from the volume's size. A larger device gets the volume at
// its start and the partition table adapted (GPT backup moved to the new
// end); with grow, the last partition and its file system are extended. A
// smaller device is refused unless every partition fits; then everything
// past the device's end (free space and the old GPT backup) is left out.
func restoreDissimilar(ctx context.Context, repo *repository.Repo, p catalog.Point, dev string, devSize int64, grow, full bool, progress func(int64)) (dissimilarResult, error) {
	var res dissimilarResult
	src := repo.OpenPoint(p)
	if devSize < p.Size {
		if grow {
			return res, usagef("--grow needs a target larger than the volume (%s); %s holds %s", humanBytes(p.Size), dev, humanBytes(devSize))
		}
		if _, err := partition.FitsIn(src, p.Size, devSize); err != nil {
			return res, fmt.Errorf("the volume (%s) does not fit %s (%s): %w", humanBytes(p.Size), dev, humanBytes(devSize), err)
		}
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return res, fmt.Errorf("open target device %s: %w", dev, err)
	}
	defer f.Close()
	if devSize > p.Size && !full {
		st, err := repo.Rollback(ctx, p, f, repository.RollbackOptions{Progress: progress})
		if err != nil {
			return res, err
		}
		res.Rollback = &st
	} else if err := repo.Restore(ctx, p, clipWriter{f, devSize}, repository.RestoreOptions{Progress: progress}); err != nil {
		return res, err
	}
	if res.Resized, err = partition.Resize(f, p.Size, devSize, grow); err != nil {
		return res, fmt.Errorf("adapt the partition table to %s: %w", humanBytes(devSize), err)
	}
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("sync %s: %w", dev, err)
	}
	if !grow {
		return res, nil
	}
	off, length, what := int64(0), devSize, "the volume's"
	if g := res.Resized.Grown; g != nil {
		off, length, what = g.Start, g.Length, fmt.Sprintf("partition %d and its", g.Index)
	} else if res.Resized.Scheme != partition.SchemeNone {
		return res, nil // the last partition already ends at the disk's end
	}
	fsType, err := growFS(ctx, dev, off, length)
	if err != nil {
		return res, fmt.Errorf("grow the file system on %s at byte %d: %w", dev, off, err)
	}
	res.Grown = what + " " + fsType + " file system"
	return res, nil
}

// clipWriter drops writes past limit: what lies there was checked to be
// free space or a partition table copy that is rewritten afterwards.
type clipWriter struct {
	w     io.WriterAt
	limit int64
}

func (c clipWriter) WriteAt(p []byte, off int64) (int, error) {
	if off >= c.limit {
		return len(p), nil
	}
	n := int(min(int64(len(p)), c.limit-off))
	if _, err := c.w.WriteAt(p[:n], off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// growFS extends the file system at [off, off+length) of dev to fill the
// range, with the file system's own tool: resize2fs, ntfsresize or
// xfs_growfs. It returns the file system type.
func growFS(ctx context.Context, dev string, off, length int64) (string, error) {
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", "--offset", fmt.Sprint(off), "--sizelimit", fmt.Sprint(length), dev).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup: %v: %s", err, strings.TrimSpace(string(out)))
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "--detach", loop).Run()
	typ, _ := exec.CommandContext(ctx, "blkid", "-p", "-s", "TYPE", "-o", "value", loop).Output()
	fsType := strings.TrimSpace(string(typ))
	run := func(stdin string, name string, args ...string) error {
		c := exec.CommandContext(ctx, name, args...)
		c.Stdin = strings.NewReader(stdin)
		if out, err := c.CombinedOutput(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok && name == "e2fsck" && ee.ExitCode() == 1 {
				return nil // errors corrected
			}
			return fmt.Errorf("%s: %v: %s", name, err, lastLines(string(out), 3))
		}
		return nil
	}
	switch fsType {
	case "ext2", "ext3", "ext4":
		if err := run("", "e2fsck", "-f", "-y", loop); err != nil {
			return fsType, err
		}
		return fsType, run("", "resize2fs", loop)
	case "ntfs":
		return fsType, run("y\n", "ntfsresize", "--force", "--no-progress-bar", loop)
	case "xfs":
		mnt, err := os.MkdirTemp("", "rewind-grow-")
		if err != nil {
			return fsType, err
		}
		defer os.Remove(mnt)
		if err := run("", "mount", "-t", "xfs", loop, mnt); err != nil {
			return fsType, err
		}
		gerr := run("", "xfs_growfs", mnt)
		if err := run("", "umount", mnt); err != nil && gerr == nil {
			gerr = err
		}
		return fsType, gerr
	case "":
		return "", fmt.Errorf("no file system found to grow")
	}
	return fsType, fmt.Errorf("growing a %s file system is not supported (ext2/3/4, NTFS and XFS are)", fsType)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}
