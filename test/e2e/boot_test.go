package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// testKernel finds a Linux kernel from Debian's linux-image package:
// $REWIND_TEST_KERNEL, /boot, or where .ci/run unpacks it.
func testKernel(t *testing.T) string {
	t.Helper()
	if k := os.Getenv("REWIND_TEST_KERNEL"); k != "" {
		return k
	}
	for _, pat := range []string{"/boot/vmlinuz-*", "/opt/rewind-test-kernel/boot/vmlinuz-*"} {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			return m[len(m)-1]
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Linux kernel: .ci/run unpacks Debian's linux-image into /opt/rewind-test-kernel")
	}
	t.Skip("no Linux kernel in /boot (Debian package linux-image-amd64) and REWIND_TEST_KERNEL is not set")
	return ""
}

// newc writes a cpio archive in the "newc" format the kernel unpacks as
// its initramfs.
type newc struct {
	buf bytes.Buffer
	ino int
}

func (c *newc) add(name string, mode uint32, data []byte, rdevMajor, rdevMinor int) {
	c.ino++
	fmt.Fprintf(&c.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.buf.WriteString(name + "\x00")
	for c.buf.Len()%4 != 0 {
		c.buf.WriteByte(0)
	}
	c.buf.Write(data)
	for c.buf.Len()%4 != 0 {
		c.buf.WriteByte(0)
	}
}

// bootableDisk makes a 64 MiB MBR disk with a bootable FAT16 partition
// holding SYSLINUX, a Debian kernel and an initramfs whose init prints
// marker on the serial console and powers off.
func bootableDisk(t *testing.T, path, marker string) {
	t.Helper()
	for _, tool := range []string{"sfdisk", "mkfs.fat", "syslinux", "mcopy"} {
		testenv.NeedTool(t, tool)
	}
	kernel := testKernel(t)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		testenv.NeedTool(t, "busybox")
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	mbr, err := os.ReadFile("/usr/lib/syslinux/mbr/mbr.bin")
	if err != nil {
		t.Fatalf("syslinux MBR (Debian package syslinux-common): %v", err)
	}
	var ramfs newc
	ramfs.add("dev", 0o40755, nil, 0, 0)
	ramfs.add("dev/console", 0o20600, nil, 5, 1)
	ramfs.add("bin", 0o40755, nil, 0, 0)
	ramfs.add("bin/busybox", 0o100755, bb, 0, 0)
	ramfs.add("init", 0o100755, []byte("#!/bin/busybox sh\n/bin/busybox echo "+marker+"\n/bin/busybox poweroff -f\n"), 0, 0)
	ramfs.add("TRAILER!!!", 0, nil, 0, 0)
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.img")
	cfg := filepath.Join(dir, "syslinux.cfg")
	os.WriteFile(initrd, ramfs.buf.Bytes(), 0o644)
	os.WriteFile(cfg, []byte("SERIAL 0 115200\nDEFAULT linux\nTIMEOUT 1\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd.img console=ttyS0 panic=-1 quiet\n"), 0o644)

	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(path, 64<<20)
	sf := exec.Command("sfdisk", "-q", "--no-reread", "--no-tell-kernel", path)
	sf.Stdin = strings.NewReader("label: dos\nstart=2048, type=6, bootable\n")
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	mustCmd(t, "mkfs.fat", "-F", "16", "--offset", "2048", path, fmt.Sprint((64<<20-1<<20)/1024))
	mustCmd(t, "syslinux", "--install", "--offset", fmt.Sprint(1<<20), path)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(mbr[:440], 0)
	f.Close()
	img := path + "@@1M"
	mustCmd(t, "mcopy", "-i", img, kernel, "::vmlinuz")
	mustCmd(t, "mcopy", "-i", img, initrd, cfg, "::")
}

// verify-boot proves a point boots (software emulation here: no KVM) and,
// at a point where the kernel was deleted, fails with a screenshot.
func TestVerifyBoot(t *testing.T) {
	testenv.NeedTool(t, "qemu-system-x86_64")
	dir := t.TempDir()
	disk := filepath.Join(dir, "boot.img")
	marker := "REWIND-BOOT-OK-7f3a"
	bootableDisk(t, disk, marker)
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "vm1")
	good := mustBackup(t, s, tok, "vm1", "boot", disk)
	mustCmd(t, "mdel", "-i", disk+"@@1M", "::vmlinuz")
	bad := mustBackup(t, s, tok, "vm1", "boot", disk)

	var res struct {
		Booted     bool   `json:"booted"`
		Screenshot string `json:"screenshot"`
		Why        string `json:"why"`
		Seconds    float64
	}
	r := h.Run(t, nil, "verify-boot", "--repo", repo, "--machine", "vm1", "--volume", "boot", "--at", fmt.Sprint(good.Point.ID),
		"--expect", marker, "--timeout", "300s", "--memory", "256", "--json")
	if err := json.Unmarshal([]byte(r.Stdout), &res); r.Code != 0 || err != nil || !res.Booted {
		t.Fatalf("verify-boot of the bootable point: exit %d, %+v (%v)\n%s", r.Code, res, err, r.Stderr)
	}
	t.Logf("booted to the marker in %.1f s", res.Seconds)

	shot := filepath.Join(dir, "failed.png")
	r = h.Run(t, nil, "verify-boot", "--repo", repo, "--machine", "vm1", "--volume", "boot", "--at", fmt.Sprint(bad.Point.ID),
		"--expect", marker, "--timeout", "25s", "--memory", "256", "--screenshot", shot)
	if r.Code != 1 || !strings.Contains(r.Stderr, "did not boot") || !strings.Contains(r.Stderr, shot) {
		t.Errorf("verify-boot of the point without a kernel: exit %d, stderr %q; want exit 1 naming the screenshot", r.Code, r.Stderr)
	}
	if png, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("screenshot %s: %v, %d bytes", shot, err, len(png))
	}
	if r := h.Run(t, nil, "check", "--repo", repo, "--read-data"); r.Code != 0 {
		t.Errorf("check --read-data after booting: %s", r.Stderr)
	}
}
