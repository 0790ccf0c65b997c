package ext4

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// BenchmarkReadDir10k lists a 10,000-entry (htree) directory with full
// stat of every entry on a freshly opened volume each time (cold caches).
func BenchmarkReadDir10k(b *testing.B) {
	testenv.NeedTool(b, "mkfs.ext4", "e2fsck")
	img, _ := bigDirImage(b, 10000)
	raw, err := os.ReadFile(img)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		f, err := Open(ctx, bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			b.Fatal(err)
		}
		es, err := f.ReadDir(ctx, "/big")
		if err != nil || len(es) != 10000 {
			b.Fatalf("%d entries, %v", len(es), err)
		}
	}
}

// BenchmarkSequentialRead64MiB reads a 64 MiB file in 1 MiB requests.
func BenchmarkSequentialRead64MiB(b *testing.B) {
	testenv.NeedTool(b, "mkfs.ext4")
	src := b.TempDir()
	data := make([]byte, 64<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big.bin"), data, 0o644)
	img := filepath.Join(b.TempDir(), "fs.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img, "128M").CombinedOutput(); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	raw, _ := os.ReadFile(img)
	ctx := context.Background()
	f, err := Open(ctx, bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(64 << 20)
	buf := make([]byte, 1<<20)
	b.ResetTimer()
	for b.Loop() {
		fl, err := f.Open(ctx, "big.bin")
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < fl.Size(); off += int64(len(buf)) {
			if _, err := fl.ReadAtContext(ctx, buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}
