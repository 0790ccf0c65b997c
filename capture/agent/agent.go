// Package agent is the continuous-capture agent: it protects one volume
// through the block shim, journals every change in a local spool, ships the
// journal to the backup server from a separate goroutine that can fail
// without failing the write path, and closes every gap it cannot journal —
// an outage that filled the spool, an unclean stop — by re-scanning against
// the server. It reports its state in a status file.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/rewind-cdp/rewind/capture/shim"
	"github.com/rewind-cdp/rewind/capture/spool"
	"github.com/rewind-cdp/rewind/ingest"
)

// Config describes one protected volume.
type Config struct {
	Client    *ingest.Client
	Machine   string
	Volume    string
	Source    string // image file or block device
	BlockSize int64  // for a new volume; 0 = the server's default
	Spool     string // spool directory
	// SpoolLimit bounds the spool; past it the agent remembers changed
	// blocks in a bitmap and re-sends them when the server is back.
	SpoolLimit int64
	// Mount, when set, is where the filesystem on the loop device is
	// mounted.
	Mount string
	// CutAfter is how long a change may wait for a flush before the agent
	// asks for a crash-consistent point (default 0.5 s, so every change is
	// acknowledged within a second).
	CutAfter time.Duration
}

// DefaultSpoolDir is where a volume's spool lives unless told otherwise.
func DefaultSpoolDir(machine, volume string) string {
	return filepath.Join("/var/lib/rewind/agent", machine+"-"+volume)
}

// state is kept in <spool>/state.json.
type state struct {
	Epoch string `json:"epoch"`
	Clean bool   `json:"clean"`
}

func readState(dir string) (state, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return state{}, false, nil
	}
	if err != nil {
		return state{}, false, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil || st.Epoch == "" {
		return state{}, false, fmt.Errorf("spool state %s is damaged", filepath.Join(dir, "state.json"))
	}
	return st, true, nil
}

