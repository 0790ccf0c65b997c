package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// Client talks to a backup server on behalf of one machine.
type Client struct {
	base   string
	token  string
	hc     *http.Client
	tlsCfg *tls.Config // for push streams (see push.go)
	sent   atomic.Int64
	limit  *rateLimiter // SetBandwidth

	mu     sync.Mutex
	codecs map[uint8]*pack.Codec // by the compression they write
}

// NewClient returns a client of the server at serverURL (https://host:port)
// authenticating with a machine token.
func NewClient(serverURL, token string, tlsCfg *tls.Config) (*Client, error) {
	if !strings.HasPrefix(serverURL, "https://") {
		return nil, fmt.Errorf("server URL %q: must start with https:// (the protocol always uses TLS)", serverURL)
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 15 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}
	return &Client{base: strings.TrimRight(serverURL, "/"), token: token, hc: &http.Client{Transport: tr}, tlsCfg: tlsCfg, codecs: map[uint8]*pack.Codec{}}, nil
}

// codec returns the codec blocks of a session are compressed with: the
// one asked for (which the server must accept), else the server's
// preferred one, else zstd (all a server that names none accepts).
func (c *Client) codec(want string, br beginResponse) (*pack.Codec, error) {
	name := want
	if name == "" {
		name = br.Compression
	}
	if name == "" {
		name = "zstd"
	}
	id, err := pack.CompressionID(name)
	if err != nil {
		return nil, err
	}
	accepted := br.Compressions
	if len(accepted) == 0 {
		accepted = []string{"none", "zstd"}
	}
	if !slices.Contains(accepted, name) {
		return nil, fmt.Errorf("the server does not accept compression %q (it takes %s)", name, strings.Join(accepted, ", "))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cd := c.codecs[id]; cd != nil {
		return cd, nil
	}
	cd, err := pack.NewCodecFor(id, 1)
	if err != nil {
		return nil, err
	}
	c.codecs[id] = cd
	return cd, nil
}

// ServerError is an error answer from the server.
type ServerError struct {
	Status int
	Msg    string
}

func (e *ServerError) Error() string { return fmt.Sprintf("server refused (%d): %s", e.Status, e.Msg) }

func (c *Client) post(ctx context.Context, path, ctype string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", ctype)
	if err := c.limit.wait(ctx, len(body)); err != nil {
		return nil, err
	}
	c.sent.Add(int64(len(body)))
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var er errorResponse
		if json.Unmarshal(b, &er) != nil || er.Error == "" {
			er.Error = strings.TrimSpace(string(b))
		}
		return nil, &ServerError{Status: resp.StatusCode, Msg: er.Error}
	}
	return b, nil
}

func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	body, _ := json.Marshal(in)
	b, err := c.post(ctx, path, "application/json", body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("answer to %s: %w", path, err)
	}
	return nil
}

// BackupOptions describe one backup of a volume.
type BackupOptions struct {
	Machine, Volume string
	Label           string
	Kind            string // default scan
	BlockSize       int64  // for a new volume; 0 = the server's default
	Source          io.ReaderAt
	Size            int64
	// Workers is how many batches are in flight (default 2×CPUs).
	Workers int
	// Progress, when set, is told the bytes of each batch read.
	Progress func(n int64)
	// RetryFor is how long to keep retrying after a dropped connection or a
	// server restart (default 2 minutes).
	RetryFor time.Duration
	// Compression names how blocks are sent (none, zstd, s2); empty means
	// the server's preferred one.
	Compression string
}

// BackupResult is what one backup did.
type BackupResult struct {
	Point     PointRef      `json:"point"`
	Machine   string        `json:"machine"`
	Volume    string        `json:"volume"`
	Size      int64         `json:"size"`
	BytesRead int64         `json:"bytes_read"`
	BytesNew  int64         `json:"bytes_new"`
	BytesSent int64         `json:"bytes_sent"`
	BlocksNew int64         `json:"blocks_new"`
	Resumed   bool          `json:"resumed"`
	Retries   int           `json:"retries"`
	Elapsed   time.Duration `json:"-"`
}

