package fstest

import (
	"os/exec"
	"strings"
	"testing"
)

// MountCopy mounts img on mnt with the given command line (as root), copies
// src into it with `cp -a --sparse=always` (times, links, holes), and
// unmounts. A t.Cleanup unmounts and detaches any loop device left behind,
// also when the test fails half-way.
func MountCopy(t testing.TB, img, mnt, src string, mount ...string) {
	t.Helper()
	mounted := false
	t.Cleanup(func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
		detach(img)
	})
	Run(t, mount[0], mount[1:]...)
	mounted = true
	Run(t, "cp", "-a", "--sparse=always", src+"/.", mnt+"/")
	Run(t, "sync")
	Run(t, "umount", mnt)
	mounted = false
	detach(img)
}

// detach removes loop devices still backed by img.
func detach(img string) {
	out, err := exec.Command("losetup", "-j", img).Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(dev, "/dev/loop") {
			_ = exec.Command("losetup", "-d", dev).Run()
		}
	}
}
