//go:build !windows

// Package vm boots a disk in qemu-system-x86_64 — with KVM when the host
// has it, under software emulation (TCG) otherwise — isolated from any
// network, and watches its serial console: the engine of `rewind boot` and
// `rewind verify-boot`.
package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rewind-cdp/rewind/qmp"
)

// Options describe the machine to start.
type Options struct {
	// Drive is the boot disk as a qemu file name: an image path or an NBD
	// URI such as nbd+unix:///disk?socket=/run/x.sock.
	Drive string
	// Snapshot keeps the guest's writes in a temporary file inside qemu,
	// so the drive is only read.
	Snapshot  bool
	MemoryMiB int // default 1024
	CPUs      int // default 1
	// Network gives the guest user-mode networking; false: no network.
	Network bool
	// VNC is a VNC display ("127.0.0.1:5" = port 5905), "" for none.
	VNC string
	// Dir holds the QMP and serial sockets.
	Dir string
	// Binary is the qemu executable (default qemu-system-x86_64).
	Binary string
}

// Machine is a running qemu.
type Machine struct {
	cmd    *exec.Cmd
	qmp    *qmp.Conn
	Serial string // unix socket of the serial console (rewind boot)
	exited chan struct{}
	stderr bytes.Buffer

	mu      sync.Mutex
	console bytes.Buffer // everything the serial console printed
	changed chan struct{}
}

// KVM reports whether hardware virtualisation is usable here.
func KVM() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Start starts qemu. With watch, the serial console is read by the
// Machine (WaitFor, Console); without, it is left on the unix socket
// m.Serial for a person to attach to.
func Start(ctx context.Context, opt Options, watch bool) (*Machine, error) {
	bin := opt.Binary
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("%s is not installed (Debian package qemu-system-x86): %w", bin, err)
	}
	mem, cpus := opt.MemoryMiB, opt.CPUs
	if mem <= 0 {
		mem = 1024
	}
	if cpus <= 0 {
		cpus = 1
	}
	accel := "tcg"
	if KVM() {
		accel = "kvm"
	}
	qmpSock := filepath.Join(opt.Dir, "qmp.sock")
	drive := "file=" + strings.ReplaceAll(opt.Drive, ",", ",,") + ",format=raw,if=virtio,cache=writeback"
	if opt.Snapshot {
		drive += ",snapshot=on"
	}
	args := []string{
		"-machine", "q35,accel=" + accel, "-m", fmt.Sprint(mem), "-smp", fmt.Sprint(cpus),
		"-drive", drive, "-boot", "c",
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
		"-monitor", "none", "-no-user-config", "-nodefaults", "-vga", "std",
	}
	if opt.VNC != "" {
		args = append(args, "-display", "vnc="+opt.VNC)
	} else {
		args = append(args, "-display", "none")
	}
	if opt.Network {
		args = append(args, "-nic", "user,model=virtio-net-pci")
	} else {
		args = append(args, "-nic", "none")
	}
	m := &Machine{exited: make(chan struct{}), changed: make(chan struct{})}
	var serialOut io.ReadCloser
	if watch {
		args = append(args, "-serial", "stdio")
	} else {
		m.Serial = filepath.Join(opt.Dir, "serial.sock")
		args = append(args, "-serial", "unix:"+m.Serial+",server=on,wait=off")
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Stderr = &m.stderr
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if watch {
		var err error
		if serialOut, err = m.cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	if serialOut != nil {
		go m.readConsole(serialOut)
	}
	go func() {
		m.cmd.Wait()
		close(m.exited)
	}()
	// The QMP socket appears once qemu has set the machine up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := qmp.Dial(ctx, qmpSock)
		if err == nil {
			m.qmp = c
			return m, nil
		}
		select {
		case <-m.exited:
			return nil, fmt.Errorf("%s exited at start: %s", bin, strings.TrimSpace(m.stderr.String()))
		case <-ctx.Done():
			m.Kill()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.Kill()
			return nil, fmt.Errorf("%s: no QMP socket after 30 s: %v", bin, err)
		}
	}
}

func (m *Machine) readConsole(r io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m.mu.Lock()
			m.console.Write(buf[:n])
			close(m.changed)
			m.changed = make(chan struct{})
			m.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// Console returns what the serial console has printed so far.
func (m *Machine) Console() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.console.String()
}

// ErrExited is returned by WaitFor when the machine stopped first.
var ErrExited = errors.New("the virtual machine stopped")

// WaitFor waits until the serial console has printed text.
func (m *Machine) WaitFor(ctx context.Context, text string) error {
	for {
		m.mu.Lock()
		found := bytes.Contains(m.console.Bytes(), []byte(text))
		ch := m.changed
		m.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-ch:
		case <-m.exited:
			m.mu.Lock()
			found := bytes.Contains(m.console.Bytes(), []byte(text))
			m.mu.Unlock()
			if found {
				return nil
			}
			return ErrExited
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Screendump saves the screen as a PNG file.
func (m *Machine) Screendump(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := m.qmp.Execute(ctx, "screendump", map[string]any{"filename": abs, "format": "png"}, nil); err != nil {
		return fmt.Errorf("screendump to %s: %w", abs, err)
	}
	return nil
}

// Exited is closed when qemu has exited.
func (m *Machine) Exited() <-chan struct{} { return m.exited }

// PID is qemu's process id.
func (m *Machine) PID() int { return m.cmd.Process.Pid }

// Stop asks qemu to quit and kills it after a few seconds.
func (m *Machine) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	m.qmp.Execute(ctx, "quit", nil, nil)
	select {
	case <-m.exited:
	case <-time.After(5 * time.Second):
		m.Kill()
	}
	m.qmp.Close()
}

// Kill kills qemu and waits for it.
func (m *Machine) Kill() {
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
	if m.qmp != nil {
		m.qmp.Close()
	}
}
