// Package qmp is a client of the QEMU Machine Protocol: it runs commands on
// a QEMU process through its QMP socket and delivers the events QEMU sends
// (block job completions, errors, …).
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Event is an asynchronous QMP event.
type Event struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// Error is an error QEMU answered a command with.
type Error struct {
	Command string
	Class   string
	Desc    string
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

// Conn is a QMP connection. Execute may be called from several goroutines.
type Conn struct {
	conn   net.Conn
	events chan Event

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  int64
	waiting map[int64]chan response
	err     error // set when the connection ended
	done    chan struct{}
}

type response struct {
	ID     *int64          `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	QMP json.RawMessage `json:"QMP"`
}

// Dial connects to a QMP unix socket and leaves capabilities negotiation
// mode. Events not read from Events are dropped once 256 are waiting.
func Dial(ctx context.Context, socket string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("qmp dial %s: %w", socket, err)
	}
	c := &Conn{conn: nc, events: make(chan Event, 256), waiting: map[int64]chan response{}, done: make(chan struct{})}
	sc := bufio.NewScanner(nc)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	ok := sc.Scan()
	stop()
	var greet response
	if !ok || json.Unmarshal(sc.Bytes(), &greet) != nil || greet.QMP == nil {
		nc.Close()
		return nil, fmt.Errorf("qmp %s: no QMP greeting (%v)", socket, errors.Join(sc.Err(), ctx.Err()))
	}
	go c.read(sc)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) read(sc *bufio.Scanner) {
	for sc.Scan() {
		var r response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		if r.Event != "" {
			ev := Event{Name: r.Event, Data: r.Data, Time: time.Now()}
			if r.Timestamp != nil {
				ev.Time = time.Unix(r.Timestamp.Seconds, r.Timestamp.Microseconds*1000)
			}
			select {
			case c.events <- ev:
			default:
			}
			continue
		}
		if r.ID == nil {
			continue
		}
		c.mu.Lock()
		ch := c.waiting[*r.ID]
		delete(c.waiting, *r.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	err := sc.Err()
	if err == nil {
		err = errors.New("QEMU closed the QMP connection")
	}
	c.mu.Lock()
	c.err = err
	for id, ch := range c.waiting {
		close(ch)
		delete(c.waiting, id)
	}
	c.mu.Unlock()
	close(c.done)
	close(c.events)
}

// Events delivers QMP events until the connection ends (then it is closed).
func (c *Conn) Events() <-chan Event { return c.events }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Execute runs command with args (nil for none) and decodes its return
// value into result (nil to ignore it).
func (c *Conn) Execute(ctx context.Context, command string, args, result any) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	c.nextID++
	id := c.nextID
	ch := make(chan response, 1)
	c.waiting[id] = ch
	c.mu.Unlock()
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	c.wmu.Lock()
	_, err = c.conn.Write(append(b, '\n'))
	c.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		if r.Error != nil {
			return &Error{Command: command, Class: r.Error.Class, Desc: r.Error.Desc}
		}
		if result != nil {
			if err := json.Unmarshal(r.Return, result); err != nil {
				return fmt.Errorf("qmp %s: answer: %w", command, err)
			}
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

// Close closes the connection.
func (c *Conn) Close() error { return c.conn.Close() }
