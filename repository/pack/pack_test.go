package pack

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func testBlocks(n int) [][]byte {
	var out [][]byte
	for i := range n {
		b := bytes.Repeat([]byte(fmt.Sprintf("block %d says hello. ", i)), 200+i)
		out = append(out, b)
	}
	return out
}

func writePack(t *testing.T, dir string, blocks [][]byte, seal bool) (string, []Entry) {
	t.Helper()
	c, err := NewCodec(1)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "p.pack")
	w, err := Create(p, 7)
	if err != nil {
		t.Fatal(err)
	}
	var entries []Entry
	for _, b := range blocks {
		stored, comp := c.Compress(b, nil)
		e, err := w.Append(Entry{Compression: comp, HashAlgo: HashSHA256, ULen: uint32(len(b)), Hash: SumBlock(b)}, stored)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	if seal {
		if err := w.Seal(); err != nil {
			t.Fatal(err)
		}
	} else if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	return p, entries
}

func openReader(t *testing.T, p string) *Reader {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, _ := f.Stat()
	return NewReader(f, st.Size(), p)
}

func TestRoundTripAndIndex(t *testing.T) {
	blocks := testBlocks(20)
	p, entries := writePack(t, t.TempDir(), blocks, true)
	r := openReader(t, p)
	if id, err := r.Header(); err != nil || id != 7 {
		t.Fatalf("header: id %d err %v", id, err)
	}
	c, _ := NewCodec(1)
	for i, e := range entries {
		h, stored, err := r.ReadEntry(e.Offset, e.CLen, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Decode(h, stored, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, blocks[i]) {
			t.Fatalf("block %d differs", i)
		}
	}
	idx, err := r.Index()
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != len(entries) {
		t.Fatalf("index has %d entries, want %d", len(idx), len(entries))
	}
	for i := range idx {
		if idx[i].Offset != entries[i].Offset || idx[i].Hash != entries[i].Hash {
			t.Fatalf("index entry %d = %+v, want %+v", i, idx[i], entries[i])
		}
	}
	n := 0
	end, err := r.Walk(func(Entry) error { n++; return nil })
	if err != nil || n != len(blocks) {
		t.Fatalf("walk: %d entries, end %d, err %v", n, end, err)
	}
}

func TestWalkOpenPackStopsAtTornEntry(t *testing.T) {
	blocks := testBlocks(5)
	p, entries := writePack(t, t.TempDir(), blocks, false)
	// Tear the last entry, as a crash mid-write would.
	last := entries[len(entries)-1]
	if err := os.Truncate(p, last.Offset+EntryHeaderSize+3); err != nil {
		t.Fatal(err)
	}
	r := openReader(t, p)
	n := 0
	end, err := r.Walk(func(Entry) error { n++; return nil })
	if n != 4 || end != last.Offset || err == nil {
		t.Fatalf("walk over torn pack: %d entries, end %d (want %d), err %v", n, end, last.Offset, err)
	}
	if _, err := r.Index(); err == nil {
		t.Fatal("open pack has an index")
	}
}

func TestFlippedByteIsDetected(t *testing.T) {
	blocks := testBlocks(3)
	p, entries := writePack(t, t.TempDir(), blocks, true)
	raw, _ := os.ReadFile(p)
	raw[entries[1].Offset+EntryHeaderSize+10] ^= 0x40
	os.WriteFile(p, raw, 0o644)
	r := openReader(t, p)
	_, _, err := r.ReadEntry(entries[1].Offset, entries[1].CLen, nil)
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("flipped data byte: err %v, want damage", err)
	}
	if _, _, err := r.ReadEntry(entries[0].Offset, entries[0].CLen, nil); err != nil {
		t.Fatalf("undamaged neighbour: %v", err)
	}
}

func TestDecodeRejectsWrongHash(t *testing.T) {
	c, _ := NewCodec(1)
	data := []byte("some data")
	e := Entry{Compression: CompressionNone, HashAlgo: HashSHA256, ULen: uint32(len(data)), Hash: SumBlock([]byte("other"))}
	if _, err := c.Decode(e, data, nil); err == nil {
		t.Fatal("decode accepted data whose hash differs")
	}
}

