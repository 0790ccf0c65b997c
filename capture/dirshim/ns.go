package dirshim

import (
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/rewind-cdp/rewind/parsers/filesystem/dirvol"
)

func parentOf(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// created records the entry now at rel (after the backing create, mkdir,
// symlink or link). Called with mu held. It returns the file's slot.
func (d *DirFS) created(rel string) *slotInfo {
	var st syscall.Stat_t
	if err := syscall.Lstat(d.backing(rel), &st); err != nil {
		return nil
	}
	d.markDirty(parentOf(rel))
	if old := d.entries[rel]; old != nil {
		if old.si != nil && old.si.ino == st.Ino {
			d.markDirty(rel)
			return old.si // an existing file opened with O_CREAT
		}
		d.removed(rel)
	}
	e := &entry{Entry: attrs(rel, &st)}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		e.Type = dirvol.Dir
	case syscall.S_IFLNK:
		e.Type = dirvol.Symlink
		e.Target, _ = os.Readlink(d.backing(rel))
		if e.Target == "" {
			return nil
		}
	case syscall.S_IFREG:
		e.Type = dirvol.File
		si := d.byIno[st.Ino]
		if si == nil {
			slot, err := d.allocSlot()
			if err != nil {
				return nil
			}
			si = &slotInfo{slot: slot, ino: st.Ino, paths: map[string]struct{}{}}
			d.bySlot[slot], d.byIno[st.Ino] = si, si
			if st.Size > 0 {
				// A file that appeared behind the shim's back, with content
				// it did not see being written: journal that content.
				d.journalFile(si, rel)
			}
		}
		si.paths[rel] = struct{}{}
		e.si, e.Slot = si, si.slot
		d.markSlot(si.slot)
	default:
		return nil // special files are not captured
	}
	d.add(e)
	return e.si
}

// removed forgets the entry at rel (after the backing unlink or rmdir, or
// when a rename replaced it). The last name of a file discards its data.
// Called with mu held.
func (d *DirFS) removed(rel string) {
	e := d.entries[rel]
	if e == nil {
		return
	}
	delete(d.entries, rel)
	d.nsChange = true
	d.markDirty(parentOf(rel))
	if e.Type == dirvol.Dir {
		// Only empty directories are removed; drop anything left anyway.
		for p := range d.entries {
			if strings.HasPrefix(p, rel+"/") {
				d.removed(p)
			}
		}
	}
	si := e.si
	if si == nil {
		return
	}
	delete(si.paths, rel)
	if len(si.paths) > 0 {
		d.markSlot(si.slot)
		return
	}
	d.dmu.Lock()
	d.discard(time.Now(), dirvol.Addr(si.slot, 0), si.size)
	si.size, si.gone = 0, true
	delete(d.dirtySlots, si.slot)
	d.dmu.Unlock()
	delete(d.bySlot, si.slot)
	delete(d.byIno, si.ino)
}

// renamed moves the subtree at from to to (after the backing rename);
// with exchange the two subtrees swap. Called with mu held.
func (d *DirFS) renamed(from, to string, exchange bool) {
	if from == to {
		return
	}
	if !exchange {
		if d.entries[to] != nil {
			d.removed(to)
		}
	}
	type move struct {
		e  *entry
		to string
	}
	var moves []move
	under := func(p, root string) bool { return p == root || strings.HasPrefix(p, root+"/") }
	for p, e := range d.entries {
		switch {
		case under(p, from):
			moves = append(moves, move{e, to + p[len(from):]})
		case exchange && under(p, to):
			moves = append(moves, move{e, from + p[len(to):]})
		}
	}
	for _, m := range moves {
		delete(d.entries, m.e.Path)
		if m.e.si != nil {
			delete(m.e.si.paths, m.e.Path)
		}
	}
	for _, m := range moves {
		m.e.Path = m.to
		d.entries[m.to] = m.e
		if m.e.si != nil {
			m.e.si.paths[m.to] = struct{}{}
		}
	}
	d.nsChange = true
	d.markDirty(parentOf(from))
	d.markDirty(parentOf(to))
	d.markDirty(to)
	if exchange {
		d.markDirty(from)
	}
}

// slotOf returns the captured file of a backing inode, adopting a file
// that appeared behind the shim's back.
func (d *DirFS) slotOf(ino uint64, rel string) *slotInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	if si := d.byIno[ino]; si != nil {
		return si
	}
	return d.created(rel)
}

// journalFile journals the whole content of a file the shim did not see
// being written. Called with mu held.
func (d *DirFS) journalFile(si *slotInfo, rel string) {
	f, err := os.Open(d.backing(rel))
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := f.ReadAt(buf, off)
		if n > 0 {
			d.wrote(si, off, buf[:n])
			off += int64(n)
		}
		if err != nil || n == 0 {
			break
		}
	}
	slog.Info("journaled a file that appeared in the data directory outside the mount", "path", rel, "bytes", off)
}
