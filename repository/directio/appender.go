package directio

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// runSize is the size of the runs an Appender writes in, inFlight how
// many it writes at once (a disk does more with several writes under way),
// and keepRuns how many written runs it keeps in memory for ReadAt (the
// capture spool's shipper reads records soon after they are appended, and
// reading what was written directly would be a disk read).
const (
	runSize  = 1 << 20
	inFlight = 4
	keepRuns = 8
)

// runBufs keeps run buffers of closed Appenders for the next ones (a new
// pack file every 32 MiB on a server): memory written again soon is
// cheaper to fill than new memory.
var runBufs = make(chan []byte, 16)

func runBuf() []byte {
	select {
	case b := <-runBufs:
		return b[:0]
	default:
		return AlignedBuf(runSize)
	}
}

func putRunBuf(b []byte) {
	select {
	case runBufs <- b[:0]:
	default:
	}
}

// run is a run under way, or written and kept for ReadAt (done nil).
type run struct {
	b    []byte
	off  int64
	done chan error
}

// Appender appends to a file. Appends are gathered in memory and written
// in runs of about runSize bytes, in the background while the next one
// fills. Whole pages of a run go through a second descriptor opened with
// O_DIRECT where the file system allows it. A Flush writes what the file
// lacks through the page cache and keeps it in memory; pages a Flush
// wrote are not written again, and a page it wrote in part follows
// through the page cache with the next run, so no page is written both
// ways (a direct write over a page a reader holds in the cache could leave
// that reader's copy stale).
//
// Its first write error is sticky: every later call returns it. It is
// safe for concurrent use.
type Appender struct {
	f    *os.File  // through the page cache
	w    *WriterAt // whole pages directly, where allowed
	name string
	size atomic.Int64 // bytes appended, from the file's start

	mu     sync.Mutex // the fields below
	buf    []byte     // the bytes from bufOff to size, not yet written whole
	bufOff int64      // file offset of buf[0]
	// filed: what was appended below this offset is in the file or on
	// its way there. Past a Flush it may end inside a page, which went
	// through the page cache and follows it with the next run.
	filed   int64
	running []run // runs being written in the background, oldest first
	// written holds runs written out, oldest first: ReadAt finds them in
	// memory until their buffers are filled again, once keepRuns of them
	// are kept.
	written []run
	err     error
}

// NewAppender appends to f, whose file is at path and holds off bytes that
// stay. With direct, whole pages go directly where the file system allows
// it (off must then be page-aligned for them to).
func NewAppender(f *os.File, path string, off int64, direct bool) *Appender {
	a := &Appender{f: f, w: &WriterAt{f: f}, name: path, bufOff: off, filed: off, buf: runBuf()}
	a.size.Store(off)
	if direct && off%Align == 0 {
		a.w = NewWriterAt(f, path)
	}
	return a
}

// Size is the file's size once everything appended is written.
func (a *Appender) Size() int64 { return a.size.Load() }

// Append appends the parts, in order, and returns the offset of the
// first. They are in the file only after a Flush (or once later appends
// pushed them out), but ReadAt sees them at once.
func (a *Appender) Append(parts ...[]byte) (int64, error) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return 0, a.err
	}
	if len(a.buf)+n > cap(a.buf) {
		a.writeOut(false)
		if a.err != nil {
			return 0, a.err
		}
		if len(a.buf)+n > cap(a.buf) {
			nb := AlignedBuf((len(a.buf) + n + runSize) / Align * Align)
			a.buf = append(nb, a.buf...)
		}
	}
	off := a.bufOff + int64(len(a.buf))
	for _, p := range parts {
		a.buf = append(a.buf, p...)
	}
	a.size.Add(int64(n))
	return off, nil
}

// Err is the sticky error, if any (after Close, that it is closed).
func (a *Appender) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// Flush writes everything appended so far to the file (it does not sync).
func (a *Appender) Flush() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.writeOut(true)
	return a.err
}

// ReadAt reads what was appended at off, whether or not it is in the file
// yet.
func (a *Appender) ReadAt(p []byte, off int64) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	got := 0
	for got < len(p) {
		at := off + int64(got)
		var src []byte
		r := a.runAt(at)
		switch {
		case at >= a.bufOff:
			if i := at - a.bufOff; i < int64(len(a.buf)) {
				src = a.buf[i:]
			}
		case r != nil:
			src = r.b[at-r.off:]
		default:
			// In the file: up to where memory takes over.
			end := a.bufOff
			for _, r := range a.running {
				if r.off > at {
					end = min(end, r.off)
				}
			}
			n, err := a.f.ReadAt(p[got:min(len(p), got+int(end-at))], at)
			got += n
			if err != nil {
				return got, fmt.Errorf("read %s at offset %d: %w", a.name, at+int64(n), err)
			}
			continue
		}
		if len(src) == 0 {
			return got, fmt.Errorf("read %s at offset %d: past the %d bytes appended", a.name, at, a.Size())
		}
		got += copy(p[got:], src)
	}
	return got, nil
}

