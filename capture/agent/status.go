package agent

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rewind-cdp/rewind/capture/spool"
	"github.com/rewind-cdp/rewind/ingest"
)

// Status is what `rewind agent status` shows of one protected volume; the
// agent rewrites it in <spool>/status.json every second.
type Status struct {
	Machine    string  `json:"machine"`
	Volume     string  `json:"volume"`
	Kind       string  `json:"kind,omitempty"` // "dir" for the directory shim
	Source     string  `json:"source"`
	LoopDevice string  `json:"loop_device"`
	Mount      string  `json:"mount,omitempty"`
	State      string  `json:"state"`
	LagSeconds float64 `json:"lag_seconds"`
	// AckP50/AckP99: seconds from a write's completion to the server's
	// acknowledgement of a durable point holding it, over the last 10,000
	// writes acknowledged.
	AckP50      float64          `json:"ack_p50_seconds"`
	AckP99      float64          `json:"ack_p99_seconds"`
	SpoolBytes  int64            `json:"spool_bytes"`
	AckedSeq    uint64           `json:"acked_seq"`
	JournalNext uint64           `json:"journal_next"`
	LastPoint   *ingest.PointRef `json:"last_point,omitempty"`
	Points      int64            `json:"points"`
	Gaps        []Gap            `json:"gaps"`
	LastError   string           `json:"last_error,omitempty"`
	PID         int              `json:"pid"`
	Updated     time.Time        `json:"updated"`
}

// Gap is a stretch of time for which no exact points exist.
type Gap struct {
	From   time.Time  `json:"from"`
	To     *time.Time `json:"to,omitempty"` // nil while open
	Reason string     `json:"reason"`
}

type status struct {
	dir   string
	spool *spool.Spool

	mu        sync.Mutex
	s         Status
	shipped   uint64
	unshipped time.Time    // oldest change journaled but not yet shipped
	unacked   []sentRecord // shipped, not yet acknowledged, oldest first
	lags      []float64    // ring of the last ackLags acknowledgement lags
	lagNext   int
	stopOnce  sync.Once
	stop      chan struct{}
}

func newStatus(cfg Config, loop string, sp *spool.Spool) *status {
	st := &status{dir: cfg.Spool, spool: sp, stop: make(chan struct{}), s: Status{
		Machine: cfg.Machine, Volume: cfg.Volume, Source: cfg.Source, LoopDevice: loop, Mount: cfg.Mount,
		State: "starting", PID: os.Getpid(), Gaps: []Gap{},
	}}
	st.write()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				st.write()
			case <-st.stop:
				return
			}
		}
	}()
	return st
}

type sentRecord struct {
	seq uint64
	t   time.Time
}

const ackLags = 10000

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func (st *status) write() {
	st.mu.Lock()
	if st.spool != nil {
		st.s.SpoolBytes = st.spool.Size()
		st.s.JournalNext = st.spool.Next()
	}
	lags := slices.Clone(st.lags)
	slices.Sort(lags)
	st.s.AckP50, st.s.AckP99 = percentile(lags, 0.50), percentile(lags, 0.99)
	st.s.LagSeconds = 0
	if p := st.pendingLocked(); !p.IsZero() {
		st.s.LagSeconds = time.Since(p).Seconds()
	}
	st.s.Updated = time.Now().UTC()
	b, _ := json.MarshalIndent(st.s, "", "  ")
	st.mu.Unlock()
	tmp := filepath.Join(st.dir, "status.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		os.Rename(tmp, filepath.Join(st.dir, "status.json"))
	}
}

// stopped records that the agent stopped and writes the status a last time.
func (st *status) stopped() {
	st.set("stopped", "")
	st.stopOnce.Do(func() { close(st.stop) })
	st.write()
}

func (st *status) set(state, detail string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s.State != state {
		slog.Info("agent state", "volume", st.s.Volume, "state", state)
	}
	st.s.State = state
	if detail != "" {
		st.s.LastError = detail
	}
}

func (st *status) outage(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.State = "outage"
	if err != nil {
		st.s.LastError = err.Error()
	}
}

func (st *status) connected() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.LastError = ""
}

// gap opens a gap starting at from (once).
func (st *status) gap(from time.Time, reason string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, g := range st.s.Gaps {
		if g.To == nil {
			return
		}
	}
	slog.Warn("gap in the protection", "volume", st.s.Volume, "from", from, "reason", reason)
	st.s.Gaps = append(st.s.Gaps, Gap{From: from.UTC(), Reason: reason})
}

func (st *status) closeGaps(at time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for i := range st.s.Gaps {
		if st.s.Gaps[i].To == nil {
			t := at.UTC()
			st.s.Gaps[i].To = &t
			slog.Info("gap closed: the volume is exact again from here", "volume", st.s.Volume, "from", st.s.Gaps[i].From, "to", t)
		}
	}
}

// changed notes the time of a journaled change.
func (st *status) changed(t time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.unshipped.IsZero() {
		st.unshipped = t
	}
}

// drained notes that everything journaled so far has been shipped.
func (st *status) drained() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.unshipped = time.Time{}
}

// scanned notes a scan point taken from a read that began at start:
// changes since then are not yet protected.
func (st *status) scanned(start time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.unshipped = start
}

// pendingSince is the time of the oldest change not yet in a durable point
// (zero when there is none).
func (st *status) pendingSince() time.Time {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.pendingLocked()
}

func (st *status) pendingLocked() time.Time {
	p := st.unshipped
	if len(st.unacked) > 0 && (p.IsZero() || st.unacked[0].t.Before(p)) {
		p = st.unacked[0].t
	}
	return p
}

func (st *status) shippedSeq() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.shipped
}

func (st *status) setShipped(seq uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.shipped = seq
}

func (st *status) acked() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.s.AckedSeq
}

func (st *status) point(p ingest.PointRef) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.LastPoint = &p
	st.s.Points++
}

// sent notes records shipped, to measure how long each waits for its
// acknowledgement.
func (st *status) sent(recs []spool.Record) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, r := range recs {
		if r.Kind == spool.Write || r.Kind == spool.Discard {
			st.unacked = append(st.unacked, sentRecord{r.Seq, r.Time})
		}
	}
}

// ack records the server's acknowledgement of every record up to acked.
func (st *status) ack(acked uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if acked > st.s.AckedSeq {
		st.s.AckedSeq = acked
	}
	now := time.Now()
	i := 0
	for ; i < len(st.unacked) && st.unacked[i].seq <= acked; i++ {
		lag := now.Sub(st.unacked[i].t).Seconds()
		if len(st.lags) < ackLags {
			st.lags = append(st.lags, lag)
		} else {
			st.lags[st.lagNext] = lag
			st.lagNext = (st.lagNext + 1) % ackLags
		}
	}
	st.unacked = st.unacked[i:]
}
