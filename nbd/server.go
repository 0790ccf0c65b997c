package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
)

// Backend is what an export serves. Offsets and lengths are checked against
// Size before a Backend sees them. Changes to a ReadOnly backend are refused
// by the server before they reach it.
type Backend interface {
	Size() int64
	ReadOnly() bool
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64) error
	// Trim tells the backend a range is no longer needed; what reads return
	// there afterwards is the backend's choice.
	Trim(ctx context.Context, off, length int64) error
	// Zero makes a range read as zeros.
	Zero(ctx context.Context, off, length int64) error
	// Flush makes every completed write durable.
	Flush(ctx context.Context) error
}

// Export is one named export of a Server.
type Export struct {
	Name        string
	Description string
	Backend     Backend
}

// Server serves exports to NBD clients. Requests on one connection are
// handled one at a time, in the order they arrive, so a backend sees them in
// the client's order.
type Server struct {
	exports []Export
	log     *slog.Logger

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewServer serves the given exports. A client asking for the empty name
// gets the first export.
func NewServer(log *slog.Logger, exports ...Export) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{exports: exports, log: log, conns: map[net.Conn]struct{}{}}
}

func (s *Server) lookup(name string) (Export, bool) {
	for _, e := range s.exports {
		if e.Name == name {
			return e, true
		}
	}
	if name == "" && len(s.exports) > 0 {
		return s.exports[0], true
	}
	return Export{}, false
}

// Listen listens on addr: "unix:PATH" or a path containing a slash for a
// unix socket (an old socket file there is replaced), else host:port TCP.
func Listen(addr string) (net.Listener, error) {
	network, a := "tcp", addr
	if path, ok := unixPath(addr); ok {
		network, a = "unix", path
		os.Remove(path)
	}
	l, err := net.Listen(network, a)
	if err != nil {
		return nil, fmt.Errorf("nbd listen on %s: %w", addr, err)
	}
	return l, nil
}

func unixPath(addr string) (string, bool) {
	if len(addr) > 5 && addr[:5] == "unix:" {
		return addr[5:], true
	}
	for _, c := range addr {
		if c == '/' {
			return addr, true
		}
	}
	return "", false
}

// Serve accepts connections on l until ctx ends (then it closes l and every
// connection, and waits for their handlers) or l fails.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nbd accept: %w", err)
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.ServeConn(ctx, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				s.log.Warn("nbd connection ended", "remote", c.RemoteAddr(), "err", err)
			}
		}()
	}
}

// ServeConn runs the handshake and then the transmission phase on one
// connection, and closes it. A clean disconnect returns nil.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	defer c.Close()
	r := bufio.NewReaderSize(c, 128<<10)
	w := bufio.NewWriterSize(c, 128<<10)
	exp, err := s.handshake(r, w)
	if err != nil || exp.Backend == nil {
		return err
	}
	return s.transmit(ctx, r, w, exp.Backend)
}

type optionWriter struct {
	w *bufio.Writer
}

func (o optionWriter) reply(opt, typ uint32, data []byte) error {
	var h [20]byte
	binary.BigEndian.PutUint64(h[0:], optReplyMagic)
	binary.BigEndian.PutUint32(h[8:], opt)
	binary.BigEndian.PutUint32(h[12:], typ)
	binary.BigEndian.PutUint32(h[16:], uint32(len(data)))
	o.w.Write(h[:])
	o.w.Write(data)
	return o.w.Flush()
}

func transmissionFlags(b Backend) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagWriteZeroes)
	if b.ReadOnly() {
		f |= tflagReadOnly
		f &^= tflagSendTrim | tflagWriteZeroes | tflagSendFUA
	}
	return f
}

