package dirvol

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
)

// space is a sparse address space in memory: the manifest bytes at 0 and
// each slot's bytes.
type space struct {
	manifest []byte
	slots    map[int64][]byte
}

func (s *space) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= Size {
		return 0, io.EOF
	}
	slot, in := off>>SlotShift, off&(SlotSize-1)
	src := s.manifest
	if slot != 0 {
		src = s.slots[slot]
	}
	clear(p)
	if in < int64(len(src)) {
		copy(p, src[in:])
	}
	if slot == 0 && in+int64(len(p)) > int64(len(src)) {
		// Past the manifest: fail, as a short image would, so that a fuzzed
		// length does not make the reader hash a gigabyte of zeros.
		return max(0, int(int64(len(src))-in)), io.EOF
	}
	return len(p), nil
}

// capture builds the address space of a real directory, as the directory
// shim would: hard links share a slot.
func capture(t testing.TB, root string) *space {
	t.Helper()
	s := &space{slots: map[int64][]byte{}}
	m := &Manifest{NextSlot: 1}
	byIno := map[uint64]int64{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			rel = ""
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := Entry{Path: filepath.ToSlash(rel), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Mtime: fi.ModTime().UnixNano()}
		switch {
		case fi.IsDir():
			e.Type = Dir
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Type = Symlink
			e.Target, _ = os.Readlink(p)
		default:
			e.Type, e.Size = File, fi.Size()
			slot, ok := byIno[st.Ino]
			if !ok {
				slot = m.NextSlot
				m.NextSlot++
				byIno[st.Ino] = slot
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				s.slots[slot] = b
			}
			e.Slot = slot
		}
		m.Entries = append(m.Entries, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.manifest = m.Encode()
	return s
}

func TestTree(t *testing.T) {
	dir := t.TempDir()
	fstest.MakeTree(t, dir, fstest.TreeOptions{Files: 300, Symlinks: true, Hardlinks: true, Sparse: true})
	sp := capture(t, dir)
	ctx := context.Background()
	if !Probe(sp, Size) {
		t.Fatal("Probe does not recognise a manifest")
	}
	f, err := Open(ctx, sp, Size)
	if err != nil {
		t.Fatal(err)
	}
	fstest.CompareManifest(t, f, fstest.Manifest(t, dir), fstest.Check{Mode: true, Symlinks: true, Hardlinks: true, MtimeGran: 1})
	// Entries come back exactly (nanosecond mtimes included).
	again, err := Read(bytes.NewReader(sp.manifest), int64(len(sp.manifest)))
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Entries) != len(f.Manifest().Entries) {
		t.Fatalf("%d entries, want %d", len(again.Entries), len(f.Manifest().Entries))
	}
	for i, e := range again.Entries {
		if e != f.Manifest().Entries[i] {
			t.Fatalf("entry %d: %+v, want %+v", i, e, f.Manifest().Entries[i])
		}
	}
	root, err := f.Root(ctx)
	if err != nil || !root.IsDir() {
		t.Fatalf("root: %+v %v", root, err)
	}
	if _, err := f.Open(ctx, "/dir01"); !errors.Is(err, filesystem.ErrIsDir) {
		t.Errorf("open of a directory: %v", err)
	}
	if _, err := f.Stat(ctx, "/no/such"); !errors.Is(err, filesystem.ErrNotExist) {
		t.Errorf("stat of a missing path: %v", err)
	}
	es, err := f.ReadDir(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if !sort.SliceIsSorted(es, func(i, j int) bool { return es[i].Name < es[j].Name }) {
		t.Error("ReadDir is not sorted by name")
	}
}

func TestDamage(t *testing.T) {
	m := &Manifest{NextSlot: 3, Entries: []Entry{
		{Path: "", Type: Dir, Mode: 0o755},
		{Path: "a", Type: Dir, Mode: 0o700},
		{Path: "a/f", Type: File, Slot: 1, Size: 5, Mode: 0o644},
		{Path: "l", Type: Symlink, Mode: 0o777, Target: "a/f"},
	}}
	good := m.Encode()
	if _, err := Open(context.Background(), bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(b []byte) []byte{
		"checksum":  func(b []byte) []byte { b[HeaderSize+3] ^= 1; return b },
		"magic":     func(b []byte) []byte { b[0] = 'X'; return b },
		"version":   func(b []byte) []byte { b[8] = 9; return b },
		"truncated": func(b []byte) []byte { return b[:len(b)-1] },
	}
	for name, damage := range cases {
		b := damage(bytes.Clone(good))
		if _, err := Open(context.Background(), bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("%s: damaged manifest accepted", name)
		}
	}
	bad := []Manifest{
		{NextSlot: 2, Entries: []Entry{{Path: "f", Type: File, Slot: 2}}},                         // slot not yet allocated
		{NextSlot: 2, Entries: []Entry{{Path: "../f", Type: File, Slot: 1}}},                      // escapes
		{NextSlot: 2, Entries: []Entry{{Path: "d/f", Type: File, Slot: 1}}},                       // no parent
		{NextSlot: 2, Entries: []Entry{{Path: "f", Type: File, Slot: 1}, {Path: "f", Type: Dir}}}, // twice
		{NextSlot: 2, Entries: []Entry{{Path: "l", Type: Symlink}}},                               // no target
	}
	for i, bm := range bad {
		b := bm.Encode()
		if _, err := Open(context.Background(), bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("bad manifest %d accepted", i)
		}
	}
}
