package dirshim

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// memJournal applies journal records to a sparse address space in memory,
// as the server applies them to a volume's blocks.
type memJournal struct {
	mu      sync.Mutex
	pages   map[int64][]byte // 4 KiB pages by index
	flushes int
}

const page = 4096

func (m *memJournal) apply(off int64, data []byte, n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for pos := off; pos < off+n; {
		idx, in := pos/page, pos%page
		c := min(page-in, off+n-pos)
		pg := m.pages[idx]
		if pg == nil {
			pg = make([]byte, page)
			m.pages[idx] = pg
		}
		if data != nil {
			copy(pg[in:in+c], data[pos-off:])
		} else {
			clear(pg[in : in+c])
		}
		pos += c
	}
}

func (m *memJournal) Write(t time.Time, off int64, data []byte) {
	m.apply(off, data, int64(len(data)))
}
func (m *memJournal) Discard(t time.Time, off, n int64) { m.apply(off, nil, n) }
func (m *memJournal) Flush(t time.Time) error {
	m.mu.Lock()
	m.flushes++
	m.mu.Unlock()
	return nil
}

func (m *memJournal) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(p)
	for pos := off; pos < off+int64(len(p)); {
		idx, in := pos/page, pos%page
		c := min(page-in, off+int64(len(p))-pos)
		if pg := m.pages[idx]; pg != nil {
			copy(p[pos-off:], pg[in:in+c])
		}
		pos += c
	}
	return len(p), nil
}

// TestJournalRebuildsTheDirectory mounts the shim over a directory, runs
// every kind of change through the mount, and checks that the journal,
// applied to an empty address space after a scan of the starting tree,
// reads back (through package dirvol) exactly as the directory is.
func TestJournalRebuildsTheDirectory(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedFUSE(t)
	ctx := context.Background()
	base := t.TempDir()
	data, mnt := filepath.Join(base, "data"), filepath.Join(base, "mnt")
	fstest.MakeTree(t, data, fstest.TreeOptions{Files: 60, Symlinks: true, Hardlinks: true, Sparse: true})
	os.Mkdir(mnt, 0o755)
	j := &memJournal{pages: map[int64][]byte{}}
	d, err := New(data, nil, j)
	if err != nil {
		t.Fatal(err)
	}
	// The seeding scan: what ScanBlocks lists, read from the live space.
	buf := make([]byte, 64<<10)
	for _, b := range d.ScanBlocks(true, 64<<10) {
		if _, err := d.ReadAt(buf, b*(64<<10)); err != nil {
			t.Fatal(err)
		}
		j.Write(time.Now(), b*(64<<10), buf)
	}
	if err := d.Mount(mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Unmount(); err != nil {
			t.Error(err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(p("new.txt"), []byte("hello"), 0o640))
	f, err := os.OpenFile(p("gap.bin"), os.O_CREATE|os.O_RDWR, 0o644)
	must(err)
	_, err = f.WriteAt([]byte("start"), 0)
	must(err)
	_, err = f.WriteAt([]byte("past the end"), 3<<20) // grows over a gap
	must(err)
	must(f.Truncate(1 << 20)) // shrink
	must(f.Truncate(2 << 20)) // grow again: the cut-off bytes must read as zeros
	must(f.Sync())
	must(f.Close())
	must(os.WriteFile(p("trunc.txt"), []byte("0123456789"), 0o644))
	must(os.WriteFile(p("trunc.txt"), []byte("ab"), 0o644)) // O_TRUNC
	must(os.Link(p("new.txt"), p("dir00/new-link")))
	must(os.Remove(p("new.txt")))
	must(os.WriteFile(p("a"), []byte("aaaa"), 0o644))
	must(os.Mkdir(p("b"), 0o700))
	must(os.WriteFile(p("b/inside"), []byte("inside b"), 0o644))
	must(unix.Renameat2(unix.AT_FDCWD, p("a"), unix.AT_FDCWD, p("b"), unix.RENAME_EXCHANGE))
	must(os.Rename(p("dir01"), p("dir02/dir01-moved")))
	must(os.WriteFile(p("replace"), []byte("new content"), 0o600))
	must(os.Rename(p("replace"), p("dir03/sub/../sub/replaced")))
	must(os.Symlink("b/inside", p("link-new")))
	must(os.Chmod(p("dir00"), 0o711))
	old := time.Date(2021, 5, 6, 7, 8, 9, 123456789, time.UTC)
	must(os.Chtimes(p("trunc.txt"), old, old))
	h, err := os.OpenFile(p("sparse.img"), os.O_RDWR, 0)
	must(err)
	must(unix.Fallocate(int(h.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 8<<20, 4096))
	must(h.Close())
	// Writes to a file whose last name is gone go nowhere.
	g, err := os.Create(p("doomed"))
	must(err)
	must(os.Remove(p("doomed")))
	_, err = g.Write([]byte("lost"))
	must(err)
	must(g.Close())
	must(os.RemoveAll(p("dir04")))
	// An fsync of a directory is a flush point too.
	before := j.flushes
	dh, err := os.Open(p("dir02"))
	must(err)
	must(dh.Sync())
	must(dh.Close())
	if j.flushes != before+1 {
		t.Errorf("fsync of a directory journaled %d flushes, want 1", j.flushes-before)
	}
	// Hard links and the tree exactly as the data directory holds them.
	d.WriteManifest(time.Now())
	fsys, err := dirvol.Open(ctx, j, dirvol.Size)
	if err != nil {
		t.Fatal(err)
	}
	fstest.CompareManifest(t, fsys, fstest.Manifest(t, data), fstest.Check{Mode: true, Symlinks: true, Hardlinks: true, MtimeGran: 1})
	if j.flushes == 0 {
		t.Error("fsync journaled no flush")
	}
	// The gap of gap.bin reads as zeros, not as the bytes written at 3 MiB.
	gf, err := fsys.Open(ctx, "/gap.bin")
	must(err)
	tail := make([]byte, 1<<20)
	if _, err := gf.ReadAt(tail, 1<<20); err != nil {
		t.Fatal(err)
	}
	for _, c := range tail {
		if c != 0 {
			t.Fatal("bytes cut off by a truncate came back when the file grew")
		}
	}
	// Deleted files leave nothing behind: every non-zero page lies in the
	// manifest or in the slot of a listed file, within its size.
	live := map[int64]int64{}
	for _, e := range fsys.Manifest().Entries {
		if e.Type == dirvol.File {
			live[e.Slot] = e.Size
		}
	}
	for idx, pg := range j.pages {
		off := idx * page
		slot, in := off>>dirvol.SlotShift, off&(dirvol.SlotSize-1)
		if slot == 0 || allZero(pg) {
			continue
		}
		if size, ok := live[slot]; !ok || in >= size {
			t.Errorf("data left at slot %d offset %d (live: %v, size %d)", slot, in, ok, size)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
