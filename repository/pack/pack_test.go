package pack

import (
	"bytes"
	"crypto/sha256"
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
	for _, b := range [][]byte{[]byte("a"), bytes.Repeat([]byte("xyz"), 100)} {
		s, comp := c.Compress(b, nil)
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
