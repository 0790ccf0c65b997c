package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// ReplicateOptions describe replication of a repository to a target server.
type ReplicateOptions struct {
	// Target is the name the target's progress is recorded under in this
	// repository's catalog (its URL).
	Target string
	// Machines limits replication to these machines (empty: every one).
	Machines []string
	// Once replicates the points that exist now and returns; otherwise new
	// points are followed until ctx ends.
	Once bool
	// Interval is how often new points are looked for (default 250 ms).
	Interval time.Duration
	// Workers is how many offers of one point are in flight (default 4).
	Workers int
	// RetryFor is how long Once keeps retrying without progress after the
	// target became unreachable (default 2 minutes). Following retries
	// for as long as ctx lasts.
	RetryFor time.Duration
	// Progress, when set, is told the stored bytes of each batch of blocks
	// sent.
	Progress func(n int64)
	// OnPoint, when set, is told each point the target acknowledged.
	OnPoint func(ReplicatedPoint)
}

// ReplicatedPoint is one point the target acknowledged.
type ReplicatedPoint struct {
	Machine    string    `json:"machine"`
	Volume     string    `json:"volume"`
	PointID    int64     `json:"point_id"` // in this repository
	Time       time.Time `json:"time"`
	Kind       string    `json:"kind"`
	BlocksSent int64     `json:"blocks_sent"`
	BytesSent  int64     `json:"bytes_sent"`
	// Skipped: the target held the point already; nothing was sent.
	Skipped bool `json:"skipped"`
	// Acked is when the target acknowledged the point.
	Acked time.Time `json:"acked"`
}

// ReplicateResult is what a replication did.
type ReplicateResult struct {
	Points     int   `json:"points"`
	Skipped    int   `json:"skipped"`
	BlocksSent int64 `json:"blocks_sent"`
	// BytesSent is the stored (compressed) bytes of the blocks sent;
	// WireBytes every request body, offers included.
	BytesSent int64         `json:"bytes_sent"`
	WireBytes int64         `json:"wire_bytes"`
	Retries   int           `json:"retries"`
	Elapsed   time.Duration `json:"-"`
}

// SetBandwidth limits what the client sends to bytesPerSecond on average
// (0: no limit).
func (c *Client) SetBandwidth(bytesPerSecond int64) {
	if bytesPerSecond <= 0 {
		c.limit = nil
		return
	}
	c.limit = &rateLimiter{rate: float64(bytesPerSecond)}
}

// rateLimiter paces request bodies: each one starts once the bytes before
// it would have gone out at the rate.
type rateLimiter struct {
	rate float64 // bytes per second
	mu   sync.Mutex
	next time.Time
}

