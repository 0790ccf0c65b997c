package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/capture/spool"
	"github.com/rewind-cdp/rewind/nbd"
	"github.com/rewind-cdp/rewind/qmp"
)

// QemuConfig says which disk of a running QEMU to protect.
type QemuConfig struct {
	QMP  string // QEMU's QMP unix socket
	Node string // node name of the protected disk (its top node)
	// QemuNBD is the unix socket of an NBD server already running in QEMU
	// (nbd-server-start); empty: the agent starts one in its spool
	// directory, and stops it when done.
	QemuNBD string
	// BitmapPeriod is how often the dirty bitmap is renewed (default 10
	// minutes): the agent keeps the current and the previous one, so a
	// resynchronisation reads the blocks written in the last one to two
	// periods, and a write may take up to a period to reach the agent.
	BitmapPeriod time.Duration
}

// QEMU protection. The agent serves an NBD export of its own whose every
// write, write-zeroes, discard and flush is journaled exactly as the block
// shim journals them, and has QEMU mirror the disk into it with
// blockdev-mirror sync=none copy-mode=write-blocking: QEMU writes the disk
// first and the agent second, and completes the guest's write only then. A
// dirty bitmap on the disk (persistent in a qcow2 image) records the same
// writes: when the mirror job ends unexpectedly, or while the agent was
// stopped, it names the blocks the journal missed, which the agent re-sends
// after restarting the mirror. The volume is read (seeding, rescans,
// resynchronisation) through a read-only NBD export of the disk in QEMU.

// qemuRun is one RunQemu.
type qemuRun struct {
	cfg       Config
	q         QemuConfig
	qmp       *qmp.Conn
	journal   *journal
	status    *status
	vol       string // the volume name, as used in QEMU ids
	jobID     string
	agentSock string
	qemuSock  string
	persist   bool     // the bitmap lives in the image (qcow2)
	bitmaps   []string // the agent's bitmaps on the node, oldest first
	gen       int      // mirror target generation (a fresh node per mirror)
	target    string
	volSize   int64
}

// bitmapPrefix names the agent's dirty bitmaps of a volume.
func (r *qemuRun) bitmapPrefix() string { return "rewind-" + r.vol + "-" }

