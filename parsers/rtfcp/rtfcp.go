// Package rtfcp decompresses Compressed RTF as specified in [MS-OXRTFCP]
// (the "LZFu" format of PidTagRtfCompressed), including the uncompressed
// "MELA" form, and computes the format's CRC. It never trusts the sizes
// in the header and never panics on malformed input.
package rtfcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// ErrCorrupt is wrapped by every error about malformed compressed RTF.
var ErrCorrupt = errors.New("rtfcp: corrupt compressed RTF")

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

// Header COMPTYPE values ([MS-OXRTFCP] 2.1.3.1.1).
const (
	TypeCompressed   = 0x75465A4C // "LZFu"
	TypeUncompressed = 0x414C454D // "MELA"
)

// HeaderSize is the size of the header that precedes the data.
const HeaderSize = 16

// MaxRawSize bounds the decompressed size Decompress accepts (RAWSIZE is a
// 32-bit field from the input and must not drive an allocation unchecked).
const MaxRawSize = 256 << 20

// initialDictionary is the dictionary's preset content ([MS-OXRTFCP]
// 3.1.3.1): 207 bytes, after which writing starts.
const initialDictionary = "{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman " +
	"\\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier" +
	"{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx"

const dictSize = 4096

// Header is the 16-byte header of a compressed RTF stream.
type Header struct {
	CompSize uint32 // bytes after this field: 12 header bytes plus the data
	RawSize  uint32 // size of the decompressed RTF
	CompType uint32 // TypeCompressed or TypeUncompressed
	CRC      uint32 // CRC of the data after the header (0 for MELA)
}

// ParseHeader decodes the header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, corrupt("%d bytes: shorter than the %d-byte header", len(b), HeaderSize)
	}
	le := binary.LittleEndian
	h := Header{CompSize: le.Uint32(b), RawSize: le.Uint32(b[4:]), CompType: le.Uint32(b[8:]), CRC: le.Uint32(b[12:])}
	if h.CompType != TypeCompressed && h.CompType != TypeUncompressed {
		return h, corrupt("COMPTYPE %#08x at offset 8 is neither LZFu nor MELA", h.CompType)
	}
	if h.CompSize < HeaderSize-4 {
		return h, corrupt("COMPSIZE %d at offset 0 is smaller than the header", h.CompSize)
	}
	return h, nil
}

// CRC computes the [MS-OXRTFCP] 3.1.3.2 CRC: the CRC-32 table of
// polynomial 0xEDB88320 run from 0 without the final inversion.
func CRC(b []byte) uint32 {
	return ^crc32.Update(0xFFFFFFFF, crc32.IEEETable, b)
}

// Decompress returns the RTF held in a compressed RTF stream. For LZFu the
// CRC is verified; for MELA the data is returned as stored.
func Decompress(b []byte) ([]byte, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if h.RawSize > MaxRawSize {
		return nil, corrupt("RAWSIZE %d at offset 4 exceeds the %d-byte limit", h.RawSize, MaxRawSize)
	}
	end := int64(h.CompSize) + 4
	if end > int64(len(b)) {
		return nil, corrupt("COMPSIZE %d at offset 0 runs past the %d-byte input", h.CompSize, len(b))
	}
	data := b[HeaderSize:end]
	if h.CompType == TypeUncompressed {
		if int64(h.RawSize) > int64(len(data)) {
			return nil, corrupt("MELA RAWSIZE %d exceeds the %d stored bytes", h.RawSize, len(data))
		}
		return append([]byte(nil), data[:h.RawSize]...), nil
	}
	if sum := CRC(data); sum != h.CRC {
		return nil, corrupt("CRC %#08x at offset 12, computed %#08x", h.CRC, sum)
	}
	return decompressLZFu(data, int(h.RawSize))
}

// decompressLZFu decodes the LZFu token stream ([MS-OXRTFCP] 2.2.1) into
// at most raw bytes.
func decompressLZFu(in []byte, raw int) ([]byte, error) {
	var dict [dictSize]byte
	copy(dict[:], initialDictionary)
	wpos := len(initialDictionary)
	out := make([]byte, 0, min(raw, 16*len(in)+64))
	pos := 0
	for pos < len(in) {
		control := in[pos]
		pos++
		for bit := 0; bit < 8; bit++ {
			if control&(1<<bit) == 0 {
				if pos >= len(in) {
					return out, nil
				}
				c := in[pos]
				pos++
				if len(out) >= raw {
					return nil, corrupt("literal at data offset %d: output exceeds RAWSIZE %d", pos-1+HeaderSize, raw)
				}
				out = append(out, c)
				dict[wpos] = c
				wpos = (wpos + 1) % dictSize
				continue
			}
			if pos+2 > len(in) {
				return nil, corrupt("dictionary reference at data offset %d truncated", pos+HeaderSize)
			}
			ref := int(in[pos])<<8 | int(in[pos+1])
			pos += 2
			off := ref >> 4
			n := ref&0xF + 2
			if off == wpos {
				return out, nil // end of stream
			}
			for i := 0; i < n; i++ {
				if len(out) >= raw {
					return nil, corrupt("reference at data offset %d: output exceeds RAWSIZE %d", pos-2+HeaderSize, raw)
				}
				c := dict[(off+i)%dictSize]
				out = append(out, c)
				dict[wpos] = c
				wpos = (wpos + 1) % dictSize
			}
		}
	}
	return out, nil
}

// Compress returns data in the uncompressed MELA form, which every reader
// of PidTagRtfCompressed accepts ([MS-OXRTFCP] 2.1.3.1.1).
func Compress(rtf []byte) []byte {
	out := make([]byte, HeaderSize+len(rtf))
	le := binary.LittleEndian
	le.PutUint32(out, uint32(len(rtf)+12))
	le.PutUint32(out[4:], uint32(len(rtf)))
	le.PutUint32(out[8:], TypeUncompressed)
	copy(out[HeaderSize:], rtf)
	return out
}
