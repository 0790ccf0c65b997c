package vdisk

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// testSize is a few tens of MiB, a whole number of sectors but not of
// 64 KiB clusters, 2 MiB VHD blocks or 1 MiB VHDX blocks.
const testSize = 37<<20 + 3*4096 + 5*512

type qemuInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

func info(t *testing.T, path, format string) qemuInfo {
	t.Helper()
	args := []string{"info", "--output=json"}
	if format != "" {
		args = append(args, "-f", format)
	}
	var qi qemuInfo
	if err := json.Unmarshal([]byte(qemu(t, append(args, path)...)), &qi); err != nil {
		t.Fatal(err)
	}
	return qi
}

// checkImage runs the qemu-img oracle on a written image and reads it back.
func checkImage(t *testing.T, path, qfmt string, probe bool, raw []byte, rawPath string) {
	t.Helper()
	f := ""
	if !probe {
		f = qfmt
	}
	qi := info(t, path, f)
	if qi.Format != qfmt || qi.VirtualSize != int64(len(raw)) {
		t.Fatalf("qemu-img info: format %q virtual size %d, want %q %d", qi.Format, qi.VirtualSize, qfmt, len(raw))
	}
	if qfmt != "vpc" { // qemu-img check does not support vpc
		out := qemu(t, "check", "-f", qfmt, path)
		if !strings.Contains(out, "No errors were found") {
			t.Fatalf("qemu-img check: %s", out)
		}
	}
	out := qemu(t, "compare", "-f", qfmt, "-F", "raw", path, rawPath)
	if !strings.Contains(out, "Images are identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d Disk
	if qfmt == "vmdk" && bytes.HasPrefix(b, []byte("# Disk")) {
		d, err = OpenVMDKDescriptor(bytes.NewReader(b), int64(len(b)), dirOpener(filepath.Dir(path)))
	} else {
		d, _, err = Open(bytes.NewReader(b), int64(len(b)))
	}
	if err != nil {
		t.Fatal(err)
	}
	equalOrFail(t, "own reader", readAll(t, d), raw)
}

func dirOpener(dir string) ExtentOpener {
	return func(name string) (io.ReaderAt, int64, error) {
		b, err := os.ReadFile(filepath.Join(dir, filepath.Base(name)))
		return bytes.NewReader(b), int64(len(b)), err
	}
}

// streamOnly hides everything but Write: the writer must not seek.
type streamOnly struct{ w io.Writer }

func (s streamOnly) Write(p []byte) (int, error) { return s.w.Write(p) }

func TestWriters(t *testing.T) {
	testenv.NeedTool(t, "qemu-img")
	raw := testImage(testSize, 1)
	rawPath := writeTemp(t, "src.raw", raw)
	src := bytes.NewReader(raw)
	ctx := context.Background()
	type posW func(context.Context, io.WriterAt, io.ReaderAt, int64, *WriteOptions) (int64, error)
	type strW func(context.Context, io.Writer, io.ReaderAt, int64, *WriteOptions) (int64, error)
	cases := []struct {
		name, qfmt string
		probe      bool
		pw         posW
		sw         strW
		opt        WriteOptions
	}{
		{"fixed.vhd", "vpc", false, nil, WriteVHDFixed, WriteOptions{}},
		{"dynamic.vhd", "vpc", true, WriteVHDDynamic, nil, WriteOptions{}},
		{"dynamic.vhdx", "vhdx", true, WriteVHDX, nil, WriteOptions{BlockSize: 1 << 20}},
		{"dynamic32.vhdx", "vhdx", true, WriteVHDX, nil, WriteOptions{}},
		{"sparse.vmdk", "vmdk", true, WriteVMDKSparse, nil, WriteOptions{}},
		{"stream.vmdk", "vmdk", true, nil, func(ctx context.Context, w io.Writer, r io.ReaderAt, n int64, o *WriteOptions) (int64, error) {
			return WriteVMDKStream(ctx, streamOnly{w}, r, n, o)
		}, WriteOptions{}},
		{"plain.qcow2", "qcow2", true, WriteQcow2, nil, WriteOptions{}},
		{"compressed.qcow2", "qcow2", true, WriteQcow2, nil, WriteOptions{Compress: true}},
		{"small-cluster.qcow2", "qcow2", true, WriteQcow2, nil, WriteOptions{Compress: true, BlockSize: 4096}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), c.name)
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			var last int64
			c.opt.Progress = func(done int64) {
				if done < last || done > testSize {
					t.Errorf("progress %d after %d", done, last)
				}
				last = done
			}
			var n int64
			if c.pw != nil {
				n, err = c.pw(ctx, f, src, testSize, &c.opt)
			} else {
				n, err = c.sw(ctx, f, src, testSize, &c.opt)
			}
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			f.Close()
			if st.Size() != n {
				t.Fatalf("returned size %d, file %d", n, st.Size())
			}
			if last != testSize {
				t.Fatalf("progress ended at %d", last)
			}
			checkImage(t, path, c.qfmt, c.probe, raw, rawPath)
			t.Logf("%s: %d bytes for %d of disk", c.name, n, testSize)
		})
	}
}

