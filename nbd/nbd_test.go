package nbd

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// serve starts a server with the exports on a unix socket in a temporary
// directory and returns the socket path; it is stopped when the test ends.
func serve(t *testing.T, exports ...Export) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(nil, exports...).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return sock
}

// fileExport makes a size-byte file of random data (seeded) and exports it.
func fileExport(t *testing.T, name string, size int64, writable bool) (Export, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".img")
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 7))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(path, writable)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return Export{Name: name, Description: "test " + name, Backend: b}, path
}

func TestClientServer(t *testing.T) {
	ctx := context.Background()
	rw, rwPath := fileExport(t, "rw", 3<<20+512, true)
	ro, roPath := fileExport(t, "ro", 1<<20, false)
	sock := serve(t, rw, ro)

	c, err := Dial(ctx, sock, "rw", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 3<<20+512 || c.ReadOnly() {
		t.Fatalf("size %d read-only %v", c.Size(), c.ReadOnly())
	}
	want, _ := os.ReadFile(rwPath)
	got := make([]byte, len(want))
	if n, err := c.ReadAt(got, 0); err != nil || n != len(want) || !bytes.Equal(got, want) {
		t.Fatalf("read whole export: %d, %v, equal %v", n, err, bytes.Equal(got, want))
	}
	// Reads past the end are short with io.EOF, as io.ReaderAt wants.
	if n, err := c.ReadAt(make([]byte, 1024), c.Size()-100); n != 100 || err == nil {
		t.Fatalf("read over the end: %d, %v", n, err)
	}

	patch := bytes.Repeat([]byte("rewind"), 50000)
	if _, err := c.WriteAtContext(ctx, patch, 12345, true); err != nil {
		t.Fatal(err)
	}
	copy(want[12345:], patch)
	if err := c.Zero(ctx, 1<<20, 70000); err != nil {
		t.Fatal(err)
	}
	clear(want[1<<20 : 1<<20+70000])
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A write past the end is refused with ENOSPC and the session goes on.
	var e Errno
	if _, err := c.WriteAt([]byte{1}, c.Size()); !errors.As(err, &e) || syscall.Errno(e) != syscall.ENOSPC {
		t.Fatalf("write past the end: %v", err)
	}
	if n, err := c.ReadAt(got, 0); err != nil || n != len(got) || !bytes.Equal(got, want) {
		t.Fatalf("read back after changes: %v, equal %v", err, bytes.Equal(got, want))
	}
	if onDisk, _ := os.ReadFile(rwPath); !bytes.Equal(onDisk, want) {
		t.Fatal("the backing file differs from what the client wrote")
	}

	r, err := Dial(ctx, "unix:"+sock, "ro", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.ReadOnly() {
		t.Fatal("read-only export not flagged read-only")
	}
	if _, err := r.WriteAt([]byte{1}, 0); !errors.As(err, &e) || syscall.Errno(e) != syscall.EPERM {
		t.Fatalf("write to a read-only export: %v", err)
	}
	roWant, _ := os.ReadFile(roPath)
	roGot := make([]byte, len(roWant))
	if _, err := r.ReadAt(roGot, 0); err != nil || !bytes.Equal(roGot, roWant) {
		t.Fatalf("read-only export: %v", err)
	}
	if _, err := Dial(ctx, sock, "nope", DialOptions{}); err == nil {
		t.Fatal("an unknown export was accepted")
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestQemuClient drives the server with QEMU's own NBD client.
func TestQemuClient(t *testing.T) {
	testenv.NeedTool(t, "qemu-io", "qemu-img")
	exp, path := fileExport(t, "disk", 4<<20, true)
	ro, roPath := fileExport(t, "snap", 2<<20, false)
	sock := serve(t, exp, ro)
	uri := "nbd+unix:///disk?socket=" + sock
	run(t, "qemu-io", "-f", "raw", uri,
		"-c", "write -P 0xab 0 64k",
		"-c", "write -P 0xcd 100000 300000",
		"-c", "write -z 1M 256k",
		"-c", "write -P 0x11 -f 3M 4096", // FUA
		"-c", "discard 2M 64k",
		"-c", "flush",
		"-c", "read -P 0xab 0 64k",
		"-c", "read -P 0xcd 100000 300000",
		"-c", "read -P 0 1M 256k")
	data, _ := os.ReadFile(path)
	check := func(off, n int, b byte) {
		t.Helper()
		if !bytes.Equal(data[off:off+n], bytes.Repeat([]byte{b}, n)) {
			t.Errorf("%d bytes at %d are not %#x", n, off, b)
		}
	}
	check(0, 64<<10, 0xab)
	check(100000, 300000, 0xcd)
	check(1<<20, 256<<10, 0)
	check(3<<20, 4096, 0x11)
	// qemu-img reads the whole export through the server and compares it.
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri, path)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd+unix:///snap?socket="+sock, roPath)
	// A write to the read-only export fails in qemu-io.
	out, err := exec.Command("qemu-io", "-f", "raw", "nbd+unix:///snap?socket="+sock, "-c", "write 0 512").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "failed") {
		t.Fatalf("qemu-io wrote to a read-only export: %s", out)
	}
	// qemu-img info sees the size.
	if out := run(t, "qemu-img", "info", "--output=json", uri); !strings.Contains(out, `"virtual-size": 4194304`) {
		t.Fatalf("qemu-img info: %s", out)
	}
}

// TestQemuServer uses the client against qemu-nbd, including a persistent
// dirty bitmap read through block status.
func TestQemuServer(t *testing.T) {
	testenv.NeedTool(t, "qemu-nbd", "qemu-img", "qemu-io")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	run(t, "qemu-img", "create", "-f", "qcow2", img, "8M")
	run(t, "qemu-io", "-f", "qcow2", img, "-c", "write -P 0x55 0 1M")
	run(t, "qemu-img", "bitmap", "--add", img, "b0")
	run(t, "qemu-io", "-f", "qcow2", img, "-c", "write -P 0x66 2M 64k", "-c", "write -P 0x77 5M 100k")
	sock := filepath.Join(dir, "q.sock")
	cmd := exec.Command("qemu-nbd", "--read-only", "--persistent", "--format=qcow2", "--bitmap=b0", "--socket="+sock, "--export-name=d", img)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx := context.Background()
	var c *Client
	var err error
	for range 100 {
		if c, err = Dial(ctx, sock, "d", DialOptions{MetaContexts: []string{"qemu:dirty-bitmap:b0"}}); err == nil {
			break
		}
		exec.Command("sleep", "0.05").Run()
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 8<<20 || !c.ReadOnly() {
		t.Fatalf("size %d read-only %v", c.Size(), c.ReadOnly())
	}
	// Structured reads: data and holes.
	buf := make([]byte, 3<<20)
	if _, err := c.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:1<<20], bytes.Repeat([]byte{0x55}, 1<<20)) || !bytes.Equal(buf[1<<20:2<<20], make([]byte, 1<<20)) ||
		!bytes.Equal(buf[2<<20:2<<20+64<<10], bytes.Repeat([]byte{0x66}, 64<<10)) {
		t.Fatal("structured read returned the wrong bytes")
	}
	var dirty []Extent
	for off := int64(0); off < c.Size(); {
		ext, err := c.BlockStatus(ctx, "qemu:dirty-bitmap:b0", off, c.Size()-off)
		if err != nil {
			t.Fatal(err)
		}
		if len(ext) == 0 {
			t.Fatal("no extents")
		}
		for _, e := range ext {
			if e.Flags&1 != 0 {
				dirty = append(dirty, e)
			}
			off = e.Offset + e.Length
		}
	}
	// The bitmap's granularity is the cluster (64 KiB): the two writes
	// after it was added, rounded out to clusters.
	want := []Extent{{2 << 20, 64 << 10, 1}, {5 << 20, 128 << 10, 1}}
	if len(dirty) != len(want) || dirty[0] != want[0] || dirty[1] != want[1] {
		t.Fatalf("dirty extents %v, want %v", dirty, want)
	}
}

func TestOverlay(t *testing.T) {
	ctx := context.Background()
	const size = 1<<20 + 1000 // not a whole number of blocks
	base := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range base {
		base[i] = byte(rng.Uint32())
	}
	orig := bytes.Clone(base)
	scratch, err := os.CreateTemp(t.TempDir(), "scratch")
	if err != nil {
		t.Fatal(err)
	}
	defer scratch.Close()
	o := NewOverlay(bytes.NewReader(base), size, scratch)
	want := bytes.Clone(base)
	// Random writes, zeroes and reads against a model.
	for i := range 500 {
		off := rng.Int64N(size)
		n := 1 + rng.Int64N(min(size-off, 20000))
		switch i % 3 {
		case 0:
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			if err := o.WriteAt(ctx, p, off); err != nil {
				t.Fatal(err)
			}
			copy(want[off:], p)
		case 1:
			if err := o.Zero(ctx, off, n); err != nil {
				t.Fatal(err)
			}
			clear(want[off : off+n])
		default:
			got := make([]byte, n)
			if err := o.ReadAt(ctx, got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[off:off+n]) {
				t.Fatalf("read %d at %d differs from the model", n, off)
			}
		}
	}
	got := make([]byte, size)
	if err := o.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("whole read: %v, equal %v", err, bytes.Equal(got, want))
	}
	if !bytes.Equal(base, orig) {
		t.Fatal("the overlay changed its base")
	}
}
