package ingest

import (
	"errors"
	"io"
	"syscall"

	"golang.org/x/sys/unix"
)

// dataRuns returns the ranges of [off, off+length) that may hold data,
// in order, as [start, end) pairs: all of it, unless src is a file whose
// holes the file system reports (SEEK_DATA/SEEK_HOLE). A hole reads as
// zeros; a file system that cannot tell reports everything as data.
func dataRuns(src io.ReaderAt, off, length int64) [][2]int64 {
	all := [][2]int64{{off, off + length}}
	f, ok := src.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return all
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return all
	}
	var runs [][2]int64
	var failed bool
	err = rc.Control(func(fd uintptr) { runs, failed = seekRuns(int(fd), off, off+length) })
	if err != nil || failed {
		return all
	}
	return runs
}

// seekRuns walks the data regions of fd between off and end; failed means
// the file system could not say.
func seekRuns(fd int, off, end int64) (runs [][2]int64, failed bool) {
	for pos := off; pos < end; {
		d, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole from pos to the end of the file
		}
		if err != nil || d < pos {
			return nil, true
		}
		if d >= end {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil || h <= d {
			return nil, true
		}
		runs = append(runs, [2]int64{d, min(h, end)})
		pos = h
	}
	return runs, false
}
