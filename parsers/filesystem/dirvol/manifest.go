// Package dirvol reads a directory volume: the sparse block address space
// into which the directory shim (rewind agent protect-dir) captures a
// directory. Slot 0 of the space holds the manifest, a versioned,
// checksummed list of every entry (path, type, slot, size, mode, owner,
// mtime, symlink target); slot k ≥ 1 holds the bytes of one regular file at
// [k·2^40, k·2^40 + size). Slots are never reused. The package encodes and
// decodes the manifest and implements filesystem.FS over the address space.
//
// Manifest layout, little endian, at address 0:
//
//	header (4096 bytes, zero-padded):
//	  "RWDIRVOL" | version u32 (1) | 0 u32 | payload length u64 |
//	  entry count u64 | next slot u64 | sha256(payload) [32]
//	payload at 4096, one record per entry:
//	  type u8 | mode u32 | uid u32 | gid u32 | mtime ns i64 | slot u64 |
//	  size i64 | path length u16 | target length u16 | path | target
//
// Paths are slash-separated, relative to the captured directory, cleaned
// ("" is the directory itself). Files sharing a slot are hard links.
// Bytes of a slot past its file's size are meaningless (a reader never
// shows them; the shim zeroes any gap a file grows over).
package dirvol

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Address-space geometry.
const (
	// SlotShift: slot k covers [k<<SlotShift, (k+1)<<SlotShift): 1 TiB.
	SlotShift = 40
	SlotSize  = int64(1) << SlotShift
	// MaxSlots bounds the slots of a volume (slot 0 is the manifest), so
	// the address space fits an int64 offset.
	MaxSlots = int64(1) << 22
	// Size is the size of every directory volume's address space (2^62).
	Size = SlotSize * MaxSlots
	// HeaderSize is the manifest header; the payload follows it.
	HeaderSize = 4096
	// MaxPayload bounds a manifest's payload (readers refuse larger ones
	// before allocating).
	MaxPayload = 1 << 30
)

const (
	magic     = "RWDIRVOL"
	version   = 1
	fixedSize = 1 + 4 + 4 + 4 + 8 + 8 + 8 + 2 + 2
	hdrUsed   = 8 + 4 + 4 + 8 + 8 + 8 + 32
	readPiece = 1 << 20
	// MaxPath bounds a path or symlink target (Linux PATH_MAX).
	MaxPath = 4096
)

// Type is what an entry is.
type Type uint8

// Entry types.
const (
	File    Type = 1
	Dir     Type = 2
	Symlink Type = 3
)

func (t Type) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Entry is one manifest entry.
type Entry struct {
	Path   string // relative, cleaned; "" is the root directory
	Type   Type
	Slot   int64 // files only: 1 ≤ Slot < MaxSlots
	Size   int64 // files only
	Mode   uint32
	UID    uint32
	GID    uint32
	Mtime  int64 // ns since the Unix epoch
	Target string
}

// MtimeTime returns the entry's mtime.
func (e Entry) MtimeTime() time.Time { return time.Unix(0, e.Mtime).UTC() }

// Manifest is the list of a directory volume's entries.
type Manifest struct {
	// NextSlot is the lowest slot never used yet.
	NextSlot int64
	Entries  []Entry
}

// Addr is the address of byte off of slot.
func Addr(slot, off int64) int64 { return slot<<SlotShift + off }

// ValidPath reports whether p is a cleaned relative path as stored.
func ValidPath(p string) bool {
	if p == "" {
		return true
	}
	if len(p) > MaxPath || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.IndexByte(p, 0) >= 0 {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// Encode returns the manifest as stored at address 0: header and payload.
func (m *Manifest) Encode() []byte {
	n := HeaderSize
	for _, e := range m.Entries {
		n += fixedSize + len(e.Path) + len(e.Target)
	}
	b := make([]byte, HeaderSize, n)
	for _, e := range m.Entries {
		b = append(b, byte(e.Type))
		b = binary.LittleEndian.AppendUint32(b, e.Mode)
		b = binary.LittleEndian.AppendUint32(b, e.UID)
		b = binary.LittleEndian.AppendUint32(b, e.GID)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Mtime))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Slot))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Size))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(e.Path)))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(e.Target)))
		b = append(b, e.Path...)
		b = append(b, e.Target...)
	}
	payload := b[HeaderSize:]
	copy(b, magic)
	binary.LittleEndian.PutUint32(b[8:], version)
	binary.LittleEndian.PutUint64(b[16:], uint64(len(payload)))
	binary.LittleEndian.PutUint64(b[24:], uint64(len(m.Entries)))
	binary.LittleEndian.PutUint64(b[32:], uint64(m.NextSlot))
	sum := sha256.Sum256(payload)
	copy(b[40:], sum[:])
	return b
}

// FormatError is a damaged manifest, at byte Off of the address space.
type FormatError struct {
	Off int64
	Msg string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("directory volume manifest at offset %d: %s", e.Off, e.Msg)
}

// ErrNoManifest says address 0 does not hold a manifest.
var ErrNoManifest = errors.New("no directory volume manifest at offset 0")

