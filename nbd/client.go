package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
)

// Client is one connection to an export of an NBD server. Its methods may
// be called from several goroutines; requests go one at a time.
type Client struct {
	conn     net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	size     int64
	flags    uint16
	maxBlock int64
	// structured replies were negotiated (needed for block status)
	structured bool
	contexts   map[string]uint32

	mu     sync.Mutex
	handle uint64
	err    error // sticky: the connection is out of step
}

// DialOptions are what a client asks for in the handshake.
type DialOptions struct {
	// MetaContexts to select, e.g. "base:allocation" or
	// "qemu:dirty-bitmap:NAME" (asking for any turns on structured replies).
	MetaContexts []string
}

// Dial connects to export name at addr ("unix:PATH", a path with a slash,
// or host:port).
func Dial(ctx context.Context, addr, name string, opt DialOptions) (*Client, error) {
	network, a := "tcp", addr
	if path, ok := unixPath(addr); ok {
		network, a = "unix", path
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, a)
	if err != nil {
		return nil, fmt.Errorf("nbd dial %s: %w", addr, err)
	}
	return newClient(ctx, conn, addr, name, opt)
}

// newClient runs the handshake on conn (closed on failure).
func newClient(ctx context.Context, conn net.Conn, addr, name string, opt DialOptions) (*Client, error) {
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 128<<10), w: bufio.NewWriterSize(conn, 128<<10), maxBlock: MaxRequest}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err := c.handshake(name, opt)
	if !stop() {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd handshake with %s export %q: %w", addr, name, err)
	}
	return c, nil
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// ReadOnly reports whether the server refuses changes.
func (c *Client) ReadOnly() bool { return c.flags&tflagReadOnly != 0 }

// MetaContext returns the id the server gave a selected meta context.
func (c *Client) MetaContext(name string) (uint32, bool) {
	id, ok := c.contexts[name]
	return id, ok
}

func (c *Client) sendOption(opt uint32, data []byte) error {
	var h [16]byte
	binary.BigEndian.PutUint64(h[0:], optMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], uint32(len(data)))
	c.w.Write(h[:])
	c.w.Write(data)
	return c.w.Flush()
}

// optionReply reads one option reply to opt.
func (c *Client) optionReply(opt uint32) (typ uint32, data []byte, err error) {
	var h [20]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	if binary.BigEndian.Uint64(h[0:]) != optReplyMagic {
		return 0, nil, errors.New("bad option reply magic")
	}
	if got := binary.BigEndian.Uint32(h[8:]); got != opt {
		return 0, nil, fmt.Errorf("reply to option %d while asking %d", got, opt)
	}
	typ = binary.BigEndian.Uint32(h[12:])
	n := binary.BigEndian.Uint32(h[16:])
	if n > 16<<20 {
		return 0, nil, fmt.Errorf("option reply of %d bytes", n)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(c.r, data); err != nil {
		return 0, nil, err
	}
	if typ&repErrBit != 0 {
		return typ, data, fmt.Errorf("server refused option %d: error %#x %q", opt, typ, data)
	}
	return typ, data, nil
}

func (c *Client) handshake(name string, opt DialOptions) error {
	var h [18]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if binary.BigEndian.Uint64(h[0:]) != nbdMagic || binary.BigEndian.Uint64(h[8:]) != optMagic {
		return errors.New("not a newstyle NBD server")
	}
	sflags := binary.BigEndian.Uint16(h[16:])
	if sflags&flagFixedNewstyle == 0 {
		return errors.New("server does not speak fixed newstyle")
	}
	cflags := uint32(flagFixedNewstyle)
	if sflags&flagNoZeroes != 0 {
		cflags |= flagNoZeroes
	}
	c.w.Write(binary.BigEndian.AppendUint32(nil, cflags))
	if len(opt.MetaContexts) > 0 {
		if err := c.sendOption(optStructuredReply, nil); err != nil {
			return err
		}
		if _, _, err := c.optionReply(optStructuredReply); err != nil {
			return err
		}
		c.structured = true
		d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		d = append(d, name...)
		d = binary.BigEndian.AppendUint32(d, uint32(len(opt.MetaContexts)))
		for _, q := range opt.MetaContexts {
			d = binary.BigEndian.AppendUint32(d, uint32(len(q)))
			d = append(d, q...)
		}
		if err := c.sendOption(optSetMetaContext, d); err != nil {
			return err
		}
		c.contexts = map[string]uint32{}
		for {
			typ, data, err := c.optionReply(optSetMetaContext)
			if err != nil {
				return err
			}
			if typ == repAck {
				break
			}
			if typ == repMetaContext && len(data) >= 4 {
				c.contexts[string(data[4:])] = binary.BigEndian.Uint32(data)
			}
		}
		for _, q := range opt.MetaContexts {
			if _, ok := c.contexts[q]; !ok {
				return fmt.Errorf("server does not offer meta context %q", q)
			}
		}
	}
	d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	d = append(d, name...)
	d = binary.BigEndian.AppendUint16(d, 1)
	d = binary.BigEndian.AppendUint16(d, infoBlockSize)
	if err := c.sendOption(optGo, d); err != nil {
		return err
	}
	gotExport := false
	for {
		typ, data, err := c.optionReply(optGo)
		if err != nil {
			return err
		}
		if typ == repAck {
			break
		}
		if typ != repInfo || len(data) < 2 {
			continue
		}
		switch binary.BigEndian.Uint16(data) {
		case infoExport:
			if len(data) < 12 {
				return errors.New("short export info")
			}
			c.size = int64(binary.BigEndian.Uint64(data[2:]))
			c.flags = binary.BigEndian.Uint16(data[10:])
			gotExport = true
		case infoBlockSize:
			if len(data) >= 14 {
				if m := int64(binary.BigEndian.Uint32(data[10:])); m > 0 && m < c.maxBlock {
					c.maxBlock = m
				}
			}
		}
	}
	if !gotExport || c.size < 0 {
		return errors.New("server sent no export information")
	}
	return nil
}

// Errno is an error number an NBD server replied with.
type Errno uint32

func (e Errno) Error() string { return fmt.Sprintf("nbd server: %v", syscall.Errno(e)) }

func (c *Client) sendRequest(typ, flags uint16, off, n int64, data []byte) (uint64, error) {
	c.handle++
	var h [28]byte
	binary.BigEndian.PutUint32(h[0:], requestMagic)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], c.handle)
	binary.BigEndian.PutUint64(h[16:], uint64(off))
	binary.BigEndian.PutUint32(h[24:], uint32(n))
	c.w.Write(h[:])
	c.w.Write(data)
	return c.handle, c.w.Flush()
}

