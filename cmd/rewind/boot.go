//go:build !windows

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/vm"
)

// bootFlags are what boot and verify-boot share.
type bootFlags struct {
	dir, machine, volume, at string
	memory, cpus             int
}

func (f *bootFlags) add(c *cobra.Command) {
	addRepoFlag(c, &f.dir)
	c.Flags().StringVar(&f.machine, "machine", "", "machine name")
	c.Flags().StringVar(&f.volume, "volume", "", "volume name (the boot disk)")
	c.Flags().StringVar(&f.at, "at", "latest", "point to boot: a time, a relative time, latest, or a point id")
	c.Flags().IntVar(&f.memory, "memory", 1024, "memory of the VM in MiB")
	c.Flags().IntVar(&f.cpus, "cpus", 1, "virtual CPUs")
}

// bootSession is a point served over a unix socket with an overlay and a
// qemu booting from it.
type bootSession struct {
	repo   *repository.Repo
	point  catalog.Point
	dir    string // sockets and the overlay
	served *servedPoint
	stop   context.CancelFunc
	vm     *vm.Machine
}

func startBoot(ctx context.Context, f *bootFlags, opt vm.Options, watch bool) (*bootSession, error) {
	if f.memory < 64 || f.cpus < 1 {
		return nil, usagef("--memory must be at least 64 (MiB) and --cpus at least 1")
	}
	repo, _, p, err := openPointAt(ctx, f.dir, f.machine, f.volume, f.at)
	if err != nil {
		return nil, err
	}
	b := &bootSession{repo: repo, point: p}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	if err := needDisk(p, "booting"); err != nil {
		return nil, err
	}
	if b.dir, err = os.MkdirTemp("", "rewind-boot-"); err != nil {
		return nil, err
	}
	sock := filepath.Join(b.dir, "disk.sock")
	sctx, stop := context.WithCancel(context.Background())
	b.stop = stop
	if b.served, err = servePoint(sctx, repo, b.point, sock, true, b.dir); err != nil {
		return nil, err
	}
	opt.Drive = nbdURI(sock, "")
	opt.Dir = b.dir
	opt.MemoryMiB, opt.CPUs = f.memory, f.cpus
	if b.vm, err = vm.Start(ctx, opt, watch); err != nil {
		return nil, err
	}
	ok = true
	return b, nil
}

func (b *bootSession) close() {
	if b.vm != nil {
		b.vm.Stop()
	}
	if b.stop != nil {
		b.stop()
		b.served.Wait()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
	b.repo.Close()
}

func newBootCmd() *cobra.Command {
	var f bootFlags
	var vnc string
	var network bool
	c := &cobra.Command{
		Use:   "boot",
		Short: "Boot a VM straight from a volume at any point (instant recovery)",
		Long: `Start a virtual machine (qemu-system-x86_64; KVM when available, software
emulation otherwise) whose boot disk is the volume as it was at a point in
time, served from the backup over NBD without restoring it first. The VM's
writes go to a copy-on-write overlay that is deleted when it stops; the
repository never changes.

The serial console is a unix socket (the command prints how to attach to
it); --vnc shows the screen on a VNC display. The VM has no network unless
--network gives it qemu's user-mode NAT. The command runs until the VM powers
off or it is interrupted (Ctrl-C stops the VM).`,
		Example: `  rewind boot --machine web1 --volume root --at "2026-11-20 10:15" --vnc 127.0.0.1:5
  socat -,raw,echo=0 UNIX-CONNECT:/tmp/rewind-boot-123/serial.sock`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			b, err := startBoot(ctx, &f, vm.Options{VNC: vnc, Network: network}, false)
			if err != nil {
				return err
			}
			defer b.close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "booting %s/%s point %d (%s) in a VM, qemu pid %d\n", b.point.Machine, b.point.Volume, b.point.ID, pointTime(b.point.Time), b.vm.PID())
			fmt.Fprintf(out, "serial console: socat -,raw,echo=0 UNIX-CONNECT:%s\n", b.vm.Serial)
			if vnc != "" {
				fmt.Fprintf(out, "screen: VNC display %s\n", vnc)
			}
			fmt.Fprintln(out, "the VM's writes go to an overlay that is deleted when it stops; Ctrl-C stops it")
			select {
			case <-b.vm.Exited():
				fmt.Fprintln(out, "the VM stopped")
			case <-ctx.Done():
			}
			return nil
		},
	}
	f.add(c)
	c.Flags().StringVar(&vnc, "vnc", "", "VNC display for the screen, e.g. 127.0.0.1:5 (port 5905)")
	c.Flags().BoolVar(&network, "network", false, "give the VM user-mode networking (default: none)")
	return c
}

