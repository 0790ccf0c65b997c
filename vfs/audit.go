package vfs

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"time"
)

// AuditRecord is one line of the audit log: who opened or listed what.
type AuditRecord struct {
	Time    time.Time `json:"time"`
	Op      string    `json:"op"` // "open" or "list"
	UID     uint32    `json:"uid"`
	GID     uint32    `json:"gid"`
	PID     uint32    `json:"pid"`
	Machine string    `json:"machine,omitempty"`
	Volume  string    `json:"volume,omitempty"`
	Point   string    `json:"point,omitempty"`
	Path    string    `json:"path"`
}

type auditLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (f *FS) auditEvent(ctx context.Context, op string, n *node) {
	if f.audit == nil {
		return
	}
	c := CallerOf(ctx)
	r := AuditRecord{Time: f.opt.Now().UTC(), Op: op, UID: c.UID, GID: c.GID, PID: c.PID,
		Machine: n.machine, Volume: n.vol.Name, Point: n.pname, Path: f.pathOf(n)}
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	b = append(b, '\n')
	f.audit.mu.Lock()
	defer f.audit.mu.Unlock()
	if _, err := f.audit.w.Write(b); err != nil {
		f.log.Error("audit log write failed", "err", err)
	}
}