// handshake negotiates an export. It returns an empty Export when the
// client aborted or left.
func (s *Server) handshake(r *bufio.Reader, w *bufio.Writer) (Export, error) {
	var h [18]byte
	binary.BigEndian.PutUint64(h[0:], nbdMagic)
	binary.BigEndian.PutUint64(h[8:], optMagic)
	binary.BigEndian.PutUint16(h[16:], flagFixedNewstyle|flagNoZeroes)
	w.Write(h[:])
	if err := w.Flush(); err != nil {
		return Export{}, fmt.Errorf("nbd handshake: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(r, cf[:]); err != nil {
		return Export{}, fmt.Errorf("nbd handshake: client flags: %w", err)
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&flagFixedNewstyle == 0 {
		return Export{}, errors.New("nbd handshake: client does not speak fixed newstyle")
	}
	noZeroes := clientFlags&flagNoZeroes != 0
	ow := optionWriter{w}
	for {
		var oh [16]byte
		if _, err := io.ReadFull(r, oh[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return Export{}, nil
			}
			return Export{}, fmt.Errorf("nbd handshake: option header: %w", err)
		}
		if binary.BigEndian.Uint64(oh[0:]) != optMagic {
			return Export{}, errors.New("nbd handshake: bad option magic")
		}
		opt := binary.BigEndian.Uint32(oh[8:])
		n := binary.BigEndian.Uint32(oh[12:])
		if n > 64<<10 {
			return Export{}, fmt.Errorf("nbd handshake: option %d of %d bytes is too long", opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			return Export{}, fmt.Errorf("nbd handshake: option %d data: %w", opt, err)
		}
		switch opt {
		case optExportName:
			e, ok := s.lookup(string(data))
			if !ok {
				return Export{}, fmt.Errorf("nbd handshake: client asked for unknown export %q", data)
			}
			var b [10 + 124]byte
			binary.BigEndian.PutUint64(b[0:], uint64(e.Backend.Size()))
			binary.BigEndian.PutUint16(b[8:], transmissionFlags(e.Backend))
			if noZeroes {
				w.Write(b[:10])
			} else {
				w.Write(b[:])
			}
			return e, w.Flush()
		case optAbort:
			ow.reply(opt, repAck, nil)
			return Export{}, nil
		case optList:
			if len(data) != 0 {
				if err := ow.reply(opt, repErrInvalid, nil); err != nil {
					return Export{}, err
				}
				continue
			}
			for _, e := range s.exports {
				d := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
				d = append(d, e.Name...)
				d = append(d, e.Description...)
				if err := ow.reply(opt, repServer, d); err != nil {
					return Export{}, err
				}
			}
			if err := ow.reply(opt, repAck, nil); err != nil {
				return Export{}, err
			}
		case optInfo, optGo:
			if len(data) < 6 {
				if err := ow.reply(opt, repErrInvalid, nil); err != nil {
					return Export{}, err
				}
				continue
			}
			nl := binary.BigEndian.Uint32(data)
			if uint64(nl)+6 > uint64(len(data)) {
				if err := ow.reply(opt, repErrInvalid, nil); err != nil {
					return Export{}, err
				}
				continue
			}
			name := string(data[4 : 4+nl])
			e, ok := s.lookup(name)
			if !ok {
				if err := ow.reply(opt, repErrUnknown, []byte("no such export")); err != nil {
					return Export{}, err
				}
				continue
			}
			d := binary.BigEndian.AppendUint16(nil, infoExport)
			d = binary.BigEndian.AppendUint64(d, uint64(e.Backend.Size()))
			d = binary.BigEndian.AppendUint16(d, transmissionFlags(e.Backend))
			if err := ow.reply(opt, repInfo, d); err != nil {
				return Export{}, err
			}
			bs := binary.BigEndian.AppendUint16(nil, infoBlockSize)
			bs = binary.BigEndian.AppendUint32(bs, 1)
			bs = binary.BigEndian.AppendUint32(bs, 4096)
			bs = binary.BigEndian.AppendUint32(bs, MaxRequest)
			if err := ow.reply(opt, repInfo, bs); err != nil {
				return Export{}, err
			}
			if err := ow.reply(opt, repAck, nil); err != nil {
				return Export{}, err
			}
			if opt == optGo {
				return e, nil
			}
		default:
			// Structured replies, meta contexts and TLS are not offered.
			if err := ow.reply(opt, repErrUnsup, nil); err != nil {
				return Export{}, err
			}
		}
	}
}

// errno maps a backend error to the protocol's error number.
func errno(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrReadOnly), errors.Is(err, os.ErrPermission):
		return errPerm
	case errors.Is(err, ErrNoSpace):
		return errNoSpc
	case errors.Is(err, context.Canceled):
		return errShutdown
	}
	return errIO
}

func (s *Server) transmit(ctx context.Context, r *bufio.Reader, w *bufio.Writer, b Backend) error {
	size := b.Size()
	buf := make([]byte, 0, 1<<20)
	var hdr [28]byte
	reply := func(handle uint64, e uint32, data []byte) error {
		var rh [16]byte
		binary.BigEndian.PutUint32(rh[0:], simpleReplyMagic)
		binary.BigEndian.PutUint32(rh[4:], e)
		binary.BigEndian.PutUint64(rh[8:], handle)
		w.Write(rh[:])
		if e == 0 {
			w.Write(data)
		}
		if r.Buffered() > 0 {
			return nil // more requests are waiting: reply with theirs
		}
		return w.Flush()
	}
	defer w.Flush()
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nbd request header: %w", err)
		}
		if binary.BigEndian.Uint32(hdr[0:]) != requestMagic {
			return errors.New("nbd: bad request magic")
		}
		flags := binary.BigEndian.Uint16(hdr[4:])
		typ := binary.BigEndian.Uint16(hdr[6:])
		handle := binary.BigEndian.Uint64(hdr[8:])
		off := binary.BigEndian.Uint64(hdr[16:])
		n := int64(binary.BigEndian.Uint32(hdr[24:]))
		inRange := off <= uint64(size) && int64(off)+n <= size
		o := int64(off)
		switch typ {
		case cmdDisc:
			w.Flush()
			return nil
		case cmdRead:
			if n > MaxRequest {
				if err := reply(handle, errOverflow, nil); err != nil {
					return err
				}
				continue
			}
			if !inRange {
				if err := reply(handle, errInval, nil); err != nil {
					return err
				}
				continue
			}
			p := grow(&buf, n)
			if err := b.ReadAt(ctx, p, o); err != nil {
				s.log.Warn("nbd read failed", "offset", o, "length", n, "err", err)
				if err := reply(handle, errno(err), nil); err != nil {
					return err
				}
				continue
			}
			if err := reply(handle, 0, p); err != nil {
				return err
			}
		case cmdWrite:
			if n > MaxRequest {
				return fmt.Errorf("nbd: write of %d bytes at %d is larger than the %d advertised", n, o, MaxRequest)
			}
			var err error
			switch {
			case b.ReadOnly():
				err = ErrReadOnly
			case !inRange:
				err = ErrNoSpace
			}
			if err != nil {
				// Refused: skip the data without holding it.
				if _, err := io.CopyN(io.Discard, r, n); err != nil {
					return fmt.Errorf("nbd write data at %d: %w", o, err)
				}
			} else {
				p := grow(&buf, n)
				if _, err := io.ReadFull(r, p); err != nil {
					return fmt.Errorf("nbd write data at %d: %w", o, err)
				}
				err = b.WriteAt(ctx, p, o)
				if err == nil && flags&cmdFlagFUA != 0 {
					err = b.Flush(ctx)
				}
			}
			if err != nil && !errors.Is(err, ErrReadOnly) {
				s.log.Warn("nbd write failed", "offset", o, "length", n, "err", err)
			}
			if err := reply(handle, errno(err), nil); err != nil {
				return err
			}
		case cmdFlush:
			if err := reply(handle, errno(b.Flush(ctx)), nil); err != nil {
				return err
			}
		case cmdTrim, cmdZeroes:
			var err error
			switch {
			case b.ReadOnly():
				err = ErrReadOnly
			case !inRange:
				err = ErrNoSpace
			case typ == cmdTrim:
				err = b.Trim(ctx, o, n)
			default:
				err = b.Zero(ctx, o, n)
			}
			if err == nil && flags&cmdFlagFUA != 0 {
				err = b.Flush(ctx)
			}
			if err != nil && !errors.Is(err, ErrReadOnly) {
				s.log.Warn("nbd trim/zero failed", "offset", o, "length", n, "err", err)
			}
			if err := reply(handle, errno(err), nil); err != nil {
				return err
			}
		case cmdCache:
			if err := reply(handle, 0, nil); err != nil {
				return err
			}
		default:
			if err := reply(handle, errInval, nil); err != nil {
				return err
			}
		}
	}
}

func grow(buf *[]byte, n int64) []byte {
	if int64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	return (*buf)[:n]
}
