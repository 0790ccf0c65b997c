package ext4

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// FuzzExt4 overwrites the metadata region (first 64 KiB: superblock, group
// descriptors, inode tables, directory blocks) of a real image with the
// fuzzer's bytes and browses the result: the reader must never panic.
func FuzzExt4(f *testing.F) {
	base, err := os.ReadFile(testenv.Fixture(f, fixtures[1]))
	if err != nil {
		f.Fatal(err)
	}
	for _, rel := range fixtures {
		b, _ := os.ReadFile(testenv.Fixture(f, rel))
		f.Add(b[:64<<10])
	}
	f.Fuzz(func(t *testing.T, patch []byte) {
		img := bytes.Clone(base)
		copy(img, patch)
		fs, err := Open(context.Background(), bytes.NewReader(img), int64(len(img)))
		if err != nil {
			return
		}
		fstest.Exercise(context.Background(), fs, 2000)
	})
}