// RunQemu protects a disk of a running QEMU until ctx ends or QEMU goes
// away. ready is told the agent's NBD socket once the mirror runs.
func RunQemu(ctx context.Context, cfg Config, q QemuConfig, ready func(target string)) (err error) {
	if cfg.CutAfter == 0 {
		cfg.CutAfter = 500 * time.Millisecond
	}
	st, existed, rescan, err := beginRun(cfg, "the volume will be re-scanned against the server")
	if err != nil {
		return err
	}

	conn, err := qmp.Dial(ctx, q.QMP)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := &qemuRun{cfg: cfg, q: q, qmp: conn, vol: cfg.Volume, jobID: "rewind-" + cfg.Volume,
		agentSock: filepath.Join(cfg.Spool, "agent-nbd.sock")}
	node, err := r.findNode(ctx)
	if err != nil {
		return err
	}
	r.persist = node.Drv == "qcow2"
	r.clearStale(ctx)

	// The volume as QEMU sees it, through a read-only export of the node.
	startedNBD := false
	r.qemuSock = q.QemuNBD
	if r.qemuSock == "" {
		r.qemuSock = filepath.Join(cfg.Spool, "qemu-nbd.sock")
		os.Remove(r.qemuSock)
		err := conn.Execute(ctx, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": r.qemuSock}}}, nil)
		if err != nil {
			if strings.Contains(err.Error(), "already running") {
				return fmt.Errorf("QEMU already runs an NBD server: give its unix socket with --qemu-nbd: %w", err)
			}
			return err
		}
		startedNBD = true
	}
	defer func() {
		if startedNBD {
			conn.Execute(context.Background(), "nbd-server-stop", nil, nil)
		}
	}()
	srcExport := "rewind-src-" + r.vol
	if err := r.addExport(ctx, srcExport, nil); err != nil {
		return err
	}
	defer r.delExport(srcExport)
	src, err := nbd.Dial(ctx, r.qemuSock, srcExport, nbd.DialOptions{})
	if err != nil {
		return err
	}
	defer src.Close()
	size := src.Size()
	if size <= 0 {
		return fmt.Errorf("QEMU node %s has no size", q.Node)
	}
	r.volSize = size

	st.Clean = false
	if err := writeState(cfg.Spool, st); err != nil {
		return fmt.Errorf("spool state: %w", err)
	}
	sp, err := spool.Open(filepath.Join(cfg.Spool, "journal"), cfg.SpoolLimit)
	if err != nil {
		return err
	}
	bs := cfg.BlockSize
	if bs == 0 {
		bs = 64 << 10
	}
	j := newJournal(sp, bs)
	r.journal = j
	status := newStatus(cfg, "", sp)
	r.status = status
	j.changed = status.changed
	j.onOverflow = func(t time.Time) { status.gap(t, overflowGap) }
	if rescan {
		status.gap(time.Now(), "unclean stop of the agent: changes may be missing from the journal")
	}

	// The agent's own NBD server: QEMU's mirror target.
	l, err := nbd.Listen("unix:" + r.agentSock)
	if err != nil {
		sp.Close()
		return err
	}
	srvCtx, stopSrv := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		nbd.NewServer(slog.Default(), nbd.Export{Name: "rewind", Description: "rewind agent journal of " + r.vol,
			Backend: &mirrorTarget{j: j, src: src, size: size}}).Serve(srvCtx, l)
	}()

	var old []string
	for _, b := range node.Bitmaps {
		if strings.HasPrefix(b.Name, r.bitmapPrefix()) {
			old = append(old, b.Name)
		}
	}
	if existed && !rescan && len(old) == 0 {
		rescan = true
		status.gap(time.Now(), "no dirty bitmap of the previous run in QEMU (was QEMU restarted?): the volume is compared with the server")
	}
	if rescan || !existed {
		// A whole-volume scan covers everything the old bitmaps know.
		for _, b := range old {
			r.removeBitmap(ctx, b)
		}
		old = nil
	}
	if len(old) > 0 {
		// Changes while the agent was stopped are in the bitmap.
		j.holdGap(time.Now())
		status.gap(time.Now(), "the agent was stopped: blocks changed meanwhile are re-sent from QEMU's dirty bitmap")
	} else if err := r.addBitmap(ctx); err != nil {
		stopSrv()
		<-served
		sp.Close()
		return err
	}
	if err := r.startMirror(ctx); err != nil {
		stopSrv()
		<-served
		sp.Close()
		return err
	}
	if len(old) > 0 {
		if err := r.resyncFromBitmaps(ctx, old); err != nil {
			slog.Warn("reading QEMU's dirty bitmap failed: comparing the whole volume with the server", "err", err)
			rescan = true
			j.releaseGap(nil)
			if len(r.bitmaps) == 0 {
				if err := r.addBitmap(ctx); err != nil {
					slog.Warn("no dirty bitmap: if the mirror job ends, the whole volume will be compared", "err", err)
				}
			}
		}
	}
	slog.Info("protecting", "machine", cfg.Machine, "volume", cfg.Volume, "qemu_node", q.Node, "mirror_target", r.agentSock, "persistent_bitmap", r.persist)
	if ready != nil {
		ready(r.agentSock)
	}

	shipCtx, stopShip := context.WithCancel(context.Background())
	sh := &shipper{cfg: cfg, src: src, size: size, spool: sp, journal: j, epoch: st.Epoch, rescan: rescan, status: status,
		bookmarks: &bookmarks{dir: cfg.Spool, pending: map[uint64]string{}}}
	shipped := make(chan struct{})
	go func() {
		defer close(shipped)
		sh.run(shipCtx)
	}()

	runErr := r.watch(ctx)

	// Orderly stop: end the mirror (QEMU completes the writes in flight),
	// let the shipper send what is journaled, then take down the exports.
	// The bitmap stays: it records what changes while the agent is away.
	var errs []error
	if runErr != nil {
		errs = append(errs, runErr)
	}
	if err := r.stopMirror(); err != nil {
		errs = append(errs, err)
	}
	sh.drain(10 * time.Second)
	stopShip()
	<-shipped
	stopSrv()
	<-served
	// A VM that stopped ends the run without losing anything.
	return endRun(cfg, sp, j, status, errs, runErr == errQemuGone)
}