func writeState(dir string, st state) error {
	b, _ := json.Marshal(st)
	tmp := filepath.Join(dir, "state.json.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	return os.Rename(tmp, filepath.Join(dir, "state.json"))
}

func randomEpoch() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Run protects the volume until ctx ends. ready is told the loop device
// once the volume is served.
func Run(ctx context.Context, cfg Config, ready func(loopDev string)) (err error) {
	if cfg.CutAfter == 0 {
		cfg.CutAfter = 500 * time.Millisecond
	}
	src, err := os.OpenFile(cfg.Source, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", cfg.Source, err)
	}
	defer src.Close()
	size, err := src.Seek(0, io.SeekEnd)
	if err != nil || size == 0 {
		return fmt.Errorf("size of %s: %d bytes, %v", cfg.Source, size, err)
	}
	st, _, rescan, err := beginRun(cfg, "the volume will be re-scanned against the server")
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
	// The spool is the volume's write-ahead log (shim.WriteAhead): a flush
	// syncs the spool, not the volume, which is synced before records
	// leave the spool. After an unclean stop the spool is replayed onto
	// the volume first, unless a change was kept out of it (then every
	// flush synced the volume too, and older records must not be replayed
	// over newer data).
	unlogged, err := unloggedMark(cfg.Spool)
	if err != nil {
		return err
	}
	if rescan && !unlogged {
		n, err := replaySpool(sp, src, size)
		if err != nil {
			return fmt.Errorf("replay the spool onto %s: %w", cfg.Source, err)
		}
		slog.Info("replayed the spool onto the volume after an unclean stop", "records", n)
	}
	bs := cfg.BlockSize
	if bs == 0 {
		bs = 64 << 10
	}
	j := newJournal(sp, bs)
	j.unlogged = unlogged
	j.markUnlogged = func() error { return markUnlogged(cfg.Spool) }
	mnt := filepath.Join(cfg.Spool, "shim")
	clearStale(mnt)
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return err
	}
	sh, err := shim.Mount(mnt, src, size, j)
	if err != nil {
		return err
	}
	sp.SetBeforeDrop(sh.SyncBacking)
	loop, err := attachLoop(sh.Path())
	if err != nil {
		sh.Unmount()
		return err
	}
	status := newStatus(cfg, loop, sp)
	j.changed = status.changed
	j.onOverflow = func(t time.Time) { status.gap(t, overflowGap) }
	if rescan {
		status.gap(time.Now(), "unclean stop of the agent: changes may be missing from the journal")
	}
	mounted := false
	if cfg.Mount != "" {
		if err := mountFS(loop, cfg.Mount); err != nil {
			detachLoop(loop)
			sh.Unmount()
			return err
		}
		mounted = true
	}
	slog.Info("protecting", "machine", cfg.Machine, "volume", cfg.Volume, "source", cfg.Source, "loop", loop, "mount", cfg.Mount)
	if ready != nil {
		ready(loop)
	}

	shipCtx, stopShip := context.WithCancel(context.Background())
	sh2 := &shipper{cfg: cfg, src: src, size: size, spool: sp, journal: j, epoch: st.Epoch, rescan: rescan, status: status,
		bookmarks: &bookmarks{dir: cfg.Spool, pending: map[uint64]string{}}}
	shipped := make(chan struct{})
	go func() {
		defer close(shipped)
		sh2.run(shipCtx)
	}()

	<-ctx.Done()
	// Orderly stop: the filesystem first (its last writes and flush reach
	// the journal), then the loop device and the shim; then give the
	// shipper a moment to send what is journaled. The spool keeps the rest.
	var errs []error
	if mounted {
		if err := unmountFS(cfg.Mount); err != nil {
			errs = append(errs, err)
		}
	}
	if err := detachLoop(loop); err != nil {
		errs = append(errs, err)
	}
	if err := sh.Unmount(); err != nil {
		errs = append(errs, err)
	}
	// The last flushes may be durable in the spool only.
	if err := sh.SyncBacking(); err != nil {
		errs = append(errs, fmt.Errorf("sync %s: %w", cfg.Source, err))
	}
	sh2.drain(10 * time.Second)
	stopShip()
	<-shipped
	err = endRun(cfg, sp, j, status, errs, false)
	if err == nil && sp.Size() == 0 && unloggedRemovable(j) {
		// The spool was emptied after the volume was synced: no record
		// can be replayed over newer data any more.
		if err := os.Remove(filepath.Join(cfg.Spool, unloggedName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return err
}

// unloggedName marks a spool that misses changes made to the volume: it is
// not replayed onto the volume after an unclean stop.
const unloggedName = "unlogged"

func unloggedMark(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, unloggedName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// markUnlogged durably creates the mark (the file and its directory entry).
func markUnlogged(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, unloggedName), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// unloggedRemovable reports whether the journal is whole again: no overflow
// is open, so nothing newer than the (now empty) spool is missing from it.
func unloggedRemovable(j *journal) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return !j.overflow && j.err == nil
}

// replaySpool applies every write and discard in the spool to the volume
// (see shim.Replay).
func replaySpool(sp *spool.Spool, dst *os.File, size int64) (int, error) {
	cur := sp.NewCursor(0)
	var recs []spool.Record
	return shim.Replay(dst, size, func() (int64, int64, []byte, bool, error) {
		for {
			for len(recs) > 0 {
				r := recs[0]
				recs = recs[1:]
				switch r.Kind {
				case spool.Write:
					return r.Offset, int64(len(r.Data)), r.Data, true, nil
				case spool.Discard:
					return r.Offset, r.Length, nil, true, nil
				}
			}
			var err error
			if recs, err = cur.Next(16 << 20); err != nil || len(recs) == 0 {
				return 0, 0, nil, false, err
			}
		}
	})
}

// beginRun prepares the spool directory and reads the agent's state: a new
// epoch on the first run, and whether the last run stopped uncleanly (then
// the volume is compared with the server; what says so in the log).
func beginRun(cfg Config, what string) (st state, existed, rescan bool, err error) {
	if err := os.MkdirAll(cfg.Spool, 0o700); err != nil {
		return st, false, false, fmt.Errorf("spool: %w", err)
	}
	st, existed, err = readState(cfg.Spool)
	if err != nil {
		return st, false, false, err
	}
	if !existed {
		st.Epoch = randomEpoch()
	}
	rescan = existed && !st.Clean
	if rescan {
		slog.Warn("the agent did not stop cleanly last time: "+what+" to close any gap", "volume", cfg.Volume)
	}
	return st, existed, rescan, nil
}

// endRun ends a run after its shipper stopped: the spool is emptied when
// the server has everything, then closed, and the state is marked clean
// when nothing was lost (or cleanAnyway: the run ended for a reason that
// loses nothing). errs are the stop's errors so far.
func endRun(cfg Config, sp *spool.Spool, j *journal, status *status, errs []error, cleanAnyway bool) error {
	if status.acked()+1 >= sp.Next() && !j.overflowed() {
		// Everything is on the server: start the next run with an empty spool.
		if err := sp.Reset(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := sp.Close(); err != nil {
		errs = append(errs, err)
	}
	if j.err == nil && (len(errs) == 0 || cleanAnyway) {
		cur, _, err := readState(cfg.Spool) // the shipper may have renewed the epoch
		if err == nil {
			cur.Clean = !j.overflowed() // a dirty bitmap is not kept across runs: rescan next time
			err = writeState(cfg.Spool, cur)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	status.stopped()
	return errors.Join(errs...)
}
