package xfs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// region is a metadata structure of the seed image that fuzz inputs patch.
type region struct {
	off, len int64
}

// metadataRegions lists the structures the reader parses in a clean
// image: the superblock, every inode, the first blocks of every extent of
// directories and symlinks, and the first B+tree block under each root.
func metadataRegions(t testing.TB, f *FS) []region {
	ctx := context.Background()
	rs := []region{{0, 512}}
	seen := map[uint64]bool{}
	var walk func(ino uint64, depth int)
	walk = func(ino uint64, depth int) {
		if seen[ino] || depth > 20 {
			return
		}
		seen[ino] = true
		in, err := f.inode(ino)
		if err != nil {
			t.Fatalf("seed image: %v", err)
		}
		rs = append(rs, region{in.off, f.sb.isize})
		if in.format == fmtBtree && len(in.fork) >= 4+16 {
			maxrec := (len(in.fork) - 4) / 16
			if off := f.fsbOff(be.Uint64(in.fork[4+maxrec*8:])); off >= 0 {
				rs = append(rs, region{off, f.sb.bs})
			}
		}
		if (in.format == fmtExtents || in.format == fmtBtree) && !in.e.Mode.IsRegular() {
			ext, err := f.extents(ctx, in)
			if err != nil {
				t.Fatalf("seed image: %v", err)
			}
			for i, e := range ext {
				if i%8 == 0 { // a sample of the blocks of big directories
					rs = append(rs, region{int64(e.pblk) * f.sb.bs, f.sb.bs})
				}
			}
		}
		if in.e.Mode.IsDir() {
			d, err := f.readDir(ctx, in)
			if err != nil {
				t.Fatalf("seed image: %v", err)
			}
			for i, c := range d.inos {
				if i < 8 || i%64 == 0 {
					walk(c, depth+1)
				}
			}
		}
	}
	walk(f.sb.rootino, 0)
	return rs
}

// FuzzXFS patches one metadata structure of a populated mkfs.xfs image
// (chosen by region, at offset at inside it) and browses the result. The
// reader is called directly, not through filesystem.Safe: any panic is a
// bug the fuzzer must report.
func FuzzXFS(f *testing.F) {
	testenv.NeedTool(f, "mkfs.xfs", "xfs_db")
	img := protoImage(f, protoTree(600))
	fh, err := os.Open(img)
	if err != nil {
		f.Fatal(err)
	}
	defer fh.Close()
	fi, _ := fh.Stat()
	clean := openFile(f, img)
	rs := metadataRegions(f, clean)
	for i, r := range rs {
		if i%4 != 0 && i > 16 {
			continue
		}
		// seeds are the structures' headers (short inputs minimize fast)
		b := make([]byte, min(r.len, 192))
		if _, err := fh.ReadAt(b, r.off); err != nil {
			f.Fatal(err)
		}
		f.Add(uint16(i), uint16(0), b)                    // intact
		f.Add(uint16(i), uint16(i*37%int(r.len)), b[:16]) // shifted copy of its own header
	}
	f.Fuzz(func(t *testing.T, reg, at uint16, patch []byte) {
		r := rs[int(reg)%len(rs)]
		if len(patch) > 1<<16 {
			patch = patch[:1<<16]
		}
		p := &patched{r: fh, patches: map[int64][]byte{r.off + int64(at)%r.len: patch}}
		g, err := Open(context.Background(), p, fi.Size())
		if err != nil {
			return
		}
		fstest.Exercise(context.Background(), g, 400)
	})
}

// FuzzXFSLog patches the log of a copy taken while mounted (whose log the
// reader replays) between its tail and head, with record checksums
// ignored so that patched records reach the parser, and browses the result.
func FuzzXFSLog(f *testing.F) {
	testenv.NeedRoot(f)
	testenv.NeedTool(f, "mkfs.xfs", "mount", "umount", "losetup")
	dir := f.TempDir()
	img, snap := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "snap.img")
	run(f, "truncate", "-s", "300M", img)
	run(f, "mkfs.xfs", "-q", "-f", img)
	mnt := filepath.Join(dir, "mnt")
	must(f, os.Mkdir(mnt, 0o755))
	run(f, "mount", "-o", "loop", img, mnt)
	mounted := true
	defer func() {
		if mounted {
			_ = exec.Command("umount", mnt).Run()
		}
		detach(img)
	}()
	must(f, os.Mkdir(filepath.Join(mnt, "d"), 0o755))
	for i := 0; i < 300; i++ {
		must(f, os.WriteFile(filepath.Join(mnt, "d", fmt.Sprintf("f%03d", i)), []byte{byte(i)}, 0o644))
	}
	must(f, os.Symlink(strings.Repeat("t", 600), filepath.Join(mnt, "long")))
	run(f, "sync")
	run(f, "cp", "--sparse=always", img, snap)
	run(f, "umount", mnt)
	mounted = false
	detach(img)

	fh, err := os.Open(snap)
	must(f, err)
	defer fh.Close()
	fi, _ := fh.Stat()
	clean := openFile(f, snap)
	if clean.LogState() != LogReplayed {
		f.Fatalf("seed copy: log %v", clean.LogState())
	}
	pos, err := clean.findLog()
	must(f, err)
	logOff := clean.fsbOff(clean.sb.logstart)
	nbb := (pos.head - pos.tail + int64(clean.sb.logblocks)*clean.sb.bs/bbSize) % (int64(clean.sb.logblocks) * clean.sb.bs / bbSize)
	for i := int64(0); i < nbb; i += 3 {
		b := make([]byte, 64)
		_, _ = fh.ReadAt(b, logOff+(pos.tail+i)*bbSize)
		f.Add(uint32(i*bbSize), b)
	}
	checkLogCRC = false
	defer func() { checkLogCRC = true }()
	f.Fuzz(func(t *testing.T, at uint32, patch []byte) {
		if len(patch) > 4096 {
			patch = patch[:4096]
		}
		off := logOff + pos.tail*bbSize + int64(at)%(nbb*bbSize)
		g, err := Open(context.Background(), &patched{r: fh, patches: map[int64][]byte{off: patch}}, fi.Size())
		if err != nil {
			return
		}
		fstest.Exercise(context.Background(), g, 400)
	})
}
