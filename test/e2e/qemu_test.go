package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/qmp"
	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// qemuVM is a QEMU without a guest (-machine none) with one qcow2 disk,
// node disk0, exported writable over QEMU's own NBD server: writes through
// that export are what a guest's writes are to the block layer.
type qemuVM struct {
	cmd     *exec.Cmd
	qmpSock string // the agent's monitor
	ownQMP  string // the test's monitor (a QMP socket takes one client at a time)
	nbdSock string
	img     string
	qmp     *qmp.Conn
	done    chan struct{}
}

func startQemu(t *testing.T, dir string, size int64) *qemuVM {
	t.Helper()
	vm := &qemuVM{qmpSock: filepath.Join(dir, "qmp.sock"), ownQMP: filepath.Join(dir, "test-qmp.sock"), nbdSock: filepath.Join(dir, "qemu-nbd.sock"),
		img: filepath.Join(dir, "disk.qcow2"), done: make(chan struct{})}
	mustCmd(t, "qemu-img", "create", "-q", "-f", "qcow2", vm.img, fmt.Sprint(size))
	// Some data before protection starts: the seeding must carry it.
	mustCmd(t, "qemu-io", "-f", "qcow2", vm.img, "-c", "write -P 0x5a 0 3M", "-c", "write -P 0xa5 40M 1M")
	logf, _ := os.Create(filepath.Join(dir, "qemu.log"))
	vm.cmd = exec.Command("qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
		"-qmp", "unix:"+vm.qmpSock+",server=on,wait=off", "-qmp", "unix:"+vm.ownQMP+",server=on,wait=off",
		"-blockdev", "driver=qcow2,node-name=disk0,discard=unmap,file.driver=file,file.filename="+vm.img)
	vm.cmd.Stdout, vm.cmd.Stderr = logf, logf
	if err := vm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { vm.cmd.Wait(); close(vm.done) }()
	t.Cleanup(func() {
		if vm.qmp != nil {
			vm.qmp.Execute(context.Background(), "quit", nil, nil)
			vm.qmp.Close()
		}
		select {
		case <-vm.done:
		case <-time.After(10 * time.Second):
			vm.cmd.Process.Kill()
			<-vm.done
		}
	})
	ctx := h.WithTimeout(t, 30*time.Second)
	var err error
	for ctx.Err() == nil {
		if vm.qmp, err = qmp.Dial(ctx, vm.ownQMP); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("QMP: %v", err)
	}
	vm.exec(t, "nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": vm.nbdSock}}})
	// Exported before the mirror starts, so the export's writes go through
	// the mirror filter as a guest device's do.
	vm.exec(t, "block-export-add", map[string]any{"type": "nbd", "id": "guest", "node-name": "disk0", "name": "disk", "writable": true})
	return vm
}

func (vm *qemuVM) exec(t *testing.T, cmd string, args any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := vm.qmp.Execute(ctx, cmd, args, nil); err != nil {
		t.Fatal(err)
	}
}

