package exfat

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
)

// FuzzExFAT overwrites the boot region, FAT and heap start of a fresh
// mkfs.exfat image with the fuzzer's bytes and browses the result.
func FuzzExFAT(f *testing.F) {
	if _, err := exec.LookPath("mkfs.exfat"); err != nil {
		f.Skip("needs mkfs.exfat")
	}
	img := filepath.Join(f.TempDir(), "e.img")
	fstest.Run(f, "truncate", "-s", "8M", img)
	fstest.Run(f, "mkfs.exfat", "-L", "FUZZ", img)
	base, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	fs, err := Open(context.Background(), bytes.NewReader(base), int64(len(base)))
	if err != nil {
		f.Fatal(err)
	}
	heap := fs.heapOff
	f.Add(base[:512], base[heap:heap+4096])
	f.Fuzz(func(t *testing.T, boot, dir []byte) {
		b := bytes.Clone(base)
		copy(b, boot)
		copy(b[heap:], dir)
		g, err := Open(context.Background(), bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		fstest.Exercise(context.Background(), g, 2000)
	})
}