var errQemuGone = errors.New("QEMU closed its QMP connection (the VM stopped)")

type blockNode struct {
	NodeName string `json:"node-name"`
	Drv      string `json:"drv"`
	Bitmaps  []struct {
		Name string `json:"name"`
	} `json:"dirty-bitmaps"`
}

func (r *qemuRun) nodes(ctx context.Context) ([]blockNode, error) {
	var nodes []blockNode
	err := r.qmp.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes)
	return nodes, err
}

func (r *qemuRun) findNode(ctx context.Context) (blockNode, error) {
	nodes, err := r.nodes(ctx)
	if err != nil {
		return blockNode{}, err
	}
	for _, n := range nodes {
		if n.NodeName == r.q.Node {
			return n, nil
		}
	}
	var names []string
	for _, n := range nodes {
		if !strings.HasPrefix(n.NodeName, "#") {
			names = append(names, n.NodeName)
		}
	}
	return blockNode{}, fmt.Errorf("QEMU has no block node %q (named nodes: %s)", r.q.Node, strings.Join(names, ", "))
}

// clearStale removes what an agent that did not stop left in QEMU: its
// mirror job, target nodes and exports.
func (r *qemuRun) clearStale(ctx context.Context) {
	var jobs []struct {
		Device string `json:"device"`
	}
	if r.qmp.Execute(ctx, "query-block-jobs", nil, &jobs) == nil {
		for _, jb := range jobs {
			if jb.Device == r.jobID {
				slog.Warn("cancelling the mirror job left by an agent that did not stop", "job", r.jobID)
				r.qmp.Execute(ctx, "block-job-cancel", map[string]any{"device": r.jobID, "force": true}, nil)
				r.waitJobGone(ctx, 10*time.Second)
			}
		}
	}
	if nodes, err := r.nodes(ctx); err == nil {
		for _, n := range nodes {
			if strings.HasPrefix(n.NodeName, "rewind-target-"+r.vol+"-") {
				r.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": n.NodeName}, nil)
			}
		}
	}
	for _, id := range []string{"rewind-src-" + r.vol, "rewind-bitmap-" + r.vol} {
		r.delExport(id)
	}
}

// jobRunning reports whether QEMU lists the mirror job (as running,
// ready or paused; a concluded job is gone for us).
func (r *qemuRun) jobRunning(ctx context.Context) bool {
	var jobs []struct {
		Device string `json:"device"`
		Status string `json:"status"`
	}
	if err := r.qmp.Execute(ctx, "query-block-jobs", nil, &jobs); err != nil {
		return false
	}
	for _, j := range jobs {
		if j.Device == r.jobID && j.Status != "concluded" && j.Status != "aborting" && j.Status != "null" {
			return true
		}
	}
	return false
}

