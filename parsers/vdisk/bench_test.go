package vdisk

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
)

var (
	benchOnce sync.Once
	benchRaw  []byte
)

// benchImage is a 256 MiB disk of zero, random and text regions.
func benchImage() []byte {
	benchOnce.Do(func() { benchRaw = testImage(256<<20, 7) })
	return benchRaw
}

// discardAt accepts and drops everything, so the benchmarks measure the
// encoders rather than the disk under the test.
type discardAt struct{}

func (discardAt) Write(p []byte) (int, error)              { return len(p), nil }
func (discardAt) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

func benchWriter(b *testing.B, fn func(context.Context, discardAt, io.ReaderAt, int64) error) {
	raw := benchImage()
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := fn(context.Background(), discardAt{}, bytes.NewReader(raw), int64(len(raw))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteVHDFixed(b *testing.B) {
	benchWriter(b, func(ctx context.Context, w discardAt, r io.ReaderAt, n int64) error {
		_, err := WriteVHDFixed(ctx, w, r, n, nil)
		return err
	})
}

func BenchmarkWriteVHDDynamic(b *testing.B) {
	benchWriter(b, func(ctx context.Context, w discardAt, r io.ReaderAt, n int64) error {
		_, err := WriteVHDDynamic(ctx, w, r, n, nil)
		return err
	})
}

func BenchmarkWriteVHDX(b *testing.B) {
	benchWriter(b, func(ctx context.Context, w discardAt, r io.ReaderAt, n int64) error {
		_, err := WriteVHDX(ctx, w, r, n, nil)
		return err
	})
}

func BenchmarkWriteVMDKSparse(b *testing.B) {
	benchWriter(b, func(ctx context.Context, w discardAt, r io.ReaderAt, n int64) error {
		_, err := WriteVMDKSparse(ctx, w, r, n, nil)
		return err
	})
}

func BenchmarkWriteVMDKStream(b *testing.B) {
	benchWriter(b, func(ctx context.Context, w discardAt, r io.ReaderAt, n int64) error {
		_, err := WriteVMDKStream(ctx, w, r, n, nil)
		return err
	})
}

func BenchmarkWriteQcow2(b *testing.B) {
	benchWriter(b, func(ctx context.Context, w discardAt, r io.ReaderAt, n int64) error {
		_, err := WriteQcow2(ctx, w, r, n, nil)
		return err
	})
}

func BenchmarkWriteQcow2Compressed(b *testing.B) {
	benchWriter(b, func(ctx context.Context, w discardAt, r io.ReaderAt, n int64) error {
		_, err := WriteQcow2(ctx, w, r, n, &WriteOptions{Compress: true})
		return err
	})
}

// BenchmarkFixedVHDViewRead reads the whole synthesized fixed VHD.
func BenchmarkFixedVHDViewRead(b *testing.B) {
	raw := benchImage()
	v, _ := NewFixedVHDView(bytes.NewReader(raw), int64(len(raw)), nil)
	buf := make([]byte, 1<<20)
	b.SetBytes(v.Size())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := int64(0); off < v.Size(); off += int64(len(buf)) {
			_, _ = v.ReadAt(buf, off)
		}
	}
}
