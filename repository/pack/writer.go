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
// Entries are gathered in a memory buffer and written in runs of about
// bufSize bytes, each in the background while the next one fills. Whole
// pages of a run go through a second descriptor opened with O_DIRECT
// where the file system allows it (see package directio): a pack is
// written once and read rarely. The tail of a run that is not a whole
// page goes through the page cache at a Sync and stays in the buffer; the
// rest of that page follows it through the page cache with the next run.
type Writer struct {
	f      *os.File // through the page cache
	direct *os.File // O_DIRECT; nil where the file system refuses it
	name   string
	off    int64 // bytes appended (atomic: Size)

	mu      sync.Mutex // the fields below, between Append and Sync
	buf     []byte     // the bytes from bufOff to off, not yet written whole
	bufOff  int64      // file offset of buf[0]; page-aligned while direct is set
	cached  int64      // pages below this offset went through the page cache
	running []byte     // the run being written in the background, if any
	done    chan error // its result
	spare   []byte     // an empty buffer to fill next, when no run is under way

	entries []Entry
	err     error
	sealed  atomic.Bool
	synced  atomic.Int64 // bytes known durable
}

// bufSize is the size of the runs entries are written in.
const bufSize = 1 << 20

// Create makes a new pack file at path (which must not exist) and writes
// its header.
func Create(path string, id uint64) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create pack: %w", err)
	}
	w := newWriter(f, path, 0)
	w.direct = directio.Open(path)
	w.add(encodeHeader(id))
	return w, nil
}

func newWriter(f *os.File, path string, off int64) *Writer {
	return &Writer{f: f, name: path, off: off, bufOff: off, buf: directio.AlignedBuf(bufSize)}
}

// Size returns the number of bytes appended so far.
func (w *Writer) Size() int64 { return atomic.LoadInt64(&w.off) }

// add appends b to the pack.
func (w *Writer) add(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	dst := w.reserve(len(b))
	copy(dst, b)
}

// reserve returns the next n bytes of the buffer for the caller to fill,
// writing out what the buffer holds first when they do not fit. Called
// with mu held.
func (w *Writer) reserve(n int) []byte {
	if len(w.buf)+n > cap(w.buf) {
		w.writeOut(false)
		if len(w.buf)+n > cap(w.buf) {
			nb := directio.AlignedBuf((len(w.buf) + n + bufSize) / directio.Align * directio.Align)
			w.buf = append(nb, w.buf...)
		}
	}
	at := len(w.buf)
	w.buf = w.buf[:at+n]
	atomic.AddInt64(&w.off, int64(n))
	return w.buf[at:]
}

// writeOut writes the buffer's whole pages (all of it when direct writes
// are off) and moves the rest to the start of the other buffer. Without
// all, the write goes on in the background while Append fills the other
// buffer; with all, writeOut waits for it and then writes the rest too,
// through the page cache. Called with mu held. Failures go to the sticky
// error.
func (w *Writer) writeOut(all bool) {
	w.wait()
	if w.err != nil {
		return
	}
	if n := len(w.buf); n > 0 && (w.direct == nil || n >= directio.Align) {
		if w.direct != nil {
			n = n / directio.Align * directio.Align
		}
		// A page is written either through the page cache or directly,
		// never both: a direct write over a page a reader holds in the
		// cache could leave that reader's copy stale.
		run, off, head := w.buf[:n], w.bufOff, int(min(int64(n), max(0, w.cached-w.bufOff)))
		next := w.spare
		if next == nil {
			next = directio.AlignedBuf(bufSize)
		}
		w.spare = nil
		w.buf = next[:copy(next[:len(w.buf)-n], w.buf[n:])]
		w.bufOff += int64(n)
		done := make(chan error, 1)
		w.running, w.done = run, done
		go func() { done <- w.writeAt(run, off, head) }()
		if all {
			w.wait()
		}
	}
	if all && w.err == nil && len(w.buf) > 0 {
		if _, err := w.f.WriteAt(w.buf, w.bufOff); err != nil {
			w.err = fmt.Errorf("write pack %s at offset %d: %w", w.name, w.bufOff, err)
		}
		w.cached = w.bufOff + directio.Align
	}
}

// wait waits for the write under way, if any, and takes its buffer back
// as the spare. Called with mu held.
func (w *Writer) wait() {
	if w.done == nil {
		return
	}
	if err := <-w.done; err != nil && w.err == nil {
		w.err = err
	}
	w.spare, w.running, w.done = w.running[:0], nil, nil
}

// writeAt writes b at off: its first head bytes (whole pages) through the
// page cache, the rest (whole pages) directly, or everything through the
// page cache when direct writes are off. A file system that refuses a
// direct write turns them off for this pack.
func (w *Writer) writeAt(b []byte, off int64, head int) error {
	if w.direct != nil {
		if head > 0 {
			if _, err := w.f.WriteAt(b[:head], off); err != nil {
				return fmt.Errorf("write pack %s at offset %d: %w", w.name, off, err)
			}
			b, off = b[head:], off+int64(head)
		}
		if len(b) == 0 {
			return nil
		}
		_, err := w.direct.WriteAt(b, off)
		if err == nil {
			return nil
		}
		if !directio.IsUnsupported(err) {
			return fmt.Errorf("write pack %s at offset %d: %w", w.name, off, err)
		}
		w.direct.Close()
		w.direct = nil
	}
	if _, err := w.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("write pack %s at offset %d: %w", w.name, off, err)
	}
	return nil
}

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
	w.mu.Lock()
	e.Offset = w.off
	e.CLen = uint32(len(data))
	b := w.reserve(EntryHeaderSize + len(data) + entryTrailer)
	encodeEntryHeader(b, e)
	copy(b[EntryHeaderSize:], data)
	binary.LittleEndian.PutUint32(b[EntryHeaderSize+len(data):], crc(data))
	err := w.err
	w.mu.Unlock()
	if err != nil {
		return Entry{}, err
	}
	w.entries = append(w.entries, e)
	return e, nil
}

// Sync makes every entry appended before it was called durable. It may
// run beside Append. A failed write is also sticky; a failed sync is
// returned only (the caller decides what it means).
func (w *Writer) Sync() error {
	w.mu.Lock()
	size := atomic.LoadInt64(&w.off)
	w.writeOut(true)
	err := w.err
	w.mu.Unlock()
	if err != nil {
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
	w.add(idx)
	w.add(encodeFooter(len(w.entries), indexOff, crc(idx)))
	err := w.Sync()
	w.sealed.Store(true)
	if err == nil {
		err = w.verify(idx)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.direct != nil {
		w.direct.Close()
		w.direct = nil
	}
	if cerr := w.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close pack %s: %w", w.name, cerr)
	}
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// sticky returns the pack's first write error.
func (w *Writer) sticky() error {
	w.mu.Lock()
	defer w.mu.Unlock()
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
	w := newWriter(f, path, keep)
	w.entries = entries
	if err := w.Seal(); err != nil {
		return 0, err
	}
	return w.Size(), nil
}
