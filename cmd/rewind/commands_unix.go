//go:build !windows

package main

import "github.com/spf13/cobra"

// platformCommands: the capture agent and bookmarks need the Linux block
// shim (FUSE, loop devices, FIFREEZE).
func platformCommands() []*cobra.Command {
	return []*cobra.Command{newAgentCmd(), newBookmarkCmd()}
}
