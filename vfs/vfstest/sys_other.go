//go:build !unix

package vfstest

import (
	"os"

	"github.com/rewind-cdp/rewind/vfs"
)

func statIno(fi os.FileInfo) (uint64, uint32) { return 0, 1 }

func errnoOf(err error) vfs.Errno { return vfs.EIO }
