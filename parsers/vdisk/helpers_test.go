package vdisk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// qemuRaw converts a container to raw with qemu-img and returns the bytes.
func qemuRaw(t testing.TB, path, format string) []byte {
	t.Helper()
	testenv.NeedTool(t, "qemu-img")
	out := filepath.Join(t.TempDir(), "out.raw")
	args := []string{"convert"}
	if format != "" {
		args = append(args, "-f", format)
	}
	args = append(args, "-O", "raw", path, out)
	if b, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func qemu(t testing.TB, args ...string) string {
	t.Helper()
	testenv.NeedTool(t, "qemu-img")
	b, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// readAll reads a whole disk through its ReaderAt in odd-sized chunks.
func readAll(t testing.TB, d Disk) []byte {
	t.Helper()
	out := make([]byte, d.Size())
	step := int64(1<<20 + 4096 + 512)
	for off := int64(0); off < d.Size(); off += step {
		end := min(off+step, d.Size())
		n, err := d.ReadAt(out[off:end], off)
		if n != int(end-off) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d, %d): n=%d err=%v", off, end-off, n, err)
		}
	}
	return out
}

func equalOrFail(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: size %d, want %d", what, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: first difference at byte %d", what, i)
			}
		}
	}
}

// testImage builds a raw disk image of size bytes with zero regions,
// random regions and text, deterministic for a seed.
func testImage(size int64, seed uint64) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	text := []byte("Rewind continuous data protection test image. The quick brown fox jumps over the lazy dog.\n")
	off := int64(0)
	for off < size {
		n := int64(rng.IntN(3<<20) + 1)
		end := min(off+n, size)
		switch rng.IntN(4) {
		case 0, 1: // zeros
		case 2:
			for i := off; i < end; i += 8 {
				v := rng.Uint64()
				for j := int64(0); j < 8 && i+j < end; j++ {
					b[i+j] = byte(v >> (8 * j))
				}
			}
		case 3:
			for i := off; i < end; i += int64(len(text)) {
				copy(b[i:end], text)
			}
		}
		off = end
	}
	// always something in the last bytes and the first sector
	copy(b[size-int64(len(text)):], text)
	copy(b, text)
	return b
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