// Backup sends one point of a volume: every block is hashed, the server
// says which it lacks, and only those are compressed and sent. After a
// dropped connection or a server restart it begins again, and the server
// resumes from what it had made durable.
func (c *Client) Backup(ctx context.Context, opt BackupOptions) (BackupResult, error) {
	start := time.Now()
	res := BackupResult{Machine: opt.Machine, Volume: opt.Volume, Size: opt.Size}
	if opt.Kind == "" {
		opt.Kind = catalog.KindScan
	}
	if opt.RetryFor == 0 {
		opt.RetryFor = 2 * time.Minute
	}
	if opt.Workers <= 0 {
		opt.Workers = 2 * runtime.NumCPU()
	}
	sent0 := c.sent.Load()
	deadline := time.Now().Add(opt.RetryFor)
	backoff := 250 * time.Millisecond
	for {
		point, err := c.attempt(ctx, opt, &res)
		if err == nil {
			res.Point = point
			break
		}
		if !retryable(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return res, err
		}
		res.Retries++
		slog.Warn("backup interrupted; retrying", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	res.BytesSent = c.sent.Load() - sent0
	res.Elapsed = time.Since(start)
	return res, nil
}

func retryable(err error) bool {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Status >= 500 || se.Status == http.StatusNotFound
	}
	// A certificate that does not verify is a configuration error (wrong
	// --ca, wrong server): waiting will not fix it.
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "connection")
}

// attempt runs one session from begin to commit.
func (c *Client) attempt(ctx context.Context, opt BackupOptions, res *BackupResult) (PointRef, error) {
	var br beginResponse
	err := c.postJSON(ctx, "/v1/sessions", beginRequest{
		Machine: opt.Machine, Volume: opt.Volume, Size: opt.Size, BlockSize: opt.BlockSize, Kind: opt.Kind, Label: opt.Label,
	}, &br)
	if err != nil {
		return PointRef{}, err
	}
	if br.Resumed {
		res.Resumed = true
	}
	codec, err := c.codec(opt.Compression, br)
	if err != nil {
		return PointRef{}, err
	}
	hash, err := hashOf(br)
	if err != nil {
		return PointRef{}, err
	}
	up := upload{session: br.Session, codec: codec, hash: hash}
	bs := br.BlockSize
	nblocks := (opt.Size + bs - 1) / bs
	per := min(int64(maxOffer), max(1, (4<<20)/bs))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	firsts := make(chan int64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	// Push while the server holds few of the blocks pushed (see push.go).
	var pushing atomic.Bool
	pushing.Store(br.Push)
	for range opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w batchWork
			var ps *pushConn
			defer func() {
				if ps != nil {
					ps.close()
				}
			}()
			for first := range firsts {
				var n batchCount
				var err error
				if pushing.Load() && ps == nil {
					ps, err = c.openPush(ctx, up.session)
					var se *ServerError
					if errors.As(err, &se) && (se.Status == http.StatusUpgradeRequired || se.Status == http.StatusMethodNotAllowed) {
						// Something on the way does not pass the upgrade.
						slog.Warn("pushing blocks is not possible; offering them instead", "err", err)
						pushing.Store(false)
						err = nil
					}
				}
				if err == nil && pushing.Load() {
					var ans pushAnswer
					n, ans, err = c.pushBatch(ctx, ps, up, opt, bs, first, min(first+per, nblocks), &w)
					if ans.Known*pushKnownLimit > ans.Blocks {
						pushing.Store(false)
					}
				} else if err == nil {
					n, err = c.sendBatch(ctx, up, opt, bs, first, min(first+per, nblocks), &w)
				}
				if err != nil {
					cancel(err)
					return
				}
				mu.Lock()
				res.BytesRead += n.read
				res.BlocksNew += n.sentBlocks
				mu.Unlock()
				if opt.Progress != nil {
					opt.Progress(n.read)
				}
			}
		}()
	}
