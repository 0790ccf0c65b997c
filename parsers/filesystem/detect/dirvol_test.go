package detect

import (
	"context"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
)

// A directory volume's manifest is recognised, and its files read through
// the detected reader.
func TestDetectDirVolume(t *testing.T) {
	m := &dirvol.Manifest{NextSlot: 2, Entries: []dirvol.Entry{
		{Path: "", Type: dirvol.Dir, Mode: 0o755},
		{Path: "hello.txt", Type: dirvol.File, Slot: 1, Size: 5, Mode: 0o644},
	}}
	b := m.Encode()
	// Slot 1 lies at 1 TiB: a reader of a short buffer cannot reach it, so
	// read the address space through a map.
	sp := spaceReader{0: b, dirvol.Addr(1, 0): []byte("hello")}
	f, err := Detect(context.Background(), sp, dirvol.Size)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type() != "dirvol" {
		t.Fatalf("detected %s", f.Type())
	}
	got, err := filesystem.ReadFile(context.Background(), f, "/hello.txt")
	if err != nil || string(got) != "hello" {
		t.Fatalf("hello.txt: %q %v", got, err)
	}
}

// spaceReader reads a sparse space made of byte runs at given offsets.
type spaceReader map[int64][]byte

func (s spaceReader) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for at, b := range s {
		if off < at+int64(len(b)) && off+int64(len(p)) > at {
			lo := max(off, at)
			copy(p[lo-off:], b[lo-at:])
		}
	}
	return len(p), nil
}
