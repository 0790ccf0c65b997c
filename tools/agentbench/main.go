// Command agentbench measures the continuous-capture agent on this
// machine, in one run: the write overhead of the block shim against a
// plain loop device (sequential `dd conv=fsync` throughput and 4 KiB
// random synchronous write IOPS, with their latency), and the recovery
// point objective under a steady 20 MB/s of writes (p50/p99 of the time
// from a write's completion to the server's acknowledgement). It needs
// root and /dev/fuse.
//
// The server runs on this machine too, and turns every flush into a
// point; the synchronous writes are therefore measured a second time with
// the server stopped (the agent only spools), which is the shim's own
// write path. Plain and shim runs alternate in short slices, so that the
// load of a shared machine falls on both alike.
//
//	go run ./tools/agentbench [-size 1GiB] [-seconds 10] [-rpo-seconds 30]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	size := flag.Int64("size", 1<<30, "volume size in bytes")
	secs := flag.Int("seconds", 10, "seconds of random synchronous writes per device")
	rpoSecs := flag.Int("rpo-seconds", 30, "seconds of steady 20 MB/s writes for the RPO measurement")
	work := flag.String("work", "", "work directory (default a new temporary one, removed afterwards)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fail("agentbench needs root (loop devices and a FUSE mount)")
	}
	dir := *work
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "agentbench-"); err != nil {
			fail(err.Error())
		}
		defer os.RemoveAll(dir)
	}
	bin := filepath.Join(dir, "rewind")
	must(exec.Command("go", "build", "-o", bin, "./cmd/rewind").Run(), "go build")
	data := filepath.Join(dir, "data.bin")
	writeRandom(data, 512<<20)

	// The plain loop device stays attached, so that plain and shim runs can
	// alternate: the machine is shared and its load drifts, so each figure
	// is the sum of several short slices taken turn about with its peer.
	img := filepath.Join(dir, "plain.img")
	mkImage(img, *size)
	dev := strings.TrimSpace(output("losetup", "--find", "--show", img))
	cleanups = append(cleanups, func() { exec.Command("losetup", "--detach", dev).Run() })
	defer cleanups[len(cleanups)-1]()

	repo := filepath.Join(dir, "repo")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	srv := startServer(bin, repo, addr, dir, "server.log")
	defer func() { stop(srv) }()
	token := strings.TrimSpace(output(bin, "machine", "add", "bench", "--repo", repo))
	img2 := filepath.Join(dir, "shim.img")
	mkImage(img2, *size)
	spool := filepath.Join(dir, "spool")
	ag := exec.Command(bin, "agent", "protect", "--server", "https://"+addr, "--ca", filepath.Join(repo, "server.crt"),
		"--token", token, "--machine", "bench", "--volume", "v", "--image", img2, "--spool", spool, "--spool-limit", fmt.Sprint(4<<30))
	ag.Stderr = logFile(dir, "agent.log")
	out, _ := ag.StdoutPipe()
	start(ag, "start agent")
	defer stop(ag)
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		fail("agent printed no loop device; see " + filepath.Join(dir, "agent.log"))
	}
	sdev := strings.TrimSpace(sc.Text())
	waitStreaming(bin, spool)

	const rounds = 4
	var plainSeq, shimSeq rate
	for i := range 2 {
		pmb, psecs := ddFsync(data, dev)
		smb, ssecs := ddFsync(data, sdev)
		logf("dd conv=fsync run %d: plain loop %.0f MB/s, through the shim %.0f MB/s", i+1, pmb/psecs, smb/ssecs)
		plainSeq.add(pmb, psecs)
		shimSeq.add(smb, ssecs)
	}
	logf("dd conv=fsync: plain loop %.0f MB/s, through the shim %.0f MB/s", plainSeq.per(), shimSeq.per())
	waitStreaming(bin, spool)
	slice := time.Duration(*secs) * time.Second / rounds
	var plainIOPS, shimIOPS sync4k
	for range rounds {
		plainIOPS.run(dev, *size, slice)
		shimIOPS.run(sdev, *size, slice)
	}
	logf("4 KiB O_DSYNC: plain loop %.0f IOPS, through the shim %.0f IOPS", plainIOPS.iops(), shimIOPS.iops())

	// The same with the server stopped: the agent only spools. This splits
	// the shim's own write path from the load of a server that ingests
	// every flush as a point on this same machine (disk and 2 cores).
	stop(srv)
	var plainAlone, shimAlone sync4k
	for range rounds {
		plainAlone.run(dev, *size, slice)
		shimAlone.run(sdev, *size, slice)
	}
	logf("4 KiB O_DSYNC, server stopped: plain loop %.0f IOPS, through the shim %.0f IOPS", plainAlone.iops(), shimAlone.iops())
	srv = startServer(bin, repo, addr, dir, "server2.log")

	// A fresh agent process, so its acknowledgement statistics hold only the
	// steady writes.
	waitStreaming(bin, spool)
	stop(ag)
	ag = exec.Command(bin, ag.Args[1:]...)
	ag.Stderr = logFile(dir, "agent2.log")
	out, _ = ag.StdoutPipe()
	start(ag, "restart agent")
	defer stop(ag)
	sc = bufio.NewScanner(out)
	if !sc.Scan() {
		fail("restarted agent printed no loop device")
	}
	sdev = strings.TrimSpace(sc.Text())
	waitStreaming(bin, spool)
	steady(sdev, 20e6, time.Duration(*rpoSecs)*time.Second)
	time.Sleep(3 * time.Second) // the last writes are acknowledged
	var st []struct {
		P50 float64 `json:"ack_p50_seconds"`
		P99 float64 `json:"ack_p99_seconds"`
	}
	json.Unmarshal([]byte(output(bin, "agent", "status", "--spool", spool, "--json")), &st)
	if len(st) != 1 || st[0].P99 == 0 {
		fail("the agent acknowledged no steady writes; see " + filepath.Join(dir, "agent2.log"))
	}

	fmt.Printf("\nBlock shim overhead (same run, %s volume image on %s; plain and shim taken turn about: 2 dd runs, %d write slices each):\n", human(*size), dir, rounds)
	fmt.Printf("  %-34s %12s %12s %8s %s\n", "", "plain loop", "shim", "ratio", "target")
	fmt.Printf("  %-34s %12.0f %12.0f %7.0f%% %s\n", "dd bs=1M conv=fsync, MB/s", plainSeq.per(), shimSeq.per(), 100*shimSeq.per()/plainSeq.per(), mark(shimSeq.per()/plainSeq.per() >= 0.6, ">= 60 %"))
	fmt.Printf("  %-34s %12.0f %12.0f %7.0f%% %s\n", "4 KiB random O_DSYNC writes, IOPS", plainIOPS.iops(), shimIOPS.iops(), 100*shimIOPS.iops()/plainIOPS.iops(), mark(shimIOPS.iops()/plainIOPS.iops() >= 0.5, ">= 50 %"))
	fmt.Printf("  %-34s %12s %12s\n", "  p50 / p99 latency, ms", plainIOPS.pct(), shimIOPS.pct())
	fmt.Printf("  %-34s %12.0f %12.0f %7.0f%%\n", "  the same, server stopped, IOPS", plainAlone.iops(), shimAlone.iops(), 100*shimAlone.iops()/plainAlone.iops())
	fmt.Printf("  %-34s %12s %12s\n", "  p50 / p99 latency, ms", plainAlone.pct(), shimAlone.pct())
	fmt.Printf("\nRPO under 20 MB/s of steady writes for %d s (write completion to server acknowledgement):\n", *rpoSecs)
	fmt.Printf("  p50 %.3f s, p99 %.3f s  %s\n", st[0].P50, st[0].P99, mark(st[0].P99 <= 1, "p99 <= 1 s"))
}

