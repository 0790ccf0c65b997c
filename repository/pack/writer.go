package pack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// Writer appends entries to a new pack file. Its first error is sticky:
// once a write fails, every later call returns that error, so nothing is
// acknowledged on top of a broken pack. Append and Seal are called by one
// goroutine at a time; Sync may run beside them.
type Writer struct {
	f       *os.File
	name    string
	off     int64
	entries []Entry
	buf     []byte
	err     error
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
	w := &Writer{f: f, name: path}
	w.write(encodeHeader(id))
	if w.err != nil {
		f.Close()
		os.Remove(path)
		return nil, w.err
	}
	return w, nil
}

// Size returns the number of bytes written so far.
func (w *Writer) Size() int64 { return atomic.LoadInt64(&w.off) }

func (w *Writer) write(b []byte) {
	if w.err != nil {
		return
	}
	n, err := w.f.Write(b)
	atomic.AddInt64(&w.off, int64(n))
	if err != nil {
		w.err = fmt.Errorf("write pack %s at offset %d: %w", w.name, w.off, err)
	}
}

// Append stores one block. e carries Compression, HashAlgo, ULen and Hash;
// data is the stored (possibly compressed) bytes. It returns the entry with
// its offset and stored length filled in. The entry is durable only after
// Sync or Seal.
func (w *Writer) Append(e Entry, data []byte) (Entry, error) {
	if w.err != nil {
		return Entry{}, w.err
	}
	if w.sealed.Load() {
		return Entry{}, fmt.Errorf("append to sealed pack %s", w.name)
	}
	if len(data) > MaxBlock || e.ULen > MaxBlock {
		return Entry{}, fmt.Errorf("append to pack %s: block of %d bytes exceeds the %d-byte limit", w.name, len(data), MaxBlock)
	}
	e.Offset = w.off
	e.CLen = uint32(len(data))
	need := EntryHeaderSize + len(data) + entryTrailer
	if cap(w.buf) < need {
		w.buf = make([]byte, need)
	}
	b := w.buf[:need]
	encodeEntryHeader(b, e)
	copy(b[EntryHeaderSize:], data)
	binary.LittleEndian.PutUint32(b[EntryHeaderSize+len(data):], crc(data))
	w.write(b)
	if w.err != nil {
		return Entry{}, w.err
	}
	w.entries = append(w.entries, e)
	return e, nil
}

// Sync makes every entry appended before it was called durable. It may
// run beside Append; it does not touch the sticky error (the caller
// decides what a failed sync means).
func (w *Writer) Sync() error {
	size := atomic.LoadInt64(&w.off)
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
		return w.err
	}
	idx := encodeIndex(w.entries)
	indexOff := w.off
	w.write(idx)
	w.write(encodeFooter(len(w.entries), indexOff, crc(idx)))
	if err := w.Sync(); err != nil && w.err == nil {
		w.err = err
	}
	w.sealed.Store(true)
	if w.err == nil {
		w.err = w.verify(idx)
	}
	if err := w.f.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("close pack %s: %w", w.name, err)
	}
	return w.err
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
	if st.Size() != w.off {
		return fmt.Errorf("verify pack %s: file has %d bytes, wrote %d", w.name, st.Size(), w.off)
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
	if _, err := f.Seek(keep, io.SeekStart); err != nil {
		f.Close()
		return 0, err
	}
	w := &Writer{f: f, name: path, off: keep, entries: entries}
	if err := w.Seal(); err != nil {
		return 0, err
	}
	return w.off, nil
}
