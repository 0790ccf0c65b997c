package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/nbd"
	"github.com/rewind-cdp/rewind/overlay"
	"github.com/rewind-cdp/rewind/repository"
)

// pointBackend serves a point in time over NBD: read-only, or writable
// through a copy-on-write overlay whose scratch file is the only thing
// written.
type pointBackend struct {
	src  overlay.Base
	ov   *overlay.Overlay // nil: read-only
	size int64
}

func (b *pointBackend) Size() int64    { return b.size }
func (b *pointBackend) ReadOnly() bool { return b.ov == nil }

func (b *pointBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	var n int
	var err error
	if b.ov != nil {
		n, err = b.ov.ReadAtContext(ctx, p, off)
	} else {
		n, err = b.src.ReadAtContext(ctx, p, off)
	}
	if n == len(p) && err == io.EOF {
		err = nil
	}
	return err
}

func (b *pointBackend) WriteAt(ctx context.Context, p []byte, off int64) error {
	_, err := b.ov.WriteAtContext(ctx, p, off)
	return err
}

// Trim leaves the data in place: NBD lets a server ignore trims.
func (b *pointBackend) Trim(context.Context, int64, int64) error { return nil }

func (b *pointBackend) Zero(ctx context.Context, off, n int64) error { return b.ov.Zero(ctx, off, n) }

// Flush has nothing to make durable: the overlay is scratch space.
func (b *pointBackend) Flush(context.Context) error { return nil }

// servedPoint is a point served over NBD until its context ends.
type servedPoint struct {
	Point   catalog.Point
	Export  string
	backend *pointBackend
	done    chan error
}

// servePoint serves p on listen ("host:port" or a unix socket path) with
// an overlay in scratchDir when writable.
func servePoint(ctx context.Context, repo *repository.Repo, p catalog.Point, listen string, writable bool, scratchDir string) (*servedPoint, error) {
	b := &pointBackend{src: repo.OpenPoint(p), size: p.Size}
	if writable {
		ov, err := overlay.New(b.src, p.Size, filepath.Join(scratchDir, fmt.Sprintf("overlay-%d.img", p.ID)))
		if err != nil {
			return nil, err
		}
		b.ov = ov
	}
	l, err := nbd.Listen(listen)
	if err != nil {
		if b.ov != nil {
			b.ov.Close()
		}
		return nil, fmt.Errorf("listen on %s: %w", listen, err)
	}
	name := p.Machine + "/" + p.Volume
	srv := nbd.NewServer(slog.Default(), nbd.Export{Name: name, Description: fmt.Sprintf("%s point %d (%s)", name, p.ID, pointTime(p.Time)), Backend: b})
	sp := &servedPoint{Point: p, Export: name, backend: b, done: make(chan error, 1)}
	go func() {
		err := srv.Serve(ctx, l)
		if b.ov != nil {
			if cerr := b.ov.Close(); err == nil {
				err = cerr
			}
		}
		sp.done <- err
	}()
	return sp, nil
}

// Wait waits until serving has stopped (its context ended) and the overlay
// is removed.
func (sp *servedPoint) Wait() error { return <-sp.done }

func newServeNBDCmd() *cobra.Command {
	var dir, machine, volume, at, listen, scratch string
	var writable bool
	c := &cobra.Command{
		Use:   "serve-nbd",
		Short: "Serve a volume at any point over NBD, for instant recovery in any hypervisor",
		Long: `Serve a volume as it was at a point in time as a Network Block Device, at
once, without restoring it first: qemu, libvirt/KVM, Proxmox or nbd-client can
attach it and a VM can boot from it while the data is read from the backup on
demand. Every block is checked against its content hash as it is read.

Read-only by default. With --writable the disk accepts writes into a
copy-on-write overlay, a scratch file in --scratch (default: a new temporary
directory) that is deleted when serving stops; the repository never changes.

The export is named MACHINE/VOLUME; clients asking for the default export
get it too. --listen takes host:port or the path of a unix socket. Serving
stops on Ctrl-C or SIGTERM.`,
		Example: `  rewind serve-nbd --machine web1 --volume root --at -1h
  qemu-system-x86_64 -m 2048 -drive file=nbd://127.0.0.1:10809,format=raw,if=virtio
  rewind serve-nbd --machine web1 --volume root --writable --listen /run/rewind-web1.sock`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			repo, _, p, err := openPointAt(ctx, dir, machine, volume, at)
			if err != nil {
				return err
			}
			defer repo.Close()
			if err := needDisk(p, "serve-nbd"); err != nil {
				return err
			}
			if writable && scratch == "" {
				if scratch, err = os.MkdirTemp("", "rewind-nbd-"); err != nil {
					return err
				}
				defer os.RemoveAll(scratch)
			}
			sp, err := servePoint(ctx, repo, p, listen, writable, scratch)
			if err != nil {
				return err
			}
			mode := "read-only"
			if writable {
				mode = "writable (overlay in " + scratch + ")"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "serving %s point %d (%s, %s), %s, at %s\n", sp.Export, p.ID, pointTime(p.Time), humanBytes(p.Size), mode, nbdURI(listen, ""))
			return sp.Wait()
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&machine, "machine", "", "machine name")
	c.Flags().StringVar(&volume, "volume", "", "volume name")
	c.Flags().StringVar(&at, "at", "latest", "point to serve: a time, a relative time, latest, or a point id")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:10809", "address (host:port) or unix socket path to listen on")
	c.Flags().BoolVar(&writable, "writable", false, "accept writes into a copy-on-write overlay (the repository never changes)")
	c.Flags().StringVar(&scratch, "scratch", "", "directory of the overlay's scratch file (default: a new temporary directory)")
	return c
}

// nbdURI is the URI qemu uses for an export at listen (a unix socket when
// it has a slash or a unix: prefix, as nbd.Listen decides).
func nbdURI(listen, export string) string {
	if path, ok := strings.CutPrefix(listen, "unix:"); ok || strings.Contains(listen, "/") {
		return "nbd+unix:///" + export + "?socket=" + path
	}
	return "nbd://" + listen + "/" + export
}
