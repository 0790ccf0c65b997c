package ingest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// Continuous capture. An agent journals every write, discard and flush of
// a volume in its spool and ships the records, in order, to a stream
// session. The server applies them onto the blocks as they were (the
// pending point's rows, else the newest committed version), keeping the
// blocks changed since the last point in memory, and cuts a point at every
// flush (kind flush) and at every cut the agent asks for (kind crash: a
// crash-consistent moment between flushes). A point is acknowledged with
// the last journal record it includes once it is durable; the agent then
// drops those records.
//
// Replaying records onto blocks that already include some of them gives
// the same result as replaying only the missing ones (each byte ends with
// the last write that touched it), so after any interruption the agent
// simply ships again from the acknowledged record. Likewise, while the
// agent sends the whole volume (seeding, or a rescan after an unclean
// stop) it holds back the journal and replays it from before the scan
// began: every block read during the scan already includes a prefix of
// those writes.

// Stream record kinds on the wire; the first three match the spool's.
const (
	recWrite    = 1
	recDiscard  = 2
	recFlush    = 3
	recCut      = 4 // protocol only: cut a crash-consistent point here
	recBookmark = 5 // an application-consistent point; Data is its label
)

const recordHeaderSize = 1 + 8 + 8 + 8 + 4

// StreamRecord is one journal record as shipped.
type StreamRecord struct {
	Kind   uint8
	Seq    uint64 // for a cut: the last record the point includes
	Time   time.Time
	Offset int64
	Length int64 // data length for writes, range length for discards
	Data   []byte
}

// maxWork bounds the blocks a stream session keeps in memory before it
// stores them into the pending point.
const maxWork = 1024

// maxStaged bounds the points one writes request cuts before it makes
// them durable together (see commitStaged).
const maxStaged = 64

func appendRecord(b []byte, r StreamRecord) []byte {
	b = append(b, r.Kind)
	b = binary.LittleEndian.AppendUint64(b, r.Seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Offset))
	b = binary.LittleEndian.AppendUint32(b, uint32(r.Length))
	if r.Kind == recWrite || r.Kind == recBookmark {
		b = append(b, r.Data...)
	}
	return b
}

func readRecord(rd io.Reader, maxData int64) (StreamRecord, error) {
	var h [recordHeaderSize]byte
	if _, err := io.ReadFull(rd, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return StreamRecord{}, errors.New("writes: truncated record")
		}
		return StreamRecord{}, err
	}
	r := StreamRecord{
		Kind:   h[0],
		Seq:    binary.LittleEndian.Uint64(h[1:]),
		Time:   time.Unix(0, int64(binary.LittleEndian.Uint64(h[9:]))),
		Offset: int64(binary.LittleEndian.Uint64(h[17:])),
		Length: int64(binary.LittleEndian.Uint32(h[25:])),
	}
	if r.Kind < recWrite || r.Kind > recBookmark {
		return r, fmt.Errorf("writes: record %d has unknown kind %d", r.Seq, r.Kind)
	}
	hasData := r.Kind == recWrite || r.Kind == recBookmark
	if r.Offset < 0 || r.Length < 0 || (hasData && r.Length > maxData) || (r.Kind == recBookmark && r.Length > 1024) {
		return r, fmt.Errorf("writes: record %d has bad extent %d+%d", r.Seq, r.Offset, r.Length)
	}
	if hasData {
		r.Data = make([]byte, r.Length)
		if _, err := io.ReadFull(rd, r.Data); err != nil {
			return r, fmt.Errorf("writes: record %d: %w", r.Seq, err)
		}
	}
	return r, nil
}

