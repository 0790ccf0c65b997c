package ingest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// flushBytes and flushRows bound what a session holds before it makes its
// progress durable; they also bound the server's memory per session.
const (
	flushBytes = 64 << 20
	flushRows  = 8192
)

// Server receives blocks into one repository.
type Server struct {
	repo  *repository.Repo
	store *repository.Store

	mu        sync.Mutex
	sessions  map[string]*session
	byVolume  map[int64]*session
	conns     map[net.Conn]struct{} // push streams (see push.go)
	connsDone sync.WaitGroup
	closing   bool
	tokens    map[string]knownToken // see machineByToken
}

// knownToken is a machine token the catalog recognised, until a moment.
type knownToken struct {
	m     catalog.Machine
	until time.Time
}

// tokenTTL is how long a recognised machine token is believed without
// asking the catalog again. A capture agent makes a request for every few
// flushes, and the lookup was a tenth of the server's CPU under
// synchronous writes. Tokens never change; a machine removed (by a tape
// recovery) is refused within tokenTTL.
const tokenTTL = 2 * time.Second

// machineByToken is Catalog.MachineByToken through the recognised tokens.
func (s *Server) machineByToken(ctx context.Context, hash []byte) (catalog.Machine, error) {
	now := time.Now()
	s.mu.Lock()
	k, ok := s.tokens[string(hash)]
	s.mu.Unlock()
	if ok && now.Before(k.until) {
		return k.m, nil
	}
	m, err := s.repo.Catalog.MachineByToken(ctx, hash)
	if err != nil {
		return m, err
	}
	s.mu.Lock()
	if len(s.tokens) >= 1024 {
		clear(s.tokens)
	}
	s.tokens[string(hash)] = knownToken{m, now.Add(tokenTTL)}
	s.mu.Unlock()
	return m, nil
}

// NewServer recovers the repository after any unclean stop and returns a
// server writing into it. The caller holds the repository's lock.
func NewServer(ctx context.Context, repo *repository.Repo) (*Server, error) {
	store, err := repo.NewStore(ctx)
	if err != nil {
		return nil, err
	}
	return &Server{repo: repo, store: store, sessions: map[string]*session{}, byVolume: map[int64]*session{}, conns: map[net.Conn]struct{}{}, tokens: map[string]knownToken{}}, nil
}

// Close ends the push streams (which the HTTP server does not track) and
// seals the open pack.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.connsDone.Wait()
	return s.store.Close(ctx)
}

// Handler returns the HTTP handler of the protocol.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sessions", s.auth(s.begin))
	mux.HandleFunc("POST /v1/sessions/{id}/offer", s.auth(s.withSession(s.offer)))
	mux.HandleFunc("POST /v1/sessions/{id}/blocks", s.auth(s.withSession(s.blocks)))
	mux.HandleFunc("GET /v1/sessions/{id}/push-stream", s.auth(s.withSession(s.pushStream)))
	mux.HandleFunc("POST /v1/sessions/{id}/commit", s.auth(s.withSession(s.commit)))
	mux.HandleFunc("POST /v1/sessions/{id}/writes", s.auth(s.withSession(s.writes)))
	mux.HandleFunc("POST /v1/replica/state", s.auth(s.replicaState))
	mux.HandleFunc("POST /v1/replica/sessions", s.auth(s.replicaBegin))
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	return mux
}

// Serve serves the protocol on ln with TLS until ctx ends, then shuts down
// gracefully and seals the open pack.
func (s *Server) Serve(ctx context.Context, ln net.Listener, cert tls.Certificate) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		HTTP2:             http2Config(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		s.Close(context.Background())
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	return s.Close(context.Background())
}

// http2Config widens HTTP/2's receive windows: with the default 1 MiB
// per connection, one handler slow to read (waiting on the disk) stops
// every other batch in flight on the connection.
func http2Config() *http.HTTP2Config {
	return &http.HTTP2Config{MaxReceiveBufferPerConnection: 64 << 20, MaxReceiveBufferPerStream: 16 << 20}
}

type machineKey struct{}