func (r *qemuRun) waitJobGone(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var jobs []struct {
			Device string `json:"device"`
		}
		if err := r.qmp.Execute(ctx, "query-block-jobs", nil, &jobs); err != nil {
			return false
		}
		if !slices.ContainsFunc(jobs, func(j struct {
			Device string `json:"device"`
		}) bool {
			return j.Device == r.jobID
		}) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (r *qemuRun) addExport(ctx context.Context, id string, bitmaps []string) error {
	args := map[string]any{"type": "nbd", "id": id, "node-name": r.q.Node, "name": id, "writable": false}
	if len(bitmaps) > 0 {
		args["bitmaps"] = bitmaps
	}
	var err error
	for range 50 { // an export being deleted still holds its id for a moment
		if err = r.qmp.Execute(ctx, "block-export-add", args, nil); err == nil || !strings.Contains(err.Error(), "already") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("export QEMU node %s over NBD: %w", r.q.Node, err)
	}
	return nil
}

func (r *qemuRun) delExport(id string) {
	r.qmp.Execute(context.Background(), "block-export-del", map[string]any{"id": id}, nil)
}

func (r *qemuRun) addBitmap(ctx context.Context) error {
	name := fmt.Sprintf("%s%d", r.bitmapPrefix(), time.Now().UnixNano())
	if err := r.qmp.Execute(ctx, "block-dirty-bitmap-add", map[string]any{"node": r.q.Node, "name": name, "persistent": r.persist}, nil); err != nil {
		return fmt.Errorf("dirty bitmap on %s: %w", r.q.Node, err)
	}
	r.bitmaps = append(r.bitmaps, name)
	return nil
}

// rotateBitmap adds a fresh bitmap and removes all but the newest two.
func (r *qemuRun) rotateBitmap(ctx context.Context) {
	if err := r.addBitmap(ctx); err != nil {
		slog.Warn("renewing the dirty bitmap failed; the current one goes on recording", "err", err)
		return
	}
	for len(r.bitmaps) > 2 {
		r.removeBitmap(ctx, r.bitmaps[0])
		r.bitmaps = r.bitmaps[1:]
	}
	slog.Info("dirty bitmap renewed", "volume", r.vol, "bitmaps", r.bitmaps)
}

func (r *qemuRun) removeBitmap(ctx context.Context, name string) {
	if err := r.qmp.Execute(ctx, "block-dirty-bitmap-remove", map[string]any{"node": r.q.Node, "name": name}, nil); err != nil {
		slog.Warn("removing an old dirty bitmap failed", "bitmap", name, "err", err)
	}
}

// startMirror adds a fresh NBD node pointing at the agent's server and
// mirrors the protected node into it.
func (r *qemuRun) startMirror(ctx context.Context) error {
	r.gen++
	r.target = fmt.Sprintf("rewind-target-%s-%d", r.vol, r.gen)
	err := r.qmp.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "nbd", "node-name": r.target, "export": "rewind",
		"server": map[string]any{"type": "unix", "path": r.agentSock},
	}, nil)
	if err != nil {
		return fmt.Errorf("add the agent's NBD server to QEMU: %w", err)
	}
	err = r.qmp.Execute(ctx, "blockdev-mirror", map[string]any{
		"job-id": r.jobID, "device": r.q.Node, "target": r.target,
		"sync": "none", "copy-mode": "write-blocking", "on-target-error": "report",
	}, nil)
	if err != nil {
		r.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": r.target}, nil)
		return fmt.Errorf("start the mirror of %s: %w", r.q.Node, err)
	}
	return nil
}

// stopMirror ends the mirror job and removes its target node.
func (r *qemuRun) stopMirror() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.qmp.Execute(ctx, "block-job-cancel", map[string]any{"device": r.jobID}, nil); err == nil {
		if !r.waitJobGone(ctx, 15*time.Second) {
			r.qmp.Execute(ctx, "block-job-cancel", map[string]any{"device": r.jobID, "force": true}, nil)
			r.waitJobGone(ctx, 5*time.Second)
		}
	}
	if r.target != "" {
		r.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": r.target}, nil)
	}
	return nil
}

