package nbd

import (
	"os"
	"syscall"
)

// punchHole deallocates [off, off+n) of f, keeping its size.
func punchHole(f *os.File, off, n int64) error {
	const keepSize, punchHole = 0x01, 0x02
	return syscall.Fallocate(int(f.Fd()), keepSize|punchHole, off, n)
}