// peerKey marks a request authenticated with a replication token (see
// replica.go).
type peerKey struct{}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			httpError(w, http.StatusUnauthorized, "authentication required: send the machine's token")
			return
		}
		m, err := s.machineByToken(r.Context(), HashToken(tok))
		if errors.Is(err, catalog.ErrNotFound) {
			p, perr := s.repo.Catalog.PeerByToken(r.Context(), HashToken(tok))
			if perr == nil {
				h(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, p)))
				return
			}
			err = perr
		}
		if errors.Is(err, catalog.ErrNotFound) {
			slog.Warn("refused a request with an unknown token", "remote", r.RemoteAddr)
			httpError(w, http.StatusUnauthorized, "unknown token")
			return
		}
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), machineKey{}, m)))
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorResponse{Error: msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// session is one point being received.
type session struct {
	id        string
	machine   catalog.Machine
	volume    catalog.Volume
	point     catalog.Point // the pending point being filled
	blockSize int64
	nblocks   int64
	stream    bool   // continuous capture: see stream.go
	epoch     string // the agent's spool identity
	seeded    bool   // the volume has a committed point to build on

	streamMu sync.Mutex // stream: one writes request at a time

	mu        sync.Mutex
	dead      bool
	expect    map[int64]expected // blocks asked for, not yet received
	ranges    map[int64]*blockRange
	progress  int64 // every block below is recorded
	flushed   int64 // the progress last made durable
	rows      []catalog.BlockWrite
	unflushed int64
	bytesNew  int64
	blocksNew int64
	applied   uint64           // stream: last journal record applied
	ackedSeq  uint64           // stream: last journal record in a durable point
	work      map[int64][]byte // stream: blocks changed since the last point

	// A replica session (replica.go) receives a point of another server:
	// offers list only the blocks that changed, and the point keeps its
	// source's time, kind and label.
	replica bool
	peerID  int64
	hash    uint8 // the blocks' hash: this repository's, or a replica source's
	srcTime time.Time
	srcKind string
	srcLbl  string

	// stream, guarded by streamMu: points cut but not yet durable, the
	// blocks they changed (not yet in the catalog), and points made
	// durable that the current writes request has not yet answered with.
	staged []catalog.Batch
	carry  map[int64][]byte
	done   []PointRef
}

// flushLimit is how many stored bytes a session receives before it makes
// them durable. Replica sessions flush more often: what a crash of this
// server loses is sent again, and a replica's source is not waiting on
// fsync latency the way a capture agent is.
func (sess *session) flushLimit() int64 {
	if sess.replica {
		return replicaFlushBytes
	}
	return flushBytes
}

// expected is a block asked for: its hash, and the proof it was absent.
type expected struct {
	hash pack.Hash
	abs  repository.Absence
}

type blockRange struct {
	end         int64
	outstanding int
}

func (s *Server) begin(w http.ResponseWriter, r *http.Request) {
	m, ok := r.Context().Value(machineKey{}).(catalog.Machine)
	if !ok {
		slog.Warn("refused a replication token on the backup endpoint", "remote", r.RemoteAddr)
		httpError(w, http.StatusForbidden, "this is a replication token (rewind peer add): it may only replicate, not back up")
		return
	}
	var req beginRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "begin: "+err.Error())
		return
	}
	if req.Machine != m.Name {
		slog.Warn("refused a token writing another machine", "token_machine", m.Name, "asked", req.Machine)
		httpError(w, http.StatusForbidden, fmt.Sprintf("this token belongs to machine %q and may not write machine %q", m.Name, req.Machine))
		return
	}
	if err := ValidName(req.Volume); err != nil {
		httpError(w, http.StatusBadRequest, "volume: "+err.Error())
		return
	}
	if req.BlockSize == 0 {
		req.BlockSize = s.repo.Config.DefaultBlockSize
	}
	if err := ValidBlockSize(req.BlockSize); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Size <= 0 {
		httpError(w, http.StatusBadRequest, "begin: the volume is empty")
		return
	}
	if req.Kind == "" {
		req.Kind = catalog.KindScan
	}
	if req.VolumeKind == "" {
		req.VolumeKind = catalog.VolumeBlock
	}
	if req.VolumeKind != catalog.VolumeBlock && (req.VolumeKind != catalog.VolumeDir || !req.Stream) {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("begin: volume kind %q (a dir volume is written only by the directory shim's stream)", req.VolumeKind))
		return
	}
	ctx := r.Context()
	vol, err := s.repo.Catalog.EnsureVolumeKind(ctx, m.ID, req.Volume, req.VolumeKind, req.Size, req.BlockSize)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if vol.Kind != req.VolumeKind {
		httpError(w, http.StatusConflict, fmt.Sprintf("volume %s/%s is a %s volume; this session writes a %s volume (use another volume name)", m.Name, vol.Name, vol.Kind, req.VolumeKind))
		return
	}
	// A new session on a volume supersedes any earlier one (whose client is
	// gone or gave up); its point is resumed.
	s.supersede(vol.ID)
	p, resumed, err := s.repo.Catalog.BeginPoint(ctx, vol.ID, req.Size, req.Kind, req.Label)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	_, err = s.repo.Catalog.LatestPoint(ctx, vol.ID)
	seeded := err == nil
	idb := make([]byte, 16)
	rand.Read(idb)
	sess := &session{
		id: hex.EncodeToString(idb), machine: m, volume: vol, point: p, seeded: seeded,
		blockSize: vol.BlockSize, nblocks: (req.Size + vol.BlockSize - 1) / vol.BlockSize,
		expect: map[int64]expected{}, ranges: map[int64]*blockRange{}, progress: p.Progress, flushed: p.Progress,
		hash: s.repo.Hash(), stream: req.Stream, epoch: req.Epoch, work: map[int64][]byte{}, carry: map[int64][]byte{},
	}
	resp := beginResponse{Session: sess.id, PointID: p.ID, BlockSize: vol.BlockSize, ResumeFrom: p.Progress, Resumed: resumed,
		Compression: pack.CompressionName(s.repo.Codec().Compression()), Compressions: pack.Compressions(), Hash: pack.HashName(s.repo.Hash()),
		Push: !seeded && !req.Stream}
	if req.Stream {
		if err := s.beginStream(ctx, sess, &resp); err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	s.mu.Lock()
	s.sessions[sess.id] = sess
	s.byVolume[vol.ID] = sess
	s.mu.Unlock()
	slog.Info("session begun", "machine", m.Name, "volume", vol.Name, "point", p.ID, "resumed", resumed, "resume_from", p.Progress, "stream", req.Stream)
	writeJSON(w, resp)
}

