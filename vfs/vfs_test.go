package vfs_test

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/test/testenv"

	"github.com/rewind-cdp/rewind/repository"
	"github.com/rewind-cdp/rewind/vfs"
	"github.com/rewind-cdp/rewind/vfs/vfstest"
)

func TestConformance(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	e := vfstest.BuildExt4(t, dir)
	repo, err := repository.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	tree, err := vfs.New(ctx, repo, vfs.Options{Location: time.UTC, CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	vfstest.RunRepository(t, vfstest.Direct(tree), e)
	st := tree.Stats()
	t.Logf("cache: %+v", st)
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// TestPartitionsAndBrokenDisks: a GPT disk with ext4 and FAT partitions
// shows one folder per partition; a volume holding no file system keeps
// its disk files and fails files/ with EIO; a volume whose size is not a
// whole number of sectors gets a padded VMDK extent.
func TestPartitionsAndBrokenDisks(t *testing.T) {
	testenv.NeedTool(t, "sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy")
	ctx := context.Background()
	work := t.TempDir()
	src := filepath.Join(work, "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("pc1\n"), 0o644)
	p1 := filepath.Join(work, "p1.img")
	run(t, "mkfs.ext4", "-q", "-F", "-d", src, p1, "8M")
	p2 := filepath.Join(work, "p2.img")
	run(t, "mkfs.vfat", "-C", p2, "8192")
	hello := filepath.Join(work, "hello.txt")
	os.WriteFile(hello, []byte("hello from FAT\n"), 0o644)
	run(t, "mcopy", "-i", p2, hello, "::/HELLO.TXT")
	disk := filepath.Join(work, "disk.img")
	run(t, "truncate", "-s", "20M", disk)
	run(t, "sh", "-c", "printf 'label: gpt\\nstart=2048, size=16384\\nstart=18432, size=16384\\n' | sfdisk -q "+disk)
	run(t, "dd", "if="+p1, "of="+disk, "bs=512", "seek=2048", "conv=notrunc", "status=none")
	run(t, "dd", "if="+p2, "of="+disk, "bs=512", "seek=18432", "conv=notrunc", "status=none")
	noise := filepath.Join(work, "noise.img")
	b := make([]byte, 1<<20+7)
	rand.New(rand.NewSource(3)).Read(b)
	os.WriteFile(noise, b, 0o644)

	dir := filepath.Join(work, "repo")
	repo, err := repository.Init(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	vfstest.StoreImage(t, repo, "pc", "disk", disk)
	vfstest.StoreImage(t, repo, "pc", "noise", noise)
	tree, err := vfs.New(ctx, repo, vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close()
	tr := vfstest.Direct(tree)

	es, err := tr.ReadDir("/pc/disk/latest/files")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name)
	}
	if len(names) != 2 || names[0] != "p1-ext4" || !strings.HasPrefix(names[1], "p2-fat") {
		t.Fatalf("files/ of a two-partition disk lists %q, want p1-ext4 and p2-fat*", names)
	}
	for p, want := range map[string]string{"/pc/disk/latest/files/p1-ext4/etc/hostname": "pc1\n", "/pc/disk/latest/files/" + names[1] + "/HELLO.TXT": "hello from FAT\n"} {
		r, size, closeFn, err := tr.Open(p)
		if err != nil {
			t.Errorf("open %s: %v", p, err)
			continue
		}
		got := make([]byte, size)
		r.ReadAt(got, 0)
		closeFn()
		if string(got) != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}

	if _, err := tr.ReadDir("/pc/noise/latest/files"); tr.Errno(err) != vfs.EIO {
		t.Errorf("files/ of a volume without a file system: %v, want EIO", err)
	}
	if _, err := tr.Lstat("/pc/noise/latest/files/x"); tr.Errno(err) != vfs.EIO {
		t.Errorf("lookup in files/ of a volume without a file system: %v, want EIO", err)
	}
	r, size, closeFn, err := tr.Open("/pc/noise/latest/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if n, _ := r.ReadAt(got, 0); n != len(b) || !bytes.Equal(got, b) {
		t.Errorf("disk.img of the odd-sized volume: %d bytes, equal %v", n, bytes.Equal(got, b))
	}
	closeFn()
	flat, err := tr.Lstat("/pc/noise/latest/disk-flat.vmdk")
	if err != nil || flat.Size != (int64(len(b))+511)&^511 {
		t.Errorf("disk-flat.vmdk: %+v %v", flat, err)
	}
	r, size, closeFn, err = tr.Open("/pc/noise/latest/disk.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	desc := make([]byte, size)
	r.ReadAt(desc, 0)
	closeFn()
	if !bytes.Contains(desc, []byte(`"disk-flat.vmdk"`)) {
		t.Errorf("disk.vmdk of an odd-sized volume does not name disk-flat.vmdk:\n%s", desc)
	}
	if _, err := tr.Lstat("/pc/disk/latest/disk-flat.vmdk"); tr.Errno(err) != vfs.ENOENT {
		t.Errorf("disk-flat.vmdk of a whole-sector volume: %v, want ENOENT", err)
	}

	// Sequential reads make the tree read the following blocks ahead.
	fresh, err := vfs.New(ctx, repo, vfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	a, err := fresh.Walk(ctx, "/pc/noise/latest/disk.img")
	if err != nil {
		t.Fatal(err)
	}
	hd, err := fresh.Open(ctx, a.Ino, false)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	for off := int64(0); off < 4*repository.DefaultBlockSize; off += int64(len(buf)) {
		if _, err := hd.Read(ctx, buf, off); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for fresh.Stats().Misses <= 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := fresh.Stats(); st.Misses <= 4 || st.ReadAheadRuns == 0 {
		t.Errorf("after reading 4 blocks in order: %+v, want blocks read ahead", st)
	}
}
