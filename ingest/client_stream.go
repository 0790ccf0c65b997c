package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/rewind-cdp/rewind/catalog"
)

// Stream is a continuous-capture session of one volume.
type Stream struct {
	c         *Client
	body      []byte // the last writes request, reused once answered
	session   string
	up        upload
	machine   string
	volume    string
	size      int64
	blockSize int64
	// AckedSeq is the last journal record the server holds durably when
	// the session began; NeedScan says the server needs the whole volume
	// before it can cut a point.
	AckedSeq uint64
	NeedScan bool
}

// OpenStream begins a stream session for a volume of the given size. epoch
// names the agent's spool.
func (c *Client) OpenStream(ctx context.Context, machine, volume string, size, blockSize int64, epoch string) (*Stream, error) {
	return c.OpenStreamKind(ctx, machine, volume, catalog.VolumeBlock, size, blockSize, epoch)
}

// OpenStreamKind is OpenStream for a volume of the given kind
// (catalog.VolumeBlock or catalog.VolumeDir).
func (c *Client) OpenStreamKind(ctx context.Context, machine, volume, kind string, size, blockSize int64, epoch string) (*Stream, error) {
	var br beginResponse
	err := c.postJSON(ctx, "/v1/sessions", beginRequest{
		Machine: machine, Volume: volume, Size: size, BlockSize: blockSize, Stream: true, Epoch: epoch, VolumeKind: kind,
	}, &br)
	if err != nil {
		return nil, err
	}
	codec, err := c.codec("", br)
	if err != nil {
		return nil, err
	}
	hash, err := hashOf(br)
	if err != nil {
		return nil, err
	}
	return &Stream{c: c, session: br.Session, up: upload{session: br.Session, codec: codec, hash: hash}, machine: machine, volume: volume, size: size, blockSize: br.BlockSize,
		AckedSeq: br.AckedSeq, NeedScan: br.NeedScan}, nil
}

// BlockSize is the volume's block size.
func (st *Stream) BlockSize() int64 { return st.blockSize }

// Scan sends the volume's blocks read from src: all of them (blocks nil),
// or the listed ones in increasing order. Only blocks whose content the
// server lacks are sent.
func (st *Stream) Scan(ctx context.Context, src io.ReaderAt, blocks []int64, workers int, progress func(int64)) error {
	opt := BackupOptions{Machine: st.machine, Volume: st.volume, Source: src, Size: st.size}
	bs := st.blockSize
	nblocks := (st.size + bs - 1) / bs
	per := min(int64(maxOffer), max(1, (4<<20)/bs))
	type job struct {
		first, end int64
		list       []int64
	}
	jobs := make(chan job)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w batchWork
			for j := range jobs {
				var n batchCount
				var err error
				if j.list == nil {
					n, err = st.c.sendBatch(ctx, st.up, opt, bs, j.first, j.end, &w)
				} else {
					n, err = st.c.sendSparse(ctx, st.up, opt, bs, j.list, &w)
				}
				if err != nil {
					cancel(err)
					return
				}
				if progress != nil {
					progress(n.read)
				}
			}
		}()
	}
	send := func(j job) bool {
		select {
		case jobs <- j:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if blocks == nil {
		for first := int64(0); first < nblocks && send(job{first: first, end: min(first+per, nblocks)}); first += per {
		}
	} else {
		for len(blocks) > 0 {
			// A sparse offer spans at most maxOffer block numbers.
			n := 0
			for n < len(blocks) && n < int(per) && blocks[n]-blocks[0] < maxOffer {
				n++
			}
			if !send(job{list: blocks[:n]}) {
				break
			}
			blocks = blocks[n:]
		}
	}
	close(jobs)
	wg.Wait()
	return context.Cause(ctx)
}

// WritesResult is the server's answer to shipped records.
type WritesResult struct {
	Acked  uint64     // last journal record now in a durable point
	Points []PointRef // points cut by the records
}

// Send ships journal records, in order. A record of kind Cut asks for a
// crash-consistent point including everything up to its Seq.
func (st *Stream) Send(ctx context.Context, recs []StreamRecord) (WritesResult, error) {
	// The body is sized once: growing a request of many megabytes by
	// appending copied it over and over, in copies the garbage collector
	// had to wait for.
	size := 0
	for _, r := range recs {
		size += recordHeaderSize
		if r.Kind == recWrite || r.Kind == recBookmark {
			size += len(r.Data)
		}
	}
	if cap(st.body) < size {
		st.body = make([]byte, 0, size)
	}
	body := st.body[:0]
	for _, r := range recs {
		body = appendRecord(body, r)
	}
	b, err := st.c.post(ctx, "/v1/sessions/"+st.session+"/writes", "application/octet-stream", body)
	if err != nil {
		st.body = nil // the transport may still hold it
		return WritesResult{}, err
	}
	st.body = body[:0] // the server answered only after reading it all
	var wr writesResponse
	if err := json.Unmarshal(b, &wr); err != nil {
		return WritesResult{}, fmt.Errorf("answer to writes: %w", err)
	}
	return WritesResult{Acked: wr.Acked, Points: wr.Points}, nil
}

// Record kinds for StreamRecord.Kind.
const (
	RecordWrite    = recWrite
	RecordDiscard  = recDiscard
	RecordFlush    = recFlush
	RecordCut      = recCut
	RecordBookmark = recBookmark
)
