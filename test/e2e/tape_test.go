package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	h "github.com/rewind-cdp/rewind/test/harness"
)

// A repository written to 3 file-tapes of bounded capacity while the
// server runs, the repository deleted, rebuilt from the tapes alone: every
// point restores byte-identically and check --read-data is clean. A
// damaged tape is refused naming the tape and record.
// With packs on S3 the tapes are written from the objects, and the rebuilt
// repository keeps its packs locally.
func TestTapeDisasterRecovery(t *testing.T) { forEachPackStore(t, testTapeDisasterRecovery) }

func testTapeDisasterRecovery(t *testing.T, ps *packStore) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0", ps.args...)
	tok := h.AddMachine(t, repo, "web1")
	img := filepath.Join(dir, "disk.img")
	h.Image(t, img, 24<<20, 21)
	var sums []string
	var ids []int64
	for i := range 3 {
		if i > 0 {
			h.Mutate(t, img, 0.1, uint64(30+i))
		}
		sums = append(sums, h.SHA256(t, img))
		ids = append(ids, mustBackup(t, s, tok, "web1", "root", img).Point.ID)
	}
	packs := ps.packBytes(t, repo)
	capacity := packs/2 - 1<<20 // three tapes at least
	tapes := filepath.Join(dir, "tapes", "set1-tape%d")
	os.MkdirAll(filepath.Dir(tapes), 0o755)
	r := h.MustRun(t, nil, "tape", "write", "--repo", repo, "--device", tapes, "--capacity", fmt.Sprint(capacity), "--record-size", "65536", "--json")
	var set struct {
		ID    string `json:"id"`
		Tapes int    `json:"tapes"`
		Files []struct {
			Name string `json:"name"`
		} `json:"files"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &set); err != nil || set.Tapes < 3 {
		t.Fatalf("tape write printed %q (%v); want a set of at least 3 tapes", r.Stdout, err)
	}
	for n := 1; n <= set.Tapes; n++ {
		if st, err := os.Stat(fmt.Sprintf(tapes, n)); err != nil || st.Size() > capacity {
			t.Errorf("tape %d: %v, %d bytes (capacity %d)", n, err, st.Size(), capacity)
		}
	}
	if l := h.MustRun(t, nil, "tape", "list", "--repo", repo).Stdout; !strings.Contains(l, set.ID) {
		t.Errorf("tape list does not show set %s from the catalog:\n%s", set.ID, l)
	}
	if l := h.MustRun(t, nil, "tape", "list", "--device", tapes).Stdout; !strings.Contains(l, "catalog.db") || !strings.Contains(l, "last of its set") {
		t.Errorf("tape list --device lacks the table of contents or the last tape:\n%s", l)
	}
	// Writing the same set again never overwrites a tape.
	if r := h.Run(t, nil, "tape", "write", "--repo", repo, "--device", tapes); r.Code != 1 || !strings.Contains(r.Stderr, "exists") {
		t.Errorf("tape write onto existing tapes: exit %d, %q", r.Code, r.Stderr)
	}

	// Disaster: the server and the repository are gone.
	s.Stop(t)
	if err := os.RemoveAll(repo); err != nil {
		t.Fatal(err)
	}
	rebuilt := filepath.Join(dir, "rebuilt")
	h.MustRun(t, nil, "tape", "restore", "--device", tapes, "--repo", rebuilt)
	if r := h.Run(t, nil, "check", "--repo", rebuilt, "--read-data"); r.Code != 0 {
		t.Errorf("check --read-data of the rebuilt repository: exit %d: %s", r.Code, r.Stderr)
	}
	for i, id := range ids {
		out := filepath.Join(dir, fmt.Sprintf("p%d.img", i))
		if r := restore(t, rebuilt, "web1", "root", fmt.Sprint(id), out); r.Code != 0 {
			t.Fatalf("restore point %d from the rebuilt repository: %s", id, r.Stderr)
		}
		if got := h.SHA256(t, out); got != sums[i] {
			t.Errorf("point %d from tape: sha256 %s, want %s", id, got, sums[i])
		}
		os.Remove(out)
	}

	// A flipped byte in the middle of tape 2: refused, naming the tape.
	t2 := fmt.Sprintf(tapes, 2)
	f, err := os.OpenFile(t2, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	b := make([]byte, 1)
	f.ReadAt(b, st.Size()/2+1000) // inside a record's payload
	b[0] ^= 0xff
	f.WriteAt(b, st.Size()/2+1000)
	f.Close()
	r = h.Run(t, nil, "tape", "restore", "--device", tapes, "--repo", filepath.Join(dir, "again"))
	if r.Code != 1 || !strings.Contains(r.Stderr, "tape 2") || !strings.Contains(r.Stderr, "CRC") {
		t.Errorf("restore from a damaged tape: exit %d, %q; want exit 1 naming tape 2 and the CRC", r.Code, r.Stderr)
	}
	if r := h.Run(t, nil, "tape", "restore", "--device", tapes, "--repo", rebuilt); r.Code != 1 || !strings.Contains(r.Stderr, "not empty") {
		t.Errorf("restore into a non-empty directory: exit %d, %q", r.Code, r.Stderr)
	}
}
