package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/capture/dirshim"
	"github.com/rewind-cdp/rewind/capture/spool"
	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
)

// dirSource is what the shipper needs of a directory volume.
type dirSource interface {
	// ScanBlocks lists the blocks to compare with the server: the manifest
	// and every file (full) or the files changed while the agent was
	// stopped.
	ScanBlocks(full bool, blockSize int64) []int64
	Scanned()
	// WriteManifest journals the manifest's changed blocks.
	WriteManifest(t time.Time) bool
}

var _ dirSource = (*dirshim.DirFS)(nil)

// localManifest is the agent's copy of the manifest it last journaled, in
// the spool directory: the next run keeps its file slots.
const localManifest = "manifest.bin"

// RunDir protects a directory through the directory shim until ctx ends:
// cfg.Source is the data directory, cfg.Mount where it is served; every
// change made through the mount is journaled and shipped as a change of a
// directory volume (see package dirvol). The first run compares every file
// with the server while changes are already captured; after an unclean
// stop every file is compared again; after a clean stop only files whose
// size or mtime changed meanwhile. ready is called once the mount serves.
func RunDir(ctx context.Context, cfg Config, ready func()) (err error) {
	if cfg.CutAfter == 0 {
		cfg.CutAfter = 500 * time.Millisecond
	}
	if cfg.Mount == "" {
		return errors.New("protect-dir needs a mount point")
	}
	data, err := filepath.Abs(cfg.Source)
	if err != nil {
		return err
	}
	mnt, err := filepath.Abs(cfg.Mount)
	if err != nil {
		return err
	}
	if mnt == data || strings.HasPrefix(mnt, data+"/") || strings.HasPrefix(data, mnt+"/") {
		return fmt.Errorf("the mount point %s and the data directory %s must not contain each other", mnt, data)
	}
	cfg.Source, cfg.Mount = data, mnt
	st, _, rescan, err := beginRun(cfg, "every file will be compared with the server")
	if err != nil {
		return err
	}
	st.Clean = false
	if err := writeState(cfg.Spool, st); err != nil {
		return fmt.Errorf("spool state: %w", err)
	}
	sp, err := spool.Open(filepath.Join(cfg.Spool, "journal"), cfg.SpoolLimit)
	if err != nil {
		return err
	}
	bs := cfg.BlockSize
	if bs == 0 {
		bs = 64 << 10
	}
	j := newJournal(sp, bs)
	localPath := filepath.Join(cfg.Spool, localManifest)
	prev := dirshim.LoadLocal(localPath)
	d, err := dirshim.New(data, prev, j)
	if err != nil {
		sp.Close()
		return err
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		sp.Close()
		return err
	}
	clearStaleMount(mnt)
	if err := d.Mount(mnt); err != nil {
		sp.Close()
		return err
	}
	status := newStatus(cfg, "", sp)
	status.s.Kind = catalog.VolumeDir
	j.changed = status.changed
	j.onOverflow = func(t time.Time) { status.gap(t, overflowGap) }
	if rescan {
		status.gap(time.Now(), "unclean stop of the agent: changes may be missing from the journal")
	}
	slog.Info("protecting a directory", "machine", cfg.Machine, "volume", cfg.Volume, "data", data, "mount", mnt, "entries", d.Files())
	if ready != nil {
		ready()
	}

	shipCtx, stopShip := context.WithCancel(context.Background())
	// Without a local manifest copy (first run, or a lost spool) every file
	// is compared with the server.
	sh := &shipper{cfg: cfg, reader: d, size: dirvol.Size, spool: sp, journal: j, epoch: st.Epoch, rescan: rescan || prev == nil, status: status,
		bookmarks: &bookmarks{dir: cfg.Spool, pending: map[uint64]string{}}, kind: catalog.VolumeDir, dir: d, startScan: d.Changed()}
	shipped := make(chan struct{})
	go func() {
		defer close(shipped)
		sh.run(shipCtx)
	}()
	// Changes of names and attributes alone journal nothing: journal the
	// manifest when they are pending, so they reach a point within a
	// second like any write. Keep the local manifest copy current, so that
	// slots are never reused even after a kill.
	saved := make(chan struct{})
	go func() {
		defer close(saved)
		t := time.NewTicker(cfg.CutAfter / 2)
		defer t.Stop()
		lastSave := time.Now()
		for {
			select {
			case now := <-t.C:
				if d.Pending() {
					d.WriteManifest(now)
				}
				if now.Sub(lastSave) >= time.Second {
					lastSave = now
					if err := d.SaveLocal(localPath, false); err != nil {
						slog.Warn("saving the local manifest copy failed", "err", err)
					}
				}
			case <-shipCtx.Done():
				return
			}
		}
	}()

	<-ctx.Done()
	// Orderly stop: unmount first (nothing changes any more), journal the
	// final manifest and a flush (the last point), give the shipper a
	// moment to send it. The spool keeps the rest.
	var errs []error
	if err := unmountDir(d, mnt); err != nil {
		errs = append(errs, err)
	}
	d.WriteManifest(time.Now())
	if err := j.Flush(time.Now()); err != nil {
		errs = append(errs, err)
	}
	sh.drain(10 * time.Second)
	stopShip()
	<-shipped
	<-saved
	if err := d.SaveLocal(localPath, true); err != nil {
		errs = append(errs, err)
	}
	return endRun(cfg, sp, j, status, errs, false)
}

// unmountDir unmounts the shim, waiting up to 10 s for files under it to
// be closed, then detaching it lazily.
func unmountDir(d *dirshim.DirFS, mnt string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := d.Unmount()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			slog.Warn("the mount is busy: detaching it lazily", "mount", mnt, "err", err)
			if _, lerr := run("umount", "-l", mnt); lerr != nil {
				return errors.Join(err, lerr)
			}
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clearStaleMount detaches a directory shim left mounted at mnt by an
// agent that was killed ("transport endpoint is not connected").
func clearStaleMount(mnt string) {
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[1] == mnt && strings.HasPrefix(f[2], "fuse") {
			if _, err := run("umount", "-l", mnt); err == nil {
				slog.Warn("cleared a directory shim left mounted by an agent that did not stop", "mount", mnt)
			}
		}
	}
}
