package fat

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// FuzzFAT overwrites the boot sector, FATs and root directory of the real
// FAT12/FAT16 images with the fuzzer's bytes and browses the result.
func FuzzFAT(f *testing.F) {
	base, err := os.ReadFile(testenv.Fixture(f, fixtures[1]))
	if err != nil {
		f.Fatal(err)
	}
	for _, rel := range fixtures {
		b, _ := os.ReadFile(testenv.Fixture(f, rel))
		f.Add(b[:48<<10])
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
