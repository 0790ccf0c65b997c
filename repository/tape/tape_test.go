package tape

import (
	"bytes"
	"errors"
	"testing"
)

func TestRecordRoundTripAndDamage(t *testing.T) {
	buf := make([]byte, 4096)
	h := header{Kind: kindData, Tape: 3, Set: [16]byte{1, 2, 3}, Record: 42}
	encode(buf, h, []byte("hello tape"))
	got, p, err := decode(buf)
	if err != nil || got.Kind != kindData || got.Tape != 3 || got.Record != 42 || got.Set != h.Set || string(p) != "hello tape" || got.RecordSize != 4096 {
		t.Fatalf("decode: %+v %q %v", got, p, err)
	}
	for _, off := range []int{0, 9, 13, 33, 41, 49, 64, 70} {
		bad := bytes.Clone(buf)
		bad[off] ^= 1
		if _, _, err := decode(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("byte %d flipped: %v, want ErrFormat", off, err)
		}
	}
	if _, _, err := decode(buf[:100]); !errors.Is(err, ErrFormat) {
		t.Errorf("short record: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	buf := make([]byte, 4096)
	encode(buf, header{Kind: kindLabel, Tape: 1}, []byte(`{"format":"rewind tape 1"}`))
	f.Add(buf)
	f.Add(buf[:64])
	f.Fuzz(func(t *testing.T, b []byte) {
		decode(b)
		readRecord(bytes.NewReader(b), 0, false)
	})
}
