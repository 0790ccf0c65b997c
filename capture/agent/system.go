package agent

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
)

// run runs a system tool and returns its trimmed output, or an error that
// carries what it printed.
func run(name string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// attachLoop attaches a new loop device to file and returns its path.
func attachLoop(file string) (string, error) { return run("losetup", "--find", "--show", file) }

// detachLoop detaches a loop device.
func detachLoop(dev string) error {
	_, err := run("losetup", "--detach", dev)
	return err
}

func mountFS(dev, dir string) error {
	_, err := run("mount", dev, dir)
	return err
}

func unmountFS(dir string) error {
	_, err := run("umount", dir)
	return err
}

// clearStale removes what a killed agent left behind at its shim mount
// point: loop devices still attached to the dead volume file and the dead
// FUSE mount itself.
func clearStale(mnt string) {
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if !strings.Contains(string(mounts), " "+mnt+" ") {
		return
	}
	if out, err := run("losetup", "--noheadings", "--output", "NAME,BACK-FILE", "--list"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && strings.HasPrefix(f[1], mnt+"/") {
				detachLoop(f[0])
			}
		}
	}
	if _, err := run("umount", "-l", mnt); err == nil {
		slog.Warn("cleared the block shim left mounted by an agent that did not stop", "mount", mnt)
	}
}
