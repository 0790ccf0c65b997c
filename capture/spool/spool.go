// Package spool is the capture agent's durable local journal: every
// captured write, discard and flush is appended, in completion order, with
// its time and a sequence number; records are dropped only once the server
// has acknowledged them durable. A flush makes the journal durable, as a
// disk's cache flush does.
//
// A spool is a directory of segment files, seg-<first seq>.log, each a run
// of records:
//
//	"RWSP" | kind u8 | 0 u8×3 | seq u64 | time ns i64 | offset i64 |
//	length u32 | crc32c(header fields + data) u32                  (40 bytes)
//	data [length]   (writes only)
//
// Records in a segment carry consecutive seqs from the one in its name;
// opening a spool reads each segment up to the first record that is torn,
// damaged or out of sequence, and appends to a new segment after that.
//
// A flush must cost the disk as little as possible, since every
// synchronous write of the protected volume waits for one. Segment files
// are therefore preallocated to the segment size, and acknowledged segments
// are kept (renamed free-<seq>.log, at most keepFree of them) and reused:
// overwriting blocks a file already has changes no metadata, so the
// fdatasync of a flush writes the records and nothing else. Old records
// left in a reused file have smaller seqs than its new name, so they are
// never taken for new ones. Concurrent flushes share one fdatasync.
//
// Records are appended around the page cache (directio.Appender): they
// reach the file in runs, or at the next flush, and readers of the
// segment being appended find the newest in memory. Records not yet
// written out are lost with the process; none of them was flushed.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/rewind-cdp/rewind/repository/directio"
	"golang.org/x/sys/unix"
)

// Kind is what a record captured.
type Kind uint8

// Record kinds.
const (
	Write    Kind = 1 // data written at Offset
	Discard  Kind = 2 // Length bytes at Offset now read as zeros
	Flush    Kind = 3 // everything before is durable on the volume
	Bookmark Kind = 4 // an application-consistent moment; data is its label
)