// startServer starts the rewind server on repo and waits until it listens.
func startServer(bin, repo, addr, dir, log string) *exec.Cmd {
	srv := exec.Command(bin, "server", "--repo", repo, "--listen", addr)
	srv.Stderr = logFile(dir, log)
	start(srv, "start server")
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return srv
		}
		time.Sleep(100 * time.Millisecond)
	}
	fail("the server did not listen on " + addr + "; see " + filepath.Join(dir, log))
	return nil
}

func mark(ok bool, target string) string {
	if ok {
		return target + " met"
	}
	return target + " NOT met"
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", a...)
}

// children are the processes this run started; fail stops them, then
// runs cleanups (loop devices to detach).
var (
	children []*exec.Cmd
	cleanups []func()
)

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "agentbench:", msg)
	for i := len(children) - 1; i >= 0; i-- {
		stop(children[i])
	}
	for _, c := range cleanups {
		c()
	}
	os.Exit(1)
}

// start starts a child and remembers it.
func start(c *exec.Cmd, what string) {
	must(c.Start(), what)
	children = append(children, c)
}

// freePort returns a loopback port nothing listens on.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err, "free port")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func must(err error, what string) {
	if err != nil {
		fail(what + ": " + err.Error())
	}
}

func output(name string, args ...string) string {
	b, err := exec.Command(name, args...).Output()
	must(err, name+" "+strings.Join(args, " "))
	return string(b)
}