// waitJobGone waits until QEMU has no block job id.
func (vm *qemuVM) waitJobGone(t *testing.T, id string) {
	t.Helper()
	for range 200 {
		var jobs []struct {
			Device string `json:"device"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := vm.qmp.Execute(ctx, "query-block-jobs", nil, &jobs)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(jobs, func(j struct {
			Device string `json:"device"`
		}) bool {
			return j.Device == id
		}) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("block job %s did not end in 10 s", id)
}

func (vm *qemuVM) uri() string { return "nbd+unix:///disk?socket=" + vm.nbdSock }

// write runs qemu-io commands against the disk through QEMU's NBD export.
func (vm *qemuVM) write(t *testing.T, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw", vm.uri()}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-io", args...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "failed") {
		t.Fatalf("qemu-io: %v: %s", err, out)
	}
}

// randomWrites makes n qemu-io commands: pattern writes of random sizes at
// random offsets, some zero writes and discards.
func randomWrites(r *rand.Rand, size int64, n int) []string {
	var cmds []string
	for range n {
		off := r.Int64N(size/512-2048) * 512
		l := (1 + r.Int64N(512)) * 512
		switch r.IntN(10) {
		case 0:
			cmds = append(cmds, fmt.Sprintf("write -z %d %d", off, l))
		case 1:
			cmds = append(cmds, fmt.Sprintf("discard %d %d", off&^(64<<10-1), 128<<10))
		default:
			cmds = append(cmds, fmt.Sprintf("write -P %d %d %d", 1+r.IntN(254), off, l))
		}
	}
	return cmds
}

type qemuAgent struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func startQemuAgent(t *testing.T, s *h.Server, token string, vm *qemuVM, spool string) *qemuAgent {
	t.Helper()
	a := &qemuAgent{done: make(chan struct{}), log: filepath.Join(t.TempDir(), "agent.log")}
	logf, _ := os.Create(a.log)
	a.cmd = exec.Command(h.Binary(t), "agent", "protect-qemu", "--server", s.URL, "--ca", s.CA, "--token", token,
		"--machine", "vm", "--volume", "disk0", "--qmp", vm.qmpSock, "--node", "disk0", "--qemu-nbd", vm.nbdSock, "--spool", spool, "--bitmap-period", "2s")
	a.cmd.Stderr = logf
	out, _ := a.cmd.StdoutPipe()
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- sc.Text()
		}
		for sc.Scan() {
		}
	}()
	t.Cleanup(func() { a.stop(t) })
	select {
	case <-line:
	case <-a.done:
		t.Fatalf("agent exited before the mirror ran:\n%s", a.logText())
	case <-time.After(60 * time.Second):
		t.Fatalf("agent did not start the mirror in 60 s:\n%s", a.logText())
	}
	return a
}

func (a *qemuAgent) logText() string {
	b, _ := os.ReadFile(a.log)
	return string(b)
}

func (a *qemuAgent) stop(t *testing.T) {
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(60 * time.Second):
		t.Errorf("agent did not stop on SIGTERM in 60 s; killing it")
		a.cmd.Process.Kill()
		<-a.done
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("agent exited %d:\n%s", code, a.logText())
	}
}

type qemuStatus struct {
	State       string    `json:"state"`
	AckedSeq    uint64    `json:"acked_seq"`
	JournalNext uint64    `json:"journal_next"`
	Updated     time.Time `json:"updated"`
	Gaps        []qemuGap `json:"gaps"`
}

type qemuGap struct {
	Reason string  `json:"reason"`
	To     *string `json:"to"`
}

// waitCaughtUp waits until the agent is streaming with every change
// journaled before the call in an acknowledged point, and no gap open.
func waitCaughtUp(t *testing.T, spool string, a *qemuAgent) qemuStatus {
	t.Helper()
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	var st []qemuStatus
	for time.Now().Before(deadline) {
		st = nil
		json.Unmarshal([]byte(h.MustRun(t, nil, "agent", "status", "--spool", spool, "--json").Stdout), &st)
		// A status written after the writes, showing all of them acknowledged.
		if len(st) == 1 && st[0].Updated.After(start) && st[0].State == "streaming" && st[0].AckedSeq+1 >= st[0].JournalNext {
			open := false
			for _, g := range st[0].Gaps {
				open = open || g.To == nil
			}
			if !open {
				return st[0]
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("agent did not catch up in 90 s: %+v\n%s", st, a.logText())
	return qemuStatus{}
}

// waitGap waits until the agent reports a gap whose reason contains why.
func waitGap(t *testing.T, spool string, a *qemuAgent, why string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var st []qemuStatus
	for time.Now().Before(deadline) {
		st = nil
		json.Unmarshal([]byte(h.MustRun(t, nil, "agent", "status", "--spool", spool, "--json").Stdout), &st)
		if len(st) == 1 && slices.ContainsFunc(st[0].Gaps, func(g qemuGap) bool { return strings.Contains(g.Reason, why) }) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("agent reported no gap %q in 60 s: %+v\n%s", why, st, a.logText())
}

// compareLatest restores the newest point and compares it with the disk
// as QEMU reads it.
func compareLatest(t *testing.T, repo, dir string, vm *qemuVM, a *qemuAgent, what string) {
	t.Helper()
	out := filepath.Join(dir, "restored.img")
	os.Remove(out)
	h.MustRun(t, nil, "restore", "--repo", repo, "--machine", "vm", "--volume", "disk0", "--to", out)
	if o, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", out, vm.uri()).CombinedOutput(); err != nil {
		t.Fatalf("%s: the restored latest point differs from QEMU's disk: %v\n%s\npoints:\n%s\nagent log:\n%s", what, err, o,
			h.MustRun(t, nil, "points", "--repo", repo).Stdout, a.logText())
	}
	os.Remove(out)
}

// A QEMU disk protected through a write-blocking mirror: writes through
// QEMU are captured exactly; a killed mirror job is restarted and the gap
// closed from the dirty bitmap; writes while the agent is stopped are
// re-sent from the persistent bitmap at the next start; after kill -9 the
// next run compares the whole disk.
func TestAgentProtectsQemuDisk(t *testing.T) {
	testenv.NeedTool(t, "qemu-system-x86_64", "qemu-img", "qemu-io")
	dir := t.TempDir()
	const size = 64 << 20
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	token := h.AddMachine(t, repo, "vm")
	vm := startQemu(t, dir, size)
	spool := filepath.Join(dir, "spool")
	r := rand.New(rand.NewPCG(6, 6))

	t0 := time.Now()
	a := startQemuAgent(t, s, token, vm, spool)
	t.Logf("agent started at %s", time.Since(t0).Round(time.Millisecond))
	// Writes while the seeding runs, and after.
	vm.write(t, randomWrites(r, size, 40)...)
	vm.write(t, "write -P 0x77 1M 8M", "write -z 2M 64k", "discard 40M 512k")
	waitCaughtUp(t, spool, a)
	compareLatest(t, repo, dir, vm, a, "after seeding and writes")
	t.Logf("seeding and writes exact at %s", time.Since(t0).Round(time.Millisecond))

	// The mirror job dies; writes go on. The agent restarts the mirror and
	// re-sends the blocks the dirty bitmap marks.
	// The agent is paused so that it cannot restart the mirror before the
	// writes: they reach only the disk, and its dirty bitmap.
	a.cmd.Process.Signal(syscall.SIGSTOP)
	// Should QEMU wait for the stopped agent, resume it rather than hang.
	resume := time.AfterFunc(30*time.Second, func() { a.cmd.Process.Signal(syscall.SIGCONT) })
	vm.exec(t, "block-job-cancel", map[string]any{"device": "rewind-disk0", "force": true})
	vm.waitJobGone(t, "rewind-disk0")
	vm.write(t, append(randomWrites(r, size, 30), "write -P 0x99 50M 2M")...)
	if !resume.Stop() {
		// Write-blocking means QEMU may wait for its target; the checks
		// below still hold, the gap is then merely shorter.
		t.Log("QEMU waited for the paused agent; it was resumed after 30 s")
	}
	a.cmd.Process.Signal(syscall.SIGCONT)
	waitGap(t, spool, a, "mirror job ended")
	waitCaughtUp(t, spool, a)
	vm.write(t, randomWrites(r, size, 20)...)
	waitCaughtUp(t, spool, a)
	compareLatest(t, repo, dir, vm, a, "after the mirror job was killed")
	t.Logf("mirror job killed, gap closed, exact at %s", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(a.logText(), "dirty bitmap renewed") {
		t.Errorf("the agent never renewed its dirty bitmap:\n%s", a.logText())
	}
	if !strings.Contains(a.logText(), "blocks changed outside the journal") {
		t.Errorf("the agent did not resynchronise from the bitmap:\n%s", a.logText())
	}

	// Stopped cleanly, the agent leaves the bitmap recording: the next run
	// re-sends what changed meanwhile.
	a.stop(t)
	vm.write(t, randomWrites(r, size, 20)...)
	vm.write(t, "write -P 0x33 60M 1M")
	a = startQemuAgent(t, s, token, vm, spool)
	waitGap(t, spool, a, "the agent was stopped")
	waitCaughtUp(t, spool, a)
	compareLatest(t, repo, dir, vm, a, "after a restart of the agent")
	t.Logf("agent restarted, exact at %s", time.Since(t0).Round(time.Millisecond))

	// Killed, the agent leaves its mirror job, target node and export in
	// QEMU; writes go on. The next run clears them and compares the whole
	// disk with the server.
	vm.write(t, randomWrites(r, size, 10)...)
	a.cmd.Process.Kill()
	<-a.done
	vm.write(t, randomWrites(r, size, 20)...)
	vm.write(t, "write -P 0x44 30M 1M")
	a = startQemuAgent(t, s, token, vm, spool)
	waitGap(t, spool, a, "unclean stop")
	vm.write(t, randomWrites(r, size, 10)...)
	waitCaughtUp(t, spool, a)
	compareLatest(t, repo, dir, vm, a, "after kill -9 of the agent")
	t.Logf("agent killed and restarted, exact at %s", time.Since(t0).Round(time.Millisecond))
	a.stop(t)
	if t.Failed() {
		t.Logf("agent log:\n%s", a.logText())
	}
}
