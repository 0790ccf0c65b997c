package agent

import (
	"bytes"
	"fmt"
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
