package ntfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// benchImage builds an NTFS image holding big/ (10,000 files) and a 64 MiB
// random file, filled through ntfs-3g.
func benchImage(b *testing.B) []byte {
	testenv.NeedFUSE(b)
	testenv.NeedTool(b, "mkntfs", "ntfs-3g")
	src := b.TempDir()
	os.Mkdir(filepath.Join(src, "big"), 0o755)
	for i := 0; i < 10000; i++ {
		os.WriteFile(filepath.Join(src, "big", fmt.Sprintf("entry-with-a-longish-name-%05d", i)), []byte{byte(i)}, 0o644)
	}
	data := make([]byte, 64<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(src, "big.bin"), data, 0o644)
	dir := b.TempDir()
	img, mnt := filepath.Join(dir, "ntfs.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	fstest.Run(b, "truncate", "-s", "256M", img)
	fstest.Run(b, "mkntfs", "-F", "-Q", "-q", img)
	fstest.MountCopy(b, img, mnt, src, "ntfs-3g", img, mnt)
	raw, err := os.ReadFile(img)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// BenchmarkNTFS runs the 10,000-entry listing (cold: a freshly opened
// volume each time) and the 64 MiB sequential read on one image.
func BenchmarkNTFS(b *testing.B) {
	raw := benchImage(b)
	ctx := context.Background()
	b.Run("ReadDir10k", func(b *testing.B) {
		for b.Loop() {
			f, err := Open(ctx, bytes.NewReader(raw), int64(len(raw)))
			if err != nil {
				b.Fatal(err)
			}
			es, err := f.ReadDir(ctx, "big")
			if err != nil || len(es) != 10000 {
				b.Fatalf("%d entries, %v", len(es), err)
			}
		}
	})
	b.Run("SequentialRead64MiB", func(b *testing.B) {
		f, err := Open(ctx, bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(64 << 20)
		buf := make([]byte, 1<<20)
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
	})
}
