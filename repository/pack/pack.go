// Package pack reads and writes pack files: append-only containers of
// compressed, content-addressed blocks, each entry self-describing and
// checksummed, each finished pack closed by an index and a verified footer.
//
// Layout (all integers little-endian):
//
//	header  "RWNDPACK" | version u32 | pack id u64 | crc32c u32          (24 bytes)
//	entry   "RWBK" | compression u8 | hash algo u8 | 0 u16 | ulen u32 |
//	        clen u32 | hash [32] | crc32c(header fields) u32             (52 bytes)
//	        data [clen] | crc32c(data) u32
//	...
//	index   n × (offset u64 | ulen u32 | clen u32 | hash [32])            (48 bytes each)
//	footer  "RWNDPEND" | entries u32 | index offset u64 |
//	        crc32c(index) u32 | crc32c(footer fields) u32                 (28 bytes)
//
// Compression ids: 0 stored as is, 1 a zstd frame (no frame checksum), 2
// one S2 block (klauspost/compress/s2, which starts with the uvarint of the
// decoded length). The hash (id 1: SHA-256) is always of the plain data.
//
// A pack without a footer is "open": it is being written, or its writer
// died. Every entry can still be found and verified by walking from the
// header, so an open pack is recovered by truncating after its last good
// entry and sealing it (see Recover).
package pack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Sizes of the fixed parts of the format.
const (
	HeaderSize      = 24
	EntryHeaderSize = 52
	entryTrailer    = 4
	IndexEntrySize  = 48
	FooterSize      = 28
	version         = 1
	// MaxBlock bounds an entry's uncompressed and compressed length; a
	// size field above it is damage, never an allocation.
	MaxBlock = 16 << 20
)