// chunk is one reply chunk (a simple reply is one chunk with done set).
type chunk struct {
	done   bool
	typ    uint16
	errno  uint32
	simple bool
	data   []byte // structured payload
}

// readReply reads the next reply chunk for handle; for a simple reply to
// a read, dst receives the data.
func (c *Client) readChunk(handle uint64, dst []byte) (chunk, error) {
	var m [4]byte
	if _, err := io.ReadFull(c.r, m[:]); err != nil {
		return chunk{}, err
	}
	switch binary.BigEndian.Uint32(m[:]) {
	case simpleReplyMagic:
		var h [12]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return chunk{}, err
		}
		if binary.BigEndian.Uint64(h[4:]) != handle {
			return chunk{}, errors.New("reply to another request")
		}
		e := binary.BigEndian.Uint32(h[0:])
		if e == 0 && dst != nil {
			if _, err := io.ReadFull(c.r, dst); err != nil {
				return chunk{}, err
			}
		}
		return chunk{done: true, simple: true, errno: e}, nil
	case structuredReplyMagic:
		var h [16]byte
		if _, err := io.ReadFull(c.r, h[:]); err != nil {
			return chunk{}, err
		}
		if binary.BigEndian.Uint64(h[4:]) != handle {
			return chunk{}, errors.New("reply to another request")
		}
		n := binary.BigEndian.Uint32(h[12:])
		if n > MaxRequest+64 {
			return chunk{}, fmt.Errorf("reply chunk of %d bytes", n)
		}
		ch := chunk{done: binary.BigEndian.Uint16(h[0:])&replyFlagDone != 0, typ: binary.BigEndian.Uint16(h[2:]), data: make([]byte, n)}
		if _, err := io.ReadFull(c.r, ch.data); err != nil {
			return chunk{}, err
		}
		if ch.typ&replyTypeErrorBit != 0 {
			if len(ch.data) < 4 {
				return chunk{}, errors.New("short error chunk")
			}
			ch.errno = binary.BigEndian.Uint32(ch.data)
			if ch.errno == 0 {
				ch.errno = errIO
			}
		}
		return ch, nil
	}
	return chunk{}, errors.New("bad reply magic")
}

// do runs one request to completion; each structured chunk goes to
// onChunk. The connection lock is held.
func (c *Client) do(ctx context.Context, typ, flags uint16, off, n int64, data, dst []byte, onChunk func(chunk) error) error {
	if c.err != nil {
		return c.err
	}
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	defer stop()
	fail := func(err error) error {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		c.err = fmt.Errorf("nbd connection: %w", err)
		c.conn.Close()
		return c.err
	}
	h, err := c.sendRequest(typ, flags, off, n, data)
	if err != nil {
		return fail(err)
	}
	var first uint32
	for {
		ch, err := c.readChunk(h, dst)
		if err != nil {
			return fail(err)
		}
		if ch.errno != 0 && first == 0 {
			first = ch.errno
		}
		if !ch.simple && ch.errno == 0 && onChunk != nil {
			if err := onChunk(ch); err != nil {
				return fail(err)
			}
		}
		if ch.done {
			break
		}
	}
	if first != 0 {
		return Errno(first)
	}
	return nil
}

