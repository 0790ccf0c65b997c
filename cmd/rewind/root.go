package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes: 0 success, 1 a failure while doing the work, 2 a usage error.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error that is the caller's fault (bad flag, bad
// argument, unparsable value); it exits with status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usage error (exit status 2).
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// subcommands lists every top-level command. Each lives in its own file;
// platformCommands (commands_*.go) adds those that exist on one platform only.
func subcommands() []*cobra.Command {
	return append([]*cobra.Command{
		newServerCmd(),
		newMachineCmd(),
		newMachinesCmd(),
		newPeerCmd(),
		newReplicateCmd(),
		newBackupCmd(),
		newPointsCmd(),
		newRestoreCmd(),
		newExportCmd(),
		newServeNBDCmd(),
		newEstimateCmd(),
		newTapeCmd(),
		newRetentionCmd(),
		newPruneCmd(),
		newMountCmd(),
		newUmountCmd(),
		newCheckCmd(),
		newDemoCmd(),
		newESECmd(),
		newExchangeCmd(),
		newSQLCmd(),
	}, platformCommands()...)
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "rewind",
		Short: "Continuous data protection: every disk block, any moment, back in seconds",
		Long: `Rewind captures every changed disk block of protected servers, keeps them
de-duplicated and compressed in a block repository cataloged in SQLite, and gives
back any volume exactly as it was at any stored moment.

Start a backup server, register a machine, back a volume up, and restore it:

  rewind server &                       # repository in ~/.local/share/rewind
  TOKEN=$(rewind machine add web1)
  rewind backup --token $TOKEN --ca ~/.local/share/rewind/server.crt \
      --machine web1 --volume root /dev/sdb
  rewind points --machine web1
  rewind restore --machine web1 --volume root --at -15m --to restored.img

Or run the whole sequence on a generated image: rewind demo`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	addS3Flags(root)
	for _, c := range subcommands() {
		root.AddCommand(c)
	}
	return root
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel()})))
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "rewind: %s\n", oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || isCobraUsageError(err) {
		return exitUsage
	}
	return exitFailure
}

// isCobraUsageError recognises the argument errors cobra builds itself
// (unknown command, wrong number of arguments, missing required flag).
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "requires at most", "required flag", "unknown flag", "unknown shorthand", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func logLevel() slog.Level {
	if os.Getenv("REWIND_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// writeJSON prints v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// args wraps a cobra positional-argument validator so that its failures are
// usage errors.
func args(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := v(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}
