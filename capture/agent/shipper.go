package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/rewind-cdp/rewind/capture/spool"
	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/ingest"
)

// overflowGap is the reason given for a gap opened by a full spool.
const overflowGap = "spool full while the server was unreachable; changed blocks re-sent"

// shipper sends the journal to the server, cuts crash-consistent points
// when changes wait too long for a flush, and resynchronises what the
// journal could not keep.
type shipper struct {
	cfg     Config
	src     io.ReaderAt // the volume, read for scans and resynchronisations
	size    int64
	spool   *spool.Spool
	journal *journal
	epoch   string
	rescan  bool // the whole volume must be compared with the server
	status  *status
	// bookmarks are requests from `rewind bookmark`, see bookmark.go.
	bookmarks *bookmarks
	// kind is the volume's kind (catalog.VolumeBlock or VolumeDir).
	kind string
	// dir is set for a directory volume (see dir.go): scans cover only the
	// manifest and the files, and the manifest is journaled before every
	// point. startScan asks for a scan of the files changed while the
	// agent was stopped.
	dir       dirSource
	startScan bool
	// reader, when set, is read by scans instead of src.
	reader io.ReaderAt

	// cursor is where the last ship stopped reading the spool: the next
	// one goes on from there instead of finding its first record again
	// from the start of a segment.
	cursor *spool.Cursor

	mu       sync.Mutex
	draining bool
	idle     chan struct{} // closed when a drain finds nothing left to send
}

func (s *shipper) source() io.ReaderAt {
	if s.reader != nil {
		return s.reader
	}
	return s.src
}

// newEpoch gives the spool a new identity, persisted in state.json.
func (s *shipper) newEpoch() error {
	st, _, err := readState(s.cfg.Spool)
	if err != nil {
		return err
	}
	st.Epoch = randomEpoch()
	if err := writeState(s.cfg.Spool, st); err != nil {
		return err
	}
	s.epoch = st.Epoch
	return nil
}

// drain lets the shipper send what is journaled, for up to d.
func (s *shipper) drain(d time.Duration) {
	s.mu.Lock()
	s.draining = true
	s.idle = make(chan struct{})
	idle := s.idle
	s.mu.Unlock()
	s.journal.wake()
	select {
	case <-idle:
	case <-time.After(d):
		slog.Warn("stopping with journal records not yet on the server; they are kept in the spool", "spool_bytes", s.spool.Size())
	}
}