// ReadAt reads len(p) bytes at off (io.ReaderAt).
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	return c.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt with a context.
func (c *Client) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd read at %d: negative offset", off)
	}
	want := len(p)
	var eof error
	if off >= c.size {
		return 0, io.EOF
	}
	if rem := c.size - off; int64(len(p)) > rem {
		p, eof = p[:rem], io.EOF
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	done := 0
	for done < len(p) {
		part := p[done:min(len(p), done+int(c.maxBlock))]
		base := off + int64(done)
		err := c.do(ctx, cmdRead, 0, base, int64(len(part)), nil, part, func(ch chunk) error {
			switch ch.typ {
			case replyTypeOffsetData:
				if len(ch.data) < 8 {
					return errors.New("short data chunk")
				}
				o := int64(binary.BigEndian.Uint64(ch.data)) - base
				d := ch.data[8:]
				if o < 0 || o+int64(len(d)) > int64(len(part)) {
					return errors.New("data chunk outside the request")
				}
				copy(part[o:], d)
			case replyTypeOffsetHole:
				if len(ch.data) < 12 {
					return errors.New("short hole chunk")
				}
				o := int64(binary.BigEndian.Uint64(ch.data)) - base
				l := int64(binary.BigEndian.Uint32(ch.data[8:]))
				if o < 0 || o+l > int64(len(part)) {
					return errors.New("hole chunk outside the request")
				}
				clear(part[o : o+l])
			}
			return nil
		})
		if err != nil {
			return done, fmt.Errorf("nbd read %d bytes at %d: %w", len(part), base, err)
		}
		done += len(part)
	}
	if done < want {
		return done, eof
	}
	return done, nil
}

// WriteAt writes p at off (io.WriterAt).
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	return c.WriteAtContext(context.Background(), p, off, false)
}

// WriteAtContext writes p at off; with fua the server makes it durable
// before answering.
func (c *Client) WriteAtContext(ctx context.Context, p []byte, off int64, fua bool) (int, error) {
	var flags uint16
	if fua {
		flags = cmdFlagFUA
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	done := 0
	for done < len(p) {
		part := p[done:min(len(p), done+int(c.maxBlock))]
		if err := c.do(ctx, cmdWrite, flags, off+int64(done), int64(len(part)), part, nil, nil); err != nil {
			return done, fmt.Errorf("nbd write %d bytes at %d: %w", len(part), off+int64(done), err)
		}
		done += len(part)
	}
	return done, nil
}

func (c *Client) rangeCmd(ctx context.Context, what string, typ uint16, off, n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n > 0 {
		l := min(n, 1<<30)
		if err := c.do(ctx, typ, 0, off, l, nil, nil, nil); err != nil {
			return fmt.Errorf("nbd %s %d bytes at %d: %w", what, l, off, err)
		}
		off += l
		n -= l
	}
	return nil
}

// Trim tells the server a range is no longer needed.
func (c *Client) Trim(ctx context.Context, off, n int64) error {
	return c.rangeCmd(ctx, "trim", cmdTrim, off, n)
}

// Zero makes a range read as zeros.
func (c *Client) Zero(ctx context.Context, off, n int64) error {
	return c.rangeCmd(ctx, "write zeroes", cmdZeroes, off, n)
}

// Flush asks the server to make every completed write durable.
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.do(ctx, cmdFlush, 0, 0, 0, nil, nil, nil); err != nil {
		return fmt.Errorf("nbd flush: %w", err)
	}
	return nil
}

// Extent is a run of bytes with the same status flags in one meta context.
type Extent struct {
	Offset, Length int64
	Flags          uint32
}

// BlockStatus returns the extents the server reports for [off, off+n) in
// meta context name (selected at Dial). The server may describe less than
// asked; call again from the end of the last extent.
func (c *Client) BlockStatus(ctx context.Context, name string, off, n int64) ([]Extent, error) {
	id, ok := c.contexts[name]
	if !ok {
		return nil, fmt.Errorf("nbd block status: meta context %q was not selected", name)
	}
	n = min(n, 1<<31)
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Extent
	err := c.do(ctx, cmdStatus, 0, off, n, nil, nil, func(ch chunk) error {
		if ch.typ != replyTypeBlockStatus {
			return nil
		}
		if len(ch.data) < 4 || (len(ch.data)-4)%8 != 0 {
			return errors.New("malformed block status chunk")
		}
		if binary.BigEndian.Uint32(ch.data) != id {
			return nil
		}
		o := off
		for d := ch.data[4:]; len(d) >= 8; d = d[8:] {
			l := int64(binary.BigEndian.Uint32(d))
			out = append(out, Extent{Offset: o, Length: l, Flags: binary.BigEndian.Uint32(d[4:])})
			o += l
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nbd block status at %d: %w", off, err)
	}
	return out, nil
}

// Close ends the session politely and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.sendRequest(cmdDisc, 0, 0, 0, nil)
	}
	return c.conn.Close()
}
