package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/ingest"
)

// RunScan protects a volume nothing can shim (a device in use, a Windows
// VSS snapshot exported to Linux, a retrofitted disk): every interval it
// reads the whole volume, compares each block's hash with the server and
// sends only what changed, as a scan point. Its recovery point is the
// interval.
func RunScan(ctx context.Context, cfg Config, interval time.Duration) error {
	if err := os.MkdirAll(cfg.Spool, 0o700); err != nil {
		return fmt.Errorf("status directory: %w", err)
	}
	status := newStatus(cfg, "", nil)
	defer status.stopped()
	for {
		start := time.Now()
		status.set("scanning", "")
		if err := scanOnce(ctx, cfg, status); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			status.outage(err)
			slog.Warn("scan failed; retrying at the next interval", "volume", cfg.Volume, "err", err)
		} else {
			status.scanned(start)
			status.set("idle", "")
		}
		select {
		case <-time.After(time.Until(start.Add(interval))):
		case <-ctx.Done():
			return nil
		}
	}
}

func scanOnce(ctx context.Context, cfg Config, status *status) error {
	src, err := os.Open(cfg.Source)
	if err != nil {
		return err
	}
	defer src.Close()
	size, err := src.Seek(0, 2)
	if err != nil || size == 0 {
		return fmt.Errorf("size of %s: %d bytes, %v", cfg.Source, size, err)
	}
	res, err := cfg.Client.Backup(ctx, ingest.BackupOptions{
		Machine: cfg.Machine, Volume: cfg.Volume, Kind: catalog.KindScan, BlockSize: cfg.BlockSize, Source: src, Size: size,
	})
	if err != nil {
		return err
	}
	status.point(res.Point)
	slog.Info("scan point stored", "volume", cfg.Volume, "point", res.Point.ID, "sent", res.BytesSent)
	return nil
}
