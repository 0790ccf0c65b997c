package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	h "github.com/rewind-cdp/rewind/test/harness"
)

type backupSummary struct {
	Point struct {
		ID   int64  `json:"id"`
		Time string `json:"time"`
	} `json:"point"`
	BytesRead int64 `json:"bytes_read"`
	BytesNew  int64 `json:"bytes_new"`
	BytesSent int64 `json:"bytes_sent"`
}

func mustBackup(t *testing.T, s *h.Server, token, machine, volume, image string) backupSummary {
	t.Helper()
	r := s.Backup(t, token, machine, volume, image)
	if r.Code != 0 {
		t.Fatalf("backup %s: exit %d: %s", image, r.Code, r.Stderr)
	}
	var b backupSummary
	if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
		t.Fatalf("backup --json printed %q: %v", r.Stdout, err)
	}
	if b.Point.ID == 0 || b.Point.Time == "" {
		t.Fatalf("backup --json has no point: %s", r.Stdout)
	}
	return b
}

func restore(t *testing.T, repo, machine, volume, at, to string) h.Result {
	t.Helper()
	return h.Run(t, nil, "restore", "--repo", repo, "--machine", machine, "--volume", volume, "--at", at, "--to", to)
}

// Three points with different contents each restore byte-identical, by id
// and by time.
func TestThreePointsRestoreExactly(t *testing.T) { forEachPackStore(t, testThreePointsRestoreExactly) }

func testThreePointsRestoreExactly(t *testing.T, store *packStore) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0", store.args...)
	tok := h.AddMachine(t, repo, "web1")
	img := filepath.Join(dir, "disk.img")
	h.Image(t, img, 48<<20+12345, 1) // a size that is no multiple of the block size
	var sums []string
	var points []backupSummary
	for i := range 3 {
		if i > 0 {
			h.Mutate(t, img, 0.05, uint64(i))
		}
		sums = append(sums, h.SHA256(t, img))
		points = append(points, mustBackup(t, s, tok, "web1", "root", img))
		time.Sleep(20 * time.Millisecond)
	}
	if sums[0] == sums[1] || sums[1] == sums[2] {
		t.Fatal("test images did not change between points")
	}
	for i, p := range points {
		out := filepath.Join(dir, "by-id-"+strconv.Itoa(i))
		if r := restore(t, repo, "web1", "root", strconv.FormatInt(p.Point.ID, 10), out); r.Code != 0 {
			t.Fatalf("restore point %d: %s", p.Point.ID, r.Stderr)
		}
		if got := h.SHA256(t, out); got != sums[i] {
			t.Errorf("point %d restored with sha256 %s, want %s", p.Point.ID, got, sums[i])
		}
		// The same point by its own time: the newest point at or before it.
		out2 := filepath.Join(dir, "by-time-"+strconv.Itoa(i))
		r := restore(t, repo, "web1", "root", p.Point.Time, out2)
		if r.Code != 0 || !strings.Contains(r.Stderr, "point "+strconv.FormatInt(p.Point.ID, 10)+" ") {
			t.Fatalf("restore at %s: exit %d, stderr %s", p.Point.Time, r.Code, r.Stderr)
		}
		if got := h.SHA256(t, out2); got != sums[i] {
			t.Errorf("point at %s restored with sha256 %s, want %s", p.Point.Time, got, sums[i])
		}
	}
	// latest and a relative time both name the newest point.
	for _, at := range []string{"latest", "-0s"} {
		out := filepath.Join(dir, "at"+at)
		if r := restore(t, repo, "web1", "root", at, out); r.Code != 0 {
			t.Fatalf("restore --at %s: %s", at, r.Stderr)
		}
		if got := h.SHA256(t, out); got != sums[2] {
			t.Errorf("--at %s restored %s, want the newest point %s", at, got, sums[2])
		}
	}
	// points --json lists all three with the fields scripts rely on.
	r := h.MustRun(t, nil, "points", "--repo", repo, "--machine", "web1", "--json")
	var ps []map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &ps); err != nil || len(ps) != 3 {
		t.Fatalf("points --json: %v: %s", err, r.Stdout)
	}
	for _, p := range ps {
		for _, k := range []string{"id", "machine", "volume", "time", "kind", "label"} {
			if _, ok := p[k]; !ok {
				t.Errorf("points --json entry lacks %q: %v", k, p)
			}
		}
		if ts, _ := p["time"].(string); len(ts) != len("2006-01-02T15:04:05.000000000Z") || !strings.HasSuffix(ts, "Z") {
			t.Errorf("point time %q is not RFC 3339 UTC with nanoseconds", ts)
		}
	}
	h.MustRun(t, nil, "check", "--repo", repo, "--read-data")
}

// The same image under two machine names grows the repository by under
// 1 %; an unchanged re-backup sends under 1 % of the image over the wire.
func TestDeduplicationAcrossMachines(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	a := h.AddMachine(t, repo, "alpha")
	b := h.AddMachine(t, repo, "beta")
	img := filepath.Join(dir, "disk.img")
	const size = 256 << 20
	h.Image(t, img, size, 7)
	mustBackup(t, s, a, "alpha", "disk", img)
	before := h.DirSize(t, repo) // packs, catalog and its WAL: the whole repository
	second := mustBackup(t, s, b, "beta", "disk", img)
	after := h.DirSize(t, repo)
	growth := float64(after-before) / float64(before)
	t.Logf("second machine: repository grew %d of %d bytes (%.3f %%), sent %d bytes", after-before, before, 100*growth, second.BytesSent)
	if growth >= 0.01 {
		t.Errorf("the same image under a second machine grew the repository by %.2f %%, want under 1 %%", 100*growth)
	}
	again := mustBackup(t, s, a, "alpha", "disk", img)
	frac := float64(again.BytesSent) / size
	t.Logf("unchanged re-backup: read %d bytes, sent %d (%.3f %%)", again.BytesRead, again.BytesSent, 100*frac)
	if frac >= 0.01 {
		t.Errorf("unchanged re-backup sent %d bytes (%.2f %% of the image), want under 1 %%", again.BytesSent, 100*frac)
	}
	if again.BytesRead != size {
		t.Errorf("re-backup read %d bytes, want %d", again.BytesRead, size)
	}
	out := filepath.Join(dir, "beta.img")
	if r := restore(t, repo, "beta", "disk", "latest", out); r.Code != 0 {
		t.Fatal(r.Stderr)
	}
	if h.SHA256(t, out) != h.SHA256(t, img) {
		t.Error("beta's restore differs from the image")
	}
}

