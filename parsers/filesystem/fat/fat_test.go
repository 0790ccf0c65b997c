package fat

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

var fixtures = []string{"fat/rustfatfs_fat12.img", "fat/rustfatfs_fat16.img"}

func openImage(t testing.TB, p string) *FS {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	fs, err := Open(context.Background(), f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestFixturesMatchSleuthKit(t *testing.T) {
	testenv.NeedTool(t, "fls", "icat")
	for _, rel := range fixtures {
		t.Run(filepath.Base(rel), func(t *testing.T) {
			p := testenv.Fixture(t, rel)
			fstest.CompareTSK(t, openImage(t, p), p, 0, false, nil)
		})
	}
}

func TestFixtureFacts(t *testing.T) {
	ctx := context.Background()
	for i, rel := range fixtures {
		f := openImage(t, testenv.Fixture(t, rel))
		if want := []string{"fat12", "fat16"}[i]; f.Type() != want {
			t.Errorf("%s: type %s", rel, f.Type())
		}
		if f.Label() != "Test!" || f.VolumeID() != 0x12345678 || f.ClusterSize() != 512 {
			t.Errorf("%s: label %q id %#x cluster %d", rel, f.Label(), f.VolumeID(), f.ClusterSize())
		}
		es, err := f.ReadDir(ctx, "/")
		if err != nil {
			t.Fatal(err)
		}
		var names, shorts []string
		d, _ := f.readDir(ctx, 0, true)
		for _, e := range es {
			names = append(names, e.Name)
		}
		for _, n := range d.ents {
			shorts = append(shorts, n.short)
		}
		sort.Strings(names)
		sort.Strings(shorts)
		if strings.Join(names, ",") != "long.txt,short.txt,very,very-long-dir-name" || strings.Join(shorts, ",") != "LONG.TXT,SHORT.TXT,VERY,VERY-L~1" {
			t.Errorf("%s: names %v short %v", rel, names, shorts)
		}
		cool := "Rust is cool!\n"
		for p, want := range map[string]string{
			"short.txt": cool, "long.txt": strings.Repeat(cool, 1000),
			"very/long/path/test.txt": cool, "very-long-dir-name/very-long-file-name.txt": cool,
			"VERY-L~1/VERY-LONG-FILE-NAME.TXT": cool, // case-insensitive lookup
		} {
			b, err := filesystem.ReadFile(ctx, f, p)
			if err != nil || string(b) != want {
				t.Errorf("%s: %s = %d bytes, %v", rel, p, len(b), err)
			}
		}
		if es, _ := f.ReadDir(ctx, "very/long/path"); len(es) != 1 || es[0].Name != "test.txt" {
			t.Errorf("very/long/path lists %v", es)
		}
	}
}

func TestMkfsTree(t *testing.T) {
	testenv.NeedTool(t, "mkfs.vfat", "mcopy", "fls", "icat")
	t.Setenv("TZ", "UTC")
	t.Setenv("LC_ALL", "C.UTF-8")
	src := t.TempDir()
	fstest.MakeTree(t, src, fstest.TreeOptions{Files: 300, Sparse: true, FATNames: true, EvenTimes: true, BigFile: 3 << 20})
	m := fstest.Manifest(t, src)
	for _, v := range []struct{ name, fat, size string }{{"fat32", "32", "200"}, {"fat16", "16", "120"}} {
		t.Run(v.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "fat.img")
			fstest.Run(t, "mkfs.vfat", "-C", "-F", v.fat, "-n", "REWIND", img, strings.Repeat("", 0)+v.size+"000")
			ents, _ := os.ReadDir(src)
			args := []string{"-s", "-m", "-i", img}
			for _, e := range ents {
				args = append(args, filepath.Join(src, e.Name()))
			}
			fstest.Run(t, "mcopy", append(args, "::/")...)
			f := openImage(t, img)
			if f.Type() != v.name || f.Label() != "REWIND" {
				t.Errorf("type %s label %q", f.Type(), f.Label())
			}
			fstest.CompareManifest(t, f, m, fstest.Check{MtimeGran: 2 * time.Second})
			if v.name == "fat32" {
				fstest.CompareTSK(t, f, img, 0, false, nil)
			}
		})
	}
}

func TestDamagedChain(t *testing.T) {
	ctx := context.Background()
	b, err := os.ReadFile(testenv.Fixture(t, fixtures[1]))
	if err != nil {
		t.Fatal(err)
	}
	f, _ := Open(ctx, bytes.NewReader(b), int64(len(b)))
	d, _ := f.readDir(ctx, 0, true)
	n := d.ents[d.index["long.txt"]]
	bad := append([]byte(nil), b...)
	// Point long.txt's second cluster at a free one: the chain ends early.
	off := f.fatOff + int64(n.cluster)*2
	bad[off], bad[off+1] = 0, 0
	g, _ := Open(ctx, bytes.NewReader(bad), int64(len(bad)))
	if _, err := g.Open(ctx, "long.txt"); err == nil {
		t.Error("damaged chain opened")
	} else {
		t.Log(err)
	}
	if b, err := filesystem.ReadFile(ctx, g, "short.txt"); err != nil || string(b) != "Rust is cool!\n" {
		t.Errorf("short.txt after damage: %q %v", b, err)
	}
}
