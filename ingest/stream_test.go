package ingest

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/repository"
)

// volumeSim is a volume with a journal, as an agent sees it.
type volumeSim struct {
	data []byte
	recs []StreamRecord
	t    time.Time
}

func (v *volumeSim) write(off int64, b []byte) {
	copy(v.data[off:], b)
	v.t = v.t.Add(time.Millisecond)
	v.recs = append(v.recs, StreamRecord{Kind: RecordWrite, Seq: uint64(len(v.recs) + 1), Time: v.t, Offset: off, Length: int64(len(b)), Data: append([]byte(nil), b...)})
}

func (v *volumeSim) discard(off, n int64) {
	clear(v.data[off : off+n])
	v.t = v.t.Add(time.Millisecond)
	v.recs = append(v.recs, StreamRecord{Kind: RecordDiscard, Seq: uint64(len(v.recs) + 1), Time: v.t, Offset: off, Length: n})
}

func (v *volumeSim) flush() {
	v.t = v.t.Add(time.Millisecond)
	v.recs = append(v.recs, StreamRecord{Kind: RecordFlush, Seq: uint64(len(v.recs) + 1), Time: v.t})
}

func readPoint(t *testing.T, repo *repository.Repo, id int64, size int) []byte {
	t.Helper()
	p, err := repo.Catalog.Point(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if _, err := repo.OpenPoint(p).ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return got
}

func TestStreamSeedReplayAndPoints(t *testing.T) {
	_, repo, url, cfg := testServer(t, true)
	tok := addMachine(t, repo, "m")
	c, _ := NewClient(url, tok, cfg)
	ctx := context.Background()
	const size = 1<<20 + 5000 // a short last block
	r := rand.New(rand.NewPCG(1, 2))
	v := &volumeSim{data: make([]byte, size), t: time.Unix(1_800_000_000, 0)}
	for i := range v.data[:size/2] {
		v.data[i] = byte(r.Uint32())
	}
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}

	st, err := c.OpenStream(ctx, "m", "v", size, 65536, "epoch-1")
	if err != nil || !st.NeedScan || st.AckedSeq != 0 {
		t.Fatalf("open: %+v %v", st, err)
	}
	// Seeding: writes land while the volume is being read; the scan sees
	// some of them, and the journal from before the scan is replayed after.
	v.write(1000, randBytes(3000))
	snapshot := append([]byte(nil), v.data...) // what the scan reads (includes write 1)
	v.write(70000, randBytes(100000))          // after the scan read those blocks
	v.discard(0, 4096)
	v.write(size-100, randBytes(100)) // the short last block
	if err := st.Scan(ctx, bytes.NewReader(snapshot), nil, 2, nil); err != nil {
		t.Fatal(err)
	}
	v.flush()
	res, err := st.Send(ctx, v.recs) // replay from before the scan: record 1 is applied twice
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 1 || res.Acked != 4+1 {
		t.Fatalf("first flush: %+v", res)
	}
	if got := readPoint(t, repo, res.Points[0].ID, size); !bytes.Equal(got, v.data) {
		t.Fatal("first point differs from the volume at its flush")
	}
	first, atFirst := res.Points[0].ID, append([]byte(nil), v.data...)

	// Writes, then a crash-consistent cut, then more writes and a flush.
	v.write(300000, randBytes(5000))
	cut := StreamRecord{Kind: RecordCut, Seq: uint64(len(v.recs)), Time: v.t}
	atCut := append([]byte(nil), v.data...)
	n0 := len(v.recs)
	res, err = st.Send(ctx, append(append([]StreamRecord(nil), v.recs[5:]...), cut))
	if err != nil || len(res.Points) != 1 {
		t.Fatalf("cut: %+v %v", res, err)
	}
	cutPoint := res.Points[0].ID
	v.write(300100, randBytes(10))
	v.write(900000, randBytes(70000))

	// The connection drops before the flush is shipped: a new session
	// resumes from the acknowledged record, and records the server already
	// applied in memory (but not durably) are shipped again.
	st2, err := c.OpenStream(ctx, "m", "v", size, 65536, "epoch-1")
	if err != nil || st2.NeedScan || st2.AckedSeq != uint64(n0) {
		t.Fatalf("reopen: need scan %v acked %d (want %d) err %v", st2.NeedScan, st2.AckedSeq, n0, err)
	}
	v.flush()
	res, err = st2.Send(ctx, v.recs[st2.AckedSeq:])
	if err != nil || len(res.Points) != 1 || res.Acked != uint64(len(v.recs)) {
		t.Fatalf("flush after reopen: %+v %v", res, err)
	}
	last := res.Points[0].ID
	for _, c := range []struct {
		id   int64
		want []byte
		name string
	}{{cutPoint, atCut, "cut"}, {last, v.data, "last flush"}} {
		if got := readPoint(t, repo, c.id, size); !bytes.Equal(got, c.want) {
			t.Errorf("%s point %d differs", c.name, c.id)
		}
	}
	if !bytes.Equal(readPoint(t, repo, first, size), atFirst) {
		t.Error("the first point changed after later writes")
	}
	ps, _ := repo.Catalog.Points(ctx, "m", "v")
	kinds := ""
	for _, p := range ps {
		kinds += p.Kind + " "
	}
	if kinds != "flush crash flush " {
		t.Errorf("point kinds %q, want flush crash flush", kinds)
	}

	// A spool the server does not know (the agent lost its journal) needs a
	// whole scan again.
	st3, err := c.OpenStream(ctx, "m", "v", size, 65536, "epoch-2")
	if err != nil || !st3.NeedScan || st3.AckedSeq != 0 {
		t.Fatalf("unknown epoch: need scan %v acked %d err %v", st3.NeedScan, st3.AckedSeq, err)
	}
}

