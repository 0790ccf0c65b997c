package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/fusefs"
)

// serveMount mounts t at dir and serves it until ctx ends (SIGINT,
// SIGTERM) or the file system is unmounted from outside.
func serveMount(ctx context.Context, t *vfs.FS, dir string, mo mountOptions, mounted func()) error {
	srv, err := fusefs.Mount(t, dir, fusefs.Options{AllowOther: mo.allowOther, Writable: mo.writable, Debug: mo.debug})
	if err != nil {
		return err
	}
	mounted()
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	if err := srv.Unmount(); err != nil {
		return err
	}
	<-done
	return nil
}

// checkMountPoint: on Linux the mount point is an existing directory.
func checkMountPoint(mnt string) error {
	if st, err := os.Stat(mnt); err != nil || !st.IsDir() {
		return usagef("mount point %s: not a directory", mnt)
	}
	return nil
}

// unmount unmounts dir: directly as root, else with fusermount3/fusermount.
func unmount(dir string) error {
	err := syscall.Unmount(dir, 0)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("%s is not mounted", dir)
	}
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("unmount %s: files in it are in use", dir)
	}
	for _, prog := range []string{"fusermount3", "fusermount"} {
		if p, lerr := exec.LookPath(prog); lerr == nil {
			out, ferr := exec.Command(p, "-u", dir).CombinedOutput()
			if ferr != nil {
				return fmt.Errorf("unmount %s: %s", dir, out)
			}
			return nil
		}
	}
	return fmt.Errorf("unmount %s: %w", dir, err)
}
