package pack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/rewind-cdp/rewind/repository/directio"
)

// Writer appends entries to a new pack file. Its first error is sticky:
// once a write fails, every later call returns that error, so nothing is
// acknowledged on top of a broken pack. Append and Seal are called by one
// goroutine at a time; Sync may run beside them.
//
// Entries go through a directio.Appender: written in runs in the
// background, whole pages directly where the file system allows it (a
// pack is written once and read rarely).
type Writer struct {
	f    *os.File
	out  *directio.Appender
	name string

	mu      sync.Mutex
	err     error // a failed Seal
	entries []Entry
	sealed  atomic.Bool
	synced  atomic.Int64 // bytes known durable
}

// Create makes a new pack file at path (which must not exist) and writes
// its header.
func Create(path string, id uint64) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create pack: %w", err)
	}
	w := &Writer{f: f, name: path, out: directio.NewAppender(f, path, 0, true)}
	w.out.Append(encodeHeader(id))
	return w, nil
}

// Size returns the number of bytes appended so far.
func (w *Writer) Size() int64 { return w.out.Size() }

// Append stores one block. e carries Compression, HashAlgo, ULen and Hash;
// data is the stored (possibly compressed) bytes. It returns the entry with
// its offset and stored length filled in. The entry is durable only after
// Sync or Seal.
func (w *Writer) Append(e Entry, data []byte) (Entry, error) {
	if err := w.sticky(); err != nil {
		return Entry{}, err
	}
	if w.sealed.Load() {
		return Entry{}, fmt.Errorf("append to sealed pack %s", w.name)
	}
	if len(data) > MaxBlock || e.ULen > MaxBlock {
		return Entry{}, fmt.Errorf("append to pack %s: block of %d bytes exceeds the %d-byte limit", w.name, len(data), MaxBlock)
	}
	var hdr [EntryHeaderSize]byte
	var trailer [entryTrailer]byte
	e.CLen = uint32(len(data))
	encodeEntryHeader(hdr[:], e)
	binary.LittleEndian.PutUint32(trailer[:], crc(data))
	off, err := w.out.Append(hdr[:], data, trailer[:])
	if err != nil {
		return Entry{}, err
	}
	e.Offset = off
	w.entries = append(w.entries, e)
	return e, nil
}

// Sync makes every entry appended before it was called durable. It may
// run beside Append. A failed write is also sticky; a failed sync is
// returned only (the caller decides what it means).
func (w *Writer) Sync() error {
	size := w.out.Size()
	if err := w.out.Flush(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("sync pack %s: %w", w.name, err)
	}
	if size > w.synced.Load() {
		w.synced.Store(size)
	}
	return nil
}

// DurableSize is the size of the pack known durable.
func (w *Writer) DurableSize() int64 { return w.synced.Load() }

// Sealed reports whether Seal ran (successfully or not).
func (w *Writer) Sealed() bool { return w.sealed.Load() }

// Seal writes the index and footer, makes the pack durable, reads the
// footer and index back from the file and checks them against what was
// written, and closes the file.
func (w *Writer) Seal() error {
	if w.sealed.Load() {
		return w.sticky()
	}
	idx := encodeIndex(w.entries)
	indexOff := w.Size()
	w.out.Append(idx, encodeFooter(len(w.entries), indexOff, crc(idx)))
	err := w.Sync()
	w.sealed.Store(true)
	if err == nil {
		err = w.verify(idx)
	}
	if cerr := w.out.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if cerr := w.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close pack %s: %w", w.name, cerr)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// sticky returns the pack's first error: a failed write, or a failed seal.
func (w *Writer) sticky() error {
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if err != nil || w.sealed.Load() {
		return err
	}
	return w.out.Err()
}

func (w *Writer) verify(idx []byte) error {
	f, err := os.Open(w.name)
	if err != nil {
		return fmt.Errorf("verify pack %s: %w", w.name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("verify pack %s: %w", w.name, err)
	}
	if st.Size() != w.Size() {
		return fmt.Errorf("verify pack %s: file has %d bytes, wrote %d", w.name, st.Size(), w.Size())
	}
	r := NewReader(f, st.Size(), w.name)
	got, err := r.Index()
	if err != nil {
		return fmt.Errorf("verify pack %s: %w", w.name, err)
	}
	if !bytes.Equal(encodeIndex(got), idx) {
		return fmt.Errorf("verify pack %s: index read back differs from the one written", w.name)
	}
	return nil
}

// Recover seals a pack left open by a crash: it checks every entry up to
// keep (the end of the last entry anybody was told is stored), cuts the
// file there, and writes the index and footer. It returns the sealed size.
func Recover(path string, keep int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	if keep > st.Size() {
		f.Close()
		return 0, &FormatError{path, st.Size(), fmt.Sprintf("file ends before its last indexed entry (which ends at %d)", keep)}
	}
	if _, err := NewReader(f, st.Size(), path).Header(); err != nil {
		f.Close()
		return 0, err
	}
	var entries []Entry
	r := NewReader(f, keep, path)
	end, err := r.Walk(func(e Entry) error {
		entries = append(entries, e)
		return nil
	})
	if err != nil || end != keep {
		f.Close()
		if err == nil {
			err = &FormatError{path, end, fmt.Sprintf("entries end at %d, expected %d", end, keep)}
		}
		return 0, err
	}
	if err := f.Truncate(keep); err != nil {
		f.Close()
		return 0, err
	}
	w := &Writer{f: f, name: path, out: directio.NewAppender(f, path, keep, false), entries: entries}
	if err := w.Seal(); err != nil {
		return 0, err
	}
	return w.Size(), nil
}