// resyncFromBitmaps hands the blocks the old bitmaps mark to the journal's
// held gap, after a fresh bitmap took over; the old ones are then removed.
// The mirror runs again: writes since are journaled or held as dirty.
func (r *qemuRun) resyncFromBitmaps(ctx context.Context, old []string) error {
	actions := []any{}
	if err := func() error {
		name := fmt.Sprintf("%s%d", r.bitmapPrefix(), time.Now().UnixNano())
		actions = append(actions, map[string]any{"type": "block-dirty-bitmap-add", "data": map[string]any{"node": r.q.Node, "name": name, "persistent": r.persist}})
		for _, b := range old {
			actions = append(actions, map[string]any{"type": "block-dirty-bitmap-disable", "data": map[string]any{"node": r.q.Node, "name": b}})
		}
		if err := r.qmp.Execute(ctx, "transaction", map[string]any{"actions": actions}, nil); err != nil {
			return fmt.Errorf("rotate the dirty bitmap: %w", err)
		}
		r.bitmaps = []string{name}
		return nil
	}(); err != nil {
		return err
	}
	var blocks []int64
	for _, b := range old {
		bl, err := r.readBitmap(ctx, b)
		if err != nil {
			return err
		}
		blocks = append(blocks, bl...)
	}
	slices.Sort(blocks)
	blocks = slices.Compact(blocks)
	slog.Info("blocks changed outside the journal, from QEMU's dirty bitmap", "volume", r.vol, "blocks", len(blocks))
	r.journal.releaseGap(blocks)
	for _, b := range old {
		r.removeBitmap(ctx, b)
	}
	return nil
}

// readBitmap lists the journal blocks a dirty bitmap marks, read through an
// NBD export of the bitmap (block status of "qemu:dirty-bitmap:NAME").
func (r *qemuRun) readBitmap(ctx context.Context, name string) ([]int64, error) {
	id := "rewind-bitmap-" + r.vol
	if err := r.addExport(ctx, id, []string{name}); err != nil {
		return nil, err
	}
	defer r.delExport(id)
	metaCtx := "qemu:dirty-bitmap:" + name
	c, err := nbd.Dial(ctx, r.qemuSock, id, nbd.DialOptions{MetaContexts: []string{metaCtx}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	bs := r.journal.blockSize
	var blocks []int64
	for off := int64(0); off < c.Size(); {
		ext, err := c.BlockStatus(ctx, metaCtx, off, c.Size()-off)
		if err != nil {
			return nil, err
		}
		if len(ext) == 0 {
			return nil, fmt.Errorf("dirty bitmap %s: no extents at %d", name, off)
		}
		for _, e := range ext {
			if e.Length <= 0 {
				return nil, fmt.Errorf("dirty bitmap %s: empty extent at %d", name, e.Offset)
			}
			if e.Flags&1 != 0 { // NBD_STATE_DIRTY
				for b := e.Offset / bs; b*bs < e.Offset+e.Length; b++ {
					if len(blocks) == 0 || blocks[len(blocks)-1] != b {
						blocks = append(blocks, b)
					}
				}
			}
			off = e.Offset + e.Length
		}
	}
	return blocks, nil
}

// watch follows QEMU's events until ctx ends or QEMU goes away; when the
// mirror job ends unexpectedly it restarts it and resynchronises the gap
// from the dirty bitmap.
func (r *qemuRun) watch(ctx context.Context) error {
	events := r.qmp.Events()
	period := r.q.BitmapPeriod
	if period <= 0 {
		period = 10 * time.Minute
	}
	renew := time.NewTicker(period)
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew.C:
			if r.jobRunning(ctx) {
				r.rotateBitmap(ctx)
			}
		case ev, ok := <-events:
			if !ok {
				return errQemuGone
			}
			switch ev.Name {
			case "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR":
			default:
				continue
			}
			var d struct {
				Device string `json:"device"`
				Error  string `json:"error"`
				Op     string `json:"operation"`
				Action string `json:"action"`
			}
			json.Unmarshal(ev.Data, &d)
			if d.Device != r.jobID {
				continue
			}
			if ev.Name == "BLOCK_JOB_ERROR" {
				slog.Warn("QEMU mirror job error", "job", r.jobID, "operation", d.Op, "action", d.Action)
				continue
			}
			if r.jobRunning(ctx) {
				continue // an earlier job of this id (one cleared at start)
			}
			reason := "the QEMU mirror job ended (" + strings.ToLower(strings.TrimPrefix(ev.Name, "BLOCK_JOB_"))
			if d.Error != "" {
				reason += ": " + d.Error
			}
			reason += "); blocks changed meanwhile are re-sent from QEMU's dirty bitmap"
			r.journal.holdGap(ev.Time)
			r.status.gap(ev.Time, reason)
			if err := r.restart(ctx); err != nil {
				return err
			}
		}
	}
}

