// Package tape moves a repository to sequential media and back: tape sets
// of fixed-size records, each tape labelled, a file spanning as many tapes
// as it needs, a table of contents at the end of every tape and in the
// catalog. A set holds the configuration, a consistent catalog snapshot and
// the packs, so a repository can be rebuilt from tapes alone.
//
// Every record is RecordSize bytes: a 64-byte header (magic, kind, set id,
// tape and record numbers, payload length, CRC-32C of header and payload,
// the record size) and the payload. Tapes are files (a name pattern with
// %d numbers the tapes of a set) or tape devices.
package tape

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
)

// DefaultRecordSize is the record (tape block) size.
const DefaultRecordSize = 256 << 10

const (
	headerSize = 64
	magic      = "RWTAPE01"
)

// Record kinds.
const (
	kindLabel     = 1 // JSON label
	kindFileStart = 2 // JSON fileStart
	kindData      = 3 // file bytes
	kindFileEnd   = 4 // JSON fileEnd
	kindTOC       = 5 // part of the tape's table of contents (JSON, concatenated)
	kindEnd       = 6 // JSON tapeEnd
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrFormat is wrapped by errors about records that are not a valid tape.
var ErrFormat = errors.New("not a valid rewind tape record")

type header struct {
	Kind       uint8
	Tape       uint32
	Set        [16]byte
	Record     uint64
	Len        uint32
	RecordSize uint32
}

// encode writes a record of size rs into buf (len rs).
func encode(buf []byte, h header, payload []byte) {
	clear(buf)
	copy(buf, magic)
	buf[8] = h.Kind
	binary.LittleEndian.PutUint32(buf[12:], h.Tape)
	copy(buf[16:32], h.Set[:])
	binary.LittleEndian.PutUint64(buf[32:], h.Record)
	binary.LittleEndian.PutUint32(buf[40:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[48:], uint32(len(buf)))
	copy(buf[headerSize:], payload)
	c := crc32.Update(crc32.Checksum(buf[:44], castagnoli), castagnoli, buf[48:headerSize+len(payload)])
	binary.LittleEndian.PutUint32(buf[44:], c)
}

// decode checks a record and returns its header and payload.
func decode(buf []byte) (header, []byte, error) {
	var h header
	if len(buf) < headerSize || string(buf[:8]) != magic {
		return h, nil, fmt.Errorf("%w: no record magic", ErrFormat)
	}
	h.Kind = buf[8]
	h.Tape = binary.LittleEndian.Uint32(buf[12:])
	copy(h.Set[:], buf[16:32])
	h.Record = binary.LittleEndian.Uint64(buf[32:])
	h.Len = binary.LittleEndian.Uint32(buf[40:])
	h.RecordSize = binary.LittleEndian.Uint32(buf[48:])
	if int(h.RecordSize) != len(buf) || int64(h.Len) > int64(len(buf)-headerSize) {
		return h, nil, fmt.Errorf("%w: record size %d, payload %d, read %d bytes", ErrFormat, h.RecordSize, h.Len, len(buf))
	}
	want := binary.LittleEndian.Uint32(buf[44:])
	if c := crc32.Update(crc32.Checksum(buf[:44], castagnoli), castagnoli, buf[48:headerSize+int(h.Len)]); c != want {
		return h, nil, fmt.Errorf("%w: CRC %#x, want %#x", ErrFormat, c, want)
	}
	return h, buf[headerSize : headerSize+int(h.Len)], nil
}

// Device names the tapes of a set: a pattern with %d (tape number from 1),
// a tape device (every tape of the set goes through the same drive), or a
// single file.
type Device string

// Path is the file or device of tape n.
func (d Device) Path(n int) string {
	if strings.Contains(string(d), "%d") {
		return fmt.Sprintf(string(d), n)
	}
	return string(d)
}

// Numbered reports whether every tape has its own name.
func (d Device) Numbered() bool { return strings.Contains(string(d), "%d") }

// isTapeDrive reports whether path is a character device (a tape drive).
func isTapeDrive(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// readRecord reads one record from r; the first record of a tape also
// tells the record size (rs 0): a file is read header first, a drive
// returns one whole block per read.
func readRecord(r io.Reader, rs int, drive bool) ([]byte, error) {
	if rs > 0 {
		buf := make([]byte, rs)
		n, err := io.ReadFull(r, buf)
		if drive && n > 0 && n < rs {
			return nil, fmt.Errorf("%w: a block of %d bytes, records are %d", ErrFormat, n, rs)
		}
		return buf[:n], err
	}
	if drive {
		buf := make([]byte, 16<<20)
		n, err := r.Read(buf)
		if n == 0 && err == nil {
			err = io.EOF
		}
		return buf[:n], err
	}
	head := make([]byte, headerSize)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, err
	}
	size := int(binary.LittleEndian.Uint32(head[48:]))
	if string(head[:8]) != magic || size < headerSize+512 || size > 64<<20 {
		return nil, fmt.Errorf("%w: first record", ErrFormat)
	}
	buf := make([]byte, size)
	copy(buf, head)
	if _, err := io.ReadFull(r, buf[headerSize:]); err != nil {
		return nil, err
	}
	return buf, nil
}

// payloadName names a record kind for error messages.
func payloadName(kind uint8) string {
	switch kind {
	case kindLabel:
		return "label"
	case kindFileStart:
		return "file start"
	case kindData:
		return "data"
	case kindFileEnd:
		return "file end"
	case kindTOC:
		return "table of contents"
	case kindEnd:
		return "end of tape"
	}
	return fmt.Sprintf("kind %d", kind)
}
