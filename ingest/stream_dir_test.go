package ingest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
)

// A directory volume's stream may cut points at once (it builds on the
// empty address space), its sparse scans record only what they offer, its
// kind is fixed, and it is never restored as a disk.
func TestStreamDirVolume(t *testing.T) {
	_, repo, url, cfg := testServer(t, true)
	tok := addMachine(t, repo, "m")
	c, _ := NewClient(url, tok, cfg)
	ctx := context.Background()
	const size = int64(1) << 62
	const bs = 65536
	st, err := c.OpenStreamKind(ctx, "m", "d", catalog.VolumeDir, size, bs, "e1")
	if err != nil || !st.NeedScan {
		t.Fatalf("open: %+v %v", st, err)
	}
	// A sparse scan of two blocks far apart (slot 0 and slot 3 at 1 TiB
	// steps), then a write and a cut.
	far := int64(3) << 40
	src := spaceOf{0: bytes.Repeat([]byte("m"), bs), far: bytes.Repeat([]byte("f"), bs)}
	if err := st.Scan(ctx, src, []int64{0, far / bs}, 2, nil); err != nil {
		t.Fatal(err)
	}
	res, err := st.Send(ctx, []StreamRecord{
		{Kind: RecordWrite, Seq: 1, Time: time.Unix(1_800_000_000, 0), Offset: far + 10, Length: 3, Data: []byte("xyz")},
		{Kind: RecordCut, Seq: 1, Time: time.Unix(1_800_000_000, 1)},
	})
	if err != nil || len(res.Points) != 1 || res.Acked != 1 {
		t.Fatalf("cut: %+v %v", res, err)
	}
	p, err := repo.Catalog.Point(ctx, res.Points[0].ID)
	if err != nil || p.VolumeKind != catalog.VolumeDir {
		t.Fatalf("point: %+v %v", p, err)
	}
	got := make([]byte, 16)
	if _, err := repo.OpenPoint(p).ReadAt(got, far); err != nil || string(got) != "ffffffffffxyzfff" {
		t.Fatalf("read at slot 3: %q %v", got, err)
	}
	if err := repo.Restore(ctx, p, nil, repository.RestoreOptions{}); !errors.Is(err, repository.ErrDirVolume) {
		t.Errorf("raw restore of a dir volume: %v", err)
	}
	// The volume's kind is fixed: a block session on it is refused.
	if _, err := c.OpenStream(ctx, "m", "d", size, bs, "e2"); err == nil || !strings.Contains(err.Error(), "dir volume") {
		t.Errorf("block stream on a dir volume: %v", err)
	}
}

// spaceOf is a sparse address space of byte runs.
type spaceOf map[int64][]byte

func (s spaceOf) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for at, b := range s {
		if off < at+int64(len(b)) && off+int64(len(p)) > at {
			lo := max(off, at)
			copy(p[lo-off:], b[lo-at:])
		}
	}
	return len(p), nil
}
