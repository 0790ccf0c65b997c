package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// command is exec.CommandContext that never leaves a child behind when
// the context ends (it gets SIGTERM, then SIGKILL).
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 10 * time.Second
	return c
}

func runCmd(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	c := command(ctx, name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), env...)
	var errb bytes.Buffer
	c.Stderr = &errb
	out, err := c.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tailOf(errb.String(), 20))
	}
	return out, nil
}

func tailOf(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// dataset is the tree both tools back up: src/many/ with the listed
// entries, src/big.bin, and a few files added before each later point.
type dataset struct {
	dir     string
	entries int
	big     int64
	src     string
	img     string // ext4 image of src, for rewind
}

// stage writes src and the ext4 image of point 0.
func (d *dataset) stage() error {
	d.src = filepath.Join(d.dir, "src")
	many := filepath.Join(d.src, "many")
	if err := os.MkdirAll(many, 0o755); err != nil {
		return err
	}
	logf("staging %d small files and a %d MiB file", d.entries, d.big>>20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range d.entries {
		b := make([]byte, r.IntN(4096))
		fillMixed(r, b)
		if err := os.WriteFile(filepath.Join(many, fmt.Sprintf("entry-%05d.txt", i)), b, 0o644); err != nil {
			return err
		}
	}
	f, err := os.Create(filepath.Join(d.src, "big.bin"))
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < d.big; off += int64(len(buf)) {
		fillMixed(r, buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), d.big-off)]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	d.img = filepath.Join(d.dir, "volume.img")
	size := d.big + int64(d.entries)*8192 + 256<<20
	if err := os.WriteFile(d.img, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(d.img, size); err != nil {
		return err
	}
	logf("mkfs.ext4 -d: a %d MiB volume image of the tree", size>>20)
	_, err = runCmd(context.Background(), "", nil, "mkfs.ext4", "-q", "-F", "-L", "bench", "-d", d.src, d.img)
	return err
}

// fillMixed fills b with data that compresses about as real files do:
// random 4 KiB runs between runs of text.
func fillMixed(r *rand.Rand, b []byte) {
	const text = "the quick brown fox jumps over the lazy dog; 0123456789\n"
	for off := 0; off < len(b); off += 4096 {
		end := min(off+4096, len(b))
		if r.IntN(2) == 0 {
			for i := off; i < end; i++ {
				b[i] = byte(r.Uint32())
			}
		} else {
			for i := off; i < end; i++ {
				b[i] = text[(i+off/7)%len(text)]
			}
		}
	}
}

// change adds ten files to many/ before point i, in src and, with image,
// in the volume image too (debugfs writes them into the unmounted ext4).
func (d *dataset) change(ctx context.Context, i int, image bool) error {
	var cmds strings.Builder
	for j := range 10 {
		name := fmt.Sprintf("added-%d-%d.txt", i, j)
		p := filepath.Join(d.src, "many", name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("point %d file %d\n", i, j)), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&cmds, "write %s many/%s\n", p, name)
	}
	if !image {
		return nil
	}
	cf := filepath.Join(d.dir, fmt.Sprintf("debugfs-%d.cmd", i))
	if err := os.WriteFile(cf, []byte(cmds.String()), 0o644); err != nil {
		return err
	}
	_, err := runCmd(ctx, "", nil, "debugfs", "-w", "-f", cf, d.img)
	return err
}

// proc is a running mount process; its output goes to a log file.
type proc struct {
	cmd  *exec.Cmd
	log  string
	dir  string
	done chan struct{}
}

func startProc(ctx context.Context, logFile, mnt string, env []string, name string, args ...string) (*proc, error) {
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	c := exec.Command(name, args...)
	c.Env = append(os.Environ(), env...)
	c.Stdout, c.Stderr = lf, lf
	if err := c.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	p := &proc{cmd: c, log: logFile, dir: mnt, done: make(chan struct{})}
	go func() { c.Wait(); lf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// cpu is the user and system time the process has used so far (from
// /proc; clock ticks of 10 ms).
func (p *proc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	return tailOf(string(b), 20)
}

// stop stops the mount process (SIGINT: both tools unmount on it), kills
// it if it hangs, and detaches a mount left behind.
func (p *proc) stop() error {
	var err error
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			err = fmt.Errorf("%s did not exit 30 s after SIGINT; killed", filepath.Base(p.cmd.Path))
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	if b, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(b), " "+p.dir+" ") {
		syscall.Unmount(p.dir, syscall.MNT_DETACH)
		if err == nil {
			err = fmt.Errorf("%s was still mounted after %s exited; detached", p.dir, filepath.Base(p.cmd.Path))
		}
	}
	return err
}

// rewindTool runs this tree's rewind: a server on loopback for the
// backups, then `rewind mount` of the whole repository.
type rewindTool struct {
	work   string
	bin    string
	repo   string
	points []string // point directory names
}

func (t *rewindTool) name() string    { return "rewind" }
func (t *rewindTool) version() string { return "this tree" }

func (t *rewindTool) backup(ctx context.Context, d *dataset) error {
	if err := os.MkdirAll(t.work, 0o755); err != nil {
		return err
	}
	t.bin = filepath.Join(t.work, "rewind")
	if _, err := runCmd(ctx, "", nil, "go", "build", "-o", t.bin, "./cmd/rewind"); err != nil {
		return fmt.Errorf("%w (run mountbench from the module root)", err)
	}
	t.repo = filepath.Join(t.work, "repo")
	srv, err := startProc(ctx, filepath.Join(t.work, "server.log"), "", nil, t.bin, "server", "--repo", t.repo, "--listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer srv.stop()
	addr, err := waitListen(srv)
	if err != nil {
		return err
	}
	out, err := runCmd(ctx, "", nil, t.bin, "machine", "add", "bench", "--repo", t.repo)
	if err != nil {
		return err
	}
	token := strings.TrimSpace(string(out))
	for i := range 3 {
		if i > 0 {
			if err := d.change(ctx, i, true); err != nil {
				return err
			}
		}
		out, err := runCmd(ctx, "", nil, t.bin, "backup", "--server", "https://"+addr, "--ca", filepath.Join(t.repo, "server.crt"),
			"--token", token, "--machine", "bench", "--volume", "data", "--json", d.img)
		if err != nil {
			return err
		}
		var s struct {
			Point struct{ Time string } `json:"point"`
		}
		if err := json.Unmarshal(out, &s); err != nil {
			return fmt.Errorf("backup --json: %w: %s", err, out)
		}
		pt, err := time.Parse(time.RFC3339Nano, s.Point.Time)
		if err != nil {
			return err
		}
		t.points = append(t.points, pt.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	// restic backs up the same tree; undo the image's changes in src so
	// that both tools see the same three states.
	return d.reset()
}

var listenRe = regexp.MustCompile(`listening"? addr=(\S+)`)

func waitListen(p *proc) (string, error) {
	for range 600 {
		if m := listenRe.FindStringSubmatch(p.tail()); m != nil {
			return m[1], nil
		}
		if p.exited() {
			return "", fmt.Errorf("rewind server exited:\n%s", p.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("rewind server did not listen in 30 s")
}

func (t *rewindTool) startMount(ctx context.Context, dir string) (*proc, error) {
	return startProc(ctx, filepath.Join(t.work, "mount.log"), dir, nil, t.bin, "mount", dir, "--repo", t.repo)
}

func (t *rewindTool) pointDir(mnt string, i int) (string, error) {
	return filepath.Join(mnt, "bench", "data", t.points[i], "files"), nil
}

// reset removes the files change added, back to point 0's tree.
func (d *dataset) reset() error {
	added, err := filepath.Glob(filepath.Join(d.src, "many", "added-*"))
	if err != nil {
		return err
	}
	for _, p := range added {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return nil
}

// resticTool backs the tree up with restic (files, its natural unit) and
// browses it with `restic mount`.
type resticTool struct {
	work  string
	repo  string
	cache string
	src   string
	ids   []string
}

func (t *resticTool) name() string { return "restic" }
func (t *resticTool) version() string {
	out, err := exec.Command("restic", "version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimPrefix(strings.Fields(string(out))[1], "v")
}

func (t *resticTool) env() []string {
	return []string{"RESTIC_PASSWORD=mountbench", "RESTIC_REPOSITORY=" + t.repo, "RESTIC_CACHE_DIR=" + t.cache}
}

func (t *resticTool) backup(ctx context.Context, d *dataset) error {
	t.repo, t.cache, t.src = filepath.Join(t.work, "repo"), filepath.Join(t.work, "cache"), d.src
	if err := os.MkdirAll(t.work, 0o755); err != nil {
		return err
	}
	if _, err := runCmd(ctx, "", t.env(), "restic", "init"); err != nil {
		return err
	}
	for i := range 3 {
		if i > 0 {
			if err := d.change(ctx, i, false); err != nil {
				return err
			}
		}
		out, err := runCmd(ctx, "", t.env(), "restic", "backup", "--json", d.src)
		if err != nil {
			return err
		}
		id := ""
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			var m struct {
				Type string `json:"message_type"`
				ID   string `json:"snapshot_id"`
			}
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Type == "summary" {
				id = m.ID
			}
		}
		if len(id) < 8 {
			return fmt.Errorf("restic backup --json printed no snapshot id")
		}
		t.ids = append(t.ids, id[:8])
	}
	return d.reset()
}

func (t *resticTool) startMount(ctx context.Context, dir string) (*proc, error) {
	return startProc(ctx, filepath.Join(t.work, "mount.log"), dir, t.env(), "restic", "mount", dir)
}

// pointDir: restic mount shows a snapshot under ids/<short id>/ with the
// backed-up directory's absolute path.
func (t *resticTool) pointDir(mnt string, i int) (string, error) {
	p := filepath.Join(mnt, "ids", t.ids[i], strings.TrimPrefix(t.src, "/"))
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}
