package vfs

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// maxDescriptor bounds a writable VMDK descriptor.
const maxDescriptor = 64 << 10

// memFile is a small writable copy kept in memory: the VMDK descriptor of
// a writable tree (hypervisors rewrite its content ID on the first write).
type memFile struct {
	mu sync.RWMutex
	b  []byte
}

func (m *memFile) size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.b))
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	return m.ReadAtContext(context.Background(), p, off)
}

func (m *memFile) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memFile) WriteAtContext(_ context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > maxDescriptor {
		return 0, fmt.Errorf("descriptor writes past %d bytes: %w", maxDescriptor, ErrNoSpace)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

// ctxReaderAt is what the disk files are built on.
type ctxReaderAt interface {
	io.ReaderAt
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}
