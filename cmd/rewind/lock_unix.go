//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockRepo takes the repository's writer lock, so only one server writes
// it; the lock goes with the process, however it ends.
func lockRepo(dir string) (func(), error) {
	p := filepath.Join(dir, "server.lock")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock repository: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("repository %s is in use by another rewind server", dir)
	}
	return func() { f.Close() }, nil
}
