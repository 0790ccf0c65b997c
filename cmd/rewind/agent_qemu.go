//go:build !windows

package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/capture/agent"
)

func newAgentProtectQemuCmd() *cobra.Command {
	var cf clientFlags
	var vf volumeFlags
	var qmpSock, node, qemuNBD string
	var bitmapPeriod time.Duration
	c := &cobra.Command{
		Use:   "protect-qemu --qmp SOCKET --node NODE",
		Short: "Protect a disk of a running QEMU/KVM virtual machine through a write-blocking mirror",
		Long: `Protect one disk of a running QEMU virtual machine continuously, with nothing
installed in the guest. The agent serves an NBD export of its own that journals
every write, write-zeroes, discard and flush it receives, adds it to QEMU as a
block node and starts

  blockdev-mirror sync=none copy-mode=write-blocking

from the disk's node into it: QEMU writes the disk, then the agent, and only
then completes the guest's write, so every change is journaled before the
guest sees it done. The journal is shipped to the server exactly as
"rewind agent protect" ships it: changes are cut into crash-consistent points
within half a second (QEMU does not pass the guest's flushes to a mirror
target, so points come from cuts, not flushes). The first run sends the whole
disk, read through a read-only NBD export of the node in QEMU, while new
writes are already journaled. Prints the agent's NBD socket on stdout once the
mirror runs.

A dirty bitmap on the disk (block-dirty-bitmap-add; persistent, kept in the
image, when the node is qcow2) records the same writes. If the mirror job ends
(cancelled, or an error), the agent opens a gap, restarts the mirror, reads
the blocks the bitmap marks through QEMU's NBD export of the bitmap and
re-sends those that changed; the gap is closed once they are on the server.
The bitmap is renewed every --bitmap-period (the previous one is kept too), so
a resynchronisation reads the blocks written in the last one or two periods.
When the agent stops (Ctrl-C, SIGTERM) it ends the mirror and leaves the
bitmap recording, so the next run re-sends only what changed meanwhile. After
an unclean stop, or if the bitmap is gone (a raw disk and QEMU restarted), it
compares the whole disk with the server.

The agent talks to QEMU's QMP socket (e.g. -qmp unix:/run/vm1.qmp,server=on,wait=off);
a QMP socket serves one client at a time, so give the agent a monitor of its
own (QEMU accepts several -qmp options; libvirt keeps its own).
It starts an NBD server inside QEMU (nbd-server-start) in its spool directory;
if QEMU already runs one, give its unix socket with --qemu-nbd. NODE is the
node name of the disk as the guest's device sees it (query-named-block-nodes);
clients attached to that node after the agent started the mirror bypass it.
Needs neither root nor FUSE, only access to the two sockets.`,
		Example: `  qemu-system-x86_64 ... -blockdev driver=qcow2,node-name=disk0,file.driver=file,file.filename=/vm/vm1.qcow2 \
      -device virtio-blk,drive=disk0 -qmp unix:/run/vm1.qmp,server=on,wait=off
  rewind agent protect-qemu --token "$TOKEN" --machine vm1 --volume disk0 --qmp /run/vm1.qmp --node disk0
  rewind agent status --spool /var/lib/rewind/agent/vm1-disk0`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := vf.check(); err != nil {
				return err
			}
			if qmpSock == "" || node == "" {
				return usagef("--qmp SOCKET and --node NODE are required")
			}
			if bitmapPeriod < time.Second {
				return usagef("--bitmap-period must be at least 1s")
			}
			if _, err := os.Stat(qmpSock); err != nil {
				return fmt.Errorf("QMP socket: %w", err)
			}
			client, err := cf.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			cfg := vf.config(client, "qemu:"+node)
			q := agent.QemuConfig{QMP: qmpSock, Node: node, QemuNBD: qemuNBD, BitmapPeriod: bitmapPeriod}
			return agent.RunQemu(cmd.Context(), cfg, q, func(target string) { fmt.Fprintln(out, target) })
		},
	}
	cf.add(c)
	vf.add(c, "volume name")
	c.Flags().StringVar(&qmpSock, "qmp", "", "QEMU's QMP unix socket")
	c.Flags().StringVar(&node, "node", "", "block node name of the disk to protect")
	c.Flags().StringVar(&qemuNBD, "qemu-nbd", "", "unix socket of the NBD server QEMU already runs (default: the agent starts one)")
	c.Flags().DurationVar(&bitmapPeriod, "bitmap-period", 10*time.Minute, "renew the dirty bitmap this often")
	return c
}
