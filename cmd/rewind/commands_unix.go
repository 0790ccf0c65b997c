//go:build !windows

package main

import "github.com/spf13/cobra"

// platformCommands: the capture agent and bookmarks need the Linux block
// shim (FUSE, loop devices, FIFREEZE); boot and verify-boot run qemu in its
// own process group.
func platformCommands() []*cobra.Command {
	return []*cobra.Command{newAgentCmd(), newBookmarkCmd(), newBootCmd(), newVerifyBootCmd()}
}
