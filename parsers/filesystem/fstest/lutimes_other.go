//go:build !linux

package fstest

import "syscall"

func lutimes(string, []syscall.Timespec) error { return nil }

func inodeOf(fi interface{ Sys() any }) (ino uint64, nlink uint64) { return 0, 0 }