var (
	headerMagic = []byte("RWNDPACK")
	entryMagic  = []byte("RWBK")
	footerMagic = []byte("RWNDPEND")
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

// Compression algorithm ids, stored with every entry. They never change
// meaning once written.
const (
	CompressionNone uint8 = 0
	CompressionZstd uint8 = 1 // a zstd frame without its own checksum
	CompressionS2   uint8 = 2 // one S2 block (klauspost/compress/s2), length-prefixed
)

// Hash algorithm ids, stored with every entry. They never change meaning
// once written.
const (
	HashSHA256 uint8 = 1
	HashBLAKE3 uint8 = 2 // BLAKE3 (zeebo/blake3), 256-bit output
)

// Hash names, as config.json and the protocol spell them.
var hashNames = map[string]uint8{"sha256": HashSHA256, "blake3": HashBLAKE3}

// HashID returns the id of a hash algorithm name (sha256, blake3).
func HashID(name string) (uint8, error) {
	id, ok := hashNames[name]
	if !ok {
		return 0, fmt.Errorf("unknown hash algorithm %q (sha256, blake3)", name)
	}
	return id, nil
}

// HashName returns the name of a hash algorithm id.
func HashName(id uint8) string {
	for n, i := range hashNames {
		if i == id {
			return n
		}
	}
	return fmt.Sprintf("hash-%d", id)
}

// HashSize is the length of a block's content hash.
const HashSize = 32

// Hash is a block's content hash.
type Hash [HashSize]byte

// String renders the hash in hex.
func (h Hash) String() string { return fmt.Sprintf("%x", h[:]) }

// Entry describes one stored block inside a pack.
type Entry struct {
	Offset      int64 // of the entry header, from the start of the pack
	Compression uint8
	HashAlgo    uint8
	ULen        uint32 // uncompressed length
	CLen        uint32 // stored length
	Hash        Hash   // of the uncompressed data
}

// Len is the entry's whole length in the pack: header, data and checksum.
func (e Entry) Len() int64 { return EntryHeaderSize + int64(e.CLen) + entryTrailer }

// FormatError reports damage found in a pack, with the byte offset where it
// was found.
type FormatError struct {
	Pack   string
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("pack %s: offset %d: %s", e.Pack, e.Offset, e.Msg)
}

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func encodeHeader(id uint64) []byte {
	b := make([]byte, HeaderSize)
	copy(b, headerMagic)
	binary.LittleEndian.PutUint32(b[8:], version)
	binary.LittleEndian.PutUint64(b[12:], id)
	binary.LittleEndian.PutUint32(b[20:], crc(b[:20]))
	return b
}

// DecodeHeader checks a pack header and returns the pack id it names.
func DecodeHeader(name string, b []byte) (uint64, error) {
	if len(b) < HeaderSize {
		return 0, &FormatError{name, 0, "short header"}
	}
	if !bytes.Equal(b[:8], headerMagic) {
		return 0, &FormatError{name, 0, "not a pack file (bad magic)"}
	}
	if crc(b[:20]) != binary.LittleEndian.Uint32(b[20:]) {
		return 0, &FormatError{name, 0, "header checksum mismatch"}
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != version {
		return 0, &FormatError{name, 8, fmt.Sprintf("unsupported pack version %d", v)}
	}
	return binary.LittleEndian.Uint64(b[12:]), nil
}

func encodeEntryHeader(dst []byte, e Entry) {
	copy(dst, entryMagic)
	dst[4] = e.Compression
	dst[5] = e.HashAlgo
	dst[6], dst[7] = 0, 0
	binary.LittleEndian.PutUint32(dst[8:], e.ULen)
	binary.LittleEndian.PutUint32(dst[12:], e.CLen)
	copy(dst[16:48], e.Hash[:])
	binary.LittleEndian.PutUint32(dst[48:], crc(dst[:48]))
}

// DecodeEntryHeader checks an entry header read at offset off.
func DecodeEntryHeader(name string, off int64, b []byte) (Entry, error) {
	if len(b) < EntryHeaderSize {
		return Entry{}, &FormatError{name, off, "short entry header"}
	}
	if !bytes.Equal(b[:4], entryMagic) {
		return Entry{}, &FormatError{name, off, "bad entry magic"}
	}
	if crc(b[:48]) != binary.LittleEndian.Uint32(b[48:]) {
		return Entry{}, &FormatError{name, off, "entry header checksum mismatch"}
	}
	e := Entry{
		Offset:      off,
		Compression: b[4],
		HashAlgo:    b[5],
		ULen:        binary.LittleEndian.Uint32(b[8:]),
		CLen:        binary.LittleEndian.Uint32(b[12:]),
	}
	copy(e.Hash[:], b[16:48])
	if e.ULen > MaxBlock || e.CLen > MaxBlock {
		return Entry{}, &FormatError{name, off, fmt.Sprintf("entry lengths %d/%d exceed the %d-byte limit", e.ULen, e.CLen, MaxBlock)}
	}
	return e, nil
}

func encodeIndex(entries []Entry) []byte {
	b := make([]byte, len(entries)*IndexEntrySize)
	for i, e := range entries {
		p := b[i*IndexEntrySize:]
		binary.LittleEndian.PutUint64(p, uint64(e.Offset))
		binary.LittleEndian.PutUint32(p[8:], e.ULen)
		binary.LittleEndian.PutUint32(p[12:], e.CLen)
		copy(p[16:48], e.Hash[:])
	}
	return b
}

func encodeFooter(n int, indexOff int64, indexCRC uint32) []byte {
	b := make([]byte, FooterSize)
	copy(b, footerMagic)
	binary.LittleEndian.PutUint32(b[8:], uint32(n))
	binary.LittleEndian.PutUint64(b[12:], uint64(indexOff))
	binary.LittleEndian.PutUint32(b[20:], indexCRC)
	binary.LittleEndian.PutUint32(b[24:], crc(b[:24]))
	return b
}

type footer struct {
	entries  int
	indexOff int64
	indexCRC uint32
}

func decodeFooter(name string, off int64, b []byte) (footer, error) {
	if len(b) < FooterSize || !bytes.Equal(b[:8], footerMagic) {
		return footer{}, &FormatError{name, off, "no footer (pack not sealed)"}
	}
	if crc(b[:24]) != binary.LittleEndian.Uint32(b[24:]) {
		return footer{}, &FormatError{name, off, "footer checksum mismatch"}
	}
	f := footer{
		entries:  int(binary.LittleEndian.Uint32(b[8:])),
		indexOff: int64(binary.LittleEndian.Uint64(b[12:])),
		indexCRC: binary.LittleEndian.Uint32(b[20:]),
	}
	if f.indexOff < HeaderSize || f.indexOff > off || (off-f.indexOff) != int64(f.entries)*IndexEntrySize {
		return footer{}, &FormatError{name, off, fmt.Sprintf("footer names %d index entries at offset %d, which do not fit", f.entries, f.indexOff)}
	}
	return f, nil
}
