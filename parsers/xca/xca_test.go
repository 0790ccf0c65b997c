package xca

import (
	"bytes"
	"strings"
	"testing"
)

// The examples published in [MS-XCA] section 3.
func TestLZ77SpecExamples(t *testing.T) {
	alphabet := "abcdefghijklmnopqrstuvwxyz"
	lit := append([]byte{0x3f, 0x00, 0x00, 0x00}, alphabet...)
	got, err := DecompressLZ77(lit, 1<<20)
	if err != nil || string(got) != alphabet {
		t.Fatalf("example 1: %q, %v", got, err)
	}
	abc := []byte{0xff, 0xff, 0xff, 0x1f, 0x61, 0x62, 0x63, 0x17, 0x00, 0x0f, 0xff, 0x26, 0x01}
	got, err = DecompressLZ77(abc, 1<<20)
	if err != nil || string(got) != strings.Repeat("abc", 100) {
		t.Fatalf("example 2: %q, %v", got, err)
	}
	// Output is capped at the caller's size.
	got, err = DecompressLZ77(abc, 10)
	if err != nil || string(got) != "abcabcabca" {
		t.Fatalf("capped: %q, %v", got, err)
	}
}

func huffTable(nibbles map[int]byte) []byte {
	t := make([]byte, 256)
	for sym, l := range nibbles {
		t[sym/2] |= l << (4 * uint(sym&1))
	}
	return t
}

func TestHuffmanSpecExamples(t *testing.T) {
	// [MS-XCA] 3.2 example 1: the alphabet, 26 literals and the end symbol.
	// The published table: 0x50 0x55 ... for 'a'..'z', 0x04 for symbol 256.
	tab := make([]byte, 256)
	copy(tab[48:], []byte{0x50, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x45, 0x44, 0x04})
	tab[128] = 0x04
	in := append(tab, 0xd8, 0x52, 0x3e, 0xd7, 0x94, 0x11, 0x5b, 0xe9, 0x19, 0x5f, 0xf9, 0xd6, 0x7c, 0xdf, 0x8d, 0x04, 0, 0, 0, 0)
	got, err := DecompressHuffman(in, 26)
	if err != nil || string(got) != "abcdefghijklmnopqrstuvwxyz" {
		t.Fatalf("example 1: %q, %v", got, err)
	}

	// [MS-XCA] 3.2 example 2: "abc" 100 times.
	tab = make([]byte, 256)
	tab[48] = 0x30
	tab[49] = 0x23
	tab[128] = 0x02
	tab[143] = 0x20
	in = append(tab, 0xa8, 0xdc, 0x00, 0x00, 0xff, 0x26, 0x01)
	got, err = DecompressHuffman(in, 300)
	if err != nil || string(got) != strings.Repeat("abc", 100) {
		t.Fatalf("example 2: %q, %v", got, err)
	}
	if !bytes.Equal(tab, huffTable(map[int]byte{'a': 3, 'b': 3, 'c': 2, 256: 2, 287: 2})) {
		t.Fatal("table helper disagrees with the published table")
	}
}

func TestCorruptInputs(t *testing.T) {
	for _, in := range [][]byte{
		{0x00, 0x00, 0x00, 0x80, 0x08, 0x00},             // match before any literal
		{0x00, 0x00, 0x00, 0x80, 0x07},                   // truncated match
		{0x00, 0x00, 0x00, 0x80, 7, 0, 0x0f, 0xff, 1, 0}, // tiny 16-bit length
	} {
		if _, err := DecompressLZ77(in, 100); err == nil {
			t.Errorf("LZ77 %x: want an error", in)
		}
	}
	if _, err := DecompressHuffman(make([]byte, 10), 5); err == nil {
		t.Error("Huffman: short table accepted")
	}
	if _, err := DecompressHuffman(make([]byte, 260), 5); err == nil {
		t.Error("Huffman: empty table accepted")
	}
}

func FuzzLZ77(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff, 0x1f, 0x61, 0x62, 0x63, 0x17, 0x00, 0x0f, 0xff, 0x26, 0x01})
	f.Add(append([]byte{0x3f, 0x00, 0x00, 0x00}, "abcdefghijklmnopqrstuvwxyz"...))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _ := DecompressLZ77(in, 1<<16)
		if len(out) > 1<<16 {
			t.Fatalf("output %d exceeds the cap", len(out))
		}
	})
}

func FuzzHuffman(f *testing.F) {
	tab := make([]byte, 256)
	tab[48], tab[49], tab[128], tab[143] = 0x30, 0x23, 0x02, 0x20
	f.Add(append(tab, 0xa8, 0xdc, 0x00, 0x00, 0xff, 0x26, 0x01), uint16(300))
	f.Fuzz(func(t *testing.T, in []byte, n uint16) {
		out, _ := DecompressHuffman(in, int(n))
		if len(out) > int(n) {
			t.Fatalf("output %d exceeds %d", len(out), n)
		}
	})
}
