package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/ingest"
)

// Bookmarks: `rewind bookmark` freezes the filesystem, then leaves
// <spool>/bookmark-<id>.req for the running agent; the agent journals a
// bookmark record (ordered after everything the freeze flushed), ships it,
// and answers with <spool>/bookmark-<id>.done once the server holds the
// bookmark point durably.

// BookmarkAnswer is what the agent writes into a .done file.
type BookmarkAnswer struct {
	Point *ingest.PointRef `json:"point,omitempty"`
	Error string           `json:"error,omitempty"`
}

type bookmarkRequest struct {
	Label string `json:"label"`
}

type bookmarks struct {
	dir     string
	pending map[uint64]string // journal seq → request id
}

// take journals every waiting request.
func (b *bookmarks) take(j *journal) {
	reqs, _ := filepath.Glob(filepath.Join(b.dir, "bookmark-*.req"))
	for _, path := range reqs {
		id := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "bookmark-"), ".req")
		var req bookmarkRequest
		raw, err := os.ReadFile(path)
		os.Remove(path)
		if err == nil {
			err = json.Unmarshal(raw, &req)
		}
		var seq uint64
		if err == nil {
			seq, err = j.Bookmark(time.Now(), req.Label)
		}
		if err != nil {
			b.answer(id, BookmarkAnswer{Error: err.Error()})
			continue
		}
		slog.Info("bookmark journaled", "label", req.Label, "seq", seq)
		b.pending[seq] = id
	}
}

// done answers the request whose bookmark became point p.
func (b *bookmarks) done(p ingest.PointRef) {
	if id, ok := b.pending[p.Seq]; ok {
		delete(b.pending, p.Seq)
		b.answer(id, BookmarkAnswer{Point: &p})
	}
}

func (b *bookmarks) answer(id string, a BookmarkAnswer) {
	raw, _ := json.Marshal(a)
	tmp := filepath.Join(b.dir, "bookmark-"+id+".tmp")
	if err := os.WriteFile(tmp, raw, 0o600); err == nil {
		os.Rename(tmp, filepath.Join(b.dir, "bookmark-"+id+".done"))
	}
}

// RequestBookmark asks the agent whose spool is dir for a bookmark point
// labelled label and waits for the answer. The caller freezes the
// filesystem around it.
func RequestBookmark(ctx context.Context, dir, label string) (ingest.PointRef, error) {
	idb := make([]byte, 8)
	rand.Read(idb)
	id := hex.EncodeToString(idb)
	raw, _ := json.Marshal(bookmarkRequest{Label: label})
	tmp := filepath.Join(dir, "bookmark-"+id+".tmp")
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return ingest.PointRef{}, fmt.Errorf("ask the agent: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "bookmark-"+id+".req")); err != nil {
		return ingest.PointRef{}, fmt.Errorf("ask the agent: %w", err)
	}
	done := filepath.Join(dir, "bookmark-"+id+".done")
	for {
		if raw, err := os.ReadFile(done); err == nil {
			os.Remove(done)
			var a BookmarkAnswer
			if err := json.Unmarshal(raw, &a); err != nil {
				return ingest.PointRef{}, fmt.Errorf("agent's answer: %w", err)
			}
			if a.Error != "" || a.Point == nil {
				return ingest.PointRef{}, fmt.Errorf("agent refused the bookmark: %s", a.Error)
			}
			return *a.Point, nil
		}
		select {
		case <-ctx.Done():
			os.Remove(filepath.Join(dir, "bookmark-"+id+".req"))
			return ingest.PointRef{}, errors.New("no answer from the agent in time (is it running and connected to the server?)")
		case <-time.After(50 * time.Millisecond):
		}
	}
}