// restart brings the mirror back after it ended, retrying until it runs or
// ctx ends, then hands the bitmap's blocks to the held gap.
func (r *qemuRun) restart(ctx context.Context) error {
	old := r.target
	r.target = ""
	if old != "" {
		r.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": old}, nil)
	}
	backoff := 100 * time.Millisecond
	for {
		err := r.startMirror(ctx)
		if err == nil {
			break
		}
		select {
		case <-r.qmp.Done():
			r.journal.releaseGap(nil)
			return errQemuGone
		default:
		}
		if ctx.Err() != nil {
			r.journal.releaseGap(nil)
			return nil
		}
		r.status.outage(err)
		slog.Warn("restarting the QEMU mirror failed; retrying", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			r.journal.releaseGap(nil)
			return nil
		case <-r.qmp.Done():
			r.journal.releaseGap(nil)
			return errQemuGone
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	slog.Info("QEMU mirror restarted", "volume", r.vol, "target", r.target)
	err := errors.New("no dirty bitmap on the node")
	if len(r.bitmaps) > 0 {
		err = r.resyncFromBitmaps(ctx, slices.Clone(r.bitmaps))
	}
	if err != nil {
		// Without the bitmap only a whole-volume comparison closes the gap.
		slog.Warn("reading QEMU's dirty bitmap failed: the whole volume will be compared with the server", "err", err)
		all := make([]int64, 0)
		bs := r.journal.blockSize
		for b := int64(0); b*bs < r.volSize; b++ {
			all = append(all, b)
		}
		r.journal.releaseGap(all)
	}
	return nil
}

// mirrorTarget is the agent's NBD export QEMU mirrors into: it stores
// nothing, it journals.
type mirrorTarget struct {
	j    *journal
	src  io.ReaderAt // the protected disk, for reads and discards
	size int64
}

var _ nbd.Backend = (*mirrorTarget)(nil)

func (m *mirrorTarget) Size() int64    { return m.size }
func (m *mirrorTarget) ReadOnly() bool { return false }

// ReadAt reads the disk itself: the target holds what the disk holds.
func (m *mirrorTarget) ReadAt(ctx context.Context, p []byte, off int64) error {
	_, err := m.src.ReadAt(p, off)
	return err
}

func (m *mirrorTarget) WriteAt(ctx context.Context, p []byte, off int64) error {
	m.j.Write(time.Now(), off, p)
	return m.err()
}

// err is the journal's spool error: QEMU then fails the mirror job, and
// the dirty bitmap covers what follows.
func (m *mirrorTarget) err() error {
	m.j.mu.Lock()
	defer m.j.mu.Unlock()
	return m.j.err
}

func (m *mirrorTarget) Zero(ctx context.Context, off, n int64) error {
	m.j.Discard(time.Now(), off, n)
	return m.err()
}

// Trim journals what the disk reads after QEMU discarded the range (zeros
// where the format deallocated, the old data where it ignored the discard).
func (m *mirrorTarget) Trim(ctx context.Context, off, n int64) error {
	t := time.Now()
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		p := buf[:min(n, int64(len(buf)))]
		if _, err := m.src.ReadAt(p, off); err != nil {
			return fmt.Errorf("read back discarded range at %d: %w", off, err)
		}
		if isZero(p) {
			m.j.Discard(t, off, int64(len(p)))
		} else {
			m.j.Write(t, off, p)
		}
		off += int64(len(p))
		n -= int64(len(p))
	}
	return m.err()
}

func (m *mirrorTarget) Flush(ctx context.Context) error { return m.j.Flush(time.Now()) }

func isZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