// Many flushes in one writes request are committed together (group
// commit): each still becomes its own point holding exactly the volume at
// its flush, also when later points of the request change the same blocks
// again, and the next request builds on the last of them.
func TestStreamGroupCommitPoints(t *testing.T) {
	_, repo, url, cfg := testServer(t, true)
	tok := addMachine(t, repo, "m")
	c, _ := NewClient(url, tok, cfg)
	ctx := context.Background()
	const size = 1 << 20
	r := rand.New(rand.NewPCG(3, 4))
	v := &volumeSim{data: make([]byte, size), t: time.Unix(1_800_000_000, 0)}
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	st, err := c.OpenStream(ctx, "m", "v", size, 65536, "epoch-g")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Scan(ctx, bytes.NewReader(v.data), nil, 2, nil); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for round := range 2 {
		from := len(v.recs)
		for i := range 12 {
			// The same few blocks again and again, and one elsewhere.
			v.write(int64(r.IntN(3))*65536+int64(r.IntN(60000)), randBytes(1+r.IntN(5000)))
			v.write(int64(r.IntN(size-70000)), randBytes(1+r.IntN(70000)))
			// Whole blocks, which the server fills without reading them.
			v.write(int64(r.IntN(15))*65536, randBytes(65536*(1+r.IntN(2))))
			if i%5 == 4 {
				v.discard(int64(r.IntN(4))*65536, 4096)
			}
			v.flush()
			want = append(want, append([]byte(nil), v.data...))
		}
		res, err := st.Send(ctx, v.recs[from:])
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Points) != 12 || res.Acked != uint64(len(v.recs)) {
			t.Fatalf("round %d: %d points, acked %d of %d", round, len(res.Points), res.Acked, len(v.recs))
		}
		for i, p := range res.Points {
			if p.Kind != "flush" || (i > 0 && !p.Time.After(res.Points[i-1].Time)) {
				t.Errorf("round %d point %d: %+v", round, i, p)
			}
			if got := readPoint(t, repo, p.ID, size); !bytes.Equal(got, want[round*12+i]) {
				t.Errorf("round %d: point %d (id %d) differs from the volume at its flush", round, i, p.ID)
			}
			if cp, err := repo.Catalog.Point(ctx, p.ID); err != nil || !cp.Time.Equal(p.Time) {
				t.Errorf("round %d: point %d acknowledged with time %v, the catalog has %v (%v)", round, i, p.Time, cp.Time, err)
			}
		}
	}
	ps, _ := repo.Catalog.Points(ctx, "m", "v")
	if len(ps) != 24 {
		t.Errorf("%d points, want one per flush (24)", len(ps))
	}
	rep, err := repo.Check(ctx, repository.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %+v %v", rep, err)
	}
}
