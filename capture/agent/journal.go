package agent

import (
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/rewind-cdp/rewind/capture/spool"
)

// journal is the write path's side of the agent: every change goes to the
// spool, unless the spool is full; then (and until the shipper has
// resynchronised) changes are only marked in a dirty-block bitmap. Once a
// change is missing from the spool, later ones are kept out of it too, so
// the spool never has holes.
type journal struct {
	spool     *spool.Spool
	blockSize int64
	changed   func(time.Time) // told of every change (status: lag)
	// overflowed is told when changes stop being journaled (a gap opens).
	onOverflow func(time.Time)

	mu        sync.Mutex
	overflow  bool
	overSince time.Time
	dirty     map[int64]struct{}
	// holds counts gaps whose changed blocks are still being gathered from
	// elsewhere (a QEMU dirty bitmap): until they are, the shipper must not
	// resynchronise.
	holds  int
	err    error // a spool write error: the agent must rescan
	notify chan struct{}
	// unlogged says a change was kept out of the spool (or the spool
	// failed) since the volume was last known to be durable: the spool is
	// no longer a write-ahead log of the volume (see Logged). markUnlogged,
	// when set, persists that before the change can be flushed.
	unlogged     bool
	markUnlogged func() error
	// Writes journaled since the shipper was last woken, and whether a
	// timer will wake it (see wakeSoon).
	unwoken int64
	armed   bool
	timer   *time.Timer
}

// A write or a flush wakes the shipper only once wakeBytes are journaled
// since it was last woken, else wakeDelay later; anything else (a
// bookmark, a gap) wakes it at once. Synchronous writes (each a write,
// then a flush) thus reach the server a few in one request, whose points
// the server makes durable together (one pack sync, one catalog
// transaction), instead of a request each competing with the write path
// for the cores and the disk.
const (
	wakeBytes = 256 << 10
	wakeDelay = 10 * time.Millisecond
	// recordBytes is about what a record takes in the spool beside its data.
	recordBytes = 64
)

func newJournal(sp *spool.Spool, blockSize int64) *journal {
	return &journal{spool: sp, blockSize: blockSize, dirty: map[int64]struct{}{}, notify: make(chan struct{}, 1)}
}

func (j *journal) wake() {
	j.unwoken = 0
	select {
	case j.notify <- struct{}{}:
	default:
	}
}

func (j *journal) record(kind spool.Kind, t time.Time, off, n int64, data []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.changed != nil {
		j.changed(t)
	}
	if !j.overflow {
		_, err := j.spool.Append(kind, t, off, n, data)
		if err == nil {
			if kind == spool.Write || kind == spool.Discard {
				j.wakeSoon(int64(len(data)) + recordBytes)
			} else {
				j.wake()
			}
			return
		}
		if !errors.Is(err, spool.ErrFull) {
			j.err = err
		}
		slog.Warn("spool full: remembering changed blocks until the server catches up", "spool_bytes", j.spool.Size(), "err", err)
		j.startOverflow(t)
	}
	for b := off / j.blockSize; b*j.blockSize < off+n; b++ {
		j.dirty[b] = struct{}{}
	}
	j.setUnlogged()
	j.wake()
}

// setUnlogged records that the spool misses a change. Called with mu held,
// before the change can be flushed: the mark is durable before any flush
// relies on the volume rather than the spool.
func (j *journal) setUnlogged() {
	if j.unlogged {
		return
	}
	j.unlogged = true
	if j.markUnlogged != nil {
		if err := j.markUnlogged(); err != nil {
			slog.Error("cannot record that the spool misses changes: the volume is synced at every flush from now on", "err", err)
		}
	}
}

// Logged reports whether every change so far is in the spool, so the
// block shim may treat the spool as the volume's write-ahead log
// (shim.WriteAhead).
func (j *journal) Logged() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.markUnlogged != nil && !j.unlogged && j.err == nil
}

