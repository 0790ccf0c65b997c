package ingest

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

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
// Pushes carry nearly all of a first backup's bytes, so they bypass
// HTTP/2: each of the client's workers upgrades an HTTP/1.1 connection of
// its own (GET /v1/sessions/{id}/push-stream, "Upgrade: rewind-push/1",
// authenticated like every request) and then sends frames on the bare TLS
// stream, a u32 length and a push body each, and the server answers each,
// once the blocks are stored, with a u32 length and a JSON pushReply.
// Moving 320 MiB this way costs half the CPU it costs as HTTP/2 request
// bodies (0.44–0.50 s against 0.86–0.95 s for both ends, measured on this
// machine). The first error ends the stream.
//
// A push body covers the block range [First, End) and lists each of its
// blocks once, in order, as in a blocks request (see appendBlockHeader),
// the hash left zero; a block with no bytes (ulen 0) is all zeros:
//
//	First u64 | End u64 | block records...

// pushProtocol is the protocol a push stream upgrades to.
const pushProtocol = "rewind-push/1"

// pushIdle is how long a push stream may wait for its next frame.
const pushIdle = 5 * time.Minute

// pushHeaderSize is the fixed start of a push body.
const pushHeaderSize = 16

// pushAnswer is the server's answer to a push.
type pushAnswer struct {
	Blocks int `json:"blocks"` // blocks with data in the push
	Known  int `json:"known"`  // of those, held already (unchanged or stored)
}

// pushReply is a push stream's answer frame: the answer, or an error with
// the HTTP status it stands for (after which the server closes the stream).
type pushReply struct {
	pushAnswer
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
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

func putPushBuf(b []byte) {
	select {
	case pushBufs <- b:
	default:
	}
}

// pushStream serves one push stream (see above).
func (s *Server) pushStream(w http.ResponseWriter, r *http.Request, sess *session) {
	if sess.stream || sess.replica {
		httpError(w, http.StatusBadRequest, "push: only a backup session takes pushed blocks")
		return
	}
	if r.ProtoMajor != 1 || !strings.EqualFold(r.Header.Get("Upgrade"), pushProtocol) {
		w.Header().Set("Upgrade", pushProtocol)
		httpError(w, http.StatusUpgradeRequired, "push-stream: upgrade an HTTP/1.1 connection to "+pushProtocol)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		httpError(w, http.StatusInternalServerError, "push-stream: this connection cannot be taken over")
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		slog.Warn("push-stream: taking over the connection failed", "err", err)
		return
	}
	defer conn.Close()
	if !s.track(conn, true) {
		return // the server is closing
	}
	defer s.track(conn, false)
	// The request's context stays valid until this handler returns.
	ctx := r.Context()
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + pushProtocol + "\r\n\r\n")
	if rw.Flush() != nil {
		return
	}
	var hdr [4]byte
	for {
		conn.SetReadDeadline(time.Now().Add(pushIdle))
		if _, err := io.ReadFull(rw, hdr[:]); err != nil {
			return // the client is done, or gone
		}
		var reply pushReply
		if n := binary.LittleEndian.Uint32(hdr[:]); n > pushMaxBody {
			reply.Status, reply.Error = http.StatusRequestEntityTooLarge, fmt.Sprintf("push: a frame of %d bytes (at most %d)", n, pushMaxBody)
		} else {
			body := pushBuf(int(n))
			if _, err := io.ReadFull(rw, body); err != nil {
				putPushBuf(body)
				return
			}
			var err error
			reply.pushAnswer, reply.Status, err = s.pushBlocks(ctx, sess, body)
			putPushBuf(body)
			if err != nil {
				reply.Error = err.Error()
			}
		}
		b, _ := json.Marshal(reply)
		conn.SetWriteDeadline(time.Now().Add(pushIdle))
		rw.Write(binary.LittleEndian.AppendUint32(hdr[:0], uint32(len(b))))
		rw.Write(b)
		if rw.Flush() != nil || reply.Error != "" {
			return
		}
	}
}

// track adds a taken-over connection to those Close ends (add), or drops
// it; it reports false when the server is closing.
func (s *Server) track(conn net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, conn)
		s.connsDone.Done()
		return true
	}
	if s.closing {
		return false
	}
	s.conns[conn] = struct{}{}
	s.connsDone.Add(1)
	return true
}