// A wrong token is refused; machine A's token cannot write machine B.
func TestTokensAreEnforced(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	a := h.AddMachine(t, repo, "alpha")
	h.AddMachine(t, repo, "beta")
	img := filepath.Join(dir, "disk.img")
	h.Image(t, img, 1<<20, 3)
	before := h.TreeDigest(t, filepath.Join(repo, "packs"))

	r := s.Backup(t, "rwd_not-a-real-token", "alpha", "disk", img)
	if r.Code != 1 || !strings.Contains(r.Stderr, "unknown token") {
		t.Errorf("wrong token: exit %d, stderr %q", r.Code, r.Stderr)
	}
	r = s.Backup(t, a, "beta", "disk", img)
	if r.Code != 1 || !strings.Contains(r.Stderr, `may not write machine "beta"`) {
		t.Errorf("alpha's token writing beta: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if h.TreeDigest(t, filepath.Join(repo, "packs")) != before {
		t.Error("refused backups changed the packs")
	}
	r = h.MustRun(t, nil, "points", "--repo", repo, "--json")
	if strings.TrimSpace(r.Stdout) != "[]" {
		t.Errorf("refused backups left points: %s", r.Stdout)
	}
	// Nothing unauthenticated gets in: a request without a token.
	r = h.Run(t, nil, "backup", "--server", s.URL, "--ca", s.CA, "--machine", "alpha", "--volume", "d", img)
	if r.Code != 2 || !strings.Contains(r.Stderr, "--token is required") {
		t.Errorf("no token: exit %d, stderr %q", r.Code, r.Stderr)
	}
}

// Bad input gets a one-line error naming the problem, exit 2 for usage
// errors and 1 for failures, and changes nothing in the repository.
func TestBadInputIsRefusedCleanly(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "web1")
	img := filepath.Join(dir, "disk.img")
	h.Image(t, img, 2<<20, 5)
	mustBackup(t, s, tok, "web1", "root", img)
	empty := filepath.Join(dir, "empty.img")
	os.WriteFile(empty, nil, 0o644)
	notRepo := filepath.Join(dir, "not-a-repo")
	os.MkdirAll(notRepo, 0o755)
	os.WriteFile(filepath.Join(notRepo, "hello.txt"), []byte("hi"), 0o644)
	out := filepath.Join(dir, "out.img")

	backup := func(src string) []string {
		return []string{"backup", "--server", s.URL, "--ca", s.CA, "--token", tok, "--machine", "web1", "--volume", "root", src}
	}
	cases := []struct {
		name string
		args []string
		code int
		says string
	}{
		{"missing source", backup(filepath.Join(dir, "nope.img")), 1, "does not exist"},
		{"directory as source", backup(dir), 1, "is a directory"},
		{"empty source", backup(empty), 1, "is empty"},
		{"missing device", backup("/dev/rewind-no-such-device"), 1, "does not exist"},
		{"unparsable --at", []string{"restore", "--repo", repo, "--machine", "web1", "--volume", "root", "--at", "yesterday-ish", "--to", out}, 2, "not a time"},
		{"not a repository", []string{"points", "--repo", notRepo}, 1, "not a Rewind repository"},
		{"repository missing", []string{"points", "--repo", filepath.Join(dir, "nowhere")}, 1, "does not exist"},
		{"unknown volume", []string{"restore", "--repo", repo, "--machine", "web1", "--volume", "nope", "--to", out}, 1, "no volume"},
		{"no point that early", []string{"restore", "--repo", repo, "--machine", "web1", "--volume", "root", "--at", "2001-01-01T00:00:00Z", "--to", out}, 1, "no point at or before"},
		{"unknown flag", []string{"points", "--repo", repo, "--bogus"}, 2, "unknown flag"},
		{"bad block size", append(backup(img), "--block-size", "1000"), 2, "power of two"},
		{"missing --to", []string{"restore", "--repo", repo, "--machine", "web1", "--volume", "root"}, 2, "--to is required"},
		{"plain http server", []string{"backup", "--server", "http://127.0.0.1:1", "--token", tok, "--machine", "web1", "--volume", "root", img}, 2, "https://"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.TreeDigest(t, repo)
			r := h.Run(t, nil, c.args...)
			lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
			if r.Code != c.code || !strings.Contains(r.Stderr, c.says) || len(lines) != 1 {
				t.Errorf("exit %d (want %d), stderr %q (want one line saying %q)", r.Code, c.code, r.Stderr, c.says)
			}
			if h.TreeDigest(t, repo) != before && c.name != "not a repository" {
				t.Errorf("the repository changed")
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("a restore target was left behind")
			}
		})
	}
	if h.TreeDigest(t, notRepo) == "" {
		t.Fatal("digest of the non-repository failed")
	}
	if entries, _ := os.ReadDir(notRepo); len(entries) != 1 {
		t.Errorf("points created files in a directory that is not a repository: %v", entries)
	}
}