// beginStream sets up a stream session: which journal records the server
// already holds and whether the agent must first send the whole volume.
func (s *Server) beginStream(ctx context.Context, sess *session, resp *beginResponse) error {
	epoch, seq, err := s.repo.Catalog.StreamPosition(ctx, sess.volume.ID)
	if err != nil {
		return err
	}
	if sess.epoch != "" && epoch == sess.epoch {
		sess.applied, sess.ackedSeq = seq, seq
		resp.AckedSeq = seq
	}
	resp.NeedScan = !sess.seeded || epoch != sess.epoch
	if sess.seeded && !resp.NeedScan {
		sess.progress = sess.nblocks // the pending point builds on a whole point
	}
	if sess.volume.Kind == catalog.VolumeDir {
		// A directory volume's address space is sparse and far too large to
		// send whole: it builds on its newest point, or on the empty space
		// (all zeros: no manifest yet). On NeedScan the agent compares the
		// blocks of every file and of the manifest instead (sparse offers).
		sess.progress = sess.nblocks
	}
	return nil
}

type writesResponse struct {
	Acked  uint64     `json:"acked"`
	Points []PointRef `json:"points"`
}

func (s *Server) writes(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	if !sess.stream {
		httpError(w, http.StatusBadRequest, "writes: not a stream session")
		return
	}
	sess.streamMu.Lock()
	defer sess.streamMu.Unlock()
	// Blocks sent by a scan come before the journal replayed over them.
	if _, err := s.flush(ctx, sess, false); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// Points cut by this request are made durable together at its end (or
	// on an error: records applied before it stay applied, as the session
	// remembers them).
	fail := func(code int, err error) {
		if cerr := s.commitStaged(ctx, sess); cerr != nil {
			code, err = http.StatusInternalServerError, cerr
		}
		sess.done = nil // not acknowledged: the agent ships them again
		httpError(w, code, err.Error())
	}
	body := io.LimitReader(r.Body, 256<<20)
	for {
		rec, err := readRecord(body, 64<<20)
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		if err := s.applyRecord(ctx, sess, rec); err != nil {
			slog.Error("applying a journal record failed", "seq", rec.Seq, "err", err)
			fail(statusOf(err), err)
			return
		}
	}
	if err := s.commitStaged(ctx, sess); err != nil {
		sess.done = nil
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	resp := writesResponse{Points: sess.done}
	sess.done = nil
	sess.mu.Lock()
	resp.Acked = sess.ackedSeq
	sess.mu.Unlock()
	writeJSON(w, resp)
}

// errBadRecord marks records the agent got wrong (400, not 500).
type errBadRecord struct{ error }

func statusOf(err error) int {
	var br errBadRecord
	if errors.As(err, &br) {
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// applyRecord applies one record; a flush or cut cuts a point (see
// cutPoint).
func (s *Server) applyRecord(ctx context.Context, sess *session, rec StreamRecord) error {
	if rec.Kind != recCut && rec.Seq <= sess.applied {
		return nil // already applied: the agent is shipping again after an interruption
	}
	switch rec.Kind {
	case recWrite, recDiscard:
		if rec.Offset+rec.Length > sess.point.Size {
			return errBadRecord{fmt.Errorf("record %d writes %d+%d past the end of the %d-byte volume", rec.Seq, rec.Offset, rec.Length, sess.point.Size)}
		}
		bs := sess.blockSize
		for pos := rec.Offset; pos < rec.Offset+rec.Length; {
			blk := pos / bs
			// A change covering the whole block needs not its old content.
			whole := pos == blk*bs && rec.Offset+rec.Length >= min((blk+1)*bs, sess.point.Size)
			buf, err := s.workBlock(ctx, sess, blk, whole)
			if err != nil {
				return err
			}
			in := pos - blk*bs
			n := min(int64(len(buf))-in, rec.Offset+rec.Length-pos)
			if rec.Kind == recWrite {
				copy(buf[in:in+n], rec.Data[pos-rec.Offset:])
			} else {
				clear(buf[in : in+n])
			}
			pos += n
		}
		sess.applied = rec.Seq
		if len(sess.work)+len(sess.carry) >= maxWork {
			// Memory is bounded: points cut so far become durable, then
			// the blocks changed since go into the pending point's rows.
			if err := s.commitStaged(ctx, sess); err != nil {
				return err
			}
			if len(sess.work) >= maxWork {
				if err := s.storeWork(ctx, sess, false); err != nil {
					return err
				}
				if _, err := s.flush(ctx, sess, false); err != nil {
					return err
				}
			}
		}
		return nil
	default: // flush, bookmark or cut
		kind, label := catalog.KindFlush, ""
		switch rec.Kind {
		case recCut:
			kind = "crash"
		case recBookmark:
			kind, label = catalog.KindBookmark, string(rec.Data)
			sess.applied = rec.Seq
		default:
			sess.applied = rec.Seq
		}
		return s.cutPoint(ctx, sess, kind, label, rec.Time, rec.Seq)
	}
}

// workBlock returns the in-memory copy of a block changed since the last
// point, loading it from the repository first unless the caller replaces
// all of it (whole).
func (s *Server) workBlock(ctx context.Context, sess *session, blk int64, whole bool) ([]byte, error) {
	if b, ok := sess.work[blk]; ok {
		return b, nil
	}
	if b, ok := sess.carry[blk]; ok {
		// Changed by a point cut but not yet durable (so not yet in the
		// catalog): it is the block's current content.
		delete(sess.carry, blk)
		sess.work[blk] = b
		return b, nil
	}
	n := min(sess.blockSize, sess.point.Size-blk*sess.blockSize)
	if whole {
		b := make([]byte, n)
		sess.work[blk] = b
		return b, nil
	}
	ref := make([]catalog.ChunkRef, 1)
	if err := s.repo.Catalog.BlockMap(ctx, sess.volume.ID, sess.point.ID, blk, ref); err != nil {
		return nil, err
	}
	var b []byte
	if ref[0].ID == 0 {
		b = make([]byte, n)
	} else {
		data, err := s.repo.ReadChunk(ctx, ref[0], make([]byte, 0, n))
		if err != nil {
			return nil, fmt.Errorf("block %d of %s/%s: %w", blk, sess.machine.Name, sess.volume.Name, err)
		}
		if int64(len(data)) != n {
			return nil, fmt.Errorf("block %d of %s/%s: stored with %d bytes, expected %d", blk, sess.machine.Name, sess.volume.Name, len(data), n)
		}
		b = data
	}
	sess.work[blk] = b
	return b, nil
}

// storeWork stores the changed blocks into the pending point's rows. With
// carry, the blocks are kept as the current content of a point cut but not
// yet durable; otherwise they are dropped.
func (s *Server) storeWork(ctx context.Context, sess *session, carry bool) error {
	if len(sess.work) == 0 {
		return nil
	}
	blks := make([]int64, 0, len(sess.work))
	for blk := range sess.work {
		blks = append(blks, blk)
	}
	slices.Sort(blks)
	rows := make([]catalog.BlockWrite, 0, len(blks))
	// In groups: hashed on every core, looked up 128 at a time, and only
	// blocks the repository lacks compressed (on every core) and stored.
	const group = 128
	var js [group]storeJob
	put := map[pack.Hash]bool{} // two blocks of the same data are stored once
	for start := 0; start < len(blks); start += group {
		jobs := js[:min(group, len(blks)-start)]
		for i := range jobs {
			jobs[i] = storeJob{blk: blks[start+i], data: sess.work[blks[start+i]], stored: jobs[i].stored}
		}
		algo := s.repo.Hash()
		parallel(len(jobs), func(i int) {
			j := &jobs[i]
			if j.zero = isZero(j.data); !j.zero {
				j.hash = pack.Sum(algo, j.data)
			}
		})
		var hashes []pack.Hash
		var at []int
		for i := range jobs {
			if !jobs[i].zero {
				hashes = append(hashes, jobs[i].hash)
				at = append(at, i)
			}
		}
		has, abs, err := s.store.HasMany(ctx, hashes)
		if err != nil {
			return err
		}
		for k, i := range at {
			jobs[i].has = has[k]
		}
		codec := s.repo.Codec()
		parallel(len(jobs), func(i int) {
			if j := &jobs[i]; !j.zero && !j.has {
				j.stored, j.comp = codec.Compress(j.data, j.stored)
			}
		})
		for i := range jobs {
			j := &jobs[i]
			switch {
			case j.zero:
				rows = append(rows, catalog.BlockWrite{Blk: j.blk, Zero: true})
				continue
			case !j.has && !put[j.hash]:
				if err := s.store.PutAbsent(ctx, pack.Entry{Compression: j.comp, HashAlgo: algo, ULen: uint32(len(j.data)), Hash: j.hash}, j.stored, abs); err != nil {
					return err
				}
				put[j.hash] = true
				sess.bytesNew += int64(len(j.stored))
			}
			rows = append(rows, catalog.BlockWrite{Blk: j.blk, Hash: j.hash})
		}
	}
	sess.mu.Lock()
	sess.rows = append(sess.rows, rows...)
	sess.mu.Unlock()
	if carry {
		for blk, b := range sess.work {
			sess.carry[blk] = b
		}
	}
	clear(sess.work)
	return nil
}

// storeJob is one changed block on its way into the repository.
type storeJob struct {
	blk       int64
	data      []byte
	zero, has bool
	hash      pack.Hash
	stored    []byte
	comp      uint8
}

// parallel runs f(0) … f(n-1) on every core.
func parallel(n int, f func(i int)) {
	workers := min(n, runtime.NumCPU())
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// cutPoint ends the pending point of a stream session and opens the next
// one. The point is staged: commitStaged makes every point cut by a writes
// request durable at its end in one pack sync and one catalog transaction
// (group commit), so a request carrying many flushes costs the disk two
// flushes, not two per point. Nothing is acknowledged before that.
func (s *Server) cutPoint(ctx context.Context, sess *session, kind, label string, t time.Time, seq uint64) error {
	if !sess.seeded && sess.progress < sess.nblocks {
		return errBadRecord{fmt.Errorf("cannot cut a point of %s/%s before the whole volume was sent (%d of %d blocks)", sess.machine.Name, sess.volume.Name, sess.progress, sess.nblocks)}
	}
	if err := s.storeWork(ctx, sess, true); err != nil {
		return err
	}
	sess.mu.Lock()
	rows := sess.rows
	sess.rows = nil
	sess.mu.Unlock()
	b := catalog.Batch{VolumeID: sess.volume.ID, PointID: sess.point.ID, AfterPrevious: len(sess.staged) > 0, Blocks: rows, Progress: sess.nblocks,
		Commit: true, Time: t, Kind: kind, Label: label, StreamEpoch: sess.epoch, StreamSeq: seq, Next: new(int64)}
	sortRows(b.Blocks)
	sess.staged = append(sess.staged, b)
	if len(sess.staged) >= maxStaged || len(sess.carry) >= maxWork {
		return s.commitStaged(ctx, sess)
	}
	return nil
}

// commitStaged makes the points cut since the last call durable, all in
// one Store.CommitAll, and adds them to sess.done. If that fails, the
// session's memory runs ahead of the catalog: the session ends, and the
// agent begins a new one from its last acknowledged record.
func (s *Server) commitStaged(ctx context.Context, sess *session) error {
	staged := sess.staged
	if len(staged) == 0 {
		return nil
	}
	sess.staged = nil
	times := make([]time.Time, len(staged))
	for i := range staged {
		staged[i].Committed = &times[i]
	}
	if err := s.store.CommitAll(ctx, staged); err != nil {
		s.end(sess)
		return err
	}
	clear(sess.carry)
	last := staged[len(staged)-1]
	sess.mu.Lock()
	sess.ackedSeq = last.StreamSeq
	sess.seeded = true
	sess.progress, sess.flushed = sess.nblocks, sess.nblocks
	id := sess.point.ID
	// The next pending point, opened with the last commit, has the
	// volume's size (see catalog.Batch.Next).
	sess.point.ID = *last.Next
	sess.mu.Unlock()
	for i, b := range staged {
		sess.done = append(sess.done, PointRef{ID: id, Time: times[i], Seq: b.StreamSeq, Kind: b.Kind})
		if b.Next != nil {
			id = *b.Next
		}
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
