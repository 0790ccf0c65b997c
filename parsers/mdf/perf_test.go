package mdf

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"testing"
	"time"
)

// refChecksum is the word-by-word definition PageChecksum must match.
func refChecksum(p []byte) uint32 {
	var sum uint32
	for i := 0; i < 16; i++ {
		var x uint32
		for j := 0; j < 128; j++ {
			if i == 0 && j == 15 {
				continue
			}
			x ^= binary.LittleEndian.Uint32(p[i*512+j*4:])
		}
		sum ^= bits.RotateLeft32(x, 15-i)
	}
	return sum
}

func TestPageChecksumMatchesDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, PageSize)
	for k := 0; k < 50; k++ {
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		if got, want := PageChecksum(p), refChecksum(p); got != want {
			t.Fatalf("round %d: PageChecksum %08x, definition %08x", k, got, want)
		}
	}
}

func TestDecodeUTF16(t *testing.T) {
	for _, s := range []string{"", "ALFKI", "Zoë 東京 𝄞 x", "a\u00e9"} {
		var b []byte
		for _, u := range utf16Encode(s) {
			b = binary.LittleEndian.AppendUint16(b, u)
		}
		if got := decodeUTF16(b); got != s {
			t.Errorf("decodeUTF16(%q) = %q", s, got)
		}
	}
}

func utf16Encode(s string) []uint16 {
	var out []uint16
	for _, r := range s {
		if r >= 0x10000 {
			r -= 0x10000
			out = append(out, uint16(0xd800+(r>>10)), uint16(0xdc00+(r&0x3ff)))
			continue
		}
		out = append(out, uint16(r))
	}
	return out
}

func TestDateTimeFastPathMatchesAddDate(t *testing.T) {
	for _, days := range []int64{0, 1, 365, 693595, 738000, 3652058} {
		got := dayTime(unix0001, days, 5*time.Hour+7*time.Millisecond)
		want := epoch0001.AddDate(0, 0, int(days)).Add(5*time.Hour + 7*time.Millisecond)
		if !got.Equal(want) {
			t.Errorf("days %d: %v, want %v", days, got, want)
		}
	}
	for _, c := range []struct {
		dec  []byte
		sc   int
		want string
	}{
		{[]byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 2, "-92233720368547758.07"},
		{[]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, "18446744073709551615"},
	} {
		v, err := decodeDecimal(c.dec, c.sc)
		if err != nil || v.(Decimal).String() != c.want {
			t.Errorf("decimal %x: %v %v, want %s", c.dec, v, err, c.want)
		}
	}
}
