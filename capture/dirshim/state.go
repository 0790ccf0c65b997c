// Package dirshim is the capture agent's directory shim: a passthrough FUSE
// file system over a data directory that hands every change to a Journal,
// in completion order, before the operation returns, as a change of a
// directory volume's address space (package parsers/filesystem/dirvol).
// A file write at (path, off, data) becomes a write at its slot's address;
// a truncate a discard of the cut-off range; names, modes, owners and times
// live in the manifest, whose changed blocks are journaled by
// WriteManifest before every point.
package dirshim

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
)

// Journal receives every change as it happens (see capture/shim). Its
// methods run in the write path and must not fail it.
type Journal interface {
	Write(t time.Time, off int64, data []byte)
	Discard(t time.Time, off, n int64)
	// Flush is called after the backing files were made durable; it makes
	// the journal durable up to here.
	Flush(t time.Time) error
}

// maxDiscard bounds one journaled discard, so the server never holds more
// than this much of a volume in memory for one record.
const maxDiscard = 16 << 20

// chunk is the granularity at which manifest changes are journaled.
const chunk = 4096

// stripes serialise writes to the same region, so the journal's order is
// the backing files' order (as in capture/shim).
const (
	stripeSize = 64 << 10
	stripes    = 256
)

// slotInfo is one captured regular file (an inode: hard links share it).
type slotInfo struct {
	slot int64
	ino  uint64
	// size is the file's size as journaled: every byte of the slot past
	// it reads as zeros on the server. Guarded by DirFS.dmu.
	size  int64
	paths map[string]struct{} // guarded by DirFS.mu
	gone  bool                // no path left: writes through open handles are dropped
}

type entry struct {
	dirvol.Entry
	seq uint64 // creation order: the manifest lists entries by it
	si  *slotInfo
}

// DirFS is a protected directory: its state, and the FUSE mount once
// mounted.
type DirFS struct {
	data    string // backing directory
	dev     uint64
	journal Journal

	mu       sync.Mutex // namespace, manifest
	entries  map[string]*entry
	seq      uint64
	bySlot   map[int64]*slotInfo
	byIno    map[uint64]*slotInfo
	nextSlot int64
	last     []byte // manifest bytes last journaled
	full     bool   // journal every manifest block next time
	nsChange bool   // names or slots changed since the local copy was saved
	dirty    map[string]struct{}
	// changed lists slots whose contents differ from the previous run's
	// manifest (or are new): they must be compared with the server.
	changed map[int64]struct{}

	dmu        sync.Mutex // journal order of data changes, sizes, dirty slots
	dirtySlots map[int64]struct{}

	locks [stripes]sync.Mutex

	server *fuse.Server
	mnt    string
}

