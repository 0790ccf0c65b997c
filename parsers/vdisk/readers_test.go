package vdisk

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

func TestFixtureReaders(t *testing.T) {
	cases := []struct {
		file   string
		format Format
		size   int64
	}{
		{"vdisk/dfvfs_ext2_dynamic.vhd", FormatVHD, 4212736},
		{"vdisk/dfvfs_ext2_monolithicSparse.vmdk", FormatVMDKSparse, 4194304},
		{"vdisk/dfvfs_ext2.qcow2", FormatQcow2, 4194304},
	}
	var first4M []byte
	for _, c := range cases {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			path := testenv.Fixture(t, c.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			d, f, err := Open(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			if f != c.format || d.Size() != c.size {
				t.Fatalf("format %s size %d, want %s %d", f, d.Size(), c.format, c.size)
			}
			got := readAll(t, d)
			equalOrFail(t, "reader vs qemu-img convert", got, qemuRaw(t, path, ""))
			if first4M == nil {
				first4M = got[:4194304]
			} else {
				equalOrFail(t, "ext2 raw across formats", got[:4194304], first4M)
			}
			if !bytes.Equal(got[1024+56:1024+58], []byte{0x53, 0xef}) {
				t.Fatalf("no ext2 superblock magic")
			}
		})
	}
	// The raw ext2 image shipped with the ext4 fixtures is the ground truth.
	if first4M != nil {
		if p := filepath.Join(testenv.FixturesDir(), "ext4", "dfvfs_ext2.raw"); fileExists(p) {
			want, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			equalOrFail(t, "ext4/dfvfs_ext2.raw", first4M, want[:min(len(want), 4194304)])
		}
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func TestFixtureVHDX(t *testing.T) {
	const rel = "vdisk/hyperv_dynamic_100M_mbr_fat32.vhdx.bz2"
	b := testenv.FixtureBytes(t, rel)
	if got := sha(b); got != "1958203eeaf64d2a4d99384d7c8dc63836de1ad80f460fdafc3a0dbddeef9f7d" {
		t.Fatalf("decompressed fixture sha256 %s", got)
	}
	d, f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	v := d.(*VHDX)
	if f != FormatVHDX || d.Size() != 100<<20 || v.BlockSize != 32<<20 || v.LogSector != 512 || v.Header.Sequence != 0xd { // header 1 has 0xc (MANIFEST), header 2 0xd is current
		t.Fatalf("format %s size %d block %d sector %d seq %d", f, d.Size(), v.BlockSize, v.LogSector, v.Header.Sequence)
	}
	got := readAll(t, d)
	if s := sha(got); s != "afce9cca367ebfa91a673d612bcb6fc32b12a80211207f7a7b1cd3aed3cac19d" {
		t.Fatalf("raw disk sha256 %s", s)
	}
	if got[510] != 0x55 || got[511] != 0xaa {
		t.Fatal("no MBR signature")
	}
	equalOrFail(t, "vhdx reader vs qemu-img", got, qemuRaw(t, writeTemp(t, "d.vhdx", b), "vhdx"))
}

func TestVHDXLogPending(t *testing.T) {
	b := testenv.FixtureBytes(t, "vdisk/hyperv_dynamic_100M_mbr_fat32.vhdx.bz2")
	v, err := OpenVHDX(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	// Give the current header a log GUID and a fresh CRC: the file now
	// claims a log to replay.
	h := v.Header.Offset
	b[h+48] = 1
	setCRC32C(b[h:h+vhdxHeaderSize], 4)
	_, err = OpenVHDX(bytes.NewReader(b), int64(len(b)))
	var e *Error
	if !errors.Is(err, ErrVHDXLogPending) || !errors.As(err, &e) || e.Offset != h+48 {
		t.Fatalf("err = %v", err)
	}
}

func TestDetectAndErrors(t *testing.T) {
	for _, c := range []struct {
		data []byte
		want Format
	}{
		{[]byte("QFI\xfb\x00\x00\x00\x03"), FormatQcow2},
		{[]byte("vhdxfile"), FormatVHDX},
		{[]byte("KDMV"), FormatVMDKSparse},
		{[]byte("conectix"), FormatVHD},
		{[]byte("# Disk DescriptorFile\n"), FormatVMDKDescriptor},
		{make([]byte, 4096), FormatUnknown},
	} {
		if f, err := Detect(bytes.NewReader(c.data), int64(len(c.data))); err != nil || f != c.want {
			t.Errorf("Detect(%q) = %s, %v; want %s", c.data[:8], f, err, c.want)
		}
	}
	// truncated fixture: an error with an offset, no panic
	b, err := os.ReadFile(testenv.Fixture(t, "vdisk/dfvfs_ext2.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = Open(bytes.NewReader(b[:300]), 300)
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("truncated qcow2: %v", err)
	}
	_ = io.EOF
}
