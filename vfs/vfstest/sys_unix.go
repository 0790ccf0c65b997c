//go:build unix

package vfstest

import (
	"errors"
	"os"
	"syscall"

	"github.com/rewind-cdp/rewind/vfs"
)

func statIno(fi os.FileInfo) (uint64, uint32) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino), uint32(st.Nlink)
	}
	return 0, 1
}

func errnoOf(err error) vfs.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return vfs.Errno(e)
	}
	return vfs.EIO
}