// end ends a session: its client must begin again.
func (s *Server) end(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess.id)
	if s.byVolume[sess.volume.ID] == sess {
		delete(s.byVolume, sess.volume.ID)
	}
	s.mu.Unlock()
	sess.mu.Lock()
	sess.dead = true
	sess.mu.Unlock()
}

func (s *Server) withSession(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		m, isMachine := r.Context().Value(machineKey{}).(catalog.Machine)
		p, _ := r.Context().Value(peerKey{}).(catalog.Peer)
		s.mu.Lock()
		sess := s.sessions[r.PathValue("id")]
		s.mu.Unlock()
		if sess == nil {
			httpError(w, http.StatusNotFound, "no such session (the server restarted or a newer session took over): begin again")
			return
		}
		if (isMachine && (sess.peerID != 0 || sess.machine.ID != m.ID)) || (!isMachine && sess.peerID != p.ID) {
			httpError(w, http.StatusForbidden, "this session belongs to another machine or peer")
			return
		}
		sess.mu.Lock()
		dead := sess.dead
		sess.mu.Unlock()
		if dead {
			httpError(w, http.StatusConflict, "session superseded by a newer one")
			return
		}
		h(w, r, sess)
	}
}

func (s *Server) offer(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	body, err := io.ReadAll(io.LimitReader(r.Body, 20+maxOffer*offerEntrySize+1))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	o, err := decodeOffer(body)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	full := len(o.Entries) == int(o.End-o.First)
	if o.End > sess.nblocks || (!full && !sess.stream && !sess.replica) {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("offer: range [%d, %d) must list each of the volume's %d blocks once", o.First, o.End, sess.nblocks))
		return
	}
	if sess.stream {
		// Scanned content supersedes blocks changed by journal records since
		// the last point: store those first, so the scan's rows come later
		// and win.
		sess.streamMu.Lock()
		var err error
		if len(sess.work) > 0 {
			err = s.storeWork(ctx, sess, false)
			if err == nil {
				_, err = s.flush(ctx, sess, false) // so the comparison below sees them
			}
		}
		sess.streamMu.Unlock()
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	// What each block holds now in the pending point (its own rows, or the
	// newest committed version): unchanged blocks need no row.
	cur := make([]catalog.ChunkRef, o.End-o.First)
	if err := s.repo.Catalog.BlockMap(ctx, sess.volume.ID, sess.point.ID, o.First, cur); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var need, ask []uint32
	var rows []catalog.BlockWrite
	for i, e := range o.Entries {
		if (full && e.Blk != o.First+int64(i)) || (i > 0 && e.Blk <= o.Entries[i-1].Blk) {
			httpError(w, http.StatusBadRequest, "offer: blocks must be listed in order, each once")
			return
		}
		c := cur[e.Blk-o.First]
		switch {
		case e.Zero:
			if c.ID != 0 {
				rows = append(rows, catalog.BlockWrite{Blk: e.Blk, Zero: true})
			}
		case c.ID != 0 && c.Hash == e.Hash:
			// unchanged
		default:
			ask = append(ask, uint32(i))
		}
	}
	// Changed blocks: stored already (by any machine), or needed.
	hashes := make([]pack.Hash, len(ask))
	for j, i := range ask {
		hashes[j] = o.Entries[i].Hash
	}
	has, abs, err := s.store.HasMany(ctx, hashes)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	for j, i := range ask {
		if has[j] {
			rows = append(rows, catalog.BlockWrite{Blk: o.Entries[i].Blk, Hash: o.Entries[i].Hash})
		} else {
			need = append(need, i)
		}
	}
	sess.mu.Lock()
	sess.rows = append(sess.rows, rows...)
	for _, i := range need {
		sess.expect[o.Entries[i].Blk] = expected{o.Entries[i].Hash, abs}
	}
	if full && sess.volume.Kind != catalog.VolumeDir { // a dir volume's progress is always whole
		sess.ranges[o.First] = &blockRange{end: o.End, outstanding: len(need)}
		sess.advance()
	}
	sess.mu.Unlock()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(encodeIndices(need))
}