// Close flushes and closes the direct descriptor (not the file). Nothing
// can be appended after it; ReadAt reads from the file.
func (a *Appender) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.writeOut(true)
	a.w.Close()
	err := a.err
	if err == nil {
		// Everything is in the file, where ReadAt finds it from now on.
		for _, r := range a.written {
			putRunBuf(r.b)
		}
		if cap(a.buf) == runSize {
			putRunBuf(a.buf)
		}
		a.written, a.buf, a.bufOff = nil, nil, a.size.Load()
		a.err = fmt.Errorf("append to %s: closed", a.name)
	}
	return err
}

// runAt returns the run under way or kept in memory that holds offset at,
// if any. Called with mu held.
func (a *Appender) runAt(at int64) *run {
	for _, runs := range [][]run{a.running, a.written} {
		for i, r := range runs {
			if at >= r.off && at < r.off+int64(len(r.b)) {
				return &runs[i]
			}
		}
	}
	return nil
}

// writeOut writes out what the buffer holds. Without all (the buffer is
// full), it writes the buffer's whole pages (all of it when direct writes
// are off) in the background, directly where allowed, and moves the rest
// to the start of another buffer. With all (a Flush), it waits for the
// runs under way and writes what the file lacks through the page cache,
// keeping the buffer: a flush is asked for by a caller that wants a few
// records durable, and who reads them back soon, from memory. Called with
// mu held. Failures go to the sticky error.
func (a *Appender) writeOut(all bool) {
	if all {
		for len(a.running) > 0 {
			a.waitOldest()
		}
		end := a.bufOff + int64(len(a.buf))
		if a.err != nil || a.filed >= end {
			return
		}
		from := max(a.bufOff, a.filed/Align*Align) // the partial page again, whole
		if _, err := a.f.WriteAt(a.buf[from-a.bufOff:], from); err != nil {
			a.err = fmt.Errorf("write %s at offset %d: %w", a.name, from, err)
			return
		}
		a.filed = end
		return
	}
	for len(a.running) >= inFlight {
		a.waitOldest()
	}
	if a.err != nil {
		return
	}
	direct := a.w.direct.Load() != nil
	if n := len(a.buf); n > 0 && (!direct || n >= Align) {
		if direct {
			n = n / Align * Align
		}
		b, off := a.buf[:n], a.bufOff
		// Whole pages a Flush wrote are in the file already; the page it
		// wrote in part goes through the page cache again.
		skip := int(min(int64(n), max(0, a.filed/Align*Align-off)))
		head := int(min(int64(n), max(int64(skip), (a.filed+Align-1)/Align*Align-off))) - skip
		var next []byte
		if len(a.written) >= keepRuns {
			next, a.written = a.written[0].b, a.written[1:]
		} else {
			next = runBuf()
		}
		a.buf = next[:copy(next[:len(a.buf)-n], a.buf[n:])]
		a.bufOff += int64(n)
		a.filed = max(a.filed, a.bufOff)
		r := run{b: b, off: off, done: make(chan error, 1)}
		a.running = append(a.running, r)
		go func() { r.done <- a.writeAt(b[skip:], off+int64(skip), head) }()
	}
}

// waitOldest waits for the oldest run under way and keeps it among the
// written ones. Called with mu held.
func (a *Appender) waitOldest() {
	r := a.running[0]
	if err := <-r.done; err != nil && a.err == nil {
		a.err = err
	}
	a.running = a.running[1:]
	if cap(r.b) == runSize {
		r.done = nil
		a.written = append(a.written, r)
	}
}

// writeAt writes b at off: its first head bytes (whole pages) through the
// page cache, the rest directly where allowed. It runs without mu, beside
// Append and other runs.
func (a *Appender) writeAt(b []byte, off int64, head int) error {
	if len(b) == 0 {
		return nil
	}
	if head > 0 {
		if _, err := a.f.WriteAt(b[:head], off); err != nil {
			return fmt.Errorf("write %s at offset %d: %w", a.name, off, err)
		}
	}
	if _, err := a.w.WriteAt(b[head:], off+int64(head)); err != nil {
		return fmt.Errorf("write %s at offset %d: %w", a.name, off+int64(head), err)
	}
	return nil
}