// New walks the data directory and builds its manifest. prev, when not
// nil, is the manifest of the previous run (the agent's local copy): files
// keep its slots, and files whose size and mtime it records unchanged are
// not listed by Changed.
func New(data string, prev *dirvol.Manifest, j Journal) (*DirFS, error) {
	data, err := filepath.Abs(data)
	if err != nil {
		return nil, err
	}
	var rst syscall.Stat_t
	if err := syscall.Stat(data, &rst); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", data, err)
	}
	if rst.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, fmt.Errorf("data directory %s is not a directory", data)
	}
	d := &DirFS{data: data, dev: uint64(rst.Dev), journal: j, entries: map[string]*entry{}, bySlot: map[int64]*slotInfo{},
		byIno: map[uint64]*slotInfo{}, nextSlot: 1, dirty: map[string]struct{}{}, changed: map[int64]struct{}{},
		dirtySlots: map[int64]struct{}{}, full: true, nsChange: true}
	prevBy := map[string]dirvol.Entry{}
	if prev != nil {
		d.nextSlot = max(prev.NextSlot, 1)
		for _, e := range prev.Entries {
			prevBy[e.Path] = e
		}
	}
	usedSlots := map[int64]uint64{} // slot → inode claiming it in this walk
	err = filepath.WalkDir(data, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", p, err)
		}
		rel, _ := filepath.Rel(data, p)
		if rel == "." {
			rel = ""
		}
		rel = filepath.ToSlash(rel)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return fmt.Errorf("walk %s: %w", p, err)
		}
		if uint64(st.Dev) != d.dev {
			slog.Warn("not protecting a mount point inside the data directory (another file system)", "path", p)
			if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				return filepath.SkipDir
			}
			return nil
		}
		e := &entry{Entry: attrs(rel, &st)}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			e.Type = dirvol.Dir
		case syscall.S_IFLNK:
			e.Type = dirvol.Symlink
			t, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("walk %s: %w", p, err)
			}
			e.Target = t
		case syscall.S_IFREG:
			e.Type = dirvol.File
			si := d.byIno[st.Ino]
			if si == nil {
				slot := int64(0)
				if pe, ok := prevBy[rel]; ok && pe.Type == dirvol.File && pe.Slot < d.nextSlot {
					if _, taken := usedSlots[pe.Slot]; !taken {
						slot = pe.Slot
					}
				}
				if slot == 0 {
					if slot, err = d.allocSlot(); err != nil {
						return err
					}
				}
				usedSlots[slot] = st.Ino
				si = &slotInfo{slot: slot, ino: st.Ino, size: st.Size, paths: map[string]struct{}{}}
				d.bySlot[slot], d.byIno[st.Ino] = si, si
				if pe, ok := prevBy[rel]; !ok || pe.Slot != slot || pe.Size != st.Size || pe.Mtime != e.Mtime {
					d.changed[slot] = struct{}{}
				}
			}
			e.Slot, e.si = si.slot, si
			si.paths[rel] = struct{}{}
		default:
			slog.Warn("not protecting a special file (only files, directories and symlinks are captured)", "path", p)
			return nil
		}
		d.add(e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// attrs fills an entry's common attributes from a stat.
func attrs(rel string, st *syscall.Stat_t) dirvol.Entry {
	return dirvol.Entry{Path: rel, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano(), Size: st.Size}
}

func (d *DirFS) allocSlot() (int64, error) {
	if d.nextSlot >= dirvol.MaxSlots {
		return 0, fmt.Errorf("the directory volume has used all its %d file slots; start a new volume", dirvol.MaxSlots-1)
	}
	s := d.nextSlot
	d.nextSlot++
	d.nsChange = true
	return s, nil
}

// add records a new entry. Called with mu held (or before mounting).
func (d *DirFS) add(e *entry) {
	d.seq++
	e.seq = d.seq
	if e.Type != dirvol.File {
		e.Size = 0
	}
	d.entries[e.Path] = e
	d.nsChange = true
}

// Changed reports whether files changed since the previous run's manifest
// (they must be compared with the server before the first point).
func (d *DirFS) Changed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.changed) > 0
}

// Files is the number of captured files and directories.
func (d *DirFS) Files() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries)
}

// ScanBlocks lists, in increasing order, the blocks (of blockSize bytes)
// to compare with the server: the manifest and every file (full), or the
// manifest and the files changed since the previous run. It journals the
// whole manifest first (so the blocks read for slot 0 are current).
func (d *DirFS) ScanBlocks(full bool, blockSize int64) []int64 {
	d.WriteManifest(time.Now())
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int64
	span := func(slot, n int64) {
		first := dirvol.Addr(slot, 0) / blockSize
		for b := first; b*blockSize < dirvol.Addr(slot, max(n, 1)); b++ {
			out = append(out, b)
		}
	}
	span(0, int64(len(d.last)))
	d.dmu.Lock()
	for slot, si := range d.bySlot {
		if _, ch := d.changed[slot]; full || ch {
			span(slot, si.size)
		}
	}
	d.dmu.Unlock()
	slices.Sort(out)
	return slices.Compact(out)
}

// Scanned tells that the blocks ScanBlocks listed are on the server.
func (d *DirFS) Scanned() {
	d.mu.Lock()
	clear(d.changed)
	d.mu.Unlock()
}

// markDirty notes a path whose attributes must be re-read for the next
// manifest. Called with mu held.
func (d *DirFS) markDirty(rel string) { d.dirty[rel] = struct{}{} }

