package fstest

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func lutimes(p string, ts []syscall.Timespec) error {
	u := []unix.Timespec{{Sec: ts[0].Sec, Nsec: ts[0].Nsec}, {Sec: ts[1].Sec, Nsec: ts[1].Nsec}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, u, unix.AT_SYMLINK_NOFOLLOW)
}

func inodeOf(fi interface{ Sys() any }) (ino uint64, nlink uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino, uint64(st.Nlink)
	}
	return 0, 0
}
