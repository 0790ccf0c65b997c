package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// fakeQEMU answers like QEMU: a greeting, capabilities, then for each
// command an event (before the answer) and the answer, or an error for
// "fail". It closes the connection on "quit".
func fakeQEMU(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}` + "\n"))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var req struct {
				Execute   string          `json:"execute"`
				ID        json.RawMessage `json:"id"`
				Arguments map[string]any  `json:"arguments"`
			}
			json.Unmarshal(sc.Bytes(), &req)
			switch req.Execute {
			case "quit":
				return
			case "fail":
				c.Write([]byte(`{"error": {"class": "GenericError", "desc": "no such thing"}, "id": ` + string(req.ID) + "}\n"))
			default:
				c.Write([]byte(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "JOB_STATUS_CHANGE", "data": {"id": "j"}}` + "\n"))
				b, _ := json.Marshal(map[string]any{"return": map[string]any{"echo": req.Arguments}, "id": req.ID})
				c.Write(append(b, '\n'))
			}
		}
	}()
	return sock
}

func TestConn(t *testing.T) {
	ctx := context.Background()
	c, err := Dial(ctx, fakeQEMU(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var res struct {
		Echo map[string]any `json:"echo"`
	}
	if err := c.Execute(ctx, "anything", map[string]any{"x": "y"}, &res); err != nil || res.Echo["x"] != "y" {
		t.Fatalf("execute: %v, %+v", err, res)
	}
	var qe *Error
	if err := c.Execute(ctx, "fail", nil, nil); !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "no such thing" {
		t.Fatalf("error answer: %v", err)
	}
	// Events arrive in order, with QEMU's time stamp (one from
	// qmp_capabilities, one from "anything").
	for range 2 {
		ev := <-c.Events()
		if ev.Name != "JOB_STATUS_CHANGE" || !ev.Time.Equal(time.Unix(1700000000, 5000)) {
			t.Fatalf("event %+v", ev)
		}
	}
	c.Execute(ctx, "quit", nil, nil)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection end not noticed")
	}
	if err := c.Execute(ctx, "anything", nil, nil); err == nil {
		t.Fatal("execute on a closed connection succeeded")
	}
}

// TestRealQEMU runs commands on qemu-system-x86_64 without a guest.
func TestRealQEMU(t *testing.T) {
	testenv.NeedTool(t, "qemu-system-x86_64")
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command("qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *Conn
	var err error
	for ctx.Err() == nil {
		if c, err = Dial(ctx, sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var v struct {
		QEMU struct {
			Major int `json:"major"`
		} `json:"qemu"`
	}
	if err := c.Execute(ctx, "query-version", nil, &v); err != nil || v.QEMU.Major < 5 {
		t.Fatalf("query-version: %v %+v", err, v)
	}
	var qe *Error
	if err := c.Execute(ctx, "blockdev-del", map[string]any{"node-name": "nope"}, nil); !errors.As(err, &qe) {
		t.Fatalf("blockdev-del of a missing node: %v", err)
	}
	if err := c.Execute(ctx, "quit", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("QEMU quit but the connection did not end")
	}
}
