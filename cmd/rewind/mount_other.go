//go:build !linux && !windows

package main

import (
	"context"
	"fmt"
	"runtime"

	"github.com/rewind-cdp/rewind/vfs"
)

func serveMount(ctx context.Context, t *vfs.FS, dir string, mo mountOptions, mounted func()) error {
	return fmt.Errorf("rewind mount is not available on %s yet", runtime.GOOS)
}

func checkMountPoint(mnt string) error { return nil }

func unmount(dir string) error {
	return fmt.Errorf("rewind umount is not available on %s yet", runtime.GOOS)
}
