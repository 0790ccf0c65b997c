package ingest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A sparse image file backs up exactly: blocks in holes are sent as zeros
// without being read, blocks partly in a hole are read whole, and no data
// is ever taken for a hole.
func TestSparseSourceBacksUpExactly(t *testing.T) {
	_, repo, url, cfg := testServer(t, true)
	tok := addMachine(t, repo, "m")
	c, err := NewClient(url, tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8<<20 + 1000
	want := make([]byte, size)
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{0, 5000}, {1<<20 + 100, 1<<20 + 70000}, {5 << 20, 5<<20 + 65536}, {size - 1000, size}} {
		for i := r[0]; i < r[1]; i++ {
			want[i] = byte(i*31 + i>>12)
		}
		if _, err := f.WriteAt(want[r[0]:r[1]], r[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	runs := dataRuns(f, 0, size)
	covered := 0
	for i := int64(0); i < size; i++ {
		in := false
		for _, r := range runs {
			in = in || (i >= r[0] && i < r[1])
		}
		if in {
			covered++
		} else if want[i] != 0 {
			t.Fatalf("byte %d holds data but dataRuns %v leaves it out", i, runs)
		}
	}
	t.Logf("data runs %v cover %d of %d bytes", runs, covered, size)

	res, err := c.Backup(context.Background(), BackupOptions{Machine: "m", Volume: "v", BlockSize: 65536, Source: f, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readPoint(t, repo, res.Point.ID, size), want) {
		t.Fatal("restored sparse image differs")
	}
}
