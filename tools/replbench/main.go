// Command replbench measures replication between two Rewind servers on
// this machine (both in this process, each on its own repository, talking
// TLS over 127.0.0.1): a backup stream commits a new point of a volume
// about every second, each changing a fraction of its blocks, while
// `replicate` follows the source. It prints:
//
//   - the replica's lag during the steady phase: for every point, the time
//     from its commit on the source to the target's acknowledgement
//     (p50/p99/max);
//
//   - after a cut (the target server stopped for -cut, then restarted on
//     the same address) the time to catch up — from the restart until the
//     target holds every point committed before it — and the bytes sent
//     for the points made during the cut against the new unique bytes
//     those points stored on the source.
//
//     go run ./tools/replbench [-seconds 60] [-cut 60s] [-size 64MiB] [-change 0.02]
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rewind-cdp/rewind/ingest"
	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/tools/imagegen"
)

func main() {
	secs := flag.Int("seconds", 60, "seconds of steady workload before the cut")
	cut := flag.Duration("cut", 60*time.Second, "how long the target stays down")
	after := flag.Int("after-seconds", 20, "seconds of workload after the catch-up")
	size := flag.Int64("size", 64<<20, "volume size in bytes")
	change := flag.Float64("change", 0.02, "fraction of the volume's 64 KiB blocks each point changes")
	every := flag.Duration("every", time.Second, "time between points")
	interval := flag.Duration("interval", 250*time.Millisecond, "replicate's polling interval")
	work := flag.String("work", "", "work directory (default a new temporary one, removed afterwards)")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	dir := *work
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "replbench-"); err != nil {
			fail(err)
		}
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	src := startServer(ctx, filepath.Join(dir, "src"), "127.0.0.1:0")
	dst := startServer(ctx, filepath.Join(dir, "dst"), "127.0.0.1:0")
	tok := ingest.NewToken()
	if _, err := src.repo.Catalog.AddMachine(ctx, "web1", ingest.HashToken(tok)); err != nil {
		fail(err)
	}
	peerTok := ingest.NewToken()
	if _, err := dst.repo.Catalog.AddPeer(ctx, "siteA", ingest.HashToken(peerTok)); err != nil {
		fail(err)
	}
	// The replicator reads the source repository through its own handle,
	// as `rewind replicate` beside a running server does.
	srcRead, err := repository.Open(ctx, src.dir)
	if err != nil {
		fail(err)
	}
	defer srcRead.Close()

	// The workload: a point every -every, each changing -change of the
	// volume's blocks with new data.
	var img bytes.Buffer
	if err := imagegen.Write(&img, *size, 1); err != nil {
		fail(err)
	}
	data := img.Bytes()
	bc, err := ingest.NewClient(src.url, tok, tlsFor(src))
	if err != nil {
		fail(err)
	}
	type made struct {
		t        time.Time
		bytesNew int64
	}
	var mu sync.Mutex
	var points []made
	wctx, stopWork := context.WithCancel(ctx)
	workDone := make(chan struct{})
	go func() {
		defer close(workDone)
		rng := rand.New(rand.NewPCG(7, 7))
		nblk := int64(len(data)) / (64 << 10)
		tick := time.NewTicker(*every)
		defer tick.Stop()
		for {
			for range int(float64(nblk) * *change) {
				b := rng.Int64N(nblk) * (64 << 10)
				for i := b; i < b+64<<10; i += 8 {
					v := rng.Uint64()
					for k := range 8 {
						data[i+int64(k)] = byte(v >> (8 * k))
					}
				}
			}
			res, err := bc.Backup(wctx, ingest.BackupOptions{Machine: "web1", Volume: "root", Source: bytes.NewReader(data), Size: int64(len(data)), Workers: 2})
			if wctx.Err() != nil {
				return
			}
			if err != nil {
				fail(fmt.Errorf("workload backup: %w", err))
			}
			mu.Lock()
			points = append(points, made{res.Point.Time, res.BytesNew})
			mu.Unlock()
			select {
			case <-tick.C:
			case <-wctx.Done():
				return
			}
		}
	}()

	// The replicator, following.
	rc, err := ingest.NewClient(dst.url, peerTok, tlsFor(dst))
	if err != nil {
		fail(err)
	}
	type acked struct {
		t, at time.Time
		bytes int64
	}
	var ack []acked
	rctx, stopRepl := context.WithCancel(ctx)
	replDone := make(chan error, 1)
	go func() {
		_, err := rc.Replicate(rctx, srcRead, ingest.ReplicateOptions{Target: dst.url, Interval: *interval, OnPoint: func(p ingest.ReplicatedPoint) {
			mu.Lock()
			ack = append(ack, acked{p.Time, p.Acked, p.BytesSent})
			mu.Unlock()
		}})
		replDone <- err
	}()

	fmt.Printf("replbench: volume %s, a point every %s changing %.1f%% of its 64 KiB blocks; replicate polls every %s\n",
		human(*size), *every, *change*100, *interval)
	time.Sleep(time.Duration(*secs) * time.Second)
	mu.Lock()
	steady := slices.Clone(ack)
	nsteady := len(points)
	mu.Unlock()
	// Leave out the first points (the initial full copy).
	var lags []time.Duration
	for _, a := range steady[min(3, len(steady)):] {
		lags = append(lags, a.at.Sub(a.t))
	}
	fmt.Printf("steady %ds: %d points made, %d replicated; lag p50 %s, p99 %s, max %s (target p99 < 5s)\n",
		*secs, nsteady, len(steady), pct(lags, 50), pct(lags, 99), pct(lags, 100))

	// The cut.
	cutAt := time.Now()
	dst.stop()
	time.Sleep(*cut)
	mu.Lock()
	var during []made
	for _, p := range points {
		if p.t.After(cutAt) {
			during = append(during, p)
		}
	}
	mu.Unlock()
	restart := time.Now()
	dst = startServer(ctx, dst.dir, dst.addr)
	if len(during) == 0 {
		fail(fmt.Errorf("no point was made during the cut"))
	}
	lastBefore := during[len(during)-1].t
	var caught time.Time
	for caught.IsZero() {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		for _, a := range ack {
			if !a.t.Before(lastBefore) {
				caught = a.at
			}
		}
		mu.Unlock()
	}
	var newUnique, sent int64
	mu.Lock()
	for _, p := range during {
		newUnique += p.bytesNew
	}
	for _, a := range ack {
		if a.t.After(cutAt) && !a.t.After(lastBefore) {
			sent += a.bytes
		}
	}
	mu.Unlock()
	fmt.Printf("cut %s: %d points made meanwhile; caught up %s after the restart; sent %s for them, new unique %s (%.3fx)\n",
		*cut, len(during), caught.Sub(restart).Round(time.Millisecond), human(sent), human(newUnique), float64(sent)/float64(max(newUnique, 1)))

	// Steady again after the catch-up.
	mark := len(ack)
	time.Sleep(time.Duration(*after) * time.Second)
	mu.Lock()
	lags = lags[:0]
	for _, a := range ack[mark:] {
		if a.t.After(caught) { // made after the catch-up, not backlog
			lags = append(lags, a.at.Sub(a.t))
		}
	}
	mu.Unlock()
	fmt.Printf("after catch-up %ds: %d points replicated; lag p50 %s, p99 %s, max %s\n", *after, len(lags), pct(lags, 50), pct(lags, 99), pct(lags, 100))

	stopWork()
	<-workDone
	stopRepl()
	if err := <-replDone; err != nil && rctx.Err() == nil {
		fail(err)
	}
	dst.stop()
	src.stop()
}

type server struct {
	dir, addr, url, cert string
	repo                 *repository.Repo
	cancel               context.CancelFunc
	done                 chan error
}

func startServer(ctx context.Context, dir, addr string) *server {
	repo, err := repository.OpenOrInit(ctx, dir)
	if err != nil {
		fail(err)
	}
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	cert, _, err := ingest.EnsureCert(certFile, keyFile)
	if err != nil {
		fail(err)
	}
	srv, err := ingest.NewServer(ctx, repo)
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fail(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &server{dir: dir, addr: ln.Addr().String(), url: "https://" + ln.Addr().String(), cert: certFile, repo: repo, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(sctx, ln, cert) }()
	return s
}

func (s *server) stop() {
	s.cancel()
	<-s.done
	s.repo.Close()
}

func tlsFor(s *server) *tls.Config {
	cfg, err := ingest.ClientTLS(s.cert)
	if err != nil {
		fail(err)
	}
	return cfg
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return s[max(0, i)].Round(time.Millisecond)
}

func human(n int64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "replbench:", err)
	os.Exit(1)
}