// failWriter fails after n bytes; the writers must stop and report it.
type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, os.ErrClosed
	}
	return len(p), nil
}
func (f *failWriter) WriteAt(p []byte, off int64) (int, error) { return f.Write(p) }

func TestWriterErrors(t *testing.T) {
	raw := testImage(8<<20, 2)
	src := bytes.NewReader(raw)
	ctx := context.Background()
	if _, err := WriteVMDKStream(ctx, &failWriter{n: 100000}, src, int64(len(raw)), nil); err == nil {
		t.Fatal("stream: no error from a failing writer")
	}
	if _, err := WriteQcow2(ctx, &failWriter{n: 100000}, src, int64(len(raw)), nil); err == nil {
		t.Fatal("qcow2: no error from a failing writer")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := WriteVHDX(cctx, &failWriter{n: 1 << 30}, src, int64(len(raw)), nil); err != context.Canceled {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := WriteVHDDynamic(ctx, &failWriter{n: 1 << 30}, src, int64(len(raw)), &WriteOptions{BlockSize: 3 << 20}); err == nil {
		t.Fatal("bad block size accepted")
	}
}

func TestViews(t *testing.T) {
	testenv.NeedTool(t, "qemu-img")
	raw := testImage(testSize, 3)
	rawPath := writeTemp(t, "src.raw", raw)
	dir := t.TempDir()

	vhd, err := NewFixedVHDView(bytes.NewReader(raw), int64(len(raw)), &ViewOptions{Seed: "m/v/p"})
	if err != nil {
		t.Fatal(err)
	}
	vhdPath := filepath.Join(dir, "disk.vhd")
	materialize(t, vhdPath, vhd, vhd.Size())
	checkImage(t, vhdPath, "vpc", false, raw, rawPath)
	if v, _ := OpenVHD(vhd, vhd.Size()); v == nil || v.Dynamic() {
		t.Fatal("view is not a fixed VHD")
	}

	dyn, err := NewDynamicVHDView(bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	dynPath := filepath.Join(dir, "dynamic.vhd")
	materialize(t, dynPath, dyn, dyn.Size())
	checkImage(t, dynPath, "vpc", true, raw, rawPath)

	vm, err := NewVMDKView(bytes.NewReader(raw), int64(len(raw)), "disk-flat.vmdk", nil)
	if err != nil {
		t.Fatal(err)
	}
	name, ext, extSize := vm.Extent()
	materialize(t, filepath.Join(dir, "disk.vmdk"), vm, vm.Size())
	materialize(t, filepath.Join(dir, name), ext, extSize)
	checkImage(t, filepath.Join(dir, "disk.vmdk"), "vmdk", true, raw, rawPath)
	qi := info(t, filepath.Join(dir, "disk.vmdk"), "")
	if qi.Format != "vmdk" {
		t.Fatalf("descriptor probed as %s", qi.Format)
	}
}

// TestViewsOddSize checks the zero padding of a raw size that is not a
// whole number of sectors.
func TestViewsOddSize(t *testing.T) {
	raw := testImage(1<<20+100, 4)
	vhd, err := NewFixedVHDView(bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenVHD(vhd, vhd.Size())
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, d)
	want := append(append([]byte(nil), raw...), make([]byte, 512-100)...)
	equalOrFail(t, "padded vhd view", got, want)
	dyn, _ := NewDynamicVHDView(bytes.NewReader(raw), int64(len(raw)), nil)
	if d, err = OpenVHD(dyn, dyn.Size()); err != nil {
		t.Fatal(err)
	}
	equalOrFail(t, "padded dynamic vhd view", readAll(t, d), want)
	vm, _ := NewVMDKView(bytes.NewReader(raw), int64(len(raw)), "x-flat.vmdk", nil)
	name, ext, n := vm.Extent()
	dv, err := OpenVMDKDescriptor(vm, vm.Size(), func(s string) (io.ReaderAt, int64, error) {
		if s != name {
			t.Fatalf("extent %q", s)
		}
		return ext, n, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	equalOrFail(t, "padded vmdk view", readAll(t, dv), want)
}

func materialize(t *testing.T, path string, r io.ReaderAt, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, io.NewSectionReader(r, 0, n)); err != nil {
		t.Fatal(err)
	}
}