// wait blocks until n more bytes may be sent.
func (l *rateLimiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Replicate pushes the points of repo's volumes that the target lacks to
// it, oldest first, each as the blocks changed since the point before it,
// sending only the blocks the target does not hold. The target commits a
// point only once all its blocks are durable there, keeping its time, kind
// and label; a point it holds already is skipped. After an interruption
// (a dropped connection, the target restarting) it asks the target what
// it holds and resumes: blocks that arrived durably are not sent again.
// The newest point the target acknowledged per volume is recorded in
// repo's catalog under opt.Target.
func (c *Client) Replicate(ctx context.Context, repo *repository.Repo, opt ReplicateOptions) (res ReplicateResult, err error) {
	if opt.Interval <= 0 {
		opt.Interval = 250 * time.Millisecond
	}
	if opt.Workers <= 0 {
		opt.Workers = 4
	}
	if opt.RetryFor <= 0 {
		opt.RetryFor = 2 * time.Minute
	}
	start, sent0 := time.Now(), c.sent.Load()
	defer func() {
		res.WireBytes = c.sent.Load() - sent0
		res.Elapsed = time.Since(start)
	}()
	if err := checkMachines(ctx, repo, opt.Machines); err != nil {
		return res, err
	}
	seen := int64(-1)
	backoff := 250 * time.Millisecond
	var failing time.Time
	for {
		last, err := repo.Catalog.LastCommittedID(ctx)
		if err != nil {
			return res, err
		}
		if last != seen {
			before := res.Points + res.Skipped + int(res.BlocksSent)
			var more bool
			more, err = c.replicatePass(ctx, repo, opt, &res)
			if before != res.Points+res.Skipped+int(res.BlocksSent) {
				failing = time.Time{} // progress
			}
			if err != nil {
				if ctx.Err() != nil {
					if !opt.Once {
						return res, nil // following ends when told to
					}
					return res, ctx.Err()
				}
				if errors.Is(err, errPointPruned) {
					slog.Info("a point was pruned while it was replicated; starting again from what the target holds", "err", err)
					continue
				}
				if !retryable(err) {
					return res, err
				}
				if failing.IsZero() {
					failing = time.Now()
				}
				if opt.Once && time.Since(failing) > opt.RetryFor {
					return res, fmt.Errorf("no progress for %s: %w", opt.RetryFor, err)
				}
				res.Retries++
				slog.Warn("replication interrupted; retrying", "target", opt.Target, "err", err, "in", backoff)
				if !sleepCtx(ctx, backoff) {
					if !opt.Once {
						return res, nil
					}
					return res, ctx.Err()
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			failing, backoff = time.Time{}, 250*time.Millisecond
			if more {
				continue
			}
			seen = last
		}
		if opt.Once {
			return res, nil
		}
		if !sleepCtx(ctx, opt.Interval) {
			return res, nil
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// checkMachines refuses machine names the repository does not hold.
func checkMachines(ctx context.Context, repo *repository.Repo, machines []string) error {
	if len(machines) == 0 {
		return nil
	}
	names, err := repo.Catalog.MachineNames(ctx)
	if err != nil {
		return err
	}
	for _, m := range machines {
		if !slices.Contains(names, m) {
			return fmt.Errorf("machine %q is not in repository %s (see rewind machines)", m, repo.Dir)
		}
	}
	return nil
}

// errPointPruned: a point was pruned from this repository while it was
// being replicated.
var errPointPruned = errors.New("the point was pruned here while it was sent")

// replJob is one point to replicate and the point of its volume the
// target holds before it (0: none known, send every written block).
type replJob struct {
	vol       catalog.Volume
	p         catalog.Point
	after     int64
	afterSize int64
}

// passPoints bounds the points of one volume a pass lists.
var passPoints = 1000 // a variable for tests

// replicatePass replicates the points the target lacks now, oldest first;
// more reports that a volume had more than passPoints of them.
func (c *Client) replicatePass(ctx context.Context, repo *repository.Repo, opt ReplicateOptions, res *ReplicateResult) (more bool, err error) {
	all, err := repo.Catalog.Volumes(ctx, "")
	if err != nil {
		return false, err
	}
	var vols []catalog.Volume
	for _, v := range all {
		if len(opt.Machines) == 0 || slices.Contains(opt.Machines, v.Machine) {
			vols = append(vols, v)
		}
	}
	newest := map[replicaVolume]int64{}
	for start := 0; start < len(vols); start += maxStateVolumes {
		var req replicaStateRequest
		for _, v := range vols[start:min(start+maxStateVolumes, len(vols))] {
			req.Volumes = append(req.Volumes, replicaVolume{Machine: v.Machine, Volume: v.Name})
		}
		var resp replicaStateResponse
		if err := c.postJSON(ctx, "/v1/replica/state", req, &resp); err != nil {
			return false, err
		}
		for _, st := range resp.Volumes {
			newest[replicaVolume{st.Machine, st.Volume}] = st.Newest
		}
	}
	var jobs []replJob
	var cutoff time.Time
	for _, v := range vols {
		held := newest[replicaVolume{v.Machine, v.Name}]
		var after, afterSize int64
		if held != 0 {
			base, err := repo.Catalog.PointAtExactly(ctx, v.ID, time.Unix(0, held))
			if err == nil {
				after, afterSize = base.ID, base.Size
			}
			// Otherwise the target's newest point is no longer here
			// (pruned): the next point is sent whole; the target compares
			// each block with what it holds.
		}
		pts, err := repo.Catalog.FirstPointsAfter(ctx, v.ID, after, held, passPoints)
		if err != nil {
			return false, err
		}
		if len(pts) == passPoints {
			// Memory stays bounded: the rest in the next pass, and no
			// point of another volume newer than these goes before them.
			more = true
			if last := pts[len(pts)-1].Time; cutoff.IsZero() || last.Before(cutoff) {
				cutoff = last
			}
		}
		for _, p := range pts {
			jobs = append(jobs, replJob{vol: v, p: p, after: after, afterSize: afterSize})
			after, afterSize = p.ID, p.Size
		}
	}
	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].p.Time.Before(jobs[j].p.Time) })
	if !cutoff.IsZero() {
		n := 0
		for n < len(jobs) && !jobs[n].p.Time.After(cutoff) {
			n++
		}
		jobs = jobs[:n]
	}
	for _, j := range jobs {
		rp, err := c.replicatePoint(ctx, repo, opt, j)
		res.BlocksSent += rp.BlocksSent
		res.BytesSent += rp.BytesSent
		if err != nil {
			return false, fmt.Errorf("replicate %s/%s point %d (%s): %w", j.vol.Machine, j.vol.Name, j.p.ID, j.p.Time.Format(time.RFC3339Nano), err)
		}
		if err := repo.Catalog.SetReplicated(ctx, opt.Target, j.vol.ID, j.p.ID, j.p.Time, rp.BytesSent); err != nil {
			return false, err
		}
		if rp.Skipped {
			res.Skipped++
		} else {
			res.Points++
		}
		slog.Info("point replicated", "target", opt.Target, "machine", rp.Machine, "volume", rp.Volume, "point", rp.PointID,
			"time", rp.Time.Format(time.RFC3339Nano), "skipped", rp.Skipped, "blocks_sent", rp.BlocksSent, "bytes_sent", rp.BytesSent,
			"lag", rp.Acked.Sub(rp.Time).Round(time.Millisecond))
		if opt.OnPoint != nil {
			opt.OnPoint(rp)
		}
	}
	return more, nil
}

// changedPage is how many changed blocks are read from the catalog at once.
const changedPage = 4 * maxOffer

// replicatePoint sends one point: begin, offers of the changed blocks
// (from several workers), the blocks the target lacks, commit.
func (c *Client) replicatePoint(ctx context.Context, repo *repository.Repo, opt ReplicateOptions, j replJob) (rp ReplicatedPoint, err error) {
	p := j.p
	rp = ReplicatedPoint{Machine: p.Machine, Volume: p.Volume, PointID: p.ID, Time: p.Time, Kind: p.Kind}
	var br replicaBeginResponse
	err = c.postJSON(ctx, "/v1/replica/sessions", replicaBeginRequest{
		Machine: p.Machine, Volume: p.Volume, VolumeKind: p.VolumeKind, Size: p.Size, BlockSize: p.BlockSize,
		Time: p.Time.UnixNano(), Kind: p.Kind, Label: p.Label, Hash: pack.HashName(repo.Hash()),
	}, &br)
	if err != nil {
		return rp, err
	}
	if br.Have {
		rp.Skipped, rp.Acked = true, time.Now()
		return rp, nil
	}
	after := j.after
	if j.afterSize != p.Size {
		after = 0 // the size changed: send every written block, compared there
	}
	nblocks := (p.Size + p.BlockSize - 1) / p.BlockSize
	type work struct {
		o    offer
		refs []catalog.ChunkRef // by entry
	}
	works := make(chan work)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var blocks, bytes atomic.Int64
	defer func() { rp.BlocksSent, rp.BytesSent = blocks.Load(), bytes.Load() }()
	var wg sync.WaitGroup
	for range opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body, buf []byte
			for w := range works {
				nb, n, err := c.sendStored(ctx, repo, br, w.o, w.refs, &body, &buf)
				blocks.Add(nb)
				bytes.Add(n)
				if err != nil {
					cancel(err)
					return
				}
				if opt.Progress != nil && n > 0 {
					opt.Progress(n)
				}
			}
		}()
	}
	send := func(w work) bool {
		select {
		case works <- w:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var feedErr error
feed:
	for from := int64(0); from < nblocks; {
		cbs, err := repo.Catalog.ChangedBlocks(ctx, p.VolumeID, after, p.ID, from, changedPage)
		if err != nil {
			feedErr = err
			break
		}
		// One offer spans at most maxOffer block numbers.
		var w work
		flush := func() bool {
			if len(w.o.Entries) == 0 {
				return true
			}
			w.o.End = w.o.Entries[len(w.o.Entries)-1].Blk + 1
			ok := send(w)
			w = work{}
			return ok
		}
		for _, cb := range cbs {
			if cb.Blk >= nblocks {
				continue
			}
			if len(w.o.Entries) > 0 && cb.Blk-w.o.First >= maxOffer {
				if !flush() {
					break feed
				}
			}
			if len(w.o.Entries) == 0 {
				w.o.First = cb.Blk
			}
			w.o.Entries = append(w.o.Entries, offerEntry{Blk: cb.Blk, Zero: cb.Chunk.ID == 0, Hash: cb.Chunk.Hash})
			w.refs = append(w.refs, cb.Chunk)
		}
		if !flush() {
			break
		}
		if len(cbs) < changedPage {
			break
		}
		from = cbs[len(cbs)-1].Blk + 1
	}
	close(works)
	wg.Wait()
	if feedErr != nil {
		return rp, feedErr
	}
	if err := context.Cause(ctx); err != nil {
		return rp, err
	}
	// A prune that dropped the point meanwhile moved its block rows to the
	// next point: what was offered may lack them. Such a point is not
	// committed; the next pass starts from what the target holds.
	if _, err := repo.Catalog.Point(ctx, p.ID); errors.Is(err, catalog.ErrNotFound) {
		return rp, errPointPruned
	} else if err != nil {
		return rp, err
	}
	var cr commitResponse
	if err := c.postJSON(ctx, "/v1/sessions/"+br.Session+"/commit", commitRequest{Label: p.Label}, &cr); err != nil {
		return rp, err
	}
	if !cr.Point.Time.Equal(p.Time) {
		return rp, fmt.Errorf("the target committed the point at %s, not at its time %s", cr.Point.Time.Format(time.RFC3339Nano), p.Time.Format(time.RFC3339Nano))
	}
	rp.Acked = time.Now()
	return rp, nil
}

// sendStored offers the entries of o and sends those the target asks for
// as they are stored here (compressed: nothing is decompressed or
// compressed again). It returns the blocks and stored bytes sent.
func (c *Client) sendStored(ctx context.Context, repo *repository.Repo, br replicaBeginResponse, o offer, refs []catalog.ChunkRef, body, buf *[]byte) (int64, int64, error) {
	ans, err := c.post(ctx, "/v1/sessions/"+br.Session+"/offer", "application/octet-stream", encodeOffer(o))
	if err != nil {
		return 0, 0, err
	}
	need, err := decodeIndices(ans, len(o.Entries))
	if err != nil {
		return 0, 0, err
	}
	if len(need) == 0 {
		return 0, 0, nil
	}
	b := (*body)[:0]
	var n, sentBlocks, sentBytes, inBody int64
	post := func() error {
		if len(b) == 0 {
			return nil
		}
		if _, err := c.post(ctx, "/v1/sessions/"+br.Session+"/blocks", "application/octet-stream", b); err != nil {
			*body = nil // the transport may still hold it
			return err
		}
		sentBlocks, sentBytes = sentBlocks+inBody, sentBytes+n
		b, n, inBody = b[:0], 0, 0
		return nil
	}
	for _, i := range need {
		if need := (pack.Entry{CLen: refs[i].CLen}).Len(); refs[i].CLen <= pack.MaxBlock && int64(cap(*buf)) < need {
			*buf = make([]byte, need)
		}
		e, stored, err := repo.ReadStored(ctx, refs[i], *buf)
		if err != nil {
			return sentBlocks, sentBytes, fmt.Errorf("read block %d: %w", o.Entries[i].Blk, err)
		}
		if name := pack.CompressionName(e.Compression); len(br.Compressions) > 0 && !slices.Contains(br.Compressions, name) {
			return sentBlocks, sentBytes, fmt.Errorf("the target does not accept compression %q, in which block %d is stored", name, o.Entries[i].Blk)
		}
		b = appendBlock(b, sentBlock{Blk: o.Entries[i].Blk, Entry: pack.Entry{Hash: e.Hash, Compression: e.Compression, ULen: e.ULen}, Stored: stored})
		n += int64(len(stored))
		inBody++
		if len(b) >= maxBlocksBody {
			if err := post(); err != nil {
				return sentBlocks, sentBytes, err
			}
		}
	}
	if err := post(); err != nil {
		return sentBlocks, sentBytes, err
	}
	*body = b[:0]
	return sentBlocks, sentBytes, nil
}

// maxBlocksBody bounds one blocks request of a replication: what is in
// flight when the target dies is sent again, and the bandwidth limit paces
// requests.
const maxBlocksBody = 2 << 20
