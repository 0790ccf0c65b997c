package agent

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/capture/spool"
)

// A held gap keeps changes out of the spool and the shipper away until the
// blocks changed elsewhere are handed over; then one resynchronisation
// covers both.
func TestJournalHeldGap(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	j := newJournal(sp, 4096)
	now := time.Now()
	j.Write(now, 0, make([]byte, 100))
	if j.overflowed() || j.resyncDue() || sp.Next() != 2 {
		t.Fatalf("a plain write: overflowed %v resyncDue %v next %d", j.overflowed(), j.resyncDue(), sp.Next())
	}
	j.holdGap(now)
	j.Write(now, 3*4096+10, make([]byte, 5000)) // blocks 3 and 4
	j.Discard(now, 10*4096, 4096)               // block 10
	if sp.Next() != 2 {
		t.Fatalf("changes during a held gap reached the spool (next %d)", sp.Next())
	}
	if !j.overflowed() || j.resyncDue() {
		t.Fatalf("held gap: overflowed %v resyncDue %v", j.overflowed(), j.resyncDue())
	}
	if _, _, _, was := j.takeOverflow(); !was {
		// takeOverflow ignores holds (a whole-volume scan takes everything)
		t.Fatal("takeOverflow during a hold returned nothing")
	}
	// The scan took the gap; blocks released after it still get re-sent.
	j.releaseGap([]int64{7, 3})
	if !j.resyncDue() {
		t.Fatal("released gap is not due")
	}
	blocks, _, from, was := j.takeOverflow()
	if !was || !slices.Equal(blocks, []int64{3, 7}) || from != 2 {
		t.Fatalf("takeOverflow: %v %v from %d", was, blocks, from)
	}
	j.Write(now, 0, make([]byte, 10))
	if sp.Next() != 3 || j.overflowed() {
		t.Fatalf("after the resync changes are journaled again: next %d overflowed %v", sp.Next(), j.overflowed())
	}

	// The usual order: hold, changes, release, take.
	j.holdGap(now)
	j.Write(now, 5*4096, make([]byte, 1))
	j.releaseGap([]int64{9})
	blocks, _, _, _ = j.takeOverflow()
	if !slices.Equal(blocks, []int64{5, 9}) {
		t.Fatalf("blocks %v, want [5 9]", blocks)
	}
	// An overflow with nothing dirty resynchronises nothing (nil would mean
	// the whole volume to Stream.Scan).
	j.holdGap(now)
	j.releaseGap(nil)
	if blocks, _, _, _ = j.takeOverflow(); blocks == nil || len(blocks) != 0 {
		t.Fatalf("empty gap gave %#v", blocks)
	}
}

// After an unclean stop the spool is replayed onto the volume: every
// write and discard in order, also where later ones overwrite earlier.
func TestReplaySpool(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	const size = 1 << 20
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i % 251)
	}
	vol, err := os.Create(filepath.Join(t.TempDir(), "vol"))
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Close()
	if _, err := vol.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	j := newJournal(sp, 65536)
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 300 {
		off := r.Int64N(size - 9000)
		if i%7 == 3 {
			n := r.Int64N(9000)
			clear(want[off : off+n])
			j.Discard(time.Now(), off, n)
			continue
		}
		b := make([]byte, 1+r.IntN(9000))
		for k := range b {
			b[k] = byte(r.Uint32())
		}
		copy(want[off:], b)
		j.Write(time.Now(), off, b)
		if i%10 == 0 {
			if err := j.Flush(time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := replaySpool(sp, vol, size)
	if err != nil || n != 300 {
		t.Fatalf("replayed %d changes: %v", n, err)
	}
	got := make([]byte, size)
	if _, err := vol.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the replayed volume differs")
	}
	if _, err := replaySpool(sp, vol, size/2); err == nil {
		t.Error("a change past the end of the volume was replayed")
	}
}

// The spool is the volume's write-ahead log only while it holds every
// change: the first change kept out of it (a full spool) is marked
// durably, and from then on every flush syncs the volume.
func TestJournalLoggedUntilAChangeIsKeptOut(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(filepath.Join(dir, "journal"), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	j := newJournal(sp, 4096)
	if j.Logged() {
		t.Fatal("a journal nobody marks for is a write-ahead log")
	}
	j.markUnlogged = func() error { return markUnlogged(dir) }
	j.Write(time.Now(), 0, make([]byte, 4000))
	if !j.Logged() {
		t.Fatal("a journal holding every change is not a write-ahead log")
	}
	if m, _ := unloggedMark(dir); m {
		t.Fatal("marked before any change was kept out")
	}
	j.Write(time.Now(), 0, make([]byte, 4000))
	j.Write(time.Now(), 0, make([]byte, 4000)) // past the limit
	if j.Logged() {
		t.Fatal("still a write-ahead log after a change was kept out")
	}
	if m, err := unloggedMark(dir); !m || err != nil {
		t.Fatalf("mark: %v %v", m, err)
	}
}
