package agent

import (
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
