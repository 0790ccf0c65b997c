package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path"
	"sync"
	"testing"

	"github.com/rewind-cdp/rewind/repository/pack"
)

// countingTransport counts a client's requests by the last element of
// their path (offer, blocks, ...). Push streams do not go through it.
type countingTransport struct {
	rt http.RoundTripper
	mu sync.Mutex
	n  map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n[path.Base(r.URL.Path)]++
	c.mu.Unlock()
	return c.rt.RoundTrip(r)
}

func (c *countingTransport) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

func countRequests(c *Client) *countingTransport {
	ct := &countingTransport{rt: c.hc.Transport, n: map[string]int{}}
	c.hc.Transport = ct
	return ct
}

// pushImage is random, zero and repetitive data: 256 blocks of 64 KiB
// (four batches) and a short last block.
func pushImage() []byte {
	img := make([]byte, 16<<20+12345)
	rand.NewChaCha8([32]byte{7}).Read(img[:4<<20])
	for i := 8 << 20; i < len(img); i += 64 {
		copy(img[i:], fmt.Sprintf("line %10d of some text that compresses well, again.\n", i))
	}
	return img
}

// A first backup pushes its blocks; a second machine's first backup of the
// same data starts pushing, finds the server holds the blocks and goes
// back to offering, growing the repository by nothing; an incremental
// backup offers and sends almost nothing. Every point reads back exactly.
func TestPushFirstBackupThenOffers(t *testing.T) {
	_, repo, url, cfg := testServer(t, true)
	ctx := context.Background()
	img := pushImage()
	backup := func(machine, tok string) (BackupResult, map[string]int) {
		t.Helper()
		c, err := NewClient(url, tok, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ct := countRequests(c)
		res, err := c.Backup(ctx, BackupOptions{Machine: machine, Volume: "disk", Source: bytes.NewReader(img), Size: int64(len(img)), BlockSize: 65536, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readPoint(t, repo, res.Point.ID, len(img)), img) {
			t.Fatalf("%s: the point does not read back exactly", machine)
		}
		n := ct.take()
		// Every batch is pushed or offered: the pushes are the batches not
		// offered.
		n["push"] = (len(img)+4<<20-1)/(4<<20) - n["offer"]
		return res, n
	}
	tokA, tokB := addMachine(t, repo, "a"), addMachine(t, repo, "b")

	res, n := backup("a", tokA)
	if n["push"] == 0 || n["offer"] != 0 || n["blocks"] != 0 {
		t.Fatalf("first backup: requests %v, want pushes only", n)
	}
	if res.BytesNew == 0 || res.BytesSent < res.BytesNew {
		t.Fatalf("first backup: %d bytes new, %d sent", res.BytesNew, res.BytesSent)
	}
	before, err := repo.Catalog.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}

	res, n = backup("b", tokB)
	if n["push"] != 1 || n["offer"] == 0 {
		t.Fatalf("second machine: requests %v, want one push, then offers", n)
	}
	after, err := repo.Catalog.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.StoredBytes != before.StoredBytes || res.BytesNew != 0 {
		t.Fatalf("second machine's copy stored %d new bytes (repository %d -> %d)", res.BytesNew, before.StoredBytes, after.StoredBytes)
	}

	res, n = backup("a", tokA)
	if n["push"] != 0 || res.BytesSent > int64(len(img))/100 {
		t.Fatalf("incremental: requests %v, %d bytes sent", n, res.BytesSent)
	}
}

// Push bodies that do not cover their range exactly, or whose blocks do
// not decode to a block of the volume, are refused, and the point cannot
// be committed on top of them.
func TestPushRefusesBadBodies(t *testing.T) {
	_, repo, url, cfg := testServer(t, true)
	tok := addMachine(t, repo, "m")
	c, err := NewClient(url, tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const bs = 4096
	var br beginResponse
	if err := c.postJSON(ctx, "/v1/sessions", beginRequest{Machine: "m", Volume: "v", Size: 4 * bs, BlockSize: bs}, &br); err != nil {
		t.Fatal(err)
	}
	if !br.Push {
		t.Fatal("the server does not ask for pushes on a volume with no point")
	}
	data := bytes.Repeat([]byte("abcd"), bs/4)
	raw := func(blk int64, b []byte) sentBlock {
		return sentBlock{Blk: blk, Entry: pack.Entry{Compression: pack.CompressionNone, ULen: uint32(len(b))}, Stored: b}
	}
	body := func(first, end int64, blocks ...sentBlock) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(first))
		b = binary.LittleEndian.AppendUint64(b, uint64(end))
		for _, s := range blocks {
			b = appendBlock(b, s)
		}
		return b
	}
	bad := map[string][]byte{
		"range beyond the volume": body(3, 5, raw(3, data), raw(4, data)),
		"empty range":             body(2, 2),
		"short header":            []byte{1, 2, 3},
		"block missing":           body(0, 2, raw(0, data)),
		"out of order":            body(0, 2, raw(1, data), raw(0, data)),
		"bytes after the range":   append(body(0, 1, raw(0, data)), 9),
		"short block":             body(0, 1, raw(0, data[:100])),
		"undecodable block":       body(0, 1, sentBlock{Blk: 0, Entry: pack.Entry{Compression: pack.CompressionS2, ULen: bs}, Stored: data[:50]}),
		"truncated block":         body(0, 1, raw(0, data))[:200],
	}
	push := func(body []byte) error {
		ps, err := c.openPush(ctx, br.Session)
		if err != nil {
			t.Fatal(err)
		}
		defer ps.close()
		_, err = ps.push(append([]byte{0, 0, 0, 0}, body...))
		return err
	}
	for name, b := range bad {
		err := push(b)
		var se *ServerError
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
			t.Errorf("%s: %v, want a 400 refusal", name, err)
		}
	}
	// A push stream is an upgraded HTTP/1.1 connection; any other request
	// for one is refused, and the client would fall back to offers.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/sessions/"+br.Session+"/push-stream", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := c.hc.Do(req); err != nil || resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("push-stream over HTTP/2: %v %v, want 426", resp, err)
	} else {
		resp.Body.Close()
	}
	if st, _ := repo.Catalog.Stats(ctx); st.Chunks != 0 {
		t.Errorf("refused pushes stored %d chunks", st.Chunks)
	}
	if _, err := c.commit(ctx, br.Session); err == nil {
		t.Fatal("a point without its blocks committed")
	}
	// A good push of the whole volume commits and reads back.
	zero := sentBlock{Blk: 2}
	if err := push(body(0, 4, raw(0, data), raw(1, data), zero, raw(3, data))); err != nil {
		t.Fatal(err)
	}
	cr, err := c.commit(ctx, br.Session)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append(bytes.Clone(data), data...), make([]byte, bs)...), data...)
	if !bytes.Equal(readPoint(t, repo, cr.Point.ID, len(want)), want) {
		t.Fatal("the pushed point does not read back exactly")
	}
}
