package exfat

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// makeImage formats an exFAT image and fills it from src through the
// exfat-fuse driver.
func makeImage(t testing.TB, src string) string {
	t.Helper()
	testenv.NeedFUSE(t)
	testenv.NeedTool(t, "mkfs.exfat", "mount.exfat-fuse")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "exfat.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	fstest.Run(t, "truncate", "-s", "96M", img)
	fstest.Run(t, "mkfs.exfat", "-L", "REWIND", img)
	// exfat-fuse wants a block device: attach a loop device (MountCopy
	// detaches it in its cleanup).
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	fstest.MountCopy(t, img, mnt, src, "mount.exfat-fuse", strings.TrimSpace(string(out)), mnt)
	return img
}

func openImage(t testing.TB, p string) *FS {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(context.Background(), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestMkfsTree(t *testing.T) {
	src := t.TempDir()
	fstest.MakeTree(t, src, fstest.TreeOptions{Files: 300, Sparse: true, EvenTimes: true, BigFile: 5 << 20})
	m := fstest.Manifest(t, src)
	img := makeImage(t, src)
	f := openImage(t, img)
	if f.Label() != "REWIND" {
		t.Errorf("label %q", f.Label())
	}
	fstest.CompareManifest(t, f, m, fstest.Check{MtimeGran: 2 * time.Second})
}

func TestDamagedEntrySet(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("first"), 0o644)
	os.WriteFile(filepath.Join(src, "b.txt"), []byte("second"), 0o644)
	img := makeImage(t, src)
	b, _ := os.ReadFile(img)
	f, err := Open(context.Background(), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n, err := f.lookup(ctx, "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	b[n.off+24] ^= 0xff // modified time: the set checksum no longer matches
	g, err := Open(ctx, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Open(ctx, "a.txt"); err == nil {
		t.Error("damaged entry set opened")
	}
	if got, err := filesystem.ReadFile(ctx, g, "b.txt"); err != nil || string(got) != "second" {
		t.Errorf("b.txt: %q %v", got, err)
	}
}
