package partition

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// mkdisk makes a disk image of size bytes partitioned by sfdisk.
func mkdisk(t *testing.T, size int64, script string) string {
	t.Helper()
	testenv.NeedTool(t, "sfdisk")
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sfdisk", "--no-reread", "--no-tell-kernel", p)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return p
}

// copyTo copies the first n bytes of src into a new file of size bytes.
func copyTo(t *testing.T, src string, n, size int64) *os.File {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(src + ".copy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b[:min(n, int64(len(b)))], 0); err != nil {
		t.Fatal(err)
	}
	return f
}

func sfdiskVerify(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "--verify", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("GPT PMBR size mismatch")) || bytes.Contains(out, []byte("backup GPT")) {
		t.Errorf("sfdisk --verify %s: %v\n%s", path, err, out)
	}
}

func TestResizeGPTGrowAndShrink(t *testing.T) {
	const old = 64 << 20
	src := mkdisk(t, old, "label: gpt\nstart=2048, size=40960, type=linux\nstart=43008, size=20480, type=linux\n")
	// Larger disk, with the last partition grown.
	const big = 100 << 20
	f := copyTo(t, src, old, big)
	res, err := Resize(f, old, big, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Grown == nil || res.Grown.Index != 2 {
		t.Fatalf("grown partition %+v, want partition 2", res.Grown)
	}
	tb, err := ReadTable(f, big)
	if err != nil || tb.BackupUsed || len(tb.Partitions) != 2 {
		t.Fatalf("table after grow: %+v, %v", tb, err)
	}
	if p := tb.Partitions[1]; p.Start+p.Length != big-33*512 {
		t.Errorf("partition 2 ends at %d, want %d (the last usable byte)", p.Start+p.Length, int64(big-33*512))
	}
	sfdiskVerify(t, f.Name())
	// The backup alone must describe the same table.
	f.WriteAt(make([]byte, 512), 512)
	if tb2, err := ReadTable(f, big); err != nil || !tb2.BackupUsed || len(tb2.Partitions) != 2 || tb2.Partitions[1] != tb.Partitions[1] {
		t.Errorf("table from the backup header: %+v, %v", tb2, err)
	}

	// A smaller disk that still holds every partition.
	const small = 40 << 20
	keep, err := FitsIn(mustOpen(t, src), old, small)
	if err != nil {
		t.Fatal(err)
	}
	if keep != old-33*512 {
		t.Errorf("keepFrom %d, want %d", keep, int64(old-33*512))
	}
	g := copyTo(t, src, small, small)
	if _, err := Resize(g, old, small, false); err != nil {
		t.Fatal(err)
	}
	if tb, err := ReadTable(g, small); err != nil || tb.BackupUsed || len(tb.Partitions) != 2 {
		t.Errorf("table after shrink: %+v, %v", tb, err)
	}
	sfdiskVerify(t, g.Name())
	// Too small: partition 2 ends at 31.5 MiB.
	if _, err := FitsIn(mustOpen(t, src), old, 30<<20); err == nil || !strings.Contains(err.Error(), "partition 2") {
		t.Errorf("FitsIn 30 MiB: %v, want an error naming partition 2", err)
	}
}

func TestResizeMBRGrow(t *testing.T) {
	const old = 32 << 20
	src := mkdisk(t, old, "label: dos\nstart=2048, size=20480, type=83\n")
	const big = 48 << 20
	f := copyTo(t, src, old, big)
	res, err := Resize(f, old, big, true)
	if err != nil || res.Grown == nil {
		t.Fatalf("Resize: %+v, %v", res, err)
	}
	tb, err := ReadTable(f, big)
	if err != nil || len(tb.Partitions) != 1 || tb.Partitions[0].Start+tb.Partitions[0].Length != big {
		t.Errorf("table after grow: %+v, %v", tb, err)
	}
	sfdiskVerify(t, f.Name())
}

func TestFitsInWholeDisk(t *testing.T) {
	img := make([]byte, 1<<20)
	copy(img[3:], "NTFS    ")
	img[510], img[511] = 0x55, 0xAA
	if _, err := FitsIn(bytes.NewReader(img), 1<<20, 1<<19); err == nil {
		t.Error("a volume without a partition table fits a smaller disk")
	}
	if _, err := FitsIn(bytes.NewReader(img), 1<<20, 2<<20); err != nil {
		t.Errorf("a larger disk: %v", err)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
