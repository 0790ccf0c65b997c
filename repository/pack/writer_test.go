package pack

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestWriterRunsAndSyncs writes a pack larger than several write runs,
// with blocks larger than a run and syncs at odd offsets (so tails are
// written through the page cache and again directly), and checks after
// each sync that the file holds exactly what was appended, then that the
// sealed pack reads back whole. It runs on the test's temporary directory
// (direct writes where it allows them) and, where /dev/shm exists, on
// tmpfs, which refuses O_DIRECT.
func TestWriterRunsAndSyncs(t *testing.T) {
	dirs := map[string]string{"tempdir": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "rewind-pack-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			dirs["tmpfs"] = d
		}
	}
	for name, dir := range dirs {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			p := filepath.Join(dir, "p.pack")
			w, err := Create(p, 9)
			if err != nil {
				t.Fatal(err)
			}
			var blocks [][]byte
			var entries []Entry
			for i := range 200 {
				n := 1 + rng.IntN(40<<10)
				if i%50 == 7 {
					n = 3 << 20 // larger than a run
				}
				b := make([]byte, n)
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				e, err := w.Append(Entry{Compression: CompressionNone, HashAlgo: HashSHA256, ULen: uint32(n), Hash: SumBlock(b)}, b)
				if err != nil {
					t.Fatal(err)
				}
				blocks, entries = append(blocks, b), append(entries, e)
				if i%13 == 0 {
					if err := w.Sync(); err != nil {
						t.Fatal(err)
					}
					if w.DurableSize() != w.Size() {
						t.Fatalf("after sync: durable %d of %d bytes", w.DurableSize(), w.Size())
					}
					checkEntries(t, p, w.Size(), blocks, entries)
				}
			}
			if err := w.Seal(); err != nil {
				t.Fatal(err)
			}
			r := openReader(t, p)
			idx, err := r.Index()
			if err != nil {
				t.Fatal(err)
			}
			if len(idx) != len(entries) {
				t.Fatalf("index has %d entries, appended %d", len(idx), len(entries))
			}
			checkEntries(t, p, w.Size(), blocks, entries)
		})
	}
}

// checkEntries reads every entry back from the file at p, which must be
// size bytes long.
func checkEntries(t *testing.T, p string, size int64, blocks [][]byte, entries []Entry) {
	t.Helper()
	r := openReader(t, p)
	if st, err := os.Stat(p); err != nil || st.Size() != size {
		t.Fatalf("file size: %v, %v; want %d", st.Size(), err, size)
	}
	for i, e := range entries {
		_, data, err := r.ReadEntry(e.Offset, e.CLen, nil)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !bytes.Equal(data, blocks[i]) {
			t.Fatalf("entry %d at offset %d reads back different bytes", i, e.Offset)
		}
	}
}
