package nbd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// memBackend is a small in-memory export.
type memBackend struct{ b []byte }

func (m *memBackend) Size() int64    { return int64(len(m.b)) }
func (m *memBackend) ReadOnly() bool { return false }
func (m *memBackend) ReadAt(_ context.Context, p []byte, off int64) error {
	copy(p, m.b[off:])
	return nil
}
func (m *memBackend) WriteAt(_ context.Context, p []byte, off int64) error {
	copy(m.b[off:], p)
	return nil
}
func (m *memBackend) Trim(context.Context, int64, int64) error { return nil }
func (m *memBackend) Zero(_ context.Context, off, n int64) error {
	clear(m.b[off : off+n])
	return nil
}
func (m *memBackend) Flush(context.Context) error { return nil }

// clientTranscript is what a client sends: flags, NBD_OPT_GO for "", then
// requests.
func clientTranscript(reqs ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes)
	opt := func(o uint32, data []byte) {
		b = binary.BigEndian.AppendUint64(b, optMagic)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	opt(optList, nil)
	opt(optStructuredReply, nil)
	opt(optGo, []byte{0, 0, 0, 0, 0, 1, 0, 3})
	for _, r := range reqs {
		b = append(b, r...)
	}
	return b
}

func request(typ, flags uint16, off uint64, n uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, requestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, 7)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, n)
	return append(b, data...)
}

// FuzzServer feeds arbitrary client bytes to a server: it must answer or
// hang up, never panic or hang.
func FuzzServer(f *testing.F) {
	f.Add(clientTranscript(
		request(cmdWrite, cmdFlagFUA, 100, 4, []byte("abcd")),
		request(cmdRead, 0, 0, 512, nil),
		request(cmdZeroes, 0, 0, 64, nil),
		request(cmdTrim, 0, 4000, 96, nil),
		request(cmdFlush, 0, 0, 0, nil),
		request(cmdRead, 0, 4090, 100, nil), // past the end
		request(cmdWrite, 0, 1<<40, 2, []byte("xy")),
		request(cmdStatus, 0, 0, 10, nil),
		request(cmdDisc, 0, 0, 0, nil)))
	f.Add(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle))
	opt := binary.BigEndian.AppendUint32(nil, flagFixedNewstyle)
	opt = binary.BigEndian.AppendUint64(opt, optMagic)
	opt = binary.BigEndian.AppendUint32(opt, optExportName)
	opt = binary.BigEndian.AppendUint32(opt, 0)
	f.Add(append(opt, request(cmdRead, 0, 0, 16, nil)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		srv := NewServer(nil, Export{Name: "", Backend: &memBackend{b: make([]byte, 4096)}})
		sc, cc := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(context.Background(), sc)
		}()
		go io.Copy(io.Discard, cc)
		cc.Write(in)
		cc.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("server did not finish after the client hung up")
		}
	})
}

// serverTranscript is what a server sends for a client that asks for
// structured replies and one meta context, then reads 16 bytes at 0 and
// asks for block status.
func serverTranscript() []byte {
	b := binary.BigEndian.AppendUint64(nil, nbdMagic)
	b = binary.BigEndian.AppendUint64(b, optMagic)
	b = binary.BigEndian.AppendUint16(b, flagFixedNewstyle|flagNoZeroes)
	rep := func(opt, typ uint32, data []byte) {
		b = binary.BigEndian.AppendUint64(b, optReplyMagic)
		b = binary.BigEndian.AppendUint32(b, opt)
		b = binary.BigEndian.AppendUint32(b, typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	rep(optStructuredReply, repAck, nil)
	rep(optSetMetaContext, repMetaContext, append([]byte{0, 0, 0, 1}, "qemu:dirty-bitmap:b"...))
	rep(optSetMetaContext, repAck, nil)
	rep(optGo, repInfo, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 3})
	rep(optGo, repAck, nil)
	chunk := func(flags, typ uint16, handle uint64, data []byte) {
		b = binary.BigEndian.AppendUint32(b, structuredReplyMagic)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, handle)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, data...)
	}
	chunk(0, replyTypeOffsetData, 1, append(make([]byte, 8), "01234567"...))
	chunk(replyFlagDone, replyTypeOffsetHole, 1, []byte{0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 8})
	chunk(replyFlagDone, replyTypeBlockStatus, 2, []byte{0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 1})
	return b
}

// FuzzClient feeds arbitrary server bytes to the client: it must fail or
// succeed, never panic or hang.
func FuzzClient(f *testing.F) {
	f.Add(serverTranscript())
	f.Fuzz(func(t *testing.T, in []byte) {
		sc, cc := net.Pipe()
		go io.Copy(io.Discard, sc)
		go func() {
			sc.Write(in)
			sc.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := newClient(ctx, cc, "pipe", "", DialOptions{MetaContexts: []string{"qemu:dirty-bitmap:b"}})
		if err != nil {
			return
		}
		defer c.Close()
		c.ReadAtContext(ctx, make([]byte, 16), 0)
		c.BlockStatus(ctx, "qemu:dirty-bitmap:b", 0, 4096)
	})
}

// The fuzz seed is a valid session: check the client reads it right.
func TestClientStructuredTranscript(t *testing.T) {
	sc, cc := net.Pipe()
	go io.Copy(io.Discard, sc)
	go sc.Write(serverTranscript())
	defer sc.Close()
	ctx := context.Background()
	c, err := newClient(ctx, cc, "pipe", "", DialOptions{MetaContexts: []string{"qemu:dirty-bitmap:b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != 4096 {
		t.Fatalf("size %d", c.Size())
	}
	p := make([]byte, 16)
	for i := range p {
		p[i] = 0xff
	}
	if _, err := c.ReadAtContext(ctx, p, 0); err != nil || string(p) != "01234567\x00\x00\x00\x00\x00\x00\x00\x00" {
		t.Fatalf("structured read: %v %q", err, p)
	}
	ext, err := c.BlockStatus(ctx, "qemu:dirty-bitmap:b", 0, 4096)
	if err != nil || len(ext) != 1 || ext[0] != (Extent{0, 4096, 1}) {
		t.Fatalf("block status: %v %v", err, ext)
	}
}