func (d *DirFS) markSlot(slot int64) {
	d.dmu.Lock()
	d.dirtySlots[slot] = struct{}{}
	d.dmu.Unlock()
}

func (d *DirFS) backing(rel string) string {
	if rel == "" {
		return d.data
	}
	return d.data + "/" + rel
}

// refresh re-reads an entry's attributes from the backing file. Called
// with mu held.
func (d *DirFS) refresh(e *entry) {
	var st syscall.Stat_t
	if err := syscall.Lstat(d.backing(e.Path), &st); err != nil {
		return // gone behind our back; its removal will come through the mount
	}
	a := attrs(e.Path, &st)
	e.Mode, e.UID, e.GID, e.Mtime = a.Mode, a.UID, a.GID, a.Mtime
}

// manifestLocked returns the current manifest, attributes of changed
// entries re-read. Called with mu held.
func (d *DirFS) manifestLocked() *dirvol.Manifest {
	d.dmu.Lock()
	slots := d.dirtySlots
	d.dirtySlots = map[int64]struct{}{}
	sizes := make(map[*slotInfo]int64, len(d.bySlot))
	for _, si := range d.bySlot {
		sizes[si] = si.size
	}
	d.dmu.Unlock()
	for p := range d.dirty {
		if e := d.entries[p]; e != nil {
			d.refresh(e)
		}
	}
	clear(d.dirty)
	for slot := range slots {
		si := d.bySlot[slot]
		if si == nil {
			continue
		}
		var first *entry
		for p := range si.paths {
			if e := d.entries[p]; e != nil {
				if first == nil {
					d.refresh(e)
					first = e
				} else {
					e.Mode, e.UID, e.GID, e.Mtime = first.Mode, first.UID, first.GID, first.Mtime
				}
			}
		}
	}
	all := make([]*entry, 0, len(d.entries))
	for _, e := range d.entries {
		if e.si != nil {
			e.Size = sizes[e.si]
		}
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	m := &dirvol.Manifest{NextSlot: d.nextSlot, Entries: make([]dirvol.Entry, len(all))}
	for i, e := range all {
		m.Entries[i] = e.Entry
	}
	return m
}

// WriteManifest journals the manifest blocks that changed since the last
// call, so that a point cut after it holds a manifest consistent with the
// data journaled before it. It returns whether anything was journaled.
func (d *DirFS) WriteManifest(t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.manifestLocked().Encode()
	// same reports whether the chunk at off is already journaled (bytes of
	// the last manifest past the new one's end do not matter).
	same := func(off int) bool {
		end := min(off+chunk, len(b))
		return !d.full && end <= len(d.last) && bytes.Equal(b[off:end], d.last[off:end])
	}
	wrote := false
	for off := 0; off < len(b); {
		if same(off) {
			off += chunk
			continue
		}
		end := off + chunk
		// Coalesce a run of changed chunks (up to 1 MiB) into one record.
		for end < len(b) && end-off < 1<<20 && !same(end) {
			end += chunk
		}
		end = min(end, len(b))
		d.journal.Write(t, int64(off), b[off:end])
		wrote = true
		off = end
	}
	d.last, d.full = b, false
	return wrote
}

// Pending reports whether names or attributes changed since the manifest
// was last journaled. Such changes alone journal nothing: the agent calls
// WriteManifest when they are pending, so they reach a point.
func (d *DirFS) Pending() bool {
	d.mu.Lock()
	n := len(d.dirty)
	d.mu.Unlock()
	d.dmu.Lock()
	n += len(d.dirtySlots)
	d.dmu.Unlock()
	return n > 0
}

// SaveLocal writes the manifest last journaled to path when names or
// slots changed since the last save (or always, with force): the next
// run keeps the slots it lists.
func (d *DirFS) SaveLocal(path string, force bool) error {
	d.mu.Lock()
	if !d.nsChange && !force {
		d.mu.Unlock()
		return nil
	}
	d.nsChange = false
	b := d.last
	d.mu.Unlock()
	if b == nil {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save the local manifest copy: %w", err)
	}
	return os.Rename(tmp, path)
}

// LoadLocal reads a manifest saved by SaveLocal (nil when there is none or
// it is unreadable: the run then starts with fresh slots).
func LoadLocal(path string) *dirvol.Manifest {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	m, err := dirvol.Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		slog.Warn("ignoring a damaged local manifest copy", "path", path, "err", err)
		return nil
	}
	return m
}