feed:
	for first := br.ResumeFrom; first < nblocks; first += per {
		select {
		case firsts <- first:
		case <-ctx.Done():
			break feed
		}
	}
	close(firsts)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return PointRef{}, err
	}
	var cr commitResponse
	if err := c.postJSON(ctx, "/v1/sessions/"+br.Session+"/commit", commitRequest{Label: opt.Label}, &cr); err != nil {
		return PointRef{}, err
	}
	res.BytesNew += cr.BytesNew
	return cr.Point, nil
}

// upload is where a session's blocks go, how they are compressed and
// under which hash algorithm they are offered.
type upload struct {
	session string
	codec   *pack.Codec
	hash    uint8
}

// hashOf is the hash algorithm a server asks blocks to be offered under.
func hashOf(br beginResponse) (uint8, error) {
	if br.Hash == "" {
		return pack.HashSHA256, nil
	}
	id, err := pack.HashID(br.Hash)
	if err != nil {
		return 0, fmt.Errorf("the server hashes blocks with %q, which this rewind does not know", br.Hash)
	}
	return id, nil
}

// batchWork is a worker's reusable buffers.
type batchWork struct {
	data  []byte
	zero  []byte
	holes []bool
	body  []byte // a request body, reused once the server has answered it
}

// read reads blocks [first, end) of the source into w.data and reports
// for each whether it lies wholly in a hole of a sparse source (such
// blocks are zeros, neither read nor compared).
func (w *batchWork) read(opt BackupOptions, bs, first, end int64) (batchCount, []bool, error) {
	var n batchCount
	off := first * bs
	length := min(opt.Size, end*bs) - off
	if int64(cap(w.data)) < length {
		w.data = make([]byte, length)
	}
	w.data = w.data[:length]
	data := w.data
	n.read = length
	runs := dataRuns(opt.Source, off, length)
	for _, r := range runs {
		// Read whole blocks around each run of data.
		lo := (r[0] - off) / bs * bs
		hi := min(length, (r[1]-off+bs-1)/bs*bs)
		if got, err := opt.Source.ReadAt(data[lo:hi], off+lo); int64(got) != hi-lo {
			return n, nil, fmt.Errorf("read source at offset %d: %w", off+lo+int64(got), err)
		}
	}
	w.holes = w.holes[:0]
	ri := 0
	for i := first; i < end; i++ {
		bo, be := (i-first)*bs, min((i-first+1)*bs, length)
		for ri < len(runs) && runs[ri][1]-off <= bo {
			ri++
		}
		w.holes = append(w.holes, ri == len(runs) || runs[ri][0]-off >= be)
	}
	return n, w.holes, nil
}

// block returns block i of the batch read from block first.
func (w *batchWork) block(bs, first, i int64) []byte {
	return w.data[(i-first)*bs : min((i-first+1)*bs, int64(len(w.data)))]
}

// isZero reports whether b is all zeros.
func (w *batchWork) isZero(b []byte) bool {
	if len(w.zero) < len(b) {
		w.zero = make([]byte, len(b))
	}
	return bytes.Equal(b, w.zero[:len(b)])
}

// entry is how block blk with data b is offered: as zeros, or by its
// hash under algorithm hash.
func (w *batchWork) entry(hash uint8, blk int64, b []byte) offerEntry {
	if w.isZero(b) {
		return offerEntry{Blk: blk, Zero: true}
	}
	return offerEntry{Blk: blk, Hash: pack.Sum(hash, b)}
}

