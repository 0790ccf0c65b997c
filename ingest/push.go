package ingest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// Pushing: a backup of a volume with no point yet has nothing to compare
// against, and on a first backup nearly every block is new. Offering
// hashes first would make the client hash every block and wait a round
// trip for an answer that is almost always "send it". Instead the client
// sends each range of blocks compressed, without hashes, and the server
// hashes what it decodes (which it must do anyway to verify a block)
// and keeps only the blocks it does not hold. The answer says how many
// it held already; when that share grows (a volume much like one already
// stored), the client goes back to offering, so bandwidth is wasted on at
// most the batches in flight.
//
// A push body covers the block range [First, End) and lists each of its
// blocks once, in order, as in a blocks request (see appendBlockHeader),
// the hash left zero; a block with no bytes (ulen 0) is all zeros:
//
//	First u64 | End u64 | block records...

// pushHeaderSize is the fixed start of a push body.
const pushHeaderSize = 16

// pushAnswer is the server's answer to a push.
type pushAnswer struct {
	Blocks int `json:"blocks"` // blocks with data in the push
	Known  int `json:"known"`  // of those, held already (unchanged or stored)
}

// pushMaxBody bounds a push body, which the server holds whole: a
// client's pushes carry about 4 MiB of blocks (see Client.attempt).
const pushMaxBody = 16 << 20

// pushBufs keeps push bodies for reuse: a fresh multi-megabyte buffer
// per request costs more to clear than the request costs to decode.
var pushBufs = make(chan []byte, 8)

func pushBuf(n int) []byte {
	select {
	case b := <-pushBufs:
		if cap(b) >= n {
			return b[:n]
		}
	default:
	}
	return make([]byte, n, max(n, 8<<20))
}

func (s *Server) push(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	if sess.stream || sess.replica {
		httpError(w, http.StatusBadRequest, "push: only a backup session takes pushed blocks")
		return
	}
	if r.ContentLength < 0 || r.ContentLength > pushMaxBody {
		httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("push: a body of %d bytes (it must have a length of at most %d)", r.ContentLength, pushMaxBody))
		return
	}
	body := pushBuf(int(r.ContentLength))
	defer func() {
		select {
		case pushBufs <- body:
		default:
		}
	}()
	if _, err := io.ReadFull(r.Body, body); err != nil {
		httpError(w, http.StatusBadRequest, "push: "+err.Error())
		return
	}
	if len(body) < pushHeaderSize {
		httpError(w, http.StatusBadRequest, "push: short header")
		return
	}
	first, end := int64(binary.LittleEndian.Uint64(body)), int64(binary.LittleEndian.Uint64(body[8:]))
	if first < 0 || end <= first || end-first > maxOffer || end > sess.nblocks {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("push: bad range [%d, %d) of a volume of %d blocks", first, end, sess.nblocks))
		return
	}
	cur := make([]catalog.ChunkRef, end-first)
	if err := s.repo.Catalog.BlockMap(ctx, sess.volume.ID, sess.point.ID, first, cur); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// Decode and hash every block; keep those that changed.
	type changed struct {
		blk    int64
		entry  pack.Entry
		stored []byte
	}
	var cand []changed
	var rows []catalog.BlockWrite
	var plain []byte
	rest := body[pushHeaderSize:]
	ans := pushAnswer{}
	for blk := first; blk < end; blk++ {
		var b sentBlock
		var err error
		if b, rest, err = cutBlock(rest, uint32(sess.blockSize), sess.hash); err != nil {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		if b.Blk != blk {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("push: block %d where block %d belongs (each block of the range once, in order)", b.Blk, blk))
			return
		}
		c := cur[blk-first]
		if b.Entry.ULen == 0 && len(b.Stored) == 0 {
			if c.ID != 0 {
				rows = append(rows, catalog.BlockWrite{Blk: blk, Zero: true})
			}
			continue
		}
		ans.Blocks++
		data := b.Stored // a block sent as it is is hashed where it lies
		if b.Entry.Compression != pack.CompressionNone {
			if plain, err = s.repo.Codec().Expand(b.Entry, b.Stored, plain); err != nil {
				httpError(w, http.StatusBadRequest, fmt.Sprintf("push: block %d: %v", blk, err))
				return
			}
			data = plain
		}
		if want := min(sess.blockSize, sess.point.Size-blk*sess.blockSize); int64(len(data)) != want || int64(b.Entry.ULen) != want {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("push: block %d has %d bytes, expected %d", blk, len(data), want))
			return
		}
		b.Entry.Hash = pack.Sum(sess.hash, data)
		if c.ID != 0 && c.Hash == b.Entry.Hash {
			ans.Known++
			continue
		}
		cand = append(cand, changed{blk, b.Entry, b.Stored})
	}
	if len(rest) != 0 {
		httpError(w, http.StatusBadRequest, "push: bytes after its range's last block")
		return
	}
	hashes := make([]pack.Hash, len(cand))
	for i, c := range cand {
		hashes[i] = c.entry.Hash
	}
	has, abs, err := s.store.HasMany(ctx, hashes)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var stored, blocksNew int64
	for i, c := range cand {
		rows = append(rows, catalog.BlockWrite{Blk: c.blk, Hash: c.entry.Hash})
		if has[i] {
			ans.Known++
			continue
		}
		if err := s.store.PutAbsent(ctx, c.entry, c.stored, abs); err != nil {
			slog.Error("storing a block failed", "err", err)
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		stored += int64(len(c.stored))
		blocksNew++
	}
	sess.mu.Lock()
	sess.rows = append(sess.rows, rows...)
	sess.unflushed += stored
	sess.bytesNew += stored
	sess.blocksNew += blocksNew
	sess.ranges[first] = &blockRange{end: end}
	sess.advance()
	sess.mu.Unlock()
	if err := s.flushIfDue(ctx, sess); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, ans)
}

// pushBatch sends blocks [first, end) compressed, for the server to hash
// and keep those it lacks; it returns what the server said it held.
func (c *Client) pushBatch(ctx context.Context, up upload, opt BackupOptions, bs, first, end int64, w *batchWork) (batchCount, pushAnswer, error) {
	var ans pushAnswer
	n, holes, err := w.read(opt, bs, first, end)
	if err != nil {
		return n, ans, err
	}
	size := pushHeaderSize
	for i := first; i < end; i++ {
		size += blockHeaderSize + pack.MaxStoredLen(len(w.block(bs, first, i)))
	}
	if cap(w.body) < size {
		w.body = make([]byte, 0, size)
	}
	body := binary.LittleEndian.AppendUint64(w.body[:0], uint64(first))
	body = binary.LittleEndian.AppendUint64(body, uint64(end))
	for i := first; i < end; i++ {
		b := w.block(bs, first, i)
		if holes[i-first] || w.isZero(b) {
			body = appendBlockHeader(body, sentBlock{Blk: i}, 0)
			continue
		}
		body = w.appendCompressed(body, up.codec, sentBlock{Blk: i}, b)
		n.sentBlocks++
	}
	b, err := c.post(ctx, "/v1/sessions/"+up.session+"/push", "application/octet-stream", body)
	if err != nil {
		w.body = nil // the transport may still hold it
		return n, ans, err
	}
	w.body = body[:0]
	if err := json.Unmarshal(b, &ans); err != nil {
		return n, ans, fmt.Errorf("answer to push: %w", err)
	}
	n.sentBlocks -= int64(ans.Known)
	return n, ans, nil
}
