package xfs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
	"github.com/rewind-cdp/rewind/parsers/filesystem/fstest"
)

// FuzzXFS overwrites the superblock/AG headers and the root inode chunk of
// a fresh mkfs.xfs image and browses the result through the panic-proof
// wrapper.
func FuzzXFS(f *testing.F) {
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		f.Skip("needs mkfs.xfs")
	}
	img := filepath.Join(f.TempDir(), "x.img")
	fstest.Run(f, "truncate", "-s", "300M", img)
	fstest.Run(f, "mkfs.xfs", "-q", "-f", img)
	fh, err := os.Open(img)
	if err != nil {
		f.Fatal(err)
	}
	defer fh.Close()
	base := make([]byte, 1<<20)
	fh.ReadAt(base, 0)
	x, err := Open(context.Background(), fh, 300<<20)
	if err != nil {
		f.Fatal(err)
	}
	root := int64(x.sb.InodeAbsOffset(x.sb.Rootino))
	f.Add(base[:4096], base[root:root+4096])
	f.Fuzz(func(t *testing.T, head, inodes []byte) {
		b := bytes.Clone(base)
		copy(b, head)
		copy(b[root:], inodes)
		r := &overlay{b: b, rest: fh}
		g, err := Open(context.Background(), r, 300<<20)
		if err != nil {
			return
		}
		fstest.Exercise(context.Background(), filesystem.Safe(g), 500)
	})
}

// overlay serves the patched first MiB from memory and the rest from the file.
type overlay struct {
	b    []byte
	rest *os.File
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < int64(len(o.b)) {
		n := copy(p, o.b[off:])
		if n == len(p) {
			return n, nil
		}
		m, err := o.rest.ReadAt(p[n:], off+int64(n))
		return n + m, err
	}
	return o.rest.ReadAt(p, off)
}
