package dirvol

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
)

// FuzzManifest opens address spaces whose manifest bytes are the fuzzer's
// (seeded with the manifest of a real tree, and that manifest with its
// checksum made to match whatever the fuzzer changed in the payload) and
// browses them: the reader must never panic and never allocate from an
// unchecked size.
func FuzzManifest(f *testing.F) {
	dir := f.TempDir()
	fstest.MakeTree(f, dir, fstest.TreeOptions{Files: 40, Symlinks: true, Hardlinks: true})
	sp := capture(f, dir)
	f.Add(sp.manifest, false)
	f.Add(sp.manifest[:HeaderSize+200], true)
	f.Add((&Manifest{NextSlot: 1}).Encode(), false)
	f.Fuzz(func(t *testing.T, b []byte, fixSum bool) {
		if fixSum && len(b) >= HeaderSize {
			// Re-seal the payload so the fuzzer reaches the entry parser.
			m, err := Read(bytes.NewReader(b), int64(len(b)))
			if err == nil {
				b = m.Encode()
			} else {
				b = reseal(b)
			}
		}
		s := &space{manifest: b, slots: sp.slots}
		fs, err := Open(context.Background(), s, Size)
		if err != nil {
			return
		}
		fstest.Exercise(context.Background(), fs, 2000)
	})
}

// reseal sets the header's payload length and checksum to match the bytes
// after the header, keeping the fuzzer's entry count.
func reseal(b []byte) []byte {
	b = bytes.Clone(b)
	copy(b, magic)
	binary.LittleEndian.PutUint32(b[8:], version)
	payload := b[HeaderSize:]
	binary.LittleEndian.PutUint64(b[16:], uint64(len(payload)))
	sum := sha256.Sum256(payload)
	copy(b[40:], sum[:])
	return b
}
