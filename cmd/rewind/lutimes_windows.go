//go:build windows

package main

import (
	"os"
	"time"
)

// lutimes sets the times of p to t (Windows: symlinks are followed).
func lutimes(p string, t time.Time) error { return os.Chtimes(p, t, t) }
