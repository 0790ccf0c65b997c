// Command mountbench measures browsing backups through a mount, rewind
// against restic, in the same run on the same data:
//
//   - cold listing: `ls -l` of a 10,000-entry directory at a point never
//     visited since the mount started, with the page cache dropped;
//   - time to first byte: from starting `rewind mount` (`restic mount`)
//     until the first byte of a file at a point can be read;
//   - sequential read of a 1 GiB file at a point never visited, cold.
//
// The data is one directory tree: a 10,000-entry directory of small files
// and a 1 GiB file, changed a little between three points. restic backs
// the tree up as files; rewind backs up an ext4 volume image holding it
// (made with mkfs.ext4 -d), as a protected server's disk would be.
//
// Needs root (FUSE mounts, dropping the page cache), restic, mkfs.ext4
// and debugfs. See README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mountbench:", err)
		os.Exit(1)
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

// toolResult is what one tool measured.
type toolResult struct {
	Tool        string        `json:"tool"`
	Version     string        `json:"version"`
	ListEntries int           `json:"list_entries"`
	List        time.Duration `json:"list_ns"`
	FirstByte   time.Duration `json:"first_byte_ns"`
	ReadBytes   int64         `json:"read_bytes"`
	Read        time.Duration `json:"read_ns"`
	// CPU time the mount process spent in each phase: on a shared
	// machine wall times stretch, these much less.
	ListCPU      time.Duration `json:"list_cpu_ns"`
	FirstByteCPU time.Duration `json:"first_byte_cpu_ns"`
	ReadCPU      time.Duration `json:"read_cpu_ns"`
}

func (r toolResult) readMBps() float64 { return float64(r.ReadBytes) / 1e6 / r.Read.Seconds() }

type report struct {
	// LocalList is `ls -l` of the same directory in the source tree on
	// the local disk, page cache warm: what this machine's ls costs.
	LocalList time.Duration `json:"local_list_ns"`
	Entries   int           `json:"entries"`
	BigSize   int64         `json:"big_size"`
	Results   []toolResult  `json:"results"`
}