// appendCompressed appends block s with data b to a request body,
// compressed straight into it; body has room for the worst case
// (pack.MaxStoredLen).
func (w *batchWork) appendCompressed(body []byte, codec *pack.Codec, s sentBlock, b []byte) []byte {
	at := len(body) + blockHeaderSize
	stored, comp := codec.Compress(b, body[at:at])
	s.Entry.Compression, s.Entry.ULen = comp, uint32(len(b))
	body = appendBlockHeader(body, s, len(stored))
	if unsafe.SliceData(stored) == unsafe.SliceData(body[at:]) {
		return body[:at+len(stored)] // compressed in place
	}
	return append(body, stored...)
}

type batchCount struct{ read, sentBlocks int64 }

func (c *Client) sendBatch(ctx context.Context, up upload, opt BackupOptions, bs, first, end int64, w *batchWork) (batchCount, error) {
	n, holes, err := w.read(opt, bs, first, end)
	if err != nil {
		return n, err
	}
	o := offer{First: first, End: end}
	for i := first; i < end; i++ {
		if holes[i-first] {
			o.Entries = append(o.Entries, offerEntry{Blk: i, Zero: true})
		} else {
			o.Entries = append(o.Entries, w.entry(up.hash, i, w.block(bs, first, i)))
		}
	}
	return c.offerAndSend(ctx, up, o, func(blk int64) []byte { return w.block(bs, first, blk) }, n, w)
}

// sendSparse offers the listed blocks (increasing, spanning at most
// maxOffer block numbers) and sends those the server lacks.
func (c *Client) sendSparse(ctx context.Context, up upload, opt BackupOptions, bs int64, list []int64, w *batchWork) (batchCount, error) {
	var n batchCount
	if int64(cap(w.data)) < int64(len(list))*bs {
		w.data = make([]byte, int64(len(list))*bs)
	}
	o := offer{First: list[0], End: list[len(list)-1] + 1}
	data := map[int64][]byte{}
	for i, blk := range list {
		length := min(bs, opt.Size-blk*bs)
		b := w.data[int64(i)*bs : int64(i)*bs+length]
		if got, err := opt.Source.ReadAt(b, blk*bs); int64(got) != length {
			return n, fmt.Errorf("read source at offset %d: %w", blk*bs+int64(got), err)
		}
		n.read += length
		data[blk] = b
		o.Entries = append(o.Entries, w.entry(up.hash, blk, b))
	}
	return c.offerAndSend(ctx, up, o, func(blk int64) []byte { return data[blk] }, n, w)
}

// offerAndSend offers the blocks of o and sends, compressed, those the
// server asks for; block returns a block's data.
func (c *Client) offerAndSend(ctx context.Context, up upload, o offer, block func(int64) []byte, n batchCount, w *batchWork) (batchCount, error) {
	ans, err := c.post(ctx, "/v1/sessions/"+up.session+"/offer", "application/octet-stream", encodeOffer(o))
	if err != nil {
		return n, err
	}
	need, err := decodeIndices(ans, len(o.Entries))
	if err != nil {
		return n, err
	}
	if len(need) == 0 {
		return n, nil
	}
	// Each block is compressed straight into the request body, which is
	// sized once for the worst case.
	size := 0
	for _, i := range need {
		size += blockHeaderSize + pack.MaxStoredLen(len(block(o.Entries[i].Blk)))
	}
	if cap(w.body) < size {
		w.body = make([]byte, 0, size)
	}
	body := w.body[:0]
	for _, i := range need {
		e := o.Entries[i]
		body = w.appendCompressed(body, up.codec, sentBlock{Blk: e.Blk, Entry: pack.Entry{Hash: e.Hash}}, block(e.Blk))
	}
	if _, err := c.post(ctx, "/v1/sessions/"+up.session+"/blocks", "application/octet-stream", body); err != nil {
		w.body = nil // the transport may still hold it
		return n, err
	}
	// The server answered only after reading the whole body: it is free.
	w.body = body[:0]
	n.sentBlocks = int64(len(need))
	return n, nil
}
