package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestAppendReadAckAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	var want [][]byte
	for i := range 100 {
		d := bytes.Repeat([]byte{byte(i)}, 1000+i)
		want = append(want, d)
		seq, err := s.Append(Write, now.Add(time.Duration(i)), int64(i*4096), 0, d)
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("append %d: seq %d err %v", i, seq, err)
		}
	}
	if _, err := s.Append(Flush, now, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	c := s.NewCursor(51)
	var got []Record
	for {
		rs, err := c.Next(5000)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			break
		}
		got = append(got, rs...)
	}
	if len(got) != 51 || got[0].Seq != 51 || got[50].Kind != Flush {
		t.Fatalf("cursor from 51 read %d records", len(got))
	}
	for i, r := range got[:50] {
		if !bytes.Equal(r.Data, want[50+i]) || r.Offset != int64((50+i)*4096) {
			t.Fatalf("record %d differs", r.Seq)
		}
	}
	used := s.Size()
	s.Close()

	// Tear the tail as a crash would (the segment is preallocated: the
	// last record's end is lost, not the file's); reopening keeps the rest.
	seg := filepath.Join(dir, "seg-0000000000000001.log")
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 10), used-10)
	f.Close()
	s2, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n := s2.Next(); n != 101 {
		t.Fatalf("after a torn tail next seq is %d, want 101 (the flush record was torn)", n)
	}
	rs, _ := s2.NewCursor(100).Next(1 << 20)
	if len(rs) != 1 || !bytes.Equal(rs[0].Data, want[99]) {
		t.Fatalf("last good record lost: %d records", len(rs))
	}
}

// A spool written before segments were preallocated (or on a filesystem
// that cannot preallocate) ends where its file ends; a torn tail there is
// a short file.
func TestShortFileTail(t *testing.T) {
	dir := t.TempDir()
	seg := filepath.Join(dir, "seg-0000000000000001.log")
	b := append(record(1, Write, []byte("one")), record(2, Write, []byte("two"))...)
	os.WriteFile(seg, b[:len(b)-3], 0o600)
	s, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Next() != 2 {
		t.Fatalf("next seq %d, want 2", s.Next())
	}
	if seq, err := s.Append(Write, time.Now(), 0, 0, []byte("TWO")); err != nil || seq != 2 {
		t.Fatalf("append after a torn tail: seq %d err %v", seq, err)
	}
	got := readAll(t, s, 1)
	if len(got) != 2 || string(got[0].Data) != "one" || string(got[1].Data) != "TWO" {
		t.Fatalf("read %d records after a torn tail", len(got))
	}
}

// record encodes one record as Append writes it.
func record(seq uint64, kind Kind, data []byte) []byte {
	b := make([]byte, headerSize+len(data))
	encodeHeader(b, Record{Kind: kind, Seq: seq, Time: time.Unix(int64(seq), 0), Length: int64(len(data))})
	copy(b[headerSize:], data)
	binary.LittleEndian.PutUint32(b[36:], crc32.Update(crc32.Checksum(b[:36], castagnoli), castagnoli, data))
	return b
}

func readAll(t *testing.T, s *Spool, from uint64) []Record {
	t.Helper()
	c := s.NewCursor(from)
	var out []Record
	for {
		rs, err := c.Next(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			return out
		}
		out = append(out, rs...)
	}
}

// After a crash, records past a torn one may have reached the disk (the
// page cache writes pages in any order). They were never flushed and are
// not part of the journal: new records with the same seqs must never be
// mixed with them, however the new records fall.
func TestRecordsPastATornOneStayUnread(t *testing.T) {
	dir := t.TempDir()
	seg := filepath.Join(dir, "seg-0000000000000001.log")
	torn := record(2, Write, []byte("bbbb"))
	torn[headerSize] ^= 0xff
	var b []byte
	b = append(b, record(1, Write, []byte("aaaa"))...)
	b = append(b, torn...)
	b = append(b, record(3, Write, []byte("cccc"))...)
	os.WriteFile(seg, b, 0o600)

	s, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if s.Next() != 2 {
		t.Fatalf("next seq %d, want 2", s.Next())
	}
	// A new record 2 of the torn one's length; then a crash before record 3.
	if _, err := s.Append(Write, time.Now(), 0, 0, []byte("BBBB")); err != nil {
		t.Fatal(err)
	}
	s.Sync()
	s2, err := Open(dir, 1<<20) // as after the crash: s is not closed
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, s2, 1)
	if len(got) != 2 || string(got[1].Data) != "BBBB" {
		t.Fatalf("read %d records; the stale record 3 must not be among them", len(got))
	}
	if s2.Next() != 3 {
		t.Fatalf("next seq %d, want 3", s2.Next())
	}
	s.Close()
	s2.Close()
}

