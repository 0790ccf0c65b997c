package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
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
	s.Close()

	// Tear the tail as a crash would; reopening cuts it and keeps the rest.
	seg := filepath.Join(dir, "seg-0000000000000001.log")
	st, _ := os.Stat(seg)
	os.Truncate(seg, st.Size()-10)
	s2, err := Open(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if n := s2.Next(); n != 101 {
		t.Fatalf("after a torn tail next seq is %d, want 101 (the flush record was torn)", n)
	}
	rs, _ := s2.NewCursor(100).Next(1 << 20)
	if len(rs) != 1 || !bytes.Equal(rs[0].Data, want[99]) {
		t.Fatalf("last good record lost: %d records", len(rs))
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