// wakeSoon wakes the shipper for a write of n bytes: at once if enough
// is waiting, else after wakeDelay unless something wakes it before.
// Called with mu held.
func (j *journal) wakeSoon(n int64) {
	j.unwoken += n
	if j.unwoken >= wakeBytes {
		j.wake()
		return
	}
	if j.armed {
		return
	}
	j.armed = true
	if j.timer == nil {
		j.timer = time.AfterFunc(wakeDelay, func() {
			j.mu.Lock()
			defer j.mu.Unlock()
			j.armed = false
			if j.unwoken > 0 {
				j.wake()
			}
		})
	} else {
		j.timer.Reset(wakeDelay)
	}
}

// startOverflow switches to the dirty bitmap. Called with mu held.
func (j *journal) startOverflow(t time.Time) {
	j.overflow, j.overSince = true, t
	if j.onOverflow != nil {
		j.onOverflow(t)
	}
}

func (j *journal) Write(t time.Time, off int64, data []byte) {
	j.record(spool.Write, t, off, int64(len(data)), data)
}

func (j *journal) Discard(t time.Time, off, n int64) { j.record(spool.Discard, t, off, n, nil) }

func (j *journal) Flush(t time.Time) error {
	j.mu.Lock()
	over := j.overflow
	if !over {
		if _, err := j.spool.Append(spool.Flush, t, 0, 0, nil); err != nil && !errors.Is(err, spool.ErrFull) {
			j.mu.Unlock()
			return err
		} else if err != nil {
			j.startOverflow(t)
		}
	}
	if j.overflow {
		j.wake()
	} else {
		j.wakeSoon(recordBytes)
	}
	j.mu.Unlock()
	return j.spool.Sync()
}

// takeOverflow ends overflow mode: it returns the dirty blocks (sorted)
// and the seq from which the spool records every change again.
func (j *journal) takeOverflow() (blocks []int64, since time.Time, from uint64, was bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.overflow {
		return nil, time.Time{}, 0, false
	}
	blocks = make([]int64, 0, len(j.dirty)) // not nil: nil would mean the whole volume to Scan
	for b := range j.dirty {
		blocks = append(blocks, b)
	}
	slices.Sort(blocks)
	clear(j.dirty)
	since = j.overSince
	j.overflow = false
	return blocks, since, j.spool.Next(), true
}

func (j *journal) overflowed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.overflow
}

// resyncDue reports whether changes are missing from the spool and the
// list of their blocks is complete.
func (j *journal) resyncDue() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.overflow && j.holds == 0
}

// holdGap opens a gap at t for changes the journal never saw (a QEMU
// mirror job that ended): from now on changes are kept out of the spool,
// as after an overflow, and the shipper waits for releaseGap to hand over
// the blocks changed meanwhile.
func (j *journal) holdGap(t time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.overflow {
		j.overflow, j.overSince = true, t
	}
	j.holds++
}

// releaseGap adds the blocks changed during a held gap and lets the
// shipper resynchronise them.
func (j *journal) releaseGap(blocks []int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, b := range blocks {
		j.dirty[b] = struct{}{}
	}
	if !j.overflow {
		// A whole-volume scan took the gap meanwhile; these blocks may
		// have changed after it read them.
		j.overflow, j.overSince = true, time.Now()
	}
	j.holds--
	j.wake()
}

// Bookmark journals an application-consistent moment (the caller has
// frozen the filesystem) and returns its seq. It is refused while changes
// are not being journaled: such a point could not be exact.
func (j *journal) Bookmark(t time.Time, label string) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.overflow {
		return 0, errors.New("the agent is catching up after a full spool; try again when its gap is closed")
	}
	seq, err := j.spool.Append(spool.Bookmark, t, 0, 0, []byte(label))
	if err != nil {
		return 0, err
	}
	if err := j.spool.Sync(); err != nil {
		return 0, err
	}
	j.wake()
	return seq, nil
}