func (k Kind) String() string {
	switch k {
	case Write:
		return "write"
	case Discard:
		return "discard"
	case Flush:
		return "flush"
	case Bookmark:
		return "bookmark"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

const (
	headerSize = 40
	maxRecord  = 64 << 20
	// keepFree is how many acknowledged segments are kept for reuse.
	keepFree = 2
)

var (
	magic      = []byte("RWSP")
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// ErrFull is returned by Append when the spool has reached its limit.
var ErrFull = errors.New("spool full")

// Record is one captured event.
type Record struct {
	Kind   Kind
	Seq    uint64
	Time   time.Time
	Offset int64
	Length int64 // data length for writes, range length for discards
	Data   []byte
}

type segment struct {
	first uint64 // seq of its first record
	path  string
	size  int64
	// out is set for a segment this process appended to: its records are
	// read through out, which holds those not yet written out. f, its
	// file, stays open until the segment is retired.
	f   *os.File
	out *directio.Appender
}

// Spool is an open journal. Append and Sync are safe to call from many
// goroutines; reading (ReadFrom) may run beside them.
type Spool struct {
	dir   string
	limit int64
	// segSize is the size at which a new segment begins: an eighth of the
	// limit (1–64 MiB), so acknowledged records are deleted, and space
	// freed, long before the spool fills.
	segSize int64

	mu    sync.Mutex
	segs  []segment          // oldest first; the last is being appended to
	cur   *os.File           // the last segment, once it is appended to
	out   *directio.Appender // appends to cur
	next  uint64             // seq of the next record
	size  int64              // bytes of records in all segments
	err   error              // sticky write error
	acked uint64
	// durable: every record with a smaller seq is on disk.
	durable uint64
	free    []string // acknowledged segment files kept for reuse
	// filling says a spare segment is being written (see fillSpare);
	// closed stops new ones.
	filling bool
	closed  bool
	fills   sync.WaitGroup

	// syncMu lets one fdatasync run at a time; a Sync that waited for it
	// finds its records made durable by the one before, most of the time.
	syncMu sync.Mutex

	beforeDrop func() error // see SetBeforeDrop
}

// SetBeforeDrop sets a function called before records leave the spool
// (Ack deleting a segment, Reset). A spool used as a write-ahead log of a
// volume passes one that makes the volume durable, so that every change a
// flush made durable only in the spool is on the volume before its record
// goes. If it fails, the records stay.
func (s *Spool) SetBeforeDrop(f func() error) {
	s.mu.Lock()
	s.beforeDrop = f
	s.mu.Unlock()
}

// Open opens (or creates) the spool in dir; limit bounds its size in bytes.
func Open(dir string, limit int64) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	s := &Spool{dir: dir, limit: limit, next: 1, segSize: min(max(limit/8, 1<<20), 64<<20)}
	names, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	for _, n := range names {
		var first uint64
		if _, err := fmt.Sscanf(filepath.Base(n), "seg-%016x.log", &first); err != nil {
			return nil, fmt.Errorf("spool %s: unexpected file %s", dir, n)
		}
		good, last, err := scanSegment(n, first)
		if err != nil {
			return nil, err
		}
		s.segs = append(s.segs, segment{first: first, path: n, size: good})
		s.size += good
		// Numbering continues after the last record, or from an empty
		// segment's name (left by Reset): a seq is never used twice.
		if last >= s.next {
			s.next = last + 1
		}
		if first > s.next {
			s.next = first
		}
	}
	frees, err := filepath.Glob(filepath.Join(dir, "free-*.log"))
	if err != nil {
		return nil, err
	}
	for _, n := range frees {
		// A kept segment's records are older than every segment's; should
		// the numbering have started again (every segment lost), its
		// records could pass for new ones, so it is not reused.
		var first uint64
		if _, err := fmt.Sscanf(filepath.Base(n), "free-%016x.log", &first); err == nil && first < s.next && len(s.free) < keepFree {
			s.free = append(s.free, n)
		} else if err := os.Remove(n); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	if len(s.segs) > 0 {
		last := s.segs[len(s.segs)-1]
		if last.size > 0 {
			// What lies past the good records (a torn tail, or records
			// written but never flushed before a crash) stays where it is,
			// never to be read: appending goes on in a new segment. The
			// records kept may still be in the page cache only (the agent
			// was killed, not the machine); a flush after this Open must
			// cover them too.
			f, err := os.OpenFile(last.path, os.O_WRONLY, 0)
			if err != nil {
				return nil, fmt.Errorf("spool: %w", err)
			}
			err = fdatasync(f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("spool: sync %s: %w", last.path, err)
			}
		} else {
			// An empty segment is appended to from its start, so nothing
			// from before may remain in it (a later record of the same
			// numbering could be read after a new, shorter one).
			// Zeros rather than a truncation, for written blocks (see
			// fillSpare).
			if err := writeZeroFile(last.path, s.segSize); err != nil {
				return nil, fmt.Errorf("spool: clear %s: %w", last.path, err)
			}
			f, err := os.OpenFile(last.path, os.O_RDWR, 0)
			if err != nil {
				return nil, fmt.Errorf("spool: %w", err)
			}
			s.startAppending(f, &s.segs[len(s.segs)-1])
		}
	}
	s.durable = s.next
	os.Remove(filepath.Join(dir, spareName)) // one a crash interrupted
	s.fillSpare()
	return s, nil
}

// scanSegment checks a segment's records and returns the length of its
// good prefix and the last good seq. The good prefix ends before the first
// record that is damaged or whose seq does not follow (first, first+1, …).
func scanSegment(path string, first uint64) (int64, uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	var off int64
	var last uint64
	want := first
	var hdr [headerSize]byte
	var data []byte
	for off+headerSize <= st.Size() {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			break
		}
		r, dlen, ok := decodeHeader(hdr[:])
		if !ok || off+headerSize+dlen > st.Size() || r.Seq != want {
			break
		}
		if int64(cap(data)) < dlen {
			data = make([]byte, dlen)
		}
		data = data[:dlen]
		if _, err := f.ReadAt(data, off+headerSize); err != nil {
			break
		}
		if !checkCRC(hdr[:], data) {
			break
		}
		last = r.Seq
		want++
		off += headerSize + dlen
	}
	return off, last, nil
}

func encodeHeader(b []byte, r Record) {
	copy(b, magic)
	b[4] = byte(r.Kind)
	b[5], b[6], b[7] = 0, 0, 0
	binary.LittleEndian.PutUint64(b[8:], r.Seq)
	binary.LittleEndian.PutUint64(b[16:], uint64(r.Time.UnixNano()))
	binary.LittleEndian.PutUint64(b[24:], uint64(r.Offset))
	binary.LittleEndian.PutUint32(b[32:], uint32(r.Length))
}

// decodeHeader parses a header; dlen is the data length that follows.
func decodeHeader(b []byte) (Record, int64, bool) {
	if len(b) < headerSize || string(b[:4]) != string(magic) {
		return Record{}, 0, false
	}
	r := Record{
		Kind:   Kind(b[4]),
		Seq:    binary.LittleEndian.Uint64(b[8:]),
		Time:   time.Unix(0, int64(binary.LittleEndian.Uint64(b[16:]))),
		Offset: int64(binary.LittleEndian.Uint64(b[24:])),
		Length: int64(binary.LittleEndian.Uint32(b[32:])),
	}
	var dlen int64
	switch r.Kind {
	case Write, Bookmark:
		dlen = r.Length
	case Discard, Flush:
	default:
		return Record{}, 0, false
	}
	if dlen > maxRecord || r.Offset < 0 {
		return Record{}, 0, false
	}
	return r, dlen, true
}

func checkCRC(hdr, data []byte) bool {
	c := crc32.Update(crc32.Checksum(hdr[:36], castagnoli), castagnoli, data)
	return c == binary.LittleEndian.Uint32(hdr[36:])
}

// Append journals one event and returns its seq. For a Write, data is the
// bytes written (Length is len(data)); for a Bookmark, its label; for a
// Discard, length is the range.
// It returns ErrFull, journaling nothing, when the record would take the
// spool past its limit.
func (s *Spool) Append(kind Kind, t time.Time, off, length int64, data []byte) (uint64, error) {
	if len(data) > maxRecord {
		return 0, fmt.Errorf("spool: record of %d bytes exceeds the %d-byte limit", len(data), maxRecord)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	need := int64(headerSize + len(data))
	if s.size+need > s.limit {
		return 0, ErrFull
	}
	if s.cur == nil || (s.segs[len(s.segs)-1].size > 0 && s.segs[len(s.segs)-1].size+need > s.segSize) {
		if err := s.rotate(); err != nil {
			s.err = err
			return 0, err
		}
	}
	r := Record{Kind: kind, Seq: s.next, Time: t, Offset: off, Length: length}
	if kind == Write || kind == Bookmark {
		r.Length = int64(len(data))
	}
	var hdr [headerSize]byte
	encodeHeader(hdr[:], r)
	binary.LittleEndian.PutUint32(hdr[36:], crc32.Update(crc32.Checksum(hdr[:36], castagnoli), castagnoli, data))
	last := &s.segs[len(s.segs)-1]
	if _, err := s.out.Append(hdr[:], data); err != nil {
		s.err = fmt.Errorf("spool: append to %s at %d: %w", last.path, last.size, err)
		return 0, s.err
	}
	last.size += need
	s.size += need
	s.next++
	return r.Seq, nil
}

// rotate starts a new segment, in a reused file when there is one. Called
// with mu held.
func (s *Spool) rotate() error {
	if s.cur != nil {
		if err := s.syncCurrent(); err != nil {
			return fmt.Errorf("spool: sync segment: %w", err)
		}
		s.cur, s.out = nil, nil // left open for reading until retired
		s.durable = max(s.durable, s.next)
	}
	p := filepath.Join(s.dir, fmt.Sprintf("seg-%016x.log", s.next))
	flags := os.O_CREATE | os.O_RDWR | os.O_TRUNC
	if n := len(s.free); n > 0 {
		// Its records all have smaller seqs than s.next: none of them
		// can be read as one of the new segment's.
		if err := os.Rename(s.free[n-1], p); err != nil {
			return fmt.Errorf("spool: reuse segment: %w", err)
		}
		s.free = s.free[:n-1]
		flags = os.O_RDWR
	}
	f, err := os.OpenFile(p, flags, 0o600)
	if err != nil {
		return fmt.Errorf("spool: new segment: %w", err)
	}
	s.preallocate(f)
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	s.segs = append(s.segs, segment{first: s.next, path: p})
	s.startAppending(f, &s.segs[len(s.segs)-1])
	s.fillSpare()
	return nil
}

// spareName is where a spare segment is written before it joins the free
// ones as free-0000000000000000.log (a seq no record has).
const spareName = "spare.log"

// fillSpare starts writing a spare segment in the background when no
// acknowledged one is free for the next rotation. Its blocks are written
// (zeros), not only preallocated: the first flush into a block that is
// only preallocated also commits the file system's change of that extent
// to written, and a synchronous write then cost the spool's fdatasync half
// as much again (4,000 against 6,000 4 KiB write+fdatasync per second
// here). Called with mu held.
func (s *Spool) fillSpare() {
	if len(s.free) > 0 || s.filling || s.closed {
		return
	}
	s.filling = true
	s.fills.Add(1)
	go func() {
		defer s.fills.Done()
		tmp := filepath.Join(s.dir, spareName)
		p := filepath.Join(s.dir, fmt.Sprintf("free-%016x.log", 0))
		err := writeZeroFile(tmp, s.segSize)
		if err == nil {
			err = os.Rename(tmp, p)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.filling = false
		if err != nil || s.closed || len(s.free) >= keepFree {
			if err != nil {
				slog.Debug("spool: no spare segment", "err", err)
			}
			os.Remove(tmp)
			os.Remove(p)
			return
		}
		s.free = append(s.free, p)
	}()
}

// writeZeroFile writes a file of n zero bytes, directly where the file
// system allows it, and makes it durable.
func writeZeroFile(path string, n int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	w := directio.NewWriterAt(f, path)
	defer w.Close()
	z := directio.AlignedBuf(1 << 20)[:1<<20]
	for off := int64(0); off < n; off += int64(len(z)) {
		if _, err := w.WriteAt(z[:min(int64(len(z)), n-off)], off); err != nil {
			return err
		}
	}
	return fdatasync(f)
}

// startAppending makes f, the file of seg (the last segment, empty), the
// one appended to. Records go out in runs written around the page cache
// (package directio): they are read back once, soon, by the shipper, which
// finds the newest still in memory, and copying them into the page cache
// costs a protected volume's writes more than writing them to disk
// directly. Called with mu held.
func (s *Spool) startAppending(f *os.File, seg *segment) {
	s.cur, s.out = f, directio.NewAppender(f, seg.path, 0, true)
	seg.f, seg.out = s.cur, s.out
}

// syncCurrent makes every record appended to the current segment durable.
func (s *Spool) syncCurrent() error {
	if err := s.out.Flush(); err != nil {
		return err
	}
	return fdatasync(s.cur)
}

// preallocate gives a segment file its blocks up front, so that appending
// records does not change its size. A filesystem that cannot do it just
// grows the file.
func (s *Spool) preallocate(f *os.File) {
	if st, err := f.Stat(); err == nil && st.Size() >= s.segSize {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { unix.Fallocate(int(fd), 0, 0, s.segSize) })
}

// retire drops a segment file whose records are all acknowledged, keeping
// up to keepFree of them for reuse. Called with mu held.
func (s *Spool) retire(seg segment) error {
	if seg.f != nil {
		seg.out.Close()
		seg.f.Close()
	}
	if len(s.free) < keepFree {
		p := filepath.Join(s.dir, fmt.Sprintf("free-%016x.log", seg.first))
		if err := os.Rename(seg.path, p); err == nil {
			s.free = append(s.free, p)
			return nil
		}
	}
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: drop acknowledged segment: %w", err)
	}
	return nil
}

// fdatasync makes a file's data durable, with the metadata needed to read
// it back (its size, its blocks) but not its times.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// Sync makes every record appended before it durable. Concurrent calls
// share the disk's work: while one fdatasync runs, the others wait, and the
// next one covers all of them.
func (s *Spool) Sync() error {
	s.mu.Lock()
	target, err := s.next, s.err
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if s.durable >= target || s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	f, out, upto := s.cur, s.out, s.next
	s.mu.Unlock()
	// Appends go on meanwhile; this covers those before upto.
	err = out.Flush()
	if err == nil {
		err = fdatasync(f)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if f != s.cur && s.durable >= target {
			return s.err // rotated meanwhile: the rotation synced it
		}
		if s.err == nil {
			s.err = fmt.Errorf("spool: sync: %w", err)
		}
		return s.err
	}
	s.durable = max(s.durable, upto)
	return s.err
}

// Next is the seq the next record will get.
func (s *Spool) Next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Size is the bytes the spool holds.
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Ack tells the spool that every record up to and including seq is
// durable on the server: whole segments below it are deleted.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	if seq > s.acked {
		s.acked = seq
	}
	upto := s.acked // what the hook below covers: records appended before it
	due := len(s.segs) > 1 && s.segs[1].first <= upto+1
	hook := s.beforeDrop
	s.mu.Unlock()
	if !due {
		return nil
	}
	if hook != nil {
		if err := hook(); err != nil {
			return fmt.Errorf("spool: before dropping acknowledged records: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.segs) > 1 && s.segs[1].first <= upto+1 {
		if err := s.retire(s.segs[0]); err != nil {
			return err
		}
		s.size -= s.segs[0].size
		s.segs = s.segs[1:]
	}
	return nil
}

// Reset drops every record (after a full resynchronisation made them
// unnecessary) and continues numbering after them.
func (s *Spool) Reset() error {
	s.mu.Lock()
	hook := s.beforeDrop
	s.mu.Unlock()
	if hook != nil {
		if err := hook(); err != nil {
			return fmt.Errorf("spool: before dropping every record: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// An empty segment named by the next seq keeps the numbering across a
	// restart; it is made before the old segments go, so that a crash in
	// between leaves either.
	old := s.segs
	s.segs, s.size, s.err = nil, 0, nil
	if n := len(old); n > 0 && old[n-1].size == 0 && s.cur != nil {
		s.segs, old = old[n-1:], old[:n-1] // it is there already
	} else {
		s.cur, s.out = nil, nil // closed as the old segments are retired
		if err := s.rotate(); err != nil {
			s.err = err
			return err
		}
	}
	s.acked = s.next - 1
	s.durable = s.next
	for _, seg := range old {
		if err := s.retire(seg); err != nil {
			return err
		}
	}
	return nil
}

// Cursor reads records in order from some seq on, remembering where it
// is. It must not be used across a Reset.
type Cursor struct {
	s    *Spool
	from uint64 // next seq wanted
	seg  int    // index into the segment list snapshot
	off  int64  // within that segment
	path string
}

// NewCursor returns a cursor at the first record with seq ≥ from.
func (s *Spool) NewCursor(from uint64) *Cursor { return &Cursor{s: s, from: from, seg: -1} }

// Pos is the seq of the next record the cursor reads (or a smaller one,
// when it has not found it yet).
func (c *Cursor) Pos() uint64 { return c.from }

// Next returns the next records, up to about maxBytes of them (at least
// one when any is there); none when it has caught up with Append.
func (c *Cursor) Next(maxBytes int64) ([]Record, error) {
	c.s.mu.Lock()
	segs := append([]segment(nil), c.s.segs...)
	c.s.mu.Unlock()
	// Find where we are in the current segment list.
	idx := -1
	for i, seg := range segs {
		if seg.path == c.path {
			idx = i
		}
	}
	if idx < 0 {
		c.off, c.path = 0, ""
		for i, seg := range segs {
			if i+1 < len(segs) && segs[i+1].first <= c.from {
				continue
			}
			idx, c.path = i, seg.path
			break
		}
		if idx < 0 {
			return nil, nil
		}
	}
	var out []Record
	var total int64
	for ; idx < len(segs); idx++ {
		seg := segs[idx]
		if seg.path != c.path {
			c.path, c.off = seg.path, 0
		}
		var f io.ReaderAt = seg.out
		closeFile := func() {}
		if seg.out == nil {
			file, err := os.Open(seg.path)
			if err != nil {
				return nil, fmt.Errorf("spool: read: %w", err)
			}
			f, closeFile = file, func() { file.Close() }
		}
		var hdr [headerSize]byte
		for c.off+headerSize <= seg.size {
			if _, err := f.ReadAt(hdr[:], c.off); err != nil {
				closeFile()
				return nil, fmt.Errorf("spool: read %s at %d: %w", seg.path, c.off, err)
			}
			r, dlen, ok := decodeHeader(hdr[:])
			if !ok || c.off+headerSize+dlen > seg.size {
				closeFile()
				return nil, fmt.Errorf("spool: damaged record in %s at offset %d", seg.path, c.off)
			}
			if r.Seq >= c.from {
				if dlen > 0 {
					r.Data = make([]byte, dlen)
					if _, err := f.ReadAt(r.Data, c.off+headerSize); err != nil && err != io.EOF {
						closeFile()
						return nil, err
					}
				}
				if !checkCRC(hdr[:], r.Data) {
					closeFile()
					return nil, fmt.Errorf("spool: checksum mismatch in %s at offset %d", seg.path, c.off)
				}
				out = append(out, r)
				c.from = r.Seq + 1
				total += dlen + headerSize
			}
			c.off += headerSize + dlen
			if total >= maxBytes {
				closeFile()
				return out, nil
			}
		}
		closeFile()
	}
	return out, nil
}

// Close syncs and closes the current segment.
func (s *Spool) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.fills.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.cur != nil {
		if err = s.syncCurrent(); err == nil {
			s.durable = max(s.durable, s.next)
		}
		s.cur, s.out = nil, nil
	}
	for i, seg := range s.segs {
		if seg.f != nil {
			seg.out.Close()
			seg.f.Close()
			s.segs[i].f, s.segs[i].out = nil, nil
		}
	}
	if s.err != nil {
		return s.err
	}
	return err
}
