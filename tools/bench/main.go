// Command bench measures rewind against restic and borgbackup on the same
// ext4 volume image in the same run: first backup, ten rounds of about 2 %
// change with an incremental backup after each, restore, repository size
// and peak memory; then the rewind server's memory and catalog size while
// ingesting a multi-GiB volume. Run it from the module root:
//
//	go run ./tools/bench [-size 1GiB] [-rounds 10] [-ingest-gib 4] [-json out.json]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// report is everything the benchmark measured, as written by -json.
type report struct {
	Started    time.Time     `json:"started"`
	Host       string        `json:"host"`
	CPUs       int           `json:"cpus"`
	ImageBytes int64         `json:"image_bytes"`
	Volume     *volume       `json:"volume"`
	Tools      []*toolResult `json:"tools"`
	Ingest     *ingestResult `json:"ingest,omitempty"`
	Floor      *floorResult  `json:"floor,omitempty"`
	Targets    []targetCheck `json:"targets"`
}

type targetCheck struct {
	What   string  `json:"what"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

func run() error {
	work := flag.String("work", "", "work directory, new or empty; removed at the end unless -keep (default: a new temporary directory)")
	keep := flag.Bool("keep", false, "keep the work directory")
	sizeFlag := flag.String("size", "1GiB", "volume image size")
	rounds := flag.Int("rounds", 10, "rounds of ~2 % change, each followed by an incremental backup")
	toolsFlag := flag.String("tools", "rewind,restic,borg", "tools to run, comma-separated")
	ingestGiB := flag.Float64("ingest-gib", 4, "size in GiB of the rewind ingest phase (0 skips it)")
	jsonOut := flag.String("json", "", "also write all figures as JSON to this file")
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		return err
	}
	size = size / (1 << 20) * (1 << 20)
	if size < 64<<20 {
		return fmt.Errorf("-size must be at least 64MiB")
	}
	for _, t := range []string{"go", "mkfs.ext4", "debugfs", "e2fsck", "dumpe2fs"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is needed: %w", t, err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *work == "" {
		*work, err = os.MkdirTemp("", "rewind-bench-")
		if err != nil {
			return err
		}
	} else {
		// The work directory is removed at the end: never take one that
		// holds anything else.
		if entries, err := os.ReadDir(*work); err == nil && len(entries) > 0 {
			return fmt.Errorf("-work %s is not empty; give a new or empty directory", *work)
		}
		if err := os.MkdirAll(*work, 0o755); err != nil {
			return err
		}
	}
	*work, _ = filepath.Abs(*work)
	if *keep {
		defer logf("work directory kept: %s", *work)
	} else {
		defer os.RemoveAll(*work)
	}
	if err := os.MkdirAll(filepath.Join(*work, "logs"), 0o755); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(*work, "logs", "commands.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	rn := &runner{ctx: ctx, log: logFile}

	host, _ := os.Hostname()
	rep := &report{Started: time.Now().UTC(), Host: host, CPUs: runtime.NumCPU(), ImageBytes: size}

	bin := filepath.Join(*work, "rewind")
	logf("building rewind")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/rewind").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/rewind (run bench from the module root): %w\n%s", err, out)
	}

	var tools []tool
	for _, name := range strings.Split(*toolsFlag, ",") {
		switch strings.TrimSpace(name) {
		case "rewind":
			tools = append(tools, &rewindTool{run: rn, bin: bin, repo: filepath.Join(*work, "rewind-repo"), logDir: filepath.Join(*work, "logs"), logf: logf})
		case "restic":
			tools = append(tools, newRestic(rn, *work))
		case "borg":
			tools = append(tools, newBorg(rn, *work))
		case "":
		default:
			return fmt.Errorf("unknown tool %q (rewind, restic, borg)", name)
		}
	}
	defer func() {
		for _, t := range tools {
			t.stopIngest() // always stop the rewind server
		}
	}()

	logf("building a %s ext4 image from this system's files", humanBytes(size))
	vol := newVolume(*work, size, rn, logf)
	rep.Volume = vol
	if err := vol.build(); err != nil {
		return err
	}
	if err := warm(vol.image); err != nil {
		return err
	}
	logf("measuring the CPU cost of a first backup's essential work")
	if rep.Floor, err = measureFloor(vol.image); err != nil {
		return fmt.Errorf("measure the lower bound: %w", err)
	}

	for _, t := range tools {
		r := t.result()
		r.Tool, r.Version = t.name(), t.version()
		rep.Tools = append(rep.Tools, r)
		if err := t.setup(); err != nil {
			return fmt.Errorf("%s: set-up: %w", t.name(), err)
		}
	}
	doBackups := func(n int) error {
		for _, t := range tools {
			if err := warm(vol.image); err != nil {
				return err
			}
			cpu0 := t.serverCPU()
			res, b, err := t.backup(vol.image, n)
			if err != nil {
				return fmt.Errorf("%s: backup %d: %w", t.name(), n, err)
			}
			b.Round, b.Seconds, b.MBps, b.RSSKiB = n, res.Wall.Seconds(), mbps(size, res.Wall), res.MaxRSS
			b.ServerCPUSeconds = t.serverCPU() - cpu0
			b.CPUSeconds = res.CPU.Seconds() + b.ServerCPUSeconds
			r := t.result()
			if n == 0 {
				r.First = b
			} else {
				r.Incrementals = append(r.Incrementals, b)
			}
			r.BackupRSSKiB = max(r.BackupRSSKiB, res.MaxRSS)
			extra := ""
			if b.BytesRead > 0 {
				extra = fmt.Sprintf(", new %s, sent %s", humanBytes(b.BytesNew), humanBytes(b.BytesSent))
			}
			logf("  %-6s backup %2d: %6.2fs  %7.1f MB/s  CPU %6.2fs  RSS %s%s", t.name(), n, b.Seconds, b.MBps, b.CPUSeconds, humanBytes(res.MaxRSS<<10), extra)
		}
		return nil
	}
	logf("first backups")
	if err := doBackups(0); err != nil {
		return err
	}
	for i := 1; i <= *rounds; i++ {
		rr, err := vol.change(i)
		if err != nil {
			return err
		}
		logf("round %d: %s; wrote %s; changed %.2f %% of 4 KiB blocks (%s), %.2f %% of 64 KiB blocks; e2fsck clean",
			i, rr.Ops, humanBytes(rr.BytesWritten), 100*rr.Changed4K, humanBytes(rr.ChangedBytes4K), 100*rr.Changed64K)
		if err := doBackups(i); err != nil {
			return err
		}
	}
	for _, t := range tools {
		if err := t.stopIngest(); err != nil {
			return fmt.Errorf("%s: %w", t.name(), err)
		}
	}

	want, err := fileSHA256(vol.image)
	if err != nil {
		return err
	}
	for _, t := range tools {
		r := t.result()
		if len(r.Incrementals) > 0 {
			var s float64
			for _, b := range r.Incrementals {
				s += b.MBps
				r.IncrMeanCPU += b.CPUSeconds
			}
			r.IncrMeanMBps = s / float64(len(r.Incrementals))
			r.IncrMeanCPU /= float64(len(r.Incrementals))
		}
		if r.RepoBytes, err = dirBytes(t.repoDir()); err != nil {
			return err
		}
		dir := filepath.Join(*work, "restore-"+t.name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		out, res, err := t.restore(dir)
		if err != nil {
			return fmt.Errorf("%s: restore: %w", t.name(), err)
		}
		got, err := fileSHA256(out)
		if err != nil {
			return fmt.Errorf("%s: restore: %w", t.name(), err)
		}
		if got != want {
			return fmt.Errorf("%s: restored image %s has sha256 %s, the image has %s", t.name(), out, got, want)
		}
		r.RestoreVerified = true
		r.RestoreSeconds, r.RestoreMBps, r.RestoreRSSKiB = res.Wall.Seconds(), mbps(size, res.Wall), res.MaxRSS
		r.RestoreCPU = res.CPU.Seconds()
		logf("  %-6s restore: %6.2fs  %7.1f MB/s  RSS %s  sha256 ok; repository %s",
			t.name(), r.RestoreSeconds, r.RestoreMBps, humanBytes(res.MaxRSS<<10), humanBytes(r.RepoBytes))
		os.RemoveAll(dir)
		if t.name() == "rewind" {
			if r.CatalogBytes, err = catalogBytes(t.repoDir()); err != nil {
				return err
			}
			if r.UniqueBytes, err = uniqueBytes(ctx, t.repoDir()); err != nil {
				return err
			}
			if r.UniqueBytes > 0 {
				r.CatalogRatio = float64(r.CatalogBytes) / float64(r.UniqueBytes)
			}
		}
	}

	if *ingestGiB > 0 && hasTool(tools, "rewind") {
		ir, err := runIngest(ctx, rn, bin, *work, int64(*ingestGiB*(1<<30)), logf)
		if err != nil {
			return fmt.Errorf("ingest phase: %w", err)
		}
		rep.Ingest = &ir
	}

	rep.Targets = targets(rep, *ingestGiB)
	printReport(os.Stdout, rep)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
		logf("wrote %s", *jsonOut)
	}
	return nil
}

func hasTool(tools []tool, name string) bool {
	for _, t := range tools {
		if t.name() == name {
			return true
		}
	}
	return false
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func findResult(rep *report, name string) *toolResult {
	for _, r := range rep.Tools {
		if r.Tool == name {
			return r
		}
	}
	return nil
}

// targets checks the benchmark targets against the figures.
func targets(rep *report, ingestGiB float64) []targetCheck {
	var out []targetCheck
	rw, rs, bg := findResult(rep, "rewind"), findResult(rep, "restic"), findResult(rep, "borg")
	if rw == nil {
		return nil
	}
	ratio := func(what string, a, b, min float64) {
		if b > 0 {
			v := a / b
			out = append(out, targetCheck{what, v, fmt.Sprintf(">= %gx", min), v >= min})
		}
	}
	if rs != nil {
		ratio("first backup MB/s, rewind / restic", rw.First.MBps, rs.First.MBps, 2)
		ratio("restore MB/s, rewind / restic", rw.RestoreMBps, rs.RestoreMBps, 2)
	}
	if bg != nil {
		ratio("first backup MB/s, rewind / borg", rw.First.MBps, bg.First.MBps, 3)
	}
	if in := rep.Ingest; in != nil {
		mib := float64(in.ServerRSSKiB) / 1024
		out = append(out, targetCheck{fmt.Sprintf("rewind server peak RSS ingesting %g GiB (MiB)", ingestGiB), mib, "< 300 MiB", mib < 300})
		out = append(out, targetCheck{fmt.Sprintf("catalog+index / unique data, %g GiB ingest (%%)", ingestGiB), 100 * in.CatalogRatio, "< 0.5 %", in.CatalogRatio < 0.005})
	}
	if rw.UniqueBytes > 0 {
		out = append(out, targetCheck{fmt.Sprintf("catalog+index / unique data, %s image + %d rounds (%%)", humanBytes(rep.ImageBytes), len(rw.Incrementals)),
			100 * rw.CatalogRatio, "< 0.5 %", rw.CatalogRatio < 0.005})
	}
	return out
}

func printReport(w io.Writer, rep *report) {
	fmt.Fprintf(w, "\nRewind benchmark, %s, %d CPUs, %s\n", rep.Host, rep.CPUs, rep.Started.Format(time.RFC3339))
	v := rep.Volume
	fmt.Fprintf(w, "\nVolume image: %s ext4, %.1f %% of its blocks empty\n", humanBytes(rep.ImageBytes), 100*v.EmptyFraction)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "category\tfiles\tbytes\t")
	for _, c := range sortedCats(v.Content) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t\n", c, v.Content[c].Files, humanBytes(v.Content[c].Bytes))
	}
	tw.Flush()
	if len(v.Rounds) > 0 {
		fmt.Fprintf(w, "\nChange rounds (debugfs; e2fsck -fn clean after each):\n")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "round\tfile data written\tchanged 4 KiB blocks\t(bytes)\tchanged 64 KiB blocks\t(bytes)\toperations\t")
		for _, r := range v.Rounds {
			fmt.Fprintf(tw, "%d\t%s\t%.2f %%\t%s\t%.2f %%\t%s\t%s\t\n", r.Round, humanBytes(r.BytesWritten),
				100*r.Changed4K, humanBytes(r.ChangedBytes4K), 100*r.Changed64K, humanBytes(r.ChangedBytes64K), r.Ops)
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\nBackup tools (MB/s = image bytes / wall seconds, 1 MB = 10^6 bytes):\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tool\tfirst backup MB/s\tincremental MB/s\trepository bytes\trestore MB/s\tpeak RSS backup\tpeak RSS server\tpeak RSS restore\t")
	fmt.Fprintln(tw, "\t(CPU s)\t(mean CPU s)\t\t(CPU s)\t\t\t\t")
	for _, r := range rep.Tools {
		srv := "-"
		if r.ServerRSSKiB > 0 {
			srv = humanBytes(r.ServerRSSKiB << 10)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%d (%s)\t%.1f\t%s\t%s\t%s\t\n", r.Tool, r.First.MBps, r.IncrMeanMBps, r.RepoBytes, humanBytes(r.RepoBytes),
			r.RestoreMBps, humanBytes(r.BackupRSSKiB<<10), srv, humanBytes(r.RestoreRSSKiB<<10))
		fmt.Fprintf(tw, "\t(%.1f)\t(%.1f)\t\t(%.1f)\t\t\t\t\n", r.First.CPUSeconds, r.IncrMeanCPU, r.RestoreCPU)
	}
	tw.Flush()
	for _, r := range rep.Tools {
		fmt.Fprintf(w, "  %s: %s\n", r.Tool, r.Version)
	}
	if rw := findResult(rep, "rewind"); rw != nil && len(rw.Incrementals) > 0 {
		var sent, news int64
		for _, b := range rw.Incrementals {
			sent += b.BytesSent
			news += b.BytesNew
		}
		fmt.Fprintf(w, "  rewind incrementals: %s sent, %s new stored in %d backups; first backup sent %s, stored %s\n",
			humanBytes(sent), humanBytes(news), len(rw.Incrementals), humanBytes(rw.First.BytesSent), humanBytes(rw.First.BytesNew))
	}

	if rw := findResult(rep, "rewind"); rw != nil {
		fmt.Fprintf(w, "\nRatios, rewind / other (higher is better for MB/s, lower for bytes and RSS):\n")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "vs\tfirst backup\tincremental\trepository bytes\trestore\tfirst backup CPU s\trestore CPU s\t")
		for _, r := range rep.Tools {
			if r.Tool == "rewind" {
				continue
			}
			fmt.Fprintf(tw, "%s\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t\n", r.Tool, div(rw.First.MBps, r.First.MBps), div(rw.IncrMeanMBps, r.IncrMeanMBps),
				div(float64(rw.RepoBytes), float64(r.RepoBytes)), div(rw.RestoreMBps, r.RestoreMBps),
				div(rw.First.CPUSeconds, r.First.CPUSeconds), div(rw.RestoreCPU, r.RestoreCPU))
		}
		tw.Flush()
		fmt.Fprintf(w, "  (CPU s depend much less on other load than MB/s: on a shared machine compare those.)\n")
	}
	if in := rep.Ingest; in != nil {
		fmt.Fprintf(w, "\nIngest: %s (%s text-like, %s random, %s zeros) to a fresh rewind server: %.1f MB/s, stored %s new;\n",
			humanBytes(in.Bytes), humanBytes(in.TextBytes), humanBytes(in.RandomBytes), humanBytes(in.ZeroBytes), in.MBps, humanBytes(in.BytesNew))
		fmt.Fprintf(w, "  server peak RSS %s, client peak RSS %s; catalog %s (%s while running) for %s unique data\n",
			humanBytes(in.ServerRSSKiB<<10), humanBytes(in.ClientRSSKiB<<10), humanBytes(in.CatalogBytes), humanBytes(in.CatalogBytesRunning), humanBytes(in.UniqueBytes))
	}
	if rep.Floor != nil {
		var borg float64
		if r := findResult(rep, "borg"); r != nil {
			borg = r.First.MBps
		}
		printFloor(w, rep.Floor, borg)
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintf(w, "\nTargets (issue 2):\n")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, t := range rep.Targets {
			met := "met"
			if !t.Met {
				met = "NOT met"
			}
			fmt.Fprintf(tw, "  %s\t%.3f\t%s\t%s\n", t.What, t.Value, t.Target, met)
		}
		tw.Flush()
	}
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