func (s *shipper) run(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		s.status.outage(err)
		slog.Warn("shipping to the server failed; retrying", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// session runs one stream session until it fails.
func (s *shipper) session(ctx context.Context) error {
	kind := s.kind
	if kind == "" {
		kind = catalog.VolumeBlock
	}
	st, err := s.cfg.Client.OpenStreamKind(ctx, s.cfg.Machine, s.cfg.Volume, kind, s.size, s.cfg.BlockSize, s.epoch)
	if err != nil {
		return err
	}
	s.status.connected()
	if st.AckedSeq > 0 && st.AckedSeq < s.spool.Next() {
		s.status.ack(st.AckedSeq) // what the server holds of this spool (status)
	}
	if st.AckedSeq >= s.spool.Next() {
		// The server holds records of this spool that the spool never
		// wrote (it was replaced or restored): its numbering cannot be
		// trusted. Start a new spool identity, which makes the server ask for
		// the whole volume.
		slog.Warn("the server knows journal records this spool does not have: starting a new spool identity and comparing the whole volume",
			"server_acked", st.AckedSeq, "spool_next", s.spool.Next())
		if err := s.newEpoch(); err != nil {
			return err
		}
		return errors.New("spool identity renewed")
	}
	from := st.AckedSeq + 1
	if st.NeedScan || s.rescan || s.startScan {
		// Every change from now on is journaled; what the scan reads
		// already includes a prefix of them, and replaying from here makes
		// each block exact (see package ingest, stream.go).
		if _, _, next, was := s.journal.takeOverflow(); was {
			from = next
		} else {
			from = s.spool.Next()
		}
		s.status.set("scanning", "")
		start := time.Now()
		var list []int64 // nil: every block
		if s.dir != nil {
			list = s.dir.ScanBlocks(st.NeedScan || s.rescan, st.BlockSize())
		}
		if err := st.Scan(ctx, s.source(), list, 2, nil); err != nil {
			return err
		}
		if s.dir != nil {
			s.dir.Scanned()
		}
		slog.Info("volume compared with the server", "volume", s.cfg.Volume, "took", time.Since(start).Round(time.Millisecond))
		s.rescan, s.startScan = false, false
		// The first point (or the one closing the gap) can be cut once the
		// journal from the scan's start is applied.
		if err := s.ship(ctx, st, from, true); err != nil {
			return err
		}
		s.status.closeGaps(time.Now())
		from = s.status.acked() + 1
	}
	return s.loop(ctx, st, from)
}

// loop ships journal records from seq from on, forever.
func (s *shipper) loop(ctx context.Context, st *ingest.Stream, from uint64) error {
	for {
		overflowed := s.journal.resyncDue()
		// Before a resynchronisation, everything journaled goes into a point:
		// the last exact one before the gap.
		if err := s.ship(ctx, st, from, overflowed); err != nil {
			return err
		}
		from = s.status.shippedSeq() + 1
		if overflowed {
			// The spool overflowed: everything journaled before it is now in a
			// point on the server. Re-send the blocks changed meanwhile, then
			// the journal kept since.
			blocks, since, next, _ := s.journal.takeOverflow()
			s.status.gap(since, overflowGap)
			s.status.set("resynchronising", "")
			if s.dir == nil || len(blocks) > 0 { // a directory volume is never scanned whole
				if err := st.Scan(ctx, s.source(), blocks, 2, nil); err != nil {
					s.rescan = true // the dirty list is gone: compare everything
					return err
				}
			}
			if err := s.ship(ctx, st, next, true); err != nil {
				return err
			}
			s.status.closeGaps(time.Now())
			from = s.status.shippedSeq() + 1
		}
		s.status.set("streaming", "")
		s.bookmarks.take(s.journal)
		s.mu.Lock()
		if s.draining && s.spool.Next() <= from {
			close(s.idle)
			s.draining = false
		}
		s.mu.Unlock()
		select {
		case <-s.journal.notify:
		case <-time.After(s.cfg.CutAfter / 4):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ship sends the journal from seq from up to what it holds now; with cut
// (or when the oldest change not yet in a point is older than CutAfter) it
// ends with a cut, so everything sent is in a durable point.
func (s *shipper) ship(ctx context.Context, st *ingest.Stream, from uint64, cut bool) error {
	if s.status.shippedSeq() < from-1 {
		s.status.setShipped(from - 1) // records below from are on the server or in the scan
	}
	if s.cursor == nil || s.cursor.Pos() != from {
		s.cursor = s.spool.NewCursor(from)
	}
	cur := s.cursor
	var last spool.Record
	// A directory volume journals its manifest before a point is cut; the
	// records that takes are shipped before the cut.
	prepared := false
	prepare := func() bool {
		if s.dir == nil || prepared {
			return false
		}
		s.dir.WriteManifest(time.Now())
		prepared = true
		return true
	}
	for {
		recs, err := cur.Next(4 << 20)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			if (cut || s.cutDue()) && prepare() {
				continue
			}
			s.status.drained()
			break
		}
		out := make([]ingest.StreamRecord, len(recs))
		for i, r := range recs {
			kind := uint8(r.Kind) // writes, discards and flushes share their numbers
			if r.Kind == spool.Bookmark {
				kind = ingest.RecordBookmark
			}
			out[i] = ingest.StreamRecord{Kind: kind, Seq: r.Seq, Time: r.Time, Offset: r.Offset, Length: r.Length, Data: r.Data}
		}
		res, err := st.Send(ctx, out)
		if err != nil {
			return err
		}
		last = recs[len(recs)-1]
		s.shipped(res, recs)
		// Under a steady stream the journal may never run dry: a change that
		// has waited CutAfter is put in a point now.
		if s.cutDue() {
			if prepare() {
				continue
			}
			if err := s.cut(ctx, st, last.Time); err != nil {
				return err
			}
			prepared = false
		}
		// A small batch means the journal was nearly drained: what came
		// while it travelled waits for the journal to wake the shipper (up
		// to wakeDelay), so that synchronous writes go a few per request
		// instead of one by one.
		if !cut && journaledBytes(recs) < wakeBytes {
			break
		}
	}
	if cut || s.cutDue() {
		t := last.Time
		if t.IsZero() {
			t = time.Now()
		}
		return s.cut(ctx, st, t)
	}
	return nil
}

// journaledBytes is about what recs take in the journal.
func journaledBytes(recs []spool.Record) int64 {
	var n int64
	for _, r := range recs {
		n += int64(len(r.Data)) + recordBytes
	}
	return n
}

// cutDue reports whether a change shipped but not in a point has waited
// CutAfter.
func (s *shipper) cutDue() bool {
	pending := s.status.pendingSince()
	return !pending.IsZero() && time.Since(pending) >= s.cfg.CutAfter && s.status.shippedSeq() > s.status.acked()
}

// cut asks the server for a crash-consistent point holding everything
// shipped, at time t.
func (s *shipper) cut(ctx context.Context, st *ingest.Stream, t time.Time) error {
	res, err := st.Send(ctx, []ingest.StreamRecord{{Kind: ingest.RecordCut, Seq: s.status.shippedSeq(), Time: t}})
	if err != nil {
		return err
	}
	s.shipped(res, nil)
	return nil
}

// shipped records what the server answered.
func (s *shipper) shipped(res ingest.WritesResult, recs []spool.Record) {
	if len(recs) > 0 {
		s.status.setShipped(recs[len(recs)-1].Seq)
		s.status.sent(recs)
	}
	for _, p := range res.Points {
		s.status.point(p)
		if p.Kind == "bookmark" {
			s.bookmarks.done(p)
		}
	}
	if res.Acked > 0 {
		if err := s.spool.Ack(res.Acked); err != nil {
			slog.Warn("dropping acknowledged journal records failed", "err", err)
		}
		s.status.ack(res.Acked)
	}
}
