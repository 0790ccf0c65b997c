package vdisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"

	"github.com/klauspost/compress/flate"
)

// WriteQcow2 writes a qcow2 version 3 image (refcount order 4, no
// backing file) to w. All-zero clusters stay unallocated; with
// opt.Compress, clusters are stored deflate-compressed when that saves
// space. It returns the file size.
func WriteQcow2(ctx context.Context, w io.WriterAt, src io.ReaderAt, size int64, opt *WriteOptions) (int64, error) {
	wr := newWriter(ctx, "qcow2", src, size, opt)
	wr.wa = w
	cs, err := opt.blockSize(64<<10, 512, 2<<20)
	if err != nil {
		return 0, err
	}
	if size <= 0 || size > 1<<56 {
		return 0, corrupt("qcow2", -1, "disk of %d bytes", size)
	}
	var cbits uint
	for int64(1)<<cbits < cs {
		cbits++
	}
	vsize := sectorAlign(size)
	l2n := cs / 8
	perL2 := cs * l2n
	l1n := (vsize + perL2 - 1) / perL2
	l1c := (l1n*8 + cs - 1) / cs
	l1 := make([]byte, l1c*cs)
	var refs []uint16 // refcount per host cluster
	ref := func(c int64) {
		for int64(len(refs)) <= c {
			refs = append(refs, 0)
		}
		refs[c]++
	}
	for c := int64(0); c < 1+l1c; c++ {
		ref(c)
	}
	pos := (1 + l1c) * cs
	align := func() { pos = (pos + cs - 1) &^ (cs - 1) }
	compress := opt != nil && opt.Compress
	var zw *flate.Writer
	var zbuf bytes.Buffer
	if compress {
		zw, _ = flate.NewWriter(&zbuf, opt.level())
	}
	x := 62 - (cbits - 8)
	buf := make([]byte, cs)
	l2 := make([]byte, cs)
	for li := int64(0); li < l1n && wr.err == nil; li++ {
		clear(l2)
		used := false
		for j := int64(0); j < l2n && wr.err == nil; j++ {
			off := li*perL2 + j*cs
			if off >= vsize {
				break
			}
			wr.read(buf, off)
			if wr.err != nil || isZero(buf) {
				wr.progress(off + cs)
				continue
			}
			used = true
			if compress {
				zbuf.Reset()
				zw.Reset(&zbuf)
				_, _ = zw.Write(buf)
				if err := zw.Close(); err != nil {
					wr.fail("compressing", err)
				}
				if int64(zbuf.Len()) < cs-512 {
					c := zbuf.Bytes()
					end := ((pos + int64(len(c)) - 1) | 511) + 1
					nsec := (end - (pos &^ 511)) / 512
					binary.BigEndian.PutUint64(l2[j*8:], qcowOflagCompress|uint64(nsec-1)<<x|uint64(pos))
					for hc := pos >> cbits; hc <= (end-1)>>cbits; hc++ {
						ref(hc)
					}
					wr.writeAt(c, pos)
					pos += int64(len(c))
					wr.progress(off + cs)
					continue
				}
			}
			align()
			binary.BigEndian.PutUint64(l2[j*8:], qcowOflagCopied|uint64(pos))
			ref(pos >> cbits)
			wr.writeAt(buf, pos)
			pos += cs
			wr.progress(off + cs)
		}
		if used {
			align()
			binary.BigEndian.PutUint64(l1[li*8:], qcowOflagCopied|uint64(pos))
			ref(pos >> cbits)
			wr.writeAt(l2, pos)
			pos += cs
		}
	}
	align()
	// Refcount table then refcount blocks, after everything else; they
	// count themselves.
	n := pos / cs
	rbEntries := cs / 2
	var t, r int64
	for {
		r2 := (n + t + r + rbEntries - 1) / rbEntries
		t2 := (r2*8 + cs - 1) / cs
		if r2 == r && t2 == t {
			break
		}
		r, t = r2, t2
	}
	rtOff := n * cs
	for c := n; c < n+t+r; c++ {
		ref(c)
	}
	rt := make([]byte, t*cs)
	rb := make([]byte, cs)
	for i := int64(0); i < r && wr.err == nil; i++ {
		clear(rb)
		for k := int64(0); k < rbEntries; k++ {
			if c := i*rbEntries + k; c < int64(len(refs)) {
				binary.BigEndian.PutUint16(rb[k*2:], refs[c])
			}
		}
		boff := (n + t + i) * cs
		binary.BigEndian.PutUint64(rt[i*8:], uint64(boff))
		wr.writeAt(rb, boff)
	}
	wr.writeAt(rt, rtOff)
	wr.writeAt(l1, cs)
	h := make([]byte, cs)
	be := binary.BigEndian
	be.PutUint32(h, qcowMagic)
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], uint32(cbits))
	be.PutUint64(h[24:], uint64(vsize))
	be.PutUint32(h[36:], uint32(l1n))
	be.PutUint64(h[40:], uint64(cs))
	be.PutUint64(h[48:], uint64(rtOff))
	be.PutUint32(h[56:], uint32(t))
	be.PutUint32(h[96:], 4)    // refcount order: 16-bit refcounts
	be.PutUint32(h[100:], 112) // header length; compression type 0 = zlib
	// header extension area: end marker (type 0, length 0) at 112
	wr.writeAt(h, 0)
	total := (n + t + r) * cs
	if wr.err != nil {
		return total, wr.err
	}
	return total, verify(w, total, vsize, func(r io.ReaderAt, n int64) (Disk, error) { return OpenQcow2(r, n) })
}
