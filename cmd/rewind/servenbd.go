package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/nbd"
	"github.com/rewind-cdp/rewind/repository"
)

// pointBackend serves a point read-only.
type pointBackend struct {
	pr *repository.PointReader
}

func (b pointBackend) Size() int64    { return b.pr.Size() }
func (b pointBackend) ReadOnly() bool { return true }
func (b pointBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	n, err := b.pr.ReadAtContext(ctx, p, off)
	if n == len(p) {
		return nil
	}
	return err
}
func (pointBackend) WriteAt(context.Context, []byte, int64) error { return nbd.ErrReadOnly }
func (pointBackend) Trim(context.Context, int64, int64) error     { return nbd.ErrReadOnly }
func (pointBackend) Zero(context.Context, int64, int64) error     { return nbd.ErrReadOnly }
func (pointBackend) Flush(context.Context) error                  { return nil }

// readerAt adapts a context-taking reader to io.ReaderAt for the overlay.
type readerAt struct {
	ctx context.Context
	pr  *repository.PointReader
}

func (r readerAt) ReadAt(p []byte, off int64) (int, error) { return r.pr.ReadAtContext(r.ctx, p, off) }

func newServeNBDCmd() *cobra.Command {
	var dir, machine, volume, at, listen, name string
	var writable bool
	c := &cobra.Command{
		Use:   "serve-nbd",
		Short: "Serve a volume as it was at any point over NBD, read-only or copy-on-write",
		Long: `Serve a volume as it was at a point in time as a Network Block Device export,
straight from the repository (nothing is restored first): any NBD client can
read it — qemu-img convert/compare, qemu-io, a VM's -blockdev driver=nbd, or
nbd-client on a kernel with the nbd module. Every block is checked against its
content hash as it is read.

The export is read-only. With --writable, writes go to a copy-on-write
overlay in a scratch file under $TMPDIR (deleted when the command stops), so
a VM can boot from the point or a database can recover in place without
changing the backup.

--listen takes host:port (port 0 picks a free one) or a unix socket path.
Prints the export's URL alone on stdout once it listens, then serves until
Ctrl-C or SIGTERM. --at takes the forms of "rewind restore --at".`,
		Example: `  rewind serve-nbd --machine web1 --volume root --at -15m
  qemu-img convert -O qcow2 nbd://127.0.0.1:10809 root-15m.qcow2
  rewind serve-nbd --machine vm1 --volume disk0 --at latest --writable --listen /run/vm1-rescue.sock
  qemu-system-x86_64 ... -blockdev driver=nbd,node-name=d,server.type=unix,server.path=/run/vm1-rescue.sock`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if _, err := parseAtSyntax(at); err != nil {
				return err
			}
			repo, err := openRepo(ctx, dir)
			if err != nil {
				return err
			}
			defer repo.Close()
			vol, err := lookupVolume(ctx, repo, machine, volume)
			if err != nil {
				return err
			}
			p, err := resolveAt(ctx, repo.Catalog, vol, at, time.Now())
			if err != nil {
				return err
			}
			pr := repo.OpenPoint(p)
			var backend nbd.Backend = pointBackend{pr}
			if writable {
				scratch, err := os.CreateTemp("", "rewind-overlay-*")
				if err != nil {
					return fmt.Errorf("scratch file for the overlay: %w", err)
				}
				os.Remove(scratch.Name()) // gone with the last descriptor
				defer scratch.Close()
				backend = nbd.NewOverlay(readerAt{ctx, pr}, p.Size, scratch)
			}
			l, err := nbd.Listen(listen)
			if err != nil {
				return err
			}
			url := "nbd://" + l.Addr().String() + "/" + name
			if l.Addr().Network() == "unix" {
				url = "nbd+unix:///" + name + "?socket=" + l.Addr().String()
				defer os.Remove(l.Addr().String())
			}
			mode := "read-only"
			if writable {
				mode = "copy-on-write"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "serving %s/%s point %d (%s, %s), %s\n", p.Machine, p.Volume, p.ID, pointTime(p.Time), p.Kind, mode)
			fmt.Fprintln(cmd.OutOrStdout(), url)
			srv := nbd.NewServer(slog.Default(), nbd.Export{Name: name,
				Description: fmt.Sprintf("%s/%s point %d", p.Machine, p.Volume, p.ID), Backend: backend})
			return srv.Serve(ctx, l)
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&machine, "machine", "", "machine name")
	c.Flags().StringVar(&volume, "volume", "", "volume name")
	c.Flags().StringVar(&at, "at", "latest", "point to serve: a time, a relative time, latest, or a point id")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:10809", "host:port or unix socket path to listen on")
	c.Flags().StringVar(&name, "name", "", `export name (clients asking for "" get this export anyway)`)
	c.Flags().BoolVar(&writable, "writable", false, "accept writes into a copy-on-write overlay that is discarded on exit")
	return c
}
