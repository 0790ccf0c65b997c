package detect

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/parsers/partition"
	"github.com/rewind-cdp/rewind/test/testenv"
)

func TestDetectFixtures(t *testing.T) {
	ctx := context.Background()
	for rel, want := range map[string]string{
		"ntfs/dissect_ntfs_volume.bin.gz":     "ntfs",
		"ext4/dissect_ext4_symlink_test1.bin": "ext4",
		"fat/rustfatfs_fat12.img":             "fat12",
		"fat/rustfatfs_fat16.img":             "fat16",
	} {
		b := testenv.FixtureBytes(t, rel)
		vs, err := Volumes(ctx, bytes.NewReader(b), int64(len(b)))
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("%s: %v %+v", rel, err, vs)
		}
		if vs[0].Partition.Scheme != partition.SchemeNone || vs[0].FS.Type() != want {
			t.Errorf("%s: scheme %s type %s", rel, vs[0].Partition.Scheme, vs[0].FS.Type())
		}
	}
	if _, err := Detect(ctx, bytes.NewReader(make([]byte, 1<<20)), 1<<20); err == nil {
		t.Error("zeros detected as a file system")
	}
}

// TestPartitionedDisks builds MBR (with logical partitions) and GPT disks
// with sfdisk, puts ext4 and FAT file systems in partitions, and reads them
// back through the partition table; then damages the primary GPT.
func TestPartitionedDisks(t *testing.T) {
	testenv.NeedTool(t, "sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy")
	ctx := context.Background()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from a partition\n"), 0o644)
	for _, tc := range []struct {
		name, script string
		parts        int
	}{
		{"mbr", "label: dos\nstart=2048, size=40960, type=83\nstart=43008, size=20480, type=c\nstart=63488, size=120000, type=5\nstart=65536, size=20480, type=83\nstart=88064, size=20480, type=c\n", 4},
		{"gpt", "label: gpt\nstart=2048, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"linux data\"\nstart=43008, size=20480, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"Basic data\"\n", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			fstest.Run(t, "truncate", "-s", "100M", img)
			cmd := exec.Command("sfdisk", "-q", img)
			cmd.Stdin = strings.NewReader(tc.script)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sfdisk: %v %s", err, out)
			}
			raw, _ := os.ReadFile(img)
			parts, err := partition.Read(bytes.NewReader(raw), int64(len(raw)))
			if err != nil || len(parts) != tc.parts {
				t.Fatalf("partitions %+v %v", parts, err)
			}
			// ext4 in every Linux partition, FAT16 in every FAT one.
			for _, p := range parts {
				sec := p.Start / 512
				switch {
				case p.MBRType == 0x83 || strings.HasPrefix(p.TypeGUID, "0FC63DAF"):
					fs := filepath.Join(t.TempDir(), "fs.img")
					fstest.Run(t, "mkfs.ext4", "-q", "-F", "-d", src, fs, "10M")
					fstest.Run(t, "dd", "if="+fs, "of="+img, "bs=512", "seek="+itoa(sec), "conv=notrunc", "status=none")
				default:
					fs := filepath.Join(t.TempDir(), "fat.img")
					fstest.Run(t, "mkfs.vfat", "-C", "-F", "16", fs, "10240")
					fstest.Run(t, "mcopy", "-i", fs, filepath.Join(src, "hello.txt"), "::/")
					fstest.Run(t, "dd", "if="+fs, "of="+img, "bs=512", "seek="+itoa(sec), "conv=notrunc", "status=none")
				}
			}
			raw, _ = os.ReadFile(img)
			check := func(raw []byte) {
				vs, err := Volumes(ctx, bytes.NewReader(raw), int64(len(raw)))
				if err != nil || len(vs) != tc.parts {
					t.Fatalf("volumes: %v %v", vs, err)
				}
				for _, v := range vs {
					if v.Err != nil {
						t.Errorf("partition %d: %v", v.Partition.Index, v.Err)
						continue
					}
					b, err := filesystem.ReadFile(ctx, v.FS, "hello.txt")
					if err != nil || string(b) != "hello from a partition\n" {
						t.Errorf("partition %d (%s): %q %v", v.Partition.Index, v.FS.Type(), b, err)
					}
				}
			}
			check(raw)
			if tc.name == "mbr" {
				if parts[2].Index != 5 || !parts[2].Logical || parts[3].Index != 6 {
					t.Errorf("logical partitions %+v", parts)
				}
				return
			}
			if parts[0].Name != "linux data" || parts[1].Name != "Basic data" {
				t.Errorf("names %q %q", parts[0].Name, parts[1].Name)
			}
			// Damage the primary GPT header: the backup must be used.
			raw[512+100] ^= 0xff
			raw[512+24] ^= 0x01
			tb, err := partition.ReadTable(bytes.NewReader(raw), int64(len(raw)))
			if err != nil || !tb.BackupUsed || len(tb.Partitions) != 2 {
				t.Fatalf("backup GPT: %+v %v", tb, err)
			}
			check(raw)
		})
	}
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
