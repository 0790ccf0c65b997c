package rtfcp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The examples of [MS-OXRTFCP] section 4.
var specVectors = []struct {
	name, compressed, rtf string
}{
	{
		name: "4.1 simple compressed RTF",
		compressed: `2d 00 00 00 2b 00 00 00 4c 5a 46 75 f1 c5 c7 a7 03 00 0a 00 72 63 70 67
			31 32 35 42 32 0a f3 20 68 65 6c 09 00 20 62 77 05 b0 6c 64 7d 0a 80 0f a0`,
		rtf: "{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n",
	},
	{
		name: "4.2 compressed RTF with a run that crosses the write position",
		compressed: `1a 00 00 00 1c 00 00 00 4c 5a 46 75 e2 d4 4b 51 41 00 04 20 57 58 59 5a
			0d 6e 7d 01 0e b0`,
		rtf: "{\\rtf1 WXYZWXYZWXYZWXYZWXYZ}",
	},
}

func TestSpecVectors(t *testing.T) {
	for _, v := range specVectors {
		t.Run(v.name, func(t *testing.T) {
			b := unhex(t, v.compressed)
			got, err := Decompress(b)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != v.rtf {
				t.Fatalf("got %q, want %q", got, v.rtf)
			}
			h, _ := ParseHeader(b)
			if c := CRC(b[HeaderSize:]); c != h.CRC {
				t.Fatalf("CRC %#x, header says %#x", c, h.CRC)
			}
		})
	}
}

func TestInitialDictionaryLength(t *testing.T) {
	if len(initialDictionary) != 207 {
		t.Fatalf("initial dictionary has %d bytes, the specification gives 207", len(initialDictionary))
	}
}

func TestMELARoundTrip(t *testing.T) {
	rtf := []byte("{\\rtf1\\ansi\\ansicpg1252\\pard test}")
	got, err := Decompress(Compress(rtf))
	if err != nil || !bytes.Equal(got, rtf) {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestCorrupt(t *testing.T) {
	good := unhex(t, specVectors[0].compressed)
	flipped := bytes.Clone(good)
	flipped[20] ^= 0x40
	short := bytes.Clone(good)
	short[0] = 0xff
	cases := map[string][]byte{
		"empty":      nil,
		"bad type":   append(append([]byte{}, good[:8]...), append([]byte("XXXX"), good[12:]...)...),
		"crc":        flipped,
		"compsize":   short,
		"truncated":  good[:20],
		"huge raw":   append(append([]byte{}, good[:4]...), append([]byte{0xff, 0xff, 0xff, 0x7f}, good[8:]...)...),
		"raw exceed": append(append([]byte{}, good[:4]...), append([]byte{4, 0, 0, 0}, good[8:]...)...),
	}
	for name, b := range cases {
		if _, err := Decompress(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}
