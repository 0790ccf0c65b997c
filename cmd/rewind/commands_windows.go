//go:build windows

package main

import "github.com/spf13/cobra"

// platformCommands: on Windows the capture agent (which needs the Linux
// block shim) and bookmarks are not built.
func platformCommands() []*cobra.Command {
	return nil
}