// Probe reports whether r starts with a manifest header.
func Probe(r io.ReaderAt, size int64) bool {
	if size < HeaderSize {
		return false
	}
	var h [8]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return false
	}
	return string(h[:]) == magic
}

// Read reads and checks the manifest of the address space r (size bytes).
func Read(r io.ReaderAt, size int64) (*Manifest, error) {
	if size < HeaderSize {
		return nil, ErrNoManifest
	}
	var h [hdrUsed]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return nil, fmt.Errorf("read directory volume manifest header: %w", err)
	}
	if string(h[:8]) != magic {
		return nil, ErrNoManifest
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v != version {
		return nil, &FormatError{8, fmt.Sprintf("version %d, this rewind reads %d", v, version)}
	}
	plen := binary.LittleEndian.Uint64(h[16:])
	count := binary.LittleEndian.Uint64(h[24:])
	if plen > MaxPayload || int64(plen) > size-HeaderSize || int64(plen) > SlotSize-HeaderSize {
		return nil, &FormatError{16, fmt.Sprintf("payload of %d bytes", plen)}
	}
	if count > plen/fixedSize {
		return nil, &FormatError{24, fmt.Sprintf("%d entries in %d bytes", count, plen)}
	}
	// Read in pieces, so that a damaged length costs memory only for what
	// is really there.
	payload := make([]byte, 0, min(plen, readPiece))
	for uint64(len(payload)) < plen {
		n := int(min(plen-uint64(len(payload)), readPiece))
		payload = slices.Grow(payload, n)
		piece := payload[len(payload) : len(payload)+n]
		if got, err := r.ReadAt(piece, HeaderSize+int64(len(payload))); got < n {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read directory volume manifest payload (%d bytes at offset %d): at offset %d: %w", plen, HeaderSize, HeaderSize+len(payload)+got, err)
		}
		payload = payload[:len(payload)+n]
	}
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], h[40:72]) {
		return nil, &FormatError{40, "checksum mismatch: the manifest is damaged"}
	}
	m := &Manifest{NextSlot: int64(binary.LittleEndian.Uint64(h[32:]))}
	if m.NextSlot < 1 || m.NextSlot > MaxSlots {
		return nil, &FormatError{32, fmt.Sprintf("next slot %d", m.NextSlot)}
	}
	m.Entries = make([]Entry, 0, count)
	p := payload
	for i := uint64(0); i < count; i++ {
		off := int64(HeaderSize + len(payload) - len(p))
		if len(p) < fixedSize {
			return nil, &FormatError{off, fmt.Sprintf("entry %d is truncated", i)}
		}
		e := Entry{
			Type:  Type(p[0]),
			Mode:  binary.LittleEndian.Uint32(p[1:]),
			UID:   binary.LittleEndian.Uint32(p[5:]),
			GID:   binary.LittleEndian.Uint32(p[9:]),
			Mtime: int64(binary.LittleEndian.Uint64(p[13:])),
			Slot:  int64(binary.LittleEndian.Uint64(p[21:])),
			Size:  int64(binary.LittleEndian.Uint64(p[29:])),
		}
		pl, tl := int(binary.LittleEndian.Uint16(p[37:])), int(binary.LittleEndian.Uint16(p[39:]))
		if len(p) < fixedSize+pl+tl {
			return nil, &FormatError{off, fmt.Sprintf("entry %d: path and target of %d+%d bytes run past the payload", i, pl, tl)}
		}
		e.Path = string(p[fixedSize : fixedSize+pl])
		e.Target = string(p[fixedSize+pl : fixedSize+pl+tl])
		p = p[fixedSize+pl+tl:]
		if err := check(e, m.NextSlot); err != nil {
			return nil, &FormatError{off, fmt.Sprintf("entry %d (%q): %v", i, e.Path, err)}
		}
		m.Entries = append(m.Entries, e)
	}
	if len(p) != 0 {
		return nil, &FormatError{int64(HeaderSize + len(payload) - len(p)), fmt.Sprintf("%d bytes after the last entry", len(p))}
	}
	return m, nil
}

func check(e Entry, nextSlot int64) error {
	if !ValidPath(e.Path) {
		return errors.New("bad path")
	}
	if e.Mode&^0o7777 != 0 {
		return fmt.Errorf("mode %o", e.Mode)
	}
	switch e.Type {
	case File:
		if e.Slot < 1 || e.Slot >= nextSlot {
			return fmt.Errorf("slot %d outside [1, %d)", e.Slot, nextSlot)
		}
		if e.Size < 0 || e.Size > SlotSize {
			return fmt.Errorf("size %d", e.Size)
		}
		if e.Path == "" || e.Target != "" {
			return errors.New("a file must have a path and no target")
		}
	case Dir:
		if e.Slot != 0 || e.Size != 0 || e.Target != "" {
			return errors.New("a directory has no slot, size or target")
		}
	case Symlink:
		if e.Slot != 0 || e.Size != 0 || e.Target == "" || e.Path == "" {
			return errors.New("a symlink has a path and a target, no slot or size")
		}
	default:
		return fmt.Errorf("unknown type %d", e.Type)
	}
	return nil
}
