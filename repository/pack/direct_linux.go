package pack

import (
	"os"
	"syscall"
)

// openDirect opens path for direct (O_DIRECT) writes, or returns nil where
// the file system does not support them.
func openDirect(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return nil
	}
	return f
}
