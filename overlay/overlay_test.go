package overlay

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

type memBase []byte

func (m memBase) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Random writes, zeroing and reads agree with a plain copy of the disk,
// and the disk below never changes.
func TestOverlayMatchesAPlainCopy(t *testing.T) {
	const size = 1<<20 + 1234 // not a whole number of granules
	r := rand.New(rand.NewPCG(1, 2))
	base := make(memBase, size)
	for i := range base {
		base[i] = byte(r.IntN(256))
	}
	orig := bytes.Clone(base)
	want := bytes.Clone(base)
	path := filepath.Join(t.TempDir(), "scratch")
	o, err := New(base, size, path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 500 {
		off := r.Int64N(size)
		n := r.Int64N(min(size-off, 20000)) + 1
		switch i % 3 {
		case 0, 1:
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(r.IntN(256))
			}
			if _, err := o.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			copy(want[off:], p)
		case 2:
			if err := o.Zero(ctx, off, n); err != nil {
				t.Fatal(err)
			}
			clear(want[off : off+n])
		}
		roff := r.Int64N(size)
		got := make([]byte, r.Int64N(size-roff)+1)
		if _, err := o.ReadAt(got, roff); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[roff:roff+int64(len(got))]) {
			t.Fatalf("step %d: read at %d differs from a plain copy", i, roff)
		}
	}
	all := make([]byte, size+100)
	n, err := o.ReadAt(all, 0)
	if n != size || err != io.EOF || !bytes.Equal(all[:n], want) {
		t.Fatalf("full read: %d bytes, %v, equal %v", n, err, bytes.Equal(all[:n], want))
	}
	if !bytes.Equal(base, orig) {
		t.Fatal("the disk below was written")
	}
	if o.Written() == 0 || o.Written() > size {
		t.Errorf("Written() = %d", o.Written())
	}
	if _, err := o.WriteAt([]byte{1}, size); err == nil {
		t.Error("a write past the end succeeded")
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("scratch file left behind: %v", err)
	}
}
