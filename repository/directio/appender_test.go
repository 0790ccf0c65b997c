package directio

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"
)

// TestAppenderReadsWhatItAppended appends records of every size, flushes
// at random moments and reads random ranges back between appends, in the
// test's temporary directory (direct writes where it allows them) and on
// tmpfs (which refuses them): every read, and the file after a flush,
// must equal what was appended.
func TestAppenderReadsWhatItAppended(t *testing.T) {
	for _, dir := range testDirs(t) {
		p, f := createIn(t, dir)
		a := NewAppender(f, p, 0, true)
		src := rand.NewChaCha8([32]byte{5, 6})
		rng := rand.New(src)
		var want []byte
		for i := range 400 {
			n := rng.IntN(300 << 10)
			if i%50 == 0 {
				n = 3 << 20 // larger than a run
			}
			b := make([]byte, n)
			src.Read(b)
			off, err := a.Append(b[:n/2], b[n/2:])
			if err != nil || off != int64(len(want)) {
				t.Fatalf("append %d: offset %d, want %d (%v)", i, off, len(want), err)
			}
			want = append(want, b...)
			if rng.IntN(10) == 0 {
				if err := a.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			at := rng.IntN(len(want) + 1)
			got := make([]byte, rng.IntN(min(len(want)-at, 1<<20)+1))
			if _, err := a.ReadAt(got, int64(at)); err != nil {
				t.Fatalf("%s: read %d bytes at %d of %d: %v", dir, len(got), at, len(want), err)
			}
			if !bytes.Equal(got, want[at:at+len(got)]) {
				t.Fatalf("%s: read %d bytes at %d of %d: differ from what was appended", dir, len(got), at, len(want))
			}
		}
		if _, err := a.ReadAt(make([]byte, 1), int64(len(want))); err == nil {
			t.Fatal("read past the end succeeded")
		}
		if a.Size() != int64(len(want)) {
			t.Fatalf("size %d, want %d", a.Size(), len(want))
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Append([]byte{1}); err == nil {
			t.Fatal("append after Close succeeded")
		}
		tail := make([]byte, min(len(want), 5<<20))
		if _, err := a.ReadAt(tail, int64(len(want)-len(tail))); err != nil || !bytes.Equal(tail, want[len(want)-len(tail):]) {
			t.Fatalf("%s: read after Close: %v", dir, err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: file (%d bytes) differs from what was appended (%d)", dir, len(got), len(want))
		}
	}
}
