package ingest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

// A client that sends data under another block's hash is refused, and
// nothing is stored: de-duplicated data cannot be poisoned.
func TestPoisonedBlockIsRefused(t *testing.T) {
	srv, repo, url, cfg := testServer(t, true)
	tok := addMachine(t, repo, "evil")
	c, err := NewClient(url, tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var br beginResponse
	if err := c.postJSON(ctx, "/v1/sessions", beginRequest{Machine: "evil", Volume: "v", Size: 4096, BlockSize: 4096}, &br); err != nil {
		t.Fatal(err)
	}
	victim := bytes.Repeat([]byte("victim"), 683)[:4096]
	algo, err := hashOf(br)
	if err != nil {
		t.Fatal(err)
	}
	claimed := pack.Sum(algo, victim)
	o := offer{First: 0, End: 1, Entries: []offerEntry{{Blk: 0, Hash: claimed}}}
	ans, err := c.post(ctx, "/v1/sessions/"+br.Session+"/offer", "application/octet-stream", encodeOffer(o))
	if err != nil {
		t.Fatal(err)
	}
	if need, _ := decodeIndices(ans, 1); len(need) != 1 {
		t.Fatalf("server did not ask for the block: %v", need)
	}
	evil := bytes.Repeat([]byte("evil!!"), 683)[:4096]
	body := appendBlock(nil, sentBlock{Blk: 0, Entry: pack.Entry{Hash: claimed, Compression: pack.CompressionNone, ULen: 4096}, Stored: evil})
	_, err = c.post(ctx, "/v1/sessions/"+br.Session+"/blocks", "application/octet-stream", body)
	var se *ServerError
	if !errors.As(err, &se) || se.Status != 400 {
		t.Fatalf("poisoned block: %v, want a 400 refusal", err)
	}
	if has, _ := srv.store.Has(ctx, claimed); has {
		t.Fatal("the poisoned block was stored")
	}
	if _, err := c.commit(ctx, br.Session); err == nil {
		t.Fatal("a point with a refused block committed")
	}
}

func (c *Client) commit(ctx context.Context, session string) (commitResponse, error) {
	var cr commitResponse
	err := c.postJSON(ctx, "/v1/sessions/"+session+"/commit", commitRequest{}, &cr)
	return cr, err
}

// A backup interrupted after part of its blocks were made durable resumes
// from there in a new session and restores exactly.
func TestBackupResumesAfterSessionLoss(t *testing.T) {
	srv, repo, url, cfg := testServer(t, true)
	tok := addMachine(t, repo, "m")
	c, _ := NewClient(url, tok, cfg)
	ctx := context.Background()
	img := make([]byte, 3<<20)
	for i := range img {
		img[i] = byte(i / 4093)
	}
	// First attempt: one batch of 16 blocks, made durable, then abandoned.
	var br beginResponse
	if err := c.postJSON(ctx, "/v1/sessions", beginRequest{Machine: "m", Volume: "v", Size: int64(len(img)), BlockSize: 65536}, &br); err != nil {
		t.Fatal(err)
	}
	opt := BackupOptions{Machine: "m", Volume: "v", Source: bytes.NewReader(img), Size: int64(len(img))}
	codec, err := c.codec("", br)
	if err != nil {
		t.Fatal(err)
	}
	algo, err := hashOf(br)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.sendBatch(ctx, upload{br.Session, codec, algo}, opt, 65536, 0, 16, &batchWork{}); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	sess := srv.sessions[br.Session]
	srv.mu.Unlock()
	if _, err := srv.flush(ctx, sess, false); err != nil {
		t.Fatal(err)
	}
	res, err := c.Backup(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed || res.BytesRead != int64(len(img))-16*65536 {
		t.Errorf("resumed %v, read %d bytes; want a resume reading %d", res.Resumed, res.BytesRead, len(img)-16*65536)
	}
	p, err := repo.Catalog.Point(ctx, res.Point.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(img))
	if _, err := repo.OpenPoint(p).ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) {
		t.Fatal("resumed backup does not read back exactly")
	}
}

func FuzzProtocolDecoding(f *testing.F) {
	f.Add(encodeOffer(offer{First: 3, End: 5, Entries: []offerEntry{{Blk: 3, Zero: true}, {Blk: 4, Hash: pack.SumBlock([]byte("x"))}}}))
	f.Add(encodeIndices([]uint32{0, 1}))
	f.Add(appendBlock(nil, sentBlock{Blk: 9, Entry: pack.Entry{ULen: 3}, Stored: []byte("abc")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeOffer(b)
		decodeIndices(b, 8)
		r := bytes.NewReader(b)
		var buf []byte
		for {
			var err error
			_, buf, err = readBlock(r, 65536, pack.HashSHA256, buf)
			if err != nil {
				break
			}
		}
		for rest := b; len(rest) > 0; {
			s, next, err := cutBlock(rest, 65536, pack.HashSHA256)
			if err != nil {
				break
			}
			if len(next) >= len(rest) || len(s.Stored) > len(rest) {
				t.Fatalf("cutBlock did not advance: %d -> %d bytes", len(rest), len(next))
			}
			rest = next
		}
	})
}

// A server whose certificate does not verify is a configuration error:
// the client fails at once instead of retrying.
func TestUntrustedServerFailsAtOnce(t *testing.T) {
	_, repo, url, _ := testServer(t, true)
	tok := addMachine(t, repo, "m")
	c, _ := NewClient(url, tok, &tls.Config{}) // system roots: the test server's certificate is unknown
	res, err := c.Backup(context.Background(), BackupOptions{Machine: "m", Volume: "v", Source: bytes.NewReader(make([]byte, 4096)), Size: 4096})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("backup to an untrusted server: %v", err)
	}
	if res.Retries != 0 {
		t.Fatalf("the client retried a certificate error %d times", res.Retries)
	}
}

// The client compresses as the server prefers (S2 on a new repository) or
// as asked; the server stores each block with the codec it came in, and
// refuses nothing it can decode.
func TestBackupCompressionChoice(t *testing.T) {
	_, repo, url, cfg := testServer(t, true)
	tok := addMachine(t, repo, "m")
	c, err := NewClient(url, tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, want := range []uint8{pack.CompressionS2, pack.CompressionZstd} {
		img := bytes.Repeat([]byte(fmt.Sprintf("volume %d, some text that compresses well. ", i)), 40000)
		name := map[uint8]string{pack.CompressionS2: "", pack.CompressionZstd: "zstd"}[want]
		res, err := c.Backup(ctx, BackupOptions{Machine: "m", Volume: fmt.Sprintf("v%d", i), Source: bytes.NewReader(img), Size: int64(len(img)), Compression: name})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readPoint(t, repo, res.Point.ID, len(img)), img) {
			t.Fatalf("compression %q: the point does not read back exactly", name)
		}
		p, _ := repo.Catalog.Point(ctx, res.Point.ID)
		refs := make([]catalog.ChunkRef, 1)
		if err := repo.Catalog.BlockMap(ctx, p.VolumeID, p.ID, 0, refs); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(repo.PackPath(refs[0].PackID))
		if err != nil {
			t.Fatal(err)
		}
		e, err := pack.NewReader(f, 1<<40, "p").ReadEntryHeader(refs[0].Offset)
		f.Close()
		if err != nil || e.Compression != want {
			t.Errorf("compression %q: stored with id %d (%v), want %d", name, e.Compression, err, want)
		}
	}
	img := make([]byte, 65536)
	if _, err := c.Backup(ctx, BackupOptions{Machine: "m", Volume: "x", Source: bytes.NewReader(img), Size: 65536, Compression: "lz4"}); err == nil {
		t.Error("a compression nobody knows was accepted")
	}
}

// Blocks are offered, verified and stored under the repository's hash
// algorithm: BLAKE3 in a new repository, SHA-256 in one made before
// BLAKE3 became the default; de-duplication works under either.
func TestBackupHashAlgorithm(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"blake3", "sha256"} {
		repo := hashRepo(t, name)
		want, _ := pack.HashID(name)
		if repo.Hash() != want {
			t.Fatalf("%s: repository hashes with id %d", name, repo.Hash())
		}
		_, url, cfg := testServerOn(t, true, repo)
		tok := addMachine(t, repo, "m")
		c, _ := NewClient(url, tok, cfg)
		img := make([]byte, 5*65536+100)
		for i := range img {
			img[i] = byte(i*7 + i/5000)
		}
		res, err := c.Backup(ctx, BackupOptions{Machine: "m", Volume: "v", Source: bytes.NewReader(img), Size: int64(len(img))})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(readPoint(t, repo, res.Point.ID, len(img)), img) {
			t.Fatalf("%s: the point does not read back exactly", name)
		}
		refs := make([]catalog.ChunkRef, 1)
		if err := repo.Catalog.BlockMap(ctx, 1, res.Point.ID, 0, refs); err != nil {
			t.Fatal(err)
		}
		if refs[0].Hash != pack.Sum(want, img[:65536]) {
			t.Errorf("%s: block 0 indexed under %x", name, refs[0].Hash)
		}
		again, err := c.Backup(ctx, BackupOptions{Machine: "m", Volume: "w", Source: bytes.NewReader(img), Size: int64(len(img))})
		if err != nil || again.BlocksNew != 0 {
			t.Errorf("%s: the same image again sent %d blocks (%v)", name, again.BlocksNew, err)
		}
	}
}