// ReadAt reads the directory volume's address space as the directory holds
// it now: slot 0 is the manifest last journaled, slot k the file of that
// slot (zeros past its end, and for slots no file holds). Scans read it.
func (d *DirFS) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos < 0 || pos >= dirvol.Size {
			return n, io.EOF
		}
		slot, in := pos>>dirvol.SlotShift, pos&(dirvol.SlotSize-1)
		take := int(min(int64(len(p)-n), dirvol.SlotSize-in))
		if err := d.readSlot(p[n:n+take], slot, in); err != nil {
			return n, err
		}
		n += take
	}
	return n, nil
}

func (d *DirFS) readSlot(p []byte, slot, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if slot == 0 {
		if off < int64(len(d.last)) {
			copy(p, d.last[off:])
		}
		return nil
	}
	si := d.bySlot[slot]
	if si == nil {
		return nil
	}
	for rel := range si.paths {
		f, err := os.OpenFile(d.backing(rel), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		_, err = f.ReadAt(p, off)
		f.Close()
		if err != nil && err != io.EOF {
			return fmt.Errorf("read %s at %d: %w", rel, off, err)
		}
		return nil
	}
	return nil
}

// lockRange takes the stripe locks covering [addr, addr+n) in ascending
// order and returns their release; n < 0 takes them all.
func (d *DirFS) lockRange(addr, n int64) func() {
	var held []int
	first, last := addr/stripeSize, (addr+max(n, 1)-1)/stripeSize
	if n < 0 || last-first+1 >= stripes {
		for i := range stripes {
			held = append(held, i)
		}
	} else {
		for st := first; st <= last; st++ {
			held = append(held, int(st%stripes))
		}
		sort.Ints(held)
	}
	for _, i := range held {
		d.locks[i].Lock()
	}
	return func() {
		for _, i := range held {
			d.locks[i].Unlock()
		}
	}
}

// discard journals a discard of [addr, addr+n) in bounded records. Called
// with dmu held.
func (d *DirFS) discard(t time.Time, addr, n int64) {
	for n > 0 {
		c := min(n, maxDiscard)
		d.journal.Discard(t, addr, c)
		addr += c
		n -= c
	}
}

// wrote journals data written at off of a file, after the backing write.
func (d *DirFS) wrote(si *slotInfo, off int64, data []byte) {
	t := time.Now()
	d.dmu.Lock()
	defer d.dmu.Unlock()
	if si.gone {
		return
	}
	if off > si.size {
		d.discard(t, dirvol.Addr(si.slot, si.size), off-si.size)
	}
	d.journal.Write(t, dirvol.Addr(si.slot, off), data)
	si.size = max(si.size, off+int64(len(data)))
	d.dirtySlots[si.slot] = struct{}{}
}

// resized journals a change of a file's size to n (truncate, fallocate),
// after the backing change.
func (d *DirFS) resized(si *slotInfo, n int64) {
	t := time.Now()
	d.dmu.Lock()
	defer d.dmu.Unlock()
	if si.gone {
		return
	}
	if n < si.size {
		d.discard(t, dirvol.Addr(si.slot, n), si.size-n)
	} else if n > si.size {
		d.discard(t, dirvol.Addr(si.slot, si.size), n-si.size)
	}
	si.size = n
	d.dirtySlots[si.slot] = struct{}{}
}

// punched journals a hole punched (or zeroed) in [off, off+n) of a file.
func (d *DirFS) punched(si *slotInfo, off, n int64) {
	t := time.Now()
	d.dmu.Lock()
	defer d.dmu.Unlock()
	if si.gone {
		return
	}
	end := min(off+n, si.size)
	if end > off {
		d.discard(t, dirvol.Addr(si.slot, off), end-off)
	}
	d.dirtySlots[si.slot] = struct{}{}
}