// TestFormatIsStable pins the on-disk bytes of a small pack: a change here
// breaks every repository already written.
func TestFormatIsStable(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.pack")
	w, err := Create(p, 42)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("stable")
	if _, err := w.Append(Entry{Compression: CompressionNone, HashAlgo: HashSHA256, ULen: 6, Hash: SumBlock(data)}, data); err != nil {
		t.Fatal(err)
	}
	if err := w.Seal(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	got := fmt.Sprintf("%d %x", len(raw), sha256.Sum256(raw))
	const want = "162 7e2c125284371f287be48de8cb275ef20ef8ac1b8531fa97315ebbd6dd7cdba2"
	if got != want {
		t.Fatalf("pack bytes changed: got %q, want %q", got, want)
	}
}

func FuzzReader(f *testing.F) {
	dir := f.TempDir()
	c, _ := NewCodec(1)
	p := filepath.Join(dir, "seed.pack")
	w, _ := Create(p, 1)
	cs2, _ := NewCodecFor(CompressionS2, 1)
	for i, b := range [][]byte{[]byte("a"), bytes.Repeat([]byte("xyz"), 100), bytes.Repeat([]byte("s2 "), 100)} {
		cc := c
		if i == 2 {
			cc = cs2
		}
		s, comp := cc.Compress(b, nil)
		w.Append(Entry{Compression: comp, HashAlgo: HashSHA256, ULen: uint32(len(b)), Hash: SumBlock(b)}, s)
	}
	w.Seal()
	seed, _ := os.ReadFile(p)
	f.Add(seed)
	f.Add(seed[:len(seed)-FooterSize])
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), int64(len(b)), "fuzz")
		r.Header()
		if idx, err := r.Index(); err == nil {
			for _, e := range idx {
				if h, s, err := r.ReadEntry(e.Offset, e.CLen, nil); err == nil {
					c.Decode(h, s, nil)
				}
			}
		}
		r.Walk(func(e Entry) error { return nil })
	})
}

// TestS2EntryDecodes pins compression id 2: S2 block bytes written by this
// version decode to the same data in every later one. A block whose S2
// length prefix disagrees with the entry, or that is not S2 at all, is
// refused before anything is allocated for it.
func TestS2EntryDecodes(t *testing.T) {
	c, err := NewCodecFor(CompressionS2, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("rewind "), 20)
	stored, _ := hex.DecodeString("8c0118726577696e64201107150075")
	e := Entry{Compression: CompressionS2, HashAlgo: HashSHA256, ULen: uint32(len(want)), Hash: SumBlock(want)}
	got, err := c.Decode(e, stored, nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pinned S2 block: %q, %v", got, err)
	}
	s, comp := c.Compress(want, nil)
	if comp != CompressionS2 || len(s) >= len(want) {
		t.Fatalf("Compress wrote id %d, %d bytes", comp, len(s))
	}
	if got, err := c.Decode(e, s, make([]byte, 3)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("round trip: %v", err)
	}
	bad := e
	bad.ULen = 1 << 20
	if _, err := c.Decode(bad, stored, nil); err == nil {
		t.Error("an S2 block of another length than the entry's was accepted")
	}
	if _, err := c.Decode(e, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0x0f}, nil); err == nil {
		t.Error("garbage decoded as S2")
	}
	if n, err := CompressionID("s2"); err != nil || n != CompressionS2 || CompressionName(CompressionS2) != "s2" {
		t.Errorf("names: %d %v %q", n, err, CompressionName(CompressionS2))
	}
}

// TestHashAlgorithms pins hash ids 1 (SHA-256) and 2 (BLAKE3): Decode
// verifies a block under the algorithm its entry names, and a block
// claimed under the other algorithm's hash is refused.
func TestHashAlgorithms(t *testing.T) {
	c, err := NewCodecFor(CompressionS2, 1)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("rewind "), 100)
	// BLAKE3 of the empty input (the reference test vector).
	if h := Sum(HashBLAKE3, nil); hex.EncodeToString(h[:]) != "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" {
		t.Fatalf("BLAKE3 of nothing: %x", h)
	}
	if Sum(HashSHA256, data) != SumBlock(data) {
		t.Fatal("Sum(HashSHA256) is not SumBlock")
	}
	stored, comp := c.Compress(data, nil)
	for _, algo := range []uint8{HashSHA256, HashBLAKE3} {
		e := Entry{Compression: comp, HashAlgo: algo, ULen: uint32(len(data)), Hash: Sum(algo, data)}
		if got, err := c.Decode(e, stored, nil); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %v", HashName(algo), err)
		}
		other := HashSHA256 + HashBLAKE3 - algo
		e.HashAlgo = other
		if _, err := c.Decode(e, stored, nil); err == nil {
			t.Errorf("a block hashed with %s was accepted as %s", HashName(algo), HashName(other))
		}
		if id, err := HashID(HashName(algo)); err != nil || id != algo {
			t.Errorf("names: %d %v", id, err)
		}
	}
	if _, err := HashID("md5"); err == nil {
		t.Error("unknown hash name accepted")
	}
	bad := Entry{Compression: comp, HashAlgo: 9, ULen: uint32(len(data))}
	if _, err := c.Decode(bad, stored, nil); err == nil {
		t.Error("unknown hash id accepted")
	}
}