// advance moves progress over completed ranges. Called with mu held.
func (sess *session) advance() {
	for {
		rg, ok := sess.ranges[sess.progress]
		if !ok || rg.outstanding > 0 {
			return
		}
		delete(sess.ranges, sess.progress)
		sess.progress = rg.end
	}
}

func (s *Server) blocks(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	body := io.LimitReader(r.Body, maxOffer*(sess.blockSize*2+blockHeaderSize))
	var buf, plain []byte
	var received int
	for {
		b, nb, err := readBlock(body, uint32(sess.blockSize), sess.hash, buf)
		buf = nb
		if err == io.EOF {
			break
		}
		if err != nil {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		sess.mu.Lock()
		exp, ok := sess.expect[b.Blk]
		sess.mu.Unlock()
		if !ok || exp.hash != b.Entry.Hash {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("blocks: block %d was not asked for with that hash", b.Blk))
			return
		}
		// Verify before storing: a block is kept only under its true hash,
		// so no client can poison another machine's de-duplicated data.
		plain, err = s.repo.Codec().Decode(b.Entry, b.Stored, plain)
		if err != nil {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("blocks: block %d: %v", b.Blk, err))
			return
		}
		if want := min(sess.blockSize, sess.point.Size-b.Blk*sess.blockSize); int64(len(plain)) != want {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("blocks: block %d has %d bytes, expected %d", b.Blk, len(plain), want))
			return
		}
		if err := s.store.PutAbsent(ctx, b.Entry, b.Stored, exp.abs); err != nil {
			slog.Error("storing a block failed", "err", err)
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		sess.mu.Lock()
		delete(sess.expect, b.Blk)
		sess.rows = append(sess.rows, catalog.BlockWrite{Blk: b.Blk, Hash: b.Entry.Hash})
		sess.unflushed += int64(len(b.Stored))
		sess.bytesNew += int64(len(b.Stored))
		sess.blocksNew++
		for first, rg := range sess.ranges {
			if b.Blk >= first && b.Blk < rg.end {
				rg.outstanding--
				break
			}
		}
		sess.advance()
		sess.mu.Unlock()
		received++
	}
	if err := s.flushIfDue(ctx, sess); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, map[string]int{"received": received})
}

