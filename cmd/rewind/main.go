// Command rewind is the one Rewind binary: backup server, agent, and every
// read, restore and recovery tool.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	// REWIND_CPUPROFILE=FILE writes a CPU profile of the whole command, for
	// `go tool pprof`.
	if p := os.Getenv("REWIND_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rewind: cpu profile: %v\n", err)
			os.Exit(exitFailure)
		}
		pprof.StartCPUProfile(f)
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if code != 0 {
		pprof.StopCPUProfile()
		os.Exit(code)
	}
}