func run() error {
	work := flag.String("work", "", "work directory (new or empty; default a new temporary directory)")
	keep := flag.Bool("keep", false, "keep the work directory")
	entries := flag.Int("entries", 10000, "entries of the listed directory")
	bigSize := flag.String("big", "1GiB", "size of the file read sequentially")
	tools := flag.String("tools", "rewind,restic", "tools to measure")
	jsonOut := flag.String("json", "", "also write the figures to this JSON file")
	flag.Parse()
	big, err := parseSize(*bigSize)
	if err != nil {
		return fmt.Errorf("-big: %w", err)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: FUSE mounts and dropping the page cache")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *work == "" {
		if *work, err = os.MkdirTemp("", "mountbench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(*work, 0o755); err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(*work)
	}
	logf("work directory %s", *work)
	d := &dataset{dir: *work, entries: *entries, big: big}
	if err := d.stage(); err != nil {
		return err
	}
	rep := report{Entries: *entries, BigSize: big}
	lsl(ctx, filepath.Join(d.src, "many")) // warm
	if rep.LocalList, _, err = lsl(ctx, filepath.Join(d.src, "many")); err != nil {
		return err
	}
	for _, name := range strings.Split(*tools, ",") {
		var t tool
		switch name {
		case "rewind":
			t = &rewindTool{work: filepath.Join(*work, "rewind")}
		case "restic":
			t = &resticTool{work: filepath.Join(*work, "restic")}
		default:
			return fmt.Errorf("-tools: unknown tool %q", name)
		}
		res, err := measure(ctx, t, d)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		rep.Results = append(rep.Results, res)
	}
	printReport(os.Stdout, rep)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// tool is one backup program with a mount.
type tool interface {
	name() string
	version() string
	// backup stores the dataset's three points.
	backup(ctx context.Context, d *dataset) error
	// startMount starts the mount process at dir.
	startMount(ctx context.Context, dir string) (*proc, error)
	// pointDir is the directory, under the mount, holding point i's tree
	// (the dataset's root); it may need the mount to be up.
	pointDir(mnt string, i int) (string, error)
}

// measure backs the dataset up with t and takes the three figures, each at
// a point the mount has not visited, with the page cache dropped first.
func measure(ctx context.Context, t tool, d *dataset) (toolResult, error) {
	res := toolResult{Tool: t.name(), Version: t.version()}
	logf("%s: backing up three points", t.name())
	if err := t.backup(ctx, d); err != nil {
		return res, err
	}
	mnt := filepath.Join(d.dir, t.name()+"-mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return res, err
	}
	if err := dropCaches(); err != nil {
		return res, err
	}
	// Time to first byte: the mount starts and a file of point 0 is read.
	start := time.Now()
	p, err := t.startMount(ctx, mnt)
	if err != nil {
		return res, err
	}
	defer p.stop()
	var first string
	for {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if first == "" {
			if dir, err := t.pointDir(mnt, 0); err == nil {
				first = filepath.Join(dir, "big.bin")
			}
		}
		if first != "" {
			if n, err := readFirstByte(first); err == nil && n == 1 {
				break
			}
		}
		if p.exited() {
			return res, fmt.Errorf("the mount exited:\n%s", p.tail())
		}
		if time.Since(start) > 5*time.Minute {
			return res, fmt.Errorf("no first byte of %s in 5 minutes", first)
		}
		time.Sleep(2 * time.Millisecond)
	}
	res.FirstByte = time.Since(start)
	res.FirstByteCPU = p.cpu()
	logf("%s: first byte after %v", t.name(), res.FirstByte.Round(time.Millisecond))

	// Cold listing of the large directory at point 1.
	dir, err := t.pointDir(mnt, 1)
	if err != nil {
		return res, err
	}
	if err := dropCaches(); err != nil {
		return res, err
	}
	// Cold means the backup's data, not ls itself: load ls, its libraries,
	// locale and user database again before timing it.
	if _, _, err := lsl(ctx, d.dir); err != nil {
		return res, err
	}
	c0 := p.cpu()
	res.List, res.ListEntries, err = lsl(ctx, filepath.Join(dir, "many"))
	if err != nil {
		return res, err
	}
	res.ListCPU = p.cpu() - c0
	if res.ListEntries < d.entries {
		return res, fmt.Errorf("ls -l listed %d entries, want %d", res.ListEntries, d.entries)
	}
	logf("%s: ls -l of %d entries in %v", t.name(), res.ListEntries, res.List.Round(time.Millisecond))

	// Sequential read of the large file at point 2.
	dir, err = t.pointDir(mnt, 2)
	if err != nil {
		return res, err
	}
	if err := dropCaches(); err != nil {
		return res, err
	}
	c0 = p.cpu()
	res.ReadBytes, res.Read, err = readAll(ctx, filepath.Join(dir, "big.bin"))
	if err != nil {
		return res, err
	}
	res.ReadCPU = p.cpu() - c0
	if res.ReadBytes != d.big {
		return res, fmt.Errorf("read %d bytes of big.bin, want %d", res.ReadBytes, d.big)
	}
	logf("%s: read %d MiB in %v (%.0f MB/s)", t.name(), res.ReadBytes>>20, res.Read.Round(time.Millisecond), res.readMBps())
	return res, p.stop()
}

// dropCaches writes dirty pages and drops the page, dentry and inode
// caches, so that every tool starts from disk.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

func readFirstByte(p string) (int, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [1]byte
	return f.Read(b[:])
}

// lsl runs `ls -l dir` and returns its time and the entries it listed.
func lsl(ctx context.Context, dir string) (time.Duration, int, error) {
	start := time.Now()
	out, err := command(ctx, "ls", "-l", dir).Output()
	d := time.Since(start)
	if err != nil {
		return d, 0, fmt.Errorf("ls -l %s: %w", dir, err)
	}
	n := strings.Count(string(out), "\n") - 1 // the "total" line
	return d, n, nil
}

func readAll(ctx context.Context, p string) (int64, time.Duration, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	start := time.Now()
	n, err := io.CopyBuffer(io.Discard, ctxReader{ctx, f}, make([]byte, 1<<20))
	return n, time.Since(start), err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func printReport(w io.Writer, rep report) {
	fmt.Fprintf(w, "\nmountbench: ls -l of a %d-entry directory (cold, never-visited point), time from mount start to the first byte, sequential read of a %d MiB file (cold)\n\n", rep.Entries, rep.BigSize>>20)
	fmt.Fprintf(w, "%-8s %-10s %12s %12s %10s   %s\n", "tool", "version", "ls -l", "first byte", "read MB/s", "mount process CPU: ls -l / first byte / read")
	for _, r := range rep.Results {
		fmt.Fprintf(w, "%-8s %-10s %12s %12s %10.0f   %v / %v / %v\n", r.Tool, trunc(r.Version, 10), r.List.Round(time.Millisecond), r.FirstByte.Round(time.Millisecond), r.readMBps(),
			r.ListCPU.Round(10*time.Millisecond), r.FirstByteCPU.Round(10*time.Millisecond), r.ReadCPU.Round(10*time.Millisecond))
	}
	fmt.Fprintf(w, "\nfor scale: ls -l of the same directory on the local disk, page cache warm: %v\n", rep.LocalList.Round(time.Millisecond))
	var rw, rs *toolResult
	for i := range rep.Results {
		switch rep.Results[i].Tool {
		case "rewind":
			rw = &rep.Results[i]
		case "restic":
			rs = &rep.Results[i]
		}
	}
	if rw == nil {
		return
	}
	fmt.Fprintln(w)
	if rs != nil {
		fmt.Fprintf(w, "ratios (restic / rewind): ls -l %.1f×, first byte %.1f×, read %.2f× (rewind / restic throughput)\n",
			rs.List.Seconds()/rw.List.Seconds(), rs.FirstByte.Seconds()/rw.FirstByte.Seconds(), rw.readMBps()/rs.readMBps())
	}
	check := func(ok bool, what string) {
		s := "met   "
		if !ok {
			s = "MISSED"
		}
		fmt.Fprintf(w, "  %s %s\n", s, what)
	}
	fmt.Fprintln(w, "targets:")
	check(rw.List < 300*time.Millisecond, fmt.Sprintf("ls -l < 300 ms: %v", rw.List.Round(time.Millisecond)))
	if rs != nil {
		check(rs.List >= 5*rw.List, fmt.Sprintf("ls -l ≥ 5× faster than restic: %.1f×", rs.List.Seconds()/rw.List.Seconds()))
	}
	check(rw.FirstByte < time.Second, fmt.Sprintf("first byte < 1 s: %v", rw.FirstByte.Round(time.Millisecond)))
	check(rw.readMBps() >= 300, fmt.Sprintf("sequential read ≥ 300 MB/s: %.0f MB/s", rw.readMBps()))
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// parseSize parses 1GiB, 512MiB, 64KiB or a byte count.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if strings.HasSuffix(s, u.suf) {
			mult, s = u.m, strings.TrimSuffix(s, u.suf)
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("not a size: %q", s)
	}
	return n * mult, nil
}
