// Package imagegen makes deterministic synthetic volume images for demos
// and tests: a mix of text, incompressible and empty regions, and seeded
// in-place changes of a chosen fraction of the blocks.
package imagegen

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
)

const region = 1 << 20

var words = strings.Fields("the quick brown fox jumps over a lazy dog while backups run continuously every block is kept once and restored exactly at any moment")

// Write writes size bytes of image to w, chosen by seed: each 1 MiB region
// is text (half of them), pseudo-random data or zeros.
func Write(w io.Writer, size int64, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, region)
	var sb strings.Builder
	for off := int64(0); off < size; off += region {
		b := buf[:min(region, size-off)]
		switch r.IntN(4) {
		case 0:
			clear(b)
		case 1:
			fillRandom(r, b)
		default:
			sb.Reset()
			for sb.Len() < len(b) {
				sb.WriteString(words[r.IntN(len(words))])
				sb.WriteByte(" \n"[r.IntN(2)])
			}
			copy(b, sb.String())
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("write image at offset %d: %w", off, err)
		}
	}
	return nil
}

// Create writes a new image file at path.
func Create(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := Write(f, size, seed); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Mutate overwrites about fraction of the image's blockSize blocks in
// place with new pseudo-random data chosen by seed, and returns how many
// blocks it wrote.
func Mutate(path string, blockSize int64, fraction float64, seed uint64) (int, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	r := rand.New(rand.NewPCG(seed, seed+1))
	blocks := st.Size() / blockSize
	if blocks == 0 {
		return 0, fmt.Errorf("image %s is smaller than one block", path)
	}
	buf := make([]byte, blockSize)
	n := int(float64(blocks) * fraction)
	for range n {
		fillRandom(r, buf)
		if _, err := f.WriteAt(buf, r.Int64N(blocks)*blockSize); err != nil {
			return 0, err
		}
	}
	return n, f.Sync()
}

func fillRandom(r *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		b[i], b[i+1], b[i+2], b[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		b[i+4], b[i+5], b[i+6], b[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}
