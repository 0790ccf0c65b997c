package ntfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// FuzzNTFS takes a boot sector and the first MFT records from the fuzzer,
// laid over the real volume, and browses the result: neither the library
// nor the adapter may panic out of the reader.
func FuzzNTFS(f *testing.F) {
	base := testenv.FixtureBytes(f, fixture)
	mft := int64(597 * 4096)
	seed := append(bytes.Clone(base[:512]), base[mft:mft+48*1024]...)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, in []byte) {
		img := bytes.Clone(base)
		if len(in) > 512 {
			copy(img[mft:], in[512:])
			in = in[:512]
		}
		copy(img, in)
		// keep the MFT pointer sane often enough to reach deep code
		if binary.LittleEndian.Uint64(img[0x30:]) == 0 {
			return
		}
		fs, err := Open(context.Background(), bytes.NewReader(img), int64(len(img)))
		if err != nil {
			return
		}
		fstest.Exercise(context.Background(), fs, 300)
	})
}