func newVerifyBootCmd() *cobra.Command {
	var f bootFlags
	var expect, screenshot string
	var timeout time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "verify-boot",
		Short: "Prove that a point boots: boot it in an isolated VM and watch its console",
		Long: `Boot the volume as it was at a point in time in an isolated virtual machine
(no network, writes to a throw-away overlay, the repository unchanged) and
watch its serial console. Success (exit 0) when the console prints --expect
within --timeout; otherwise a screenshot of the VM's screen is saved
(--screenshot) and the command fails (exit 1) with the console's last lines.

The guest must send its console to the first serial port (console=ttyS0 on
Linux) for --expect to see it; a guest that only draws on the screen can be
judged by the screenshot.`,
		Example: `  rewind verify-boot --machine web1 --volume root --expect "login:"
  rewind verify-boot --machine web1 --volume root --at -1d --timeout 5m --screenshot web1.png`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if expect == "" {
				return usagef("--expect must not be empty")
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive")
			}
			start := time.Now()
			b, err := startBoot(ctx, &f, vm.Options{}, true)
			if err != nil {
				return err
			}
			defer b.close()
			if screenshot == "" {
				screenshot = fmt.Sprintf("verify-boot-%s-%s-%d.png", b.point.Machine, b.point.Volume, b.point.ID)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "booting %s/%s point %d (%s); waiting up to %s for %q\n", b.point.Machine, b.point.Volume, b.point.ID, pointTime(b.point.Time), timeout, expect)
			wctx, cancel := context.WithTimeout(ctx, timeout)
			werr := b.vm.WaitFor(wctx, expect)
			cancel()
			el := time.Since(start)
			res := map[string]any{
				"point":  pointJSON{b.point.ID, b.point.Machine, b.point.Volume, pointTime(b.point.Time), b.point.Kind, b.point.Label, b.point.Size},
				"expect": expect, "booted": werr == nil, "seconds": el.Seconds(), "accelerator": map[bool]string{true: "kvm", false: "tcg"}[vm.KVM()],
			}
			if werr == nil {
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "booted: %s/%s point %d printed %q on its console after %s\n", b.point.Machine, b.point.Volume, b.point.ID, expect, el.Round(100*time.Millisecond))
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			why := fmt.Sprintf("no %q on the serial console within %s", expect, timeout)
			if errors.Is(werr, vm.ErrExited) {
				why = fmt.Sprintf("the VM stopped after %s without printing %q", el.Round(100*time.Millisecond), expect)
			}
			shot := ""
			select {
			case <-b.vm.Exited():
			default:
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := b.vm.Screendump(sctx, screenshot); err == nil {
					shot = screenshot
				} else {
					why += "; " + err.Error()
				}
				cancel()
			}
			res["why"], res["screenshot"], res["console_tail"] = why, shot, tail(b.vm.Console(), 10)
			if asJSON {
				writeJSON(cmd.OutOrStdout(), res)
			}
			msg := fmt.Sprintf("%s/%s point %d did not boot: %s", b.point.Machine, b.point.Volume, b.point.ID, why)
			if shot != "" {
				msg += "; screenshot saved to " + shot
			}
			if t := tail(b.vm.Console(), 5); t != "" && !asJSON {
				msg += "\nlast console lines:\n" + t
			}
			return errors.New(msg)
		},
	}
	f.add(c)
	c.Flags().StringVar(&expect, "expect", "login:", "text the console must print for the boot to count as a success")
	c.Flags().DurationVar(&timeout, "timeout", 180*time.Second, "how long to wait for --expect")
	c.Flags().StringVar(&screenshot, "screenshot", "", "where to save the screen on failure (default verify-boot-MACHINE-VOLUME-POINT.png)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}

// tail returns the last n non-empty lines of s, without control characters.
func tail(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || r >= ' ' && r != 0x7f {
			return r
		}
		return -1
	}, s)
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