// An empty segment (left by Reset) that holds bytes from before a crash is
// cleared before it is appended to, for the same reason.
func TestEmptySegmentIsClearedBeforeUse(t *testing.T) {
	dir := t.TempDir()
	seg := filepath.Join(dir, "seg-0000000000000005.log")
	torn := record(5, Write, []byte("eeee"))
	torn[headerSize] ^= 0xff
	os.WriteFile(seg, append(torn, record(6, Write, []byte("ffff"))...), 0o600)
	s, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := s.Append(Write, time.Now(), 0, 0, []byte("EEEE")); err != nil || seq != 5 {
		t.Fatalf("append: seq %d err %v", seq, err)
	}
	s.Sync()
	s2, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s2, 1); len(got) != 1 || string(got[0].Data) != "EEEE" {
		t.Fatalf("read %d records, want only the new one", len(got))
	}
	s.Close()
	s2.Close()
}

// A kept segment is not reused when the numbering started again (every
// segment was lost): its old records would follow the new ones.
func TestKeptSegmentOfAnOldNumberingIsNotReused(t *testing.T) {
	dir := t.TempDir()
	var b []byte
	for seq := range uint64(3) {
		b = append(b, record(seq+1, Write, []byte("old!"))...)
	}
	os.WriteFile(filepath.Join(dir, "free-0000000000000001.log"), b, 0o600)
	s, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s.Append(Write, time.Now(), 0, 0, []byte("new!"))
	s.Close()
	s2, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := readAll(t, s2, 1); len(got) != 1 || string(got[0].Data) != "new!" {
		t.Fatalf("read %d records, want only the new one", len(got))
	}
}

// Acknowledged segments are reused; the records they held never come back.
func TestSegmentsAreReused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 8<<20) // 1 MiB segments
	if err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 100<<10)
	var seq uint64
	for round := range 6 {
		for range 15 { // about 1.5 segments a round
			d[0] = byte(seq)
			if seq, err = s.Append(Write, time.Now(), int64(seq), 0, d); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := s.Ack(seq); err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		if len(files) > 1+keepFree+1 {
			t.Fatalf("round %d: %d segment files, want at most %d", round, len(files), keepFree+2)
		}
	}
	free, _ := filepath.Glob(filepath.Join(dir, "free-*.log"))
	if len(free) == 0 {
		t.Fatal("no acknowledged segment kept for reuse")
	}
	// Records after the last acknowledged one, in reused files, read back
	// exactly, also after reopening.
	var want []uint64
	for range 25 {
		d[0] = byte(seq)
		if seq, err = s.Append(Write, time.Now(), int64(seq), 0, d); err != nil {
			t.Fatal(err)
		}
		want = append(want, seq)
	}
	from := want[0]
	s.Close()
	s2, err := Open(dir, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Next() != seq+1 {
		t.Fatalf("next seq after reopen %d, want %d", s2.Next(), seq+1)
	}
	got := readAll(t, s2, from)
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i, r := range got {
		if r.Seq != want[i] || r.Offset != int64(want[i]-1) || r.Data[0] != byte(want[i]-1) {
			t.Fatalf("record %d: seq %d offset %d", i, r.Seq, r.Offset)
		}
	}
}

// Flushes from many writers at once: every Sync returns with its records
// durable, and none waits for an append or blocks one.
func TestConcurrentAppendAndSync(t *testing.T) {
	s, err := Open(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				if _, err := s.Append(Write, time.Now(), int64(w*4096), 0, make([]byte, 4096)); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					if err := s.Sync(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 1); len(got) != 400 {
		t.Fatalf("read %d records, want 400", len(got))
	}
}

func TestLimitAndAck(t *testing.T) {
	s, err := Open(t.TempDir(), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	d := make([]byte, 4000)
	for range 2 {
		if _, err := s.Append(Write, time.Now(), 0, 0, d); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(Write, time.Now(), 0, 0, d); !errors.Is(err, ErrFull) {
		t.Fatalf("append past the limit: %v, want ErrFull", err)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if s.Size() != 0 {
		t.Fatalf("size after reset %d", s.Size())
	}
	if seq, err := s.Append(Write, time.Now(), 0, 0, d); err != nil || seq != 3 {
		t.Fatalf("append after reset: seq %d err %v", seq, err)
	}
}

// Sequence numbers are never reused, also after a reset and a restart:
// the server skips records whose seq it has already applied.
func TestNumberingSurvivesResetAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, 1<<20)
	for range 5 {
		s.Append(Write, time.Now(), 0, 0, []byte("x"))
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if seq, _ := s2.Append(Write, time.Now(), 0, 0, []byte("y")); seq != 6 {
		t.Fatalf("after reset and reopen the next record got seq %d, want 6", seq)
	}
}

func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	s, _ := Open(dir, 1<<20)
	s.Append(Write, time.Unix(1, 0), 4096, 0, []byte("hello"))
	s.Append(Discard, time.Unix(2, 0), 0, 8192, nil)
	s.Close()
	seed, _ := os.ReadFile(filepath.Join(dir, "seg-0000000000000001.log"))
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "seg-0000000000000001.log"), b, 0o600)
		s, err := Open(d, 1<<20)
		if err != nil {
			return
		}
		s.NewCursor(0).Next(1 << 20)
		s.Close()
	})
}

