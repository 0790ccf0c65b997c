// Command exportbench measures getting a whole volume back, against
// restic in the same run: restore of a volume image, `rewind export` in
// every format, and an in-place rollback after about 2 % of the blocks
// changed against a full restore. Run it from the module root:
//
//	go run ./tools/exportbench [-size 1GiB] [-json out.json]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rewind-cdp/rewind/tools/imagegen"
)

type measure struct {
	What    string  `json:"what"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
	Bytes   int64   `json:"bytes"`
	VsRest  float64 `json:"vs_restic_restore,omitempty"`
	Target  string  `json:"target,omitempty"`
	Met     *bool   `json:"met,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "exportbench:", err)
		os.Exit(1)
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
}

func run() error {
	sizeFlag := flag.String("size", "1GiB", "volume image size (MiB or GiB suffix)")
	work := flag.String("work", "", "work directory (default: a new temporary directory, removed at the end)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	compare := flag.Bool("compare", true, "check every export with qemu-img compare against the restore, and qemu-img check")
	flag.Parse()
	size, err := parseSize(*sizeFlag)
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("restic"); err != nil {
		return fmt.Errorf("restic is needed for the comparison (Debian package restic): %w", err)
	}
	if *work == "" {
		d, err := os.MkdirTemp("", "exportbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*work = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	bin := filepath.Join(*work, "rewind")
	logf("building rewind")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/rewind").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	img := filepath.Join(*work, "disk.img")
	logf("writing a %d MiB image (text, random and empty regions)", size>>20)
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	if err := imagegen.Write(f, size, 42); err != nil {
		f.Close()
		return err
	}
	f.Close()

	repo := filepath.Join(*work, "repo")
	env := append(os.Environ(), "REWIND_REPO="+repo)
	runBin := func(args ...string) ([]byte, time.Duration, error) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		out, err := cmd.Output()
		if err != nil {
			return out, 0, fmt.Errorf("rewind %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return out, time.Since(start), nil
	}
	tok, _, err := runBin("machine", "add", "bench")
	if err != nil {
		return err
	}
	srv := exec.CommandContext(ctx, bin, "server", "--listen", "127.0.0.1:0")
	srv.Env = env
	pr, pw := io.Pipe()
	srv.Stderr = pw
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`listening"? addr=(\S+)`)
		buf := make([]byte, 4096)
		var seen []byte
		for {
			n, err := pr.Read(buf)
			seen = append(seen, buf[:n]...)
			if m := re.FindSubmatch(seen); m != nil {
				addr <- string(m[1])
				io.Copy(io.Discard, pr)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var url string
	select {
	case a := <-addr:
		url = "https://" + a
	case <-time.After(30 * time.Second):
		return fmt.Errorf("rewind server did not start")
	}
	backup := func() error {
		_, _, err := runBin("backup", "--server", url, "--ca", filepath.Join(repo, "server.crt"), "--token", strings.TrimSpace(string(tok)),
			"--machine", "bench", "--volume", "disk", img)
		return err
	}
	logf("rewind backup")
	if err := backup(); err != nil {
		return err
	}

	restic := filepath.Join(*work, "restic-repo")
	renv := append(os.Environ(), "RESTIC_REPOSITORY="+restic, "RESTIC_PASSWORD=bench", "RESTIC_CACHE_DIR="+filepath.Join(*work, "restic-cache"))
	runRestic := func(args ...string) (time.Duration, error) {
		cmd := exec.CommandContext(ctx, "restic", args...)
		cmd.Env = renv
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("restic %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return time.Since(start), nil
	}
	logf("restic backup")
	if _, err := runRestic("init"); err != nil {
		return err
	}
	if _, err := runRestic("backup", img); err != nil {
		return err
	}

	var ms []measure
	add := func(what string, d time.Duration, target string, metFn func(mbps float64) bool) measure {
		m := measure{What: what, Seconds: d.Seconds(), Bytes: size, MBps: float64(size) / 1e6 / d.Seconds(), Target: target}
		if metFn != nil {
			met := metFn(m.MBps)
			m.Met = &met
		}
		ms = append(ms, m)
		logf("%s: %.1f MB/s", what, m.MBps)
		return m
	}
	out := filepath.Join(*work, "out")
	fresh := func() { os.RemoveAll(out); os.MkdirAll(out, 0o755); exec.Command("sync").Run() }

	fresh()
	d, err := runRestic("restore", "latest", "--target", out)
	if err != nil {
		return err
	}
	rest := add("restic restore", d, "", nil)
	vs := func(m *measure) { m.VsRest = m.MBps / rest.MBps }

	fresh()
	restored := filepath.Join(*work, "restored.img")
	if _, d, err = runBin("restore", "--machine", "bench", "--volume", "disk", "--to", restored); err != nil {
		return err
	}
	add("rewind restore", d, "≥ 2× restic", func(v float64) bool { return v >= 2*rest.MBps })
	vs(&ms[len(ms)-1])
	for _, fmtName := range []string{"raw", "vhd", "vhd-fixed", "vhdx", "vmdk", "vmdk-stream", "qcow2"} {
		fresh()
		if _, d, err = runBin("export", "--machine", "bench", "--volume", "disk", "--format", fmtName, "--out", filepath.Join(out, "x."+fmtName)); err != nil {
			return err
		}
		target, fn := "", (func(float64) bool)(nil)
		if fmtName == "raw" || fmtName == "vhd" {
			target, fn = "≥ 300 MB/s and ≥ 2× restic", func(v float64) bool { return v >= 300 && v >= 2*rest.MBps }
		}
		add("export "+fmtName, d, target, fn)
		vs(&ms[len(ms)-1])
		if *compare {
			if err := qemuCheck(ctx, fmtName, filepath.Join(out, "x."+fmtName), restored); err != nil {
				return err
			}
		}
	}
	os.Remove(restored)

	// Rollback: change ~2 % of the blocks, back up, then bring the changed
	// image back to the first point in place; compare with a full restore.
	logf("rollback: changing 2 %% of the image")
	if _, err := imagegen.Mutate(img, 64<<10, 0.02, 7); err != nil {
		return err
	}
	if err := backup(); err != nil {
		return err
	}
	fresh()
	if _, d, err = runBin("restore", "--machine", "bench", "--volume", "disk", "--at", "1", "--to", filepath.Join(out, "full.img")); err != nil {
		return err
	}
	full := add("full restore of point 1", d, "", nil)
	os.Remove(filepath.Join(out, "full.img"))
	for _, mode := range []string{"hash compare", "catalog (--target-point)"} {
		target := filepath.Join(out, "rb.img")
		if err := copyFile(img, target); err != nil {
			return err
		}
		exec.Command("sync").Run()
		args := []string{"restore", "--machine", "bench", "--volume", "disk", "--at", "1", "--to", target, "--force", "--json"}
		if mode != "hash compare" {
			args = append(args, "--target-point", "2")
		}
		o, d, err := runBin(args...)
		if err != nil {
			return err
		}
		var sum struct {
			BytesWritten int64 `json:"bytes_written"`
		}
		json.Unmarshal(o, &sum)
		m := add(fmt.Sprintf("rollback, %s (wrote %.2f %%)", mode, 100*float64(sum.BytesWritten)/float64(size)), d, "", nil)
		logf("  %.1f× the full restore's speed", m.MBps/full.MBps)
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%d MiB volume\tseconds\tMB/s\tvs restic restore\ttarget\tmet\n", size>>20)
	for _, m := range ms {
		met := ""
		if m.Met != nil {
			met = fmt.Sprint(*m.Met)
		}
		ratio := ""
		if m.VsRest != 0 {
			ratio = fmt.Sprintf("%.2f×", m.VsRest)
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.1f\t%s\t%s\t%s\n", m.What, m.Seconds, m.MBps, ratio, m.Target, met)
	}
	tw.Flush()
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(ms, "", "  ")
		return os.WriteFile(*jsonOut, b, 0o644)
	}
	return nil
}

// qemuCheck runs qemu-img compare of an export against the raw restore,
// and qemu-img check where the format has one.
func qemuCheck(ctx context.Context, format, path, raw string) error {
	qf := map[string]string{"raw": "raw", "vhd": "vpc", "vhd-fixed": "vpc", "vhdx": "vhdx", "vmdk": "vmdk", "vmdk-stream": "vmdk", "qcow2": "qcow2"}[format]
	out, err := exec.CommandContext(ctx, "qemu-img", "compare", "-f", qf, "-F", "raw", path, raw).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img compare of the %s export: %v\n%s", format, err, out)
	}
	logf("  qemu-img compare: %s", strings.TrimSpace(string(out)))
	if qf == "vhdx" || qf == "vmdk" || qf == "qcow2" {
		out, err := exec.CommandContext(ctx, "qemu-img", "check", "-f", qf, path).CombinedOutput()
		if err != nil {
			return fmt.Errorf("qemu-img check of the %s export: %v\n%s", format, err, out)
		}
		logf("  qemu-img check: %s", lastLine(string(out)))
	}
	return nil
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func parseSize(s string) (int64, error) {
	var n int64
	var unit string
	if _, err := fmt.Sscanf(s, "%d%s", &n, &unit); err != nil || n <= 0 {
		return 0, fmt.Errorf("-size %q: want e.g. 512MiB or 1GiB", s)
	}
	switch strings.ToLower(unit) {
	case "mib", "m":
		return n << 20, nil
	case "gib", "g":
		return n << 30, nil
	}
	return 0, fmt.Errorf("-size %q: unit must be MiB or GiB", s)
}