// pushBlocks stores a push body's blocks and returns the answer, or an
// error and the HTTP status it stands for.
func (s *Server) pushBlocks(ctx context.Context, sess *session, body []byte) (pushAnswer, int, error) {
	var ans pushAnswer
	sess.mu.Lock()
	dead := sess.dead
	sess.mu.Unlock()
	if dead {
		return ans, http.StatusConflict, errors.New("session superseded by a newer one")
	}
	if len(body) < pushHeaderSize {
		return ans, http.StatusBadRequest, errors.New("push: short header")
	}
	first, end := int64(binary.LittleEndian.Uint64(body)), int64(binary.LittleEndian.Uint64(body[8:]))
	if first < 0 || end <= first || end-first > maxOffer || end > sess.nblocks {
		return ans, http.StatusBadRequest, fmt.Errorf("push: bad range [%d, %d) of a volume of %d blocks", first, end, sess.nblocks)
	}
	cur := make([]catalog.ChunkRef, end-first)
	if err := s.repo.Catalog.BlockMap(ctx, sess.volume.ID, sess.point.ID, first, cur); err != nil {
		return ans, http.StatusInternalServerError, err
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
	for blk := first; blk < end; blk++ {
		var b sentBlock
		var err error
		if b, rest, err = cutBlock(rest, uint32(sess.blockSize), sess.hash); err != nil {
			return ans, http.StatusBadRequest, err
		}
		if b.Blk != blk {
			return ans, http.StatusBadRequest, fmt.Errorf("push: block %d where block %d belongs (each block of the range once, in order)", b.Blk, blk)
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
				return ans, http.StatusBadRequest, fmt.Errorf("push: block %d: %w", blk, err)
			}
			data = plain
		}
		if want := min(sess.blockSize, sess.point.Size-blk*sess.blockSize); int64(len(data)) != want || int64(b.Entry.ULen) != want {
			return ans, http.StatusBadRequest, fmt.Errorf("push: block %d has %d bytes, expected %d", blk, len(data), want)
		}
		b.Entry.Hash = pack.Sum(sess.hash, data)
		if c.ID != 0 && c.Hash == b.Entry.Hash {
			ans.Known++
			continue
		}
		cand = append(cand, changed{blk, b.Entry, b.Stored})
	}
	if len(rest) != 0 {
		return ans, http.StatusBadRequest, errors.New("push: bytes after its range's last block")
	}
	hashes := make([]pack.Hash, len(cand))
	for i, c := range cand {
		hashes[i] = c.entry.Hash
	}
	has, abs, err := s.store.HasMany(ctx, hashes)
	if err != nil {
		return ans, http.StatusInternalServerError, err
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
			return ans, http.StatusInternalServerError, err
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
		return ans, http.StatusInternalServerError, err
	}
	return ans, 0, nil
}

// pushConn is a worker's push stream.
type pushConn struct {
	conn net.Conn
	br   *bufio.Reader
	stop func() bool // stops closing conn when the context ends
}

// openPush opens a push stream for a session. An answer other than the
// upgrade is a *ServerError.
func (c *Client) openPush(ctx context.Context, session string) (*pushConn, error) {
	u, err := url.Parse(c.base)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{}
	if c.tlsCfg != nil {
		cfg = c.tlsCfg.Clone()
	}
	cfg.NextProtos = []string{"http/1.1"}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, c.base+"/v1/sessions/"+session+"/push-stream", nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", pushProtocol)
	conn.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(conn)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		conn.Close()
		var er errorResponse
		if json.Unmarshal(b, &er) != nil || er.Error == "" {
			er.Error = strings.TrimSpace(string(b))
		}
		return nil, &ServerError{Status: resp.StatusCode, Msg: er.Error}
	}
	conn.SetDeadline(time.Time{})
	return &pushConn{conn: conn, br: br, stop: context.AfterFunc(ctx, func() { conn.Close() })}, nil
}

func (p *pushConn) close() {
	p.stop()
	p.conn.Close()
}

// push sends a frame (a push body behind 4 bytes left for its length) and
// reads the answer.
func (p *pushConn) push(frame []byte) (pushAnswer, error) {
	binary.LittleEndian.PutUint32(frame, uint32(len(frame)-4))
	if _, err := p.conn.Write(frame); err != nil {
		return pushAnswer{}, err
	}
	var hdr [4]byte
	if _, err := io.ReadFull(p.br, hdr[:]); err != nil {
		return pushAnswer{}, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > 1<<20 {
		return pushAnswer{}, fmt.Errorf("push stream: an answer of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(p.br, b); err != nil {
		return pushAnswer{}, err
	}
	var r pushReply
	if err := json.Unmarshal(b, &r); err != nil {
		return pushAnswer{}, fmt.Errorf("answer to push: %w", err)
	}
	if r.Error != "" {
		return pushAnswer{}, &ServerError{Status: r.Status, Msg: r.Error}
	}
	return r.pushAnswer, nil
}

// pushBatch sends blocks [first, end) compressed over ps, for the server
// to hash and keep those it lacks; it returns what the server said it
// held.
func (c *Client) pushBatch(ctx context.Context, ps *pushConn, up upload, opt BackupOptions, bs, first, end int64, w *batchWork) (batchCount, pushAnswer, error) {
	var ans pushAnswer
	n, holes, err := w.read(opt, bs, first, end)
	if err != nil {
		return n, ans, err
	}
	size := 4 + pushHeaderSize
	for i := first; i < end; i++ {
		size += blockHeaderSize + pack.MaxStoredLen(len(w.block(bs, first, i)))
	}
	if cap(w.body) < size {
		w.body = make([]byte, 0, size)
	}
	frame := append(w.body[:0], 0, 0, 0, 0) // the length, filled in by push
	frame = binary.LittleEndian.AppendUint64(frame, uint64(first))
	frame = binary.LittleEndian.AppendUint64(frame, uint64(end))
	for i := first; i < end; i++ {
		b := w.block(bs, first, i)
		if holes[i-first] || w.isZero(b) {
			frame = appendBlockHeader(frame, sentBlock{Blk: i}, 0)
			continue
		}
		frame = w.appendCompressed(frame, up.codec, sentBlock{Blk: i}, b)
		n.sentBlocks++
	}
	if err := c.limit.wait(ctx, len(frame)); err != nil {
		return n, ans, err
	}
	c.sent.Add(int64(len(frame)))
	ans, err = ps.push(frame)
	w.body = frame[:0]
	if err != nil {
		return n, ans, err
	}
	n.sentBlocks -= int64(ans.Known)
	return n, ans, nil
}