// The before-drop hook runs before acknowledged records leave the spool
// (Ack deleting a segment, Reset), not when nothing leaves; if it fails,
// the records stay.
func TestBeforeDrop(t *testing.T) {
	s, err := Open(t.TempDir(), 8<<20) // 1 MiB segments
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	calls := 0
	var fail error
	s.SetBeforeDrop(func() error { calls++; return fail })
	d := make([]byte, 300<<10) // three to a segment
	var last uint64
	for range 8 {
		if last, err = s.Append(Write, time.Now(), 0, int64(len(d)), d); err != nil {
			t.Fatal(err)
		}
	}
	size := s.Size()
	if err := s.Ack(1); err != nil || calls != 0 || s.Size() != size {
		t.Fatalf("ack inside the first segment: err %v, %d hook calls, size %d of %d", err, calls, s.Size(), size)
	}
	fail = errors.New("volume sync failed")
	if err := s.Ack(last); err == nil || calls != 1 || s.Size() != size {
		t.Fatalf("failing hook: err %v, %d calls, size %d of %d", err, calls, s.Size(), size)
	}
	fail = nil
	if err := s.Ack(last); err != nil || calls != 2 || s.Size() >= size {
		t.Fatalf("ack: err %v, %d calls, size %d of %d", err, calls, s.Size(), size)
	}
	if err := s.Reset(); err != nil || calls != 3 || s.Size() != 0 {
		t.Fatalf("reset: err %v, %d calls, size %d", err, calls, s.Size())
	}
}

// A spare segment of written zeros waits for the next segment, which
// takes it, and the records appended into it read back.
func TestSpareSegmentIsUsed(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 8<<20) // 1 MiB segments
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	spare := filepath.Join(dir, "free-0000000000000000.log")
	var ino uint64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if st, err := os.Stat(spare); err == nil {
			ino = st.Sys().(*syscall.Stat_t).Ino
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no spare segment was made")
		}
	}
	data := bytes.Repeat([]byte("spare"), 1600)
	for i := range 300 { // into a second segment
		if _, err := s.Append(Write, time.Now(), int64(i), 0, data); err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "seg-0000000000000001.log"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Sys().(*syscall.Stat_t).Ino != ino {
		t.Error("the first segment is not the spare")
	}
	recs, err := s.NewCursor(1).Next(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if !bytes.Equal(r.Data, data) {
			t.Fatalf("record %d differs", i)
		}
	}
	if len(recs) != 300 {
		t.Fatalf("read %d records of 300", len(recs))
	}
}
