//go:build windows

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/windows"

	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/cgofs"
)

// On Windows the tree is served by WinFsp through cgofuse (vfs/cgofs),
// loaded at run time: the binary runs without WinFsp until `rewind mount`
// is used. The mount point is a free drive letter ("X:") or a directory
// that does not exist yet (WinFsp creates it).

// isDriveLetter reports whether s is "X:".
func isDriveLetter(s string) bool {
	return len(s) == 2 && s[1] == ':' && ('a' <= s[0]|0x20 && s[0]|0x20 <= 'z')
}

func checkMountPoint(mnt string) error {
	if isDriveLetter(mnt) {
		if _, err := os.Stat(mnt + `\`); err == nil {
			return usagef("drive %s is in use: choose a free drive letter", strings.ToUpper(mnt))
		}
		return nil
	}
	if _, err := os.Stat(mnt); err == nil {
		return usagef("mount point %s exists: on Windows give a free drive letter (X:) or a directory that does not exist yet", mnt)
	}
	if st, err := os.Stat(filepath.Dir(mnt)); err != nil || !st.IsDir() {
		return usagef("mount point %s: its parent directory does not exist", mnt)
	}
	return nil
}

// stopEventName names the event `rewind umount` sets to stop the mount
// serving mnt.
func stopEventName(mnt string) (*uint16, error) {
	key := strings.ToUpper(mnt)
	if !isDriveLetter(mnt) {
		abs, err := filepath.Abs(mnt)
		if err != nil {
			return nil, err
		}
		key = strings.ToUpper(abs)
	}
	r := strings.NewReplacer(`\`, "_", ":", "_", "/", "_")
	return windows.UTF16PtrFromString(`Local\rewind-mount-` + r.Replace(key))
}

// serveMount mounts t at mnt and serves it until ctx ends (Ctrl-C) or
// `rewind umount MNT` sets the mount's stop event.
func serveMount(ctx context.Context, t *vfs.FS, mnt string, mo mountOptions, mounted func()) error {
	name, err := stopEventName(mnt)
	if err != nil {
		return err
	}
	ev, err := windows.CreateEvent(nil, 1, 0, name)
	if err != nil {
		return fmt.Errorf("mount %s: stop event: %w", mnt, err)
	}
	defer windows.CloseHandle(ev)
	srv, err := cgofs.Mount(t, mnt, cgofs.Options{Writable: mo.writable, Debug: mo.debug})
	if err != nil {
		return err
	}
	mounted()
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	stop := make(chan struct{})
	go func() {
		if ev, err := windows.WaitForSingleObject(ev, windows.INFINITE); err == nil && ev == windows.WAIT_OBJECT_0 {
			close(stop)
		}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	case <-stop:
	}
	return srv.Unmount()
}

// unmount asks the rewind mount serving mnt to unmount (it waits for its
// files to close) by setting its stop event.
func unmount(mnt string) error {
	name, err := stopEventName(mnt)
	if err != nil {
		return err
	}
	ev, err := windows.OpenEvent(windows.EVENT_MODIFY_STATE, false, name)
	if err != nil {
		if errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
			return fmt.Errorf("%s is not mounted by rewind mount", mnt)
		}
		return fmt.Errorf("unmount %s: %w", mnt, err)
	}
	defer windows.CloseHandle(ev)
	if err := windows.SetEvent(ev); err != nil {
		return fmt.Errorf("unmount %s: %w", mnt, err)
	}
	return nil
}