// flushIfDue flushes a session holding enough unflushed bytes or rows.
func (s *Server) flushIfDue(ctx context.Context, sess *session) error {
	sess.mu.Lock()
	due := sess.unflushed >= sess.flushLimit() || len(sess.rows) >= flushRows
	sess.mu.Unlock()
	if !due {
		return nil
	}
	_, err := s.flush(ctx, sess, false)
	return err
}

// flush makes the session's recorded blocks and progress durable, and with
// commit also commits the point.
func (s *Server) flush(ctx context.Context, sess *session, commit bool) (catalog.Batch, error) {
	sess.mu.Lock()
	if commit && ((!sess.replica && sess.progress < sess.nblocks) || len(sess.expect) > 0) {
		p, n := sess.progress, sess.nblocks
		sess.mu.Unlock()
		return catalog.Batch{}, fmt.Errorf("commit: only blocks below %d of %d are recorded", p, n)
	}
	if !commit && len(sess.rows) == 0 && sess.progress == sess.flushed {
		sess.mu.Unlock()
		return catalog.Batch{}, nil // nothing new to make durable
	}
	rows := sess.rows
	sess.rows = nil
	unflushed := sess.unflushed
	sess.unflushed = 0
	b := catalog.Batch{VolumeID: sess.volume.ID, PointID: sess.point.ID, Blocks: rows, Progress: sess.progress, Commit: commit, Time: time.Now().UTC()}
	if sess.replica {
		b.Time, b.Kind, b.Label = sess.srcTime, sess.srcKind, sess.srcLbl
		if commit {
			b.Progress = sess.nblocks
		}
	}
	sess.mu.Unlock()
	sortRows(b.Blocks)
	if err := s.store.Commit(ctx, b); err != nil {
		sess.mu.Lock()
		sess.rows = append(rows, sess.rows...)
		sess.unflushed += unflushed
		sess.mu.Unlock()
		return b, err
	}
	sess.mu.Lock()
	sess.flushed = b.Progress
	sess.mu.Unlock()
	return b, nil
}

func (s *Server) commit(w http.ResponseWriter, r *http.Request, sess *session) {
	var req commitRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil && err != io.EOF {
		httpError(w, http.StatusBadRequest, "commit: "+err.Error())
		return
	}
	b, err := s.flush(r.Context(), sess, true)
	if err != nil {
		httpError(w, http.StatusConflict, err.Error())
		return
	}
	s.end(sess)
	sess.mu.Lock()
	resp := commitResponse{Point: PointRef{ID: sess.point.ID, Time: b.Time}, BytesNew: sess.bytesNew, BlocksNew: sess.blocksNew}
	sess.mu.Unlock()
	slog.Info("point committed", "machine", sess.machine.Name, "volume", sess.volume.Name, "point", sess.point.ID, "bytes_new", resp.BytesNew)
	writeJSON(w, resp)
}

// ValidBlockSize checks a volume block size: a power of two from 4 KiB to
// 1 MiB.
func ValidBlockSize(n int64) error {
	if n < 4096 || n > 1<<20 || n&(n-1) != 0 {
		return fmt.Errorf("block size %d: must be a power of two from 4096 to 1048576", n)
	}
	return nil
}

// ValidName checks a machine or volume name: 1–128 printable characters,
// no slash (names become directories in the time-travel filesystem).
func ValidName(n string) error {
	if n == "" || len(n) > 128 || strings.ContainsAny(n, "/\\\x00") || n == "." || n == ".." || !isPrintable(n) {
		return fmt.Errorf("name %q: use 1–128 printable characters without slashes", n)
	}
	return nil
}

func isPrintable(s string) bool {
	return !bytes.ContainsFunc([]byte(s), func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// sortRows orders block rows by block, keeping the order of rows for the
// same block: the later one wins.
func sortRows(rows []catalog.BlockWrite) {
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Blk < rows[j].Blk })
}

// supersede marks the session open on a volume, if any, dead and forgets it:
// a new session on a volume supersedes any earlier one.
func (s *Server) supersede(volID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.byVolume[volID]; old != nil {
		old.mu.Lock()
		old.dead = true
		old.mu.Unlock()
		delete(s.sessions, old.id)
		delete(s.byVolume, volID)
	}
}
