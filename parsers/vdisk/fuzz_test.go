package vdisk

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// exercise reads a sample of an opened disk: none of it may panic.
func exercise(d Disk) {
	buf := make([]byte, 64<<10+512)
	size := d.Size()
	for _, off := range []int64{0, 512, 65536 - 100, size / 3, size / 2, size - 4096, size - 1, size} {
		if off >= 0 {
			_, _ = d.ReadAt(buf, off)
		}
	}
	for off := int64(0); off < min(size, 4<<20); off += int64(len(buf)) {
		if _, err := d.ReadAt(buf, off); err != nil && err != io.EOF {
			return
		}
	}
}

func addFixture(f *testing.F, rel string, limit int) {
	p := testenv.Fixture(f, rel)
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[:min(len(b), limit)])
}

func writtenSeed(f *testing.F, fn func(context.Context, io.WriterAt, io.ReaderAt, int64, *WriteOptions) (int64, error), opt *WriteOptions) {
	raw := testImage(512<<10, 9)
	var w memWriterAt
	if _, err := fn(context.Background(), &w, bytes.NewReader(raw), int64(len(raw)), opt); err != nil {
		f.Fatal(err)
	}
	f.Add(w.b)
}

type memWriterAt struct{ b []byte }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if need := off + int64(len(p)); need > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, need-int64(len(m.b)))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}

func FuzzVHD(f *testing.F) {
	addFixture(f, "vdisk/dfvfs_ext2_dynamic.vhd", 1<<30)
	writtenSeed(f, WriteVHDDynamic, &WriteOptions{BlockSize: 64 << 10})
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := OpenVHD(bytes.NewReader(b), int64(len(b))); err == nil {
			exercise(d)
		}
	})
}

func FuzzVMDK(f *testing.F) {
	addFixture(f, "vdisk/dfvfs_ext2_monolithicSparse.vmdk", 1<<30)
	raw := testImage(512<<10, 5)
	var s bytes.Buffer
	if _, err := WriteVMDKStream(context.Background(), &s, bytes.NewReader(raw), int64(len(raw)), nil); err != nil {
		f.Fatal(err)
	}
	f.Add(s.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := OpenVMDKSparse(bytes.NewReader(b), int64(len(b))); err == nil {
			exercise(d)
		}
	})
}

func FuzzVMDKDescriptor(f *testing.F) {
	v, _ := NewVMDKView(bytes.NewReader(make([]byte, 1<<20)), 1<<20, "disk-flat.vmdk", nil)
	f.Add(v.Descriptor())
	f.Add([]byte("# Disk DescriptorFile\nRW 100 ZERO\nRDONLY 8 FLAT \"a\" 3\nRW 4 SPARSE \"s\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ext := make([]byte, 4096)
		d, err := OpenVMDKDescriptor(bytes.NewReader(b), int64(len(b)), func(string) (io.ReaderAt, int64, error) {
			return bytes.NewReader(ext), int64(len(ext)), nil
		})
		if err == nil {
			exercise(d)
		}
	})
}

func FuzzQcow2(f *testing.F) {
	addFixture(f, "vdisk/dfvfs_ext2.qcow2", 1<<30)
	writtenSeed(f, WriteQcow2, &WriteOptions{Compress: true, BlockSize: 4096})
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := OpenQcow2(bytes.NewReader(b), int64(len(b))); err == nil {
			exercise(d)
		}
	})
}

func FuzzVHDX(f *testing.F) {
	// the fixture's metadata, BAT and first payload block, truncated
	b := testenv.FixtureBytes(f, "vdisk/hyperv_dynamic_100M_mbr_fat32.vhdx.bz2")
	f.Add(b[:5<<20])
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := OpenVHDX(bytes.NewReader(b), int64(len(b))); err == nil {
			exercise(d)
		}
	})
}

func FuzzDetect(f *testing.F) {
	f.Add([]byte("conectix"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, _, err := Open(bytes.NewReader(b), int64(len(b))); err == nil {
			exercise(d)
		}
	})
}
