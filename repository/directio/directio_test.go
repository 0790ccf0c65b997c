package directio

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestWriterAtMixesAlignedAndUnaligned writes a file in aligned runs,
// unaligned pieces and rewrites of both, in the test's temporary directory
// (direct writes where it allows them) and on tmpfs (which refuses them),
// and checks that the file reads back as the same writes made in memory.
func TestWriterAtMixesAlignedAndUnaligned(t *testing.T) {
	for _, dir := range testDirs(t) {
		p, f := createIn(t, dir)
		w := NewWriterAt(f, p)
		src := rand.NewChaCha8([32]byte{3, 4})
		rng := rand.New(src)
		want := make([]byte, 4<<20)
		buf := AlignedBuf(1 << 20)[:1<<20]
		for i := range 300 {
			var off, n int
			if i%2 == 0 { // aligned: goes directly where it can
				off, n = rng.IntN(len(want)/Align-256)*Align, (1+rng.IntN(256))*Align
			} else {
				off, n = rng.IntN(len(want)-(1<<20)), 1+rng.IntN(1<<20)
			}
			b := buf[:n]
			src.Read(b)
			if i%2 == 0 && !Aligned(b, int64(off)) {
				t.Fatalf("write %d: not aligned", i)
			}
			if _, err := w.WriteAt(b, int64(off)); err != nil {
				t.Fatalf("write %d at %d: %v", i, off, err)
			}
			copy(want[off:], b)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:min(len(got), len(want))], want[:min(len(got), len(want))]) {
			t.Fatalf("%s: file differs from what was written", dir)
		}
	}
}

// testDirs returns the test's temporary directory, where direct writes
// are allowed where its file system allows them, and a directory on
// tmpfs, which refuses them (when /dev/shm is there).
func testDirs(t *testing.T) []string {
	dirs := []string{t.TempDir()}
	if d, err := os.MkdirTemp("/dev/shm", "rewind-directio-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		dirs = append(dirs, d)
	}
	return dirs
}

// createIn creates the file f in dir.
func createIn(t *testing.T, dir string) (string, *os.File) {
	p := filepath.Join(dir, "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, f
}
