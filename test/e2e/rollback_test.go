package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	h "github.com/rewind-cdp/rewind/test/harness"
)

type rollbackSummary struct {
	InPlace       bool  `json:"in_place"`
	Bytes         int64 `json:"bytes"`
	BlocksWritten int64 `json:"blocks_written"`
	BytesWritten  int64 `json:"bytes_written"`
	BytesCompared int64 `json:"bytes_compared"`
}

// After 2 % of a volume's blocks change, restoring the earlier point onto
// the changed image rolls it back in place: under 3 % of the bytes are
// written and the image is byte-identical to the point, both by hash
// comparison and from the catalog when the target's point is known.
func TestRollbackWritesOnlyWhatDiffers(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "db1")
	img := filepath.Join(dir, "disk.img")
	const size = 64 << 20
	h.Image(t, img, size, 11)
	want := h.SHA256(t, img)
	first := mustBackup(t, s, tok, "db1", "data", img)

	for _, mode := range []string{"hash", "catalog"} {
		h.Mutate(t, img, 0.02, uint64(len(mode)))
		later := mustBackup(t, s, tok, "db1", "data", img)
		if h.SHA256(t, img) == want {
			t.Fatal("the image did not change")
		}
		args := []string{"restore", "--repo", repo, "--machine", "db1", "--volume", "data",
			"--at", fmt.Sprint(first.Point.ID), "--to", img, "--force", "--json"}
		if mode == "catalog" {
			args = append(args, "--target-point", fmt.Sprint(later.Point.ID))
		}
		var sum rollbackSummary
		r := h.MustRun(t, nil, args...)
		if err := json.Unmarshal([]byte(r.Stdout), &sum); err != nil || !sum.InPlace {
			t.Fatalf("%s: restore printed %q (%v); want an in-place rollback", mode, r.Stdout, err)
		}
		if got := h.SHA256(t, img); got != want {
			t.Errorf("%s: rolled-back image has sha256 %s, want %s", mode, got, want)
		}
		if sum.BytesWritten == 0 || float64(sum.BytesWritten) >= 0.03*size {
			t.Errorf("%s: rollback wrote %d bytes (%d blocks) of %d; want some, under 3 %%", mode, sum.BytesWritten, sum.BlocksWritten, size)
		}
		if mode == "catalog" && sum.BytesCompared != 0 {
			t.Errorf("catalog rollback read %d bytes of the target; want none", sum.BytesCompared)
		}
		if mode == "hash" && sum.BytesCompared != size {
			t.Errorf("hash rollback compared %d bytes; want the whole volume, %d", sum.BytesCompared, size)
		}
	}

	// A rollback onto a target that does not hold the volume still ends
	// byte-identical (everything differs), and --full writes everything.
	other := filepath.Join(dir, "other.img")
	h.Image(t, other, size, 99)
	h.MustRun(t, nil, "restore", "--repo", repo, "--machine", "db1", "--volume", "data",
		"--at", fmt.Sprint(first.Point.ID), "--to", other, "--force")
	if got := h.SHA256(t, other); got != want {
		t.Errorf("rollback onto an unrelated image: sha256 %s, want %s", got, want)
	}
	// --target-point with a new file target: refused, nothing written.
	r := h.Run(t, nil, "restore", "--repo", repo, "--machine", "db1", "--volume", "data",
		"--to", filepath.Join(dir, "new.img"), "--target-point", "latest")
	if r.Code != 1 {
		t.Errorf("--target-point onto a new file: exit %d (%s), want 1", r.Code, r.Stderr)
	}
	if err := exec.Command("test", "-e", filepath.Join(dir, "new.img")).Run(); err == nil {
		t.Error("a refused restore created its target")
	}
}
