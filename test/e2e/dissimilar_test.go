package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// attachLoop attaches a new file of size bytes as a loop device, detached
// when the test ends.
func attachLoop(t *testing.T, path string, size int64) string {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	dev := strings.TrimSpace(mustCmd(t, "losetup", "--find", "--show", path))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	return dev
}

// A GPT disk with an ext4 partition restores to a larger device (the
// backup GPT moved to the new end; with --grow the partition and its file
// system fill the device) and to a smaller one that still holds every
// partition; a device too small is refused and left untouched.
func TestRestoreToDissimilarDevices(t *testing.T) {
	testenv.NeedRoot(t)
	for _, tool := range []string{"losetup", "sfdisk", "mkfs.ext4", "e2fsck", "resize2fs", "blkid", "dumpe2fs"} {
		testenv.NeedTool(t, tool)
	}
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "srv")

	// 64 MiB disk: p1 at 1 MiB (20 MiB, empty), p2 at 21 MiB (20 MiB, ext4 with files).
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 64<<20)
	sf := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", img)
	sf.Stdin = strings.NewReader("label: gpt\nstart=2048, size=40960, type=linux\nstart=43008, size=40960, type=linux\n")
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	content := filepath.Join(dir, "content")
	os.MkdirAll(filepath.Join(content, "sub"), 0o755)
	for i := range 20 {
		os.WriteFile(filepath.Join(content, "sub", fmt.Sprintf("f%02d", i)), []byte(strings.Repeat(fmt.Sprint(i), 5000*i+1)), 0o644)
	}
	mustCmd(t, "mkfs.ext4", "-q", "-F", "-E", fmt.Sprintf("offset=%d", 43008*512), "-d", content, img, "20M")
	mustBackup(t, s, tok, "srv", "disk", img)
	want := manifest(t, content)

	checkPartition := func(dev string, wantBlocksAtLeast int) {
		t.Helper()
		loop := strings.TrimSpace(mustCmd(t, "losetup", "--find", "--show", "--partscan", dev))
		defer exec.Command("losetup", "--detach", loop).Run()
		out, err := exec.Command("sfdisk", "--verify", loop).CombinedOutput()
		if err != nil || strings.Contains(string(out), "mismatch") || strings.Contains(string(out), "backup") {
			t.Errorf("sfdisk --verify after restore to %s: %v\n%s", dev, err, out)
		}
		part := strings.TrimSpace(mustCmd(t, "losetup", "--find", "--show", "--offset", fmt.Sprint(43008*512), loop))
		defer exec.Command("losetup", "--detach", part).Run()
		if o, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn of the restored partition: %v\n%s", err, o)
		}
		var blocks int
		for _, l := range strings.Split(mustCmd(t, "dumpe2fs", "-h", part), "\n") {
			if v, ok := strings.CutPrefix(l, "Block count:"); ok {
				fmt.Sscan(strings.TrimSpace(v), &blocks)
			}
		}
		if blocks < wantBlocksAtLeast {
			t.Errorf("file system has %d blocks, want at least %d", blocks, wantBlocksAtLeast)
		}
		mnt := filepath.Join(dir, "mnt")
		mountAt(t, "ext4", part, mnt, "ro")
		if d := diffManifests(want, manifest(t, mnt)); len(d) > 0 {
			t.Errorf("restored files differ: %v", d[:min(5, len(d))])
		}
		mustCmd(t, "umount", mnt)
	}
	restoreTo := func(dev string, extra ...string) h.Result {
		return h.Run(t, nil, append([]string{"restore", "--repo", repo, "--machine", "srv", "--volume", "disk", "--to", dev, "--json"}, extra...)...)
	}

	// Larger, grown: the partition reaches the new end (100 MiB - 33 sectors).
	big := attachLoop(t, filepath.Join(dir, "big.img"), 100<<20)
	r := restoreTo(big, "--grow")
	if r.Code != 0 {
		t.Fatalf("restore --grow to a 100 MiB device: %s", r.Stderr)
	}
	var sum struct {
		Grown string `json:"grown"`
	}
	json.Unmarshal([]byte(r.Stdout), &sum)
	if !strings.Contains(sum.Grown, "ext4") {
		t.Errorf("restore --grow reported grown %q, want the ext4 file system", sum.Grown)
	}
	checkPartition(big, (100<<20-33*512-43008*512)/1024*9/10) // 1 KiB blocks on a small ext4

	// Larger, not grown; smaller but fitting.
	for _, size := range []int64{80 << 20, 48 << 20} {
		dev := attachLoop(t, filepath.Join(dir, fmt.Sprintf("dev%d.img", size)), size)
		if r := restoreTo(dev); r.Code != 0 {
			t.Fatalf("restore to a %d MiB device: %s", size>>20, r.Stderr)
		}
		checkPartition(dev, 20<<10*9/10)
	}

	// Too small: partition 2 ends at 41 MiB.
	tiny := attachLoop(t, filepath.Join(dir, "tiny.img"), 40<<20)
	before := h.SHA256(t, tiny)
	r = restoreTo(tiny)
	if r.Code != 1 || !strings.Contains(r.Stderr, "does not fit") || !strings.Contains(r.Stderr, "partition 2") {
		t.Errorf("restore to a 40 MiB device: exit %d, stderr %q; want exit 1, does not fit, naming partition 2", r.Code, r.Stderr)
	}
	if h.SHA256(t, tiny) != before {
		t.Error("a refused restore changed the device")
	}
}
