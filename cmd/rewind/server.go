package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/rewind-cdp/rewind/ingest"
	"github.com/rewind-cdp/rewind/repository"
)

func newServerCmd() *cobra.Command {
	var dir, listen, certFile, keyFile, packs string
	var pruneEvery time.Duration
	c := &cobra.Command{
		Use:   "server",
		Short: "Run the backup server on a repository",
		Long: `Run the backup server: it receives blocks from agents and from rewind backup,
keeps each block once, and acknowledges a point only once it is durable.

The repository is created on first start when the directory is absent or empty.
Connections always use TLS: without --tls-cert/--tls-key the server creates a
self-signed certificate at <repo>/server.crt, which clients trust with --ca
(or $REWIND_CA). Stop it with Ctrl-C or SIGTERM; an unclean stop (kill -9, power
loss) loses nothing that was acknowledged.

Every --prune-every the server applies the retention policies by itself
(rewind retention set), beside ingest; 0 turns that off.

--packs s3://bucket/prefix keeps sealed packs in S3-compatible storage
(versitygw, MinIO, Ceph RGW, AWS S3) instead of <repo>/packs: packs are written
locally while open and uploaded when sealed; nothing in a sealed pack is
acknowledged before the store holds it. The choice is recorded in the repository
(<repo>/packs.json), so restore, mount, check and prune find the packs without
--packs; credentials always come from --s3-access-key/--s3-secret-key or
$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, and reads go through a memory cache
of --s3-cache-size.`,
		Example: `  rewind server
  rewind server --repo /srv/rewind --listen 0.0.0.0:7420
  rewind server --tls-cert /etc/rewind/cert.pem --tls-key /etc/rewind/key.pem
  AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… rewind server \
      --packs s3://rewind/site1 --s3-endpoint s3.example.com`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (certFile == "") != (keyFile == "") {
				return usagef("--tls-cert and --tls-key go together")
			}
			if pruneEvery < 0 {
				return usagef("--prune-every must not be negative")
			}
			return runServer(cmd.Context(), repoDir(dir), packs, listen, certFile, keyFile, pruneEvery, nil)
		},
	}
	addRepoFlag(c, &dir)
	c.Flags().StringVar(&listen, "listen", ingest.DefaultListen, "address to listen on")
	c.Flags().StringVar(&certFile, "tls-cert", "", "TLS certificate (PEM); default <repo>/server.crt, self-signed on first start")
	c.Flags().StringVar(&keyFile, "tls-key", "", "TLS private key (PEM); default <repo>/server.key")
	addPacksFlag(c, &packs)
	c.Flags().DurationVar(&pruneEvery, "prune-every", time.Hour, "apply the retention policies this often (0: never)")
	return c
}

// runServer serves dir on listen until ctx ends. ready, when set, is told
// the address once the server accepts connections.
func runServer(ctx context.Context, dir, packs, listen, certFile, keyFile string, pruneEvery time.Duration, ready func(addr string)) error {
	repo, err := openRepoWriting(ctx, dir, packs)
	if err != nil {
		return err
	}
	defer repo.Close()
	unlock, err := lockRepo(repo.Dir)
	if err != nil {
		return err
	}
	defer unlock()
	if certFile == "" {
		certFile, keyFile = filepath.Join(repo.Dir, "server.crt"), filepath.Join(repo.Dir, "server.key")
	}
	cert, created, err := ingest.EnsureCert(certFile, keyFile)
	if err != nil {
		return err
	}
	if created {
		slog.Info("created a self-signed TLS certificate; clients trust it with --ca", "cert", certFile)
	}
	srv, err := ingest.NewServer(ctx, repo)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	if pruneEvery > 0 {
		go func() {
			t := time.NewTicker(pruneEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if _, err := repo.Prune(ctx, time.Now(), repository.PruneOptions{}); err != nil && ctx.Err() == nil {
						slog.Error("scheduled prune failed", "err", err)
					}
				}
			}
		}()
	}
	slog.Info("rewind server listening", "addr", ln.Addr().String(), "repo", repo.Dir)
	if ready != nil {
		ready(ln.Addr().String())
	}
	return srv.Serve(ctx, ln, cert)
}