func logFile(dir, name string) *os.File {
	f, err := os.Create(filepath.Join(dir, name))
	must(err, "log file")
	return f
}

// stop stops a child we started, by its PID (once).
func stop(c *exec.Cmd) {
	if c.ProcessState != nil {
		return
	}
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		c.Process.Kill()
		<-done
	}
}

func mkImage(path string, size int64) {
	f, err := os.Create(path)
	must(err, "image")
	must(f.Truncate(size), "image size")
	f.Close()
}

func writeRandom(path string, n int64) {
	f, err := os.Create(path)
	must(err, "data file")
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for ; n > 0; n -= int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			v := r.Uint64()
			for k := range 8 {
				buf[i+k] = byte(v >> (8 * k))
			}
		}
		f.Write(buf)
	}
	f.Close()
	exec.Command("cat", path).Run() // into the page cache
}

// rate sums bytes and time over several runs.
type rate struct {
	mb   float64
	secs float64
}

func (r *rate) add(mb, secs float64) { r.mb += mb; r.secs += secs }
func (r *rate) per() float64         { return r.mb / r.secs }

// ddFsync copies src onto dev with dd conv=fsync and returns the MB
// copied and the seconds it took.
func ddFsync(src, dev string) (float64, float64) {
	start := time.Now()
	must(exec.Command("dd", "if="+src, "of="+dev, "bs=1M", "conv=fsync,notrunc", "status=none").Run(), "dd")
	st, _ := os.Stat(src)
	return float64(st.Size()) / 1e6, time.Since(start).Seconds()
}

// sync4k accumulates 4 KiB random synchronous writes over several runs.
type sync4k struct {
	n    int
	secs float64
	lat  []time.Duration
	seed uint64
}

// run writes 4 KiB blocks at random aligned offsets with O_DSYNC for d.
func (s *sync4k) run(dev string, size int64, d time.Duration) {
	f, err := os.OpenFile(dev, os.O_WRONLY|syscall.O_DSYNC, 0)
	must(err, "open "+dev)
	defer f.Close()
	s.seed++
	r := rand.New(rand.NewPCG(3, s.seed))
	buf := make([]byte, 4096)
	start := time.Now()
	for time.Since(start) < d {
		buf[0] = byte(s.n)
		t := time.Now()
		if _, err := f.WriteAt(buf, r.Int64N(size/4096)*4096); err != nil {
			fail("random write: " + err.Error())
		}
		s.lat = append(s.lat, time.Since(t))
		s.n++
	}
	s.secs += time.Since(start).Seconds()
}

func (s *sync4k) iops() float64 { return float64(s.n) / s.secs }

// pct is the p50 and p99 latency in milliseconds.
func (s *sync4k) pct() string {
	l := slices.Clone(s.lat)
	slices.Sort(l)
	if len(l) == 0 {
		return "-"
	}
	ms := func(q float64) float64 { return float64(l[int(q*float64(len(l)-1))]) / 1e6 }
	return fmt.Sprintf("%.2f / %.2f", ms(0.5), ms(0.99))
}

// steady writes rate bytes per second to dev in 1 MiB O_DIRECT writes for
// d, so each write reaches the device when it is issued.
func steady(dev string, rate float64, d time.Duration) {
	f, err := os.OpenFile(dev, os.O_WRONLY|syscall.O_DIRECT, 0)
	must(err, "open "+dev)
	defer f.Close()
	buf, err := syscall.Mmap(-1, 0, 1<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	must(err, "aligned buffer")
	defer syscall.Munmap(buf)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	interval := time.Duration(float64(len(buf)) / rate * float64(time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var off int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			buf[0]++
			if _, err := f.WriteAt(buf, off%(512<<20)); err != nil {
				fail("steady write: " + err.Error())
			}
			off += int64(len(buf))
		}
	}
}

// waitStreaming waits until the agent has sent the volume and streams.
func waitStreaming(bin, spool string) {
	for range 600 {
		var st []struct {
			State string  `json:"state"`
			Lag   float64 `json:"lag_seconds"`
		}
		b, _ := exec.Command(bin, "agent", "status", "--spool", spool, "--json").Output()
		json.Unmarshal(b, &st)
		if len(st) == 1 && st[0].State == "streaming" && st[0].Lag < 0.5 {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	fail("agent did not reach streaming")
}

func human(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }
