package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// backupRun is one backup of the image by one tool.
type backupRun struct {
	Round   int     `json:"round"` // 0 is the first backup
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"` // image size / wall time
	RSSKiB  int64   `json:"peak_rss_kib"`
	// CPUSeconds is user+system time of the backup command plus, for
	// rewind, the server's CPU time during it (ServerCPUSeconds).
	CPUSeconds       float64 `json:"cpu_seconds"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds,omitempty"`
	BytesRead        int64   `json:"bytes_read,omitempty"` // rewind only, from --json
	BytesNew         int64   `json:"bytes_new,omitempty"`
	BytesSent        int64   `json:"bytes_sent,omitempty"`
}

// toolResult is everything measured for one tool.
type toolResult struct {
	Tool            string      `json:"tool"`
	Version         string      `json:"version"`
	First           backupRun   `json:"first_backup"`
	Incrementals    []backupRun `json:"incrementals"`
	IncrMeanMBps    float64     `json:"incremental_mean_mb_per_s"`
	IncrMeanCPU     float64     `json:"incremental_mean_cpu_seconds"`
	RepoBytes       int64       `json:"repository_bytes"`
	RestoreSeconds  float64     `json:"restore_seconds"`
	RestoreMBps     float64     `json:"restore_mb_per_s"`
	RestoreVerified bool        `json:"restore_sha256_ok"`
	BackupRSSKiB    int64       `json:"backup_peak_rss_kib"` // the client, over all backups
	ServerRSSKiB    int64       `json:"server_peak_rss_kib,omitempty"`
	RestoreRSSKiB   int64       `json:"restore_peak_rss_kib"`
	RestoreCPU      float64     `json:"restore_cpu_seconds"`
	// Rewind only: catalog.db + catalog.db-wal over the unique data stored.
	CatalogBytes int64   `json:"catalog_bytes,omitempty"`
	UniqueBytes  int64   `json:"unique_bytes,omitempty"`
	CatalogRatio float64 `json:"catalog_ratio,omitempty"`
}

// tool is one backup program under test.
type tool interface {
	name() string
	version() string
	setup() error
	// backup backs up image as backup number n (0 is the first).
	backup(image string, n int) (runResult, backupRun, error)
	// serverCPU is the CPU seconds used so far by a server process the
	// tool runs beside its backup command (rewind), else 0.
	serverCPU() float64
	// stopIngest ends anything serving backups (rewind's server).
	stopIngest() error
	// restore restores the latest backup into dir and returns the file.
	restore(dir string) (string, runResult, error)
	repoDir() string
	result() *toolResult
}

// ---- rewind ----

type rewindTool struct {
	run    *runner
	bin    string
	repo   string
	logDir string
	srv    *server
	token  string
	res    toolResult
	logf   func(string, ...any)
}

// server is a running `rewind server` child process.
type server struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	err  error
}

// startServer starts `rewind server` on a free loopback port and waits
// until it accepts connections.
func startServer(ctx context.Context, bin, repo, logFile string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "server", "--repo", repo, "--listen", addr)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	s := &server{cmd: cmd, addr: addr, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		log.Close()
		close(s.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("rewind server exited before listening: %v\n%s", s.err, tail(string(b), 20))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("rewind server did not listen on %s within 30s (log %s)", addr, logFile)
		}
	}
}

// cpuSeconds reads the running server's user+system time from
// /proc/PID/stat (clock ticks, 100 per second on Linux).
func (s *server) cpuSeconds() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	var ut, st float64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return (ut + st) / 100
}

// stop sends SIGTERM to the server, waits for it (SIGKILL after 60 s) and
// returns its peak RSS in KiB.
func (s *server) stop() (int64, error) {
	select {
	case <-s.done:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(60 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
			return 0, errors.New("rewind server did not stop within 60s of SIGTERM; killed")
		}
	}
	var rss int64
	if ru, ok := s.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = int64(ru.Maxrss)
	}
	if !s.cmd.ProcessState.Success() {
		return rss, fmt.Errorf("rewind server exited with %v", s.cmd.ProcessState)
	}
	return rss, nil
}

func (t *rewindTool) name() string { return "rewind" }
func (t *rewindTool) serverCPU() float64 {
	if t.srv == nil {
		return 0
	}
	return t.srv.cpuSeconds()
}
func (t *rewindTool) repoDir() string { return t.repo }
func (t *rewindTool) version() string {
	// rewind has no --version; name the source tree's commit instead.
	out, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if v := strings.TrimSpace(string(out)); v != "" {
		return "rewind @ " + v + " (+ working tree)"
	}
	return "rewind (this tree)"
}

// newMachine starts a server on repo and registers machine "bench".
func newMachine(run *runner, bin, repo, logFile string) (*server, string, error) {
	srv, err := startServer(run.ctx, bin, repo, logFile)
	if err != nil {
		return nil, "", err
	}
	res, err := run.run("", nil, bin, "machine", "add", "bench", "--repo", repo)
	if err != nil {
		srv.stop()
		return nil, "", err
	}
	return srv, strings.TrimSpace(string(res.Stdout)), nil
}

func (t *rewindTool) setup() error {
	var err error
	t.srv, t.token, err = newMachine(t.run, t.bin, t.repo, filepath.Join(t.logDir, "rewind-server.log"))
	return err
}

func rewindBackup(run *runner, bin string, srv *server, repo, token, image string) (runResult, backupRun, error) {
	res, err := run.run("", nil, bin, "backup", "--server", "https://"+srv.addr, "--ca", filepath.Join(repo, "server.crt"),
		"--token", token, "--machine", "bench", "--volume", "disk", image, "--json")
	if err != nil {
		return res, backupRun{}, err
	}
	var out struct {
		BytesRead int64 `json:"bytes_read"`
		BytesNew  int64 `json:"bytes_new"`
		BytesSent int64 `json:"bytes_sent"`
	}
	if err := json.Unmarshal(res.Stdout, &out); err != nil {
		return res, backupRun{}, fmt.Errorf("rewind backup --json printed %q: %w", tail(string(res.Stdout), 3), err)
	}
	return res, backupRun{BytesRead: out.BytesRead, BytesNew: out.BytesNew, BytesSent: out.BytesSent}, nil
}

func (t *rewindTool) backup(image string, n int) (runResult, backupRun, error) {
	return rewindBackup(t.run, t.bin, t.srv, t.repo, t.token, image)
}

func (t *rewindTool) stopIngest() error {
	if t.srv == nil {
		return nil
	}
	rss, err := t.srv.stop()
	t.srv = nil
	t.res.ServerRSSKiB = rss
	return err
}

func (t *rewindTool) restore(dir string) (string, runResult, error) {
	out := filepath.Join(dir, "disk.img")
	res, err := t.run.run("", nil, t.bin, "restore", "--repo", t.repo, "--machine", "bench", "--volume", "disk", "--at", "latest", "--to", out)
	return out, res, err
}

func (t *rewindTool) result() *toolResult { return &t.res }

// ---- restic ----

type resticTool struct {
	run  *runner
	repo string
	env  []string
	res  toolResult
}

func newRestic(run *runner, work string) *resticTool {
	repo := filepath.Join(work, "restic-repo")
	return &resticTool{run: run, repo: repo, env: []string{
		"RESTIC_PASSWORD=rewind-bench", "RESTIC_REPOSITORY=" + repo,
		"RESTIC_CACHE_DIR=" + filepath.Join(work, "restic-cache"),
	}}
}

func (t *resticTool) name() string       { return "restic" }
func (t *resticTool) serverCPU() float64 { return 0 }
func (t *resticTool) repoDir() string    { return t.repo }
func (t *resticTool) version() string    { return toolVersion("restic", "version") }
func (t *resticTool) setup() error {
	_, err := t.run.run("", t.env, "restic", "init")
	return err
}

func (t *resticTool) backup(image string, n int) (runResult, backupRun, error) {
	res, err := t.run.run("", t.env, "restic", "backup", image)
	return res, backupRun{}, err
}

func (t *resticTool) stopIngest() error { return nil }

func (t *resticTool) restore(dir string) (string, runResult, error) {
	res, err := t.run.run("", t.env, "restic", "restore", "latest", "--target", dir)
	if err != nil {
		return "", res, err
	}
	f, err := findOneFile(dir)
	return f, res, err
}

func (t *resticTool) result() *toolResult { return &t.res }

// ---- borg ----

type borgTool struct {
	run  *runner
	repo string
	env  []string
	res  toolResult
	last string
}

func newBorg(run *runner, work string) *borgTool {
	repo := filepath.Join(work, "borg-repo")
	return &borgTool{run: run, repo: repo, env: []string{
		"BORG_BASE_DIR=" + filepath.Join(work, "borg-home"), "BORG_PASSPHRASE=",
		"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes", "BORG_RELOCATED_REPO_ACCESS_IS_OK=yes",
	}}
}

func (t *borgTool) name() string       { return "borg" }
func (t *borgTool) serverCPU() float64 { return 0 }
func (t *borgTool) repoDir() string    { return t.repo }
func (t *borgTool) version() string    { return toolVersion("borg", "--version") }
func (t *borgTool) setup() error {
	_, err := t.run.run("", t.env, "borg", "init", "-e", "none", t.repo)
	return err
}

func (t *borgTool) backup(image string, n int) (runResult, backupRun, error) {
	t.last = fmt.Sprintf("%s::n%02d", t.repo, n)
	res, err := t.run.run("", t.env, "borg", "create", t.last, image)
	return res, backupRun{}, err
}

func (t *borgTool) stopIngest() error { return nil }

func (t *borgTool) restore(dir string) (string, runResult, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", runResult{}, err
	}
	res, err := t.run.run(dir, t.env, "borg", "extract", t.last)
	if err != nil {
		return "", res, err
	}
	f, err := findOneFile(dir)
	return f, res, err
}

func (t *borgTool) result() *toolResult { return &t.res }

func toolVersion(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}
