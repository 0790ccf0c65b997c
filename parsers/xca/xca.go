// Package xca decompresses the Xpress formats of Microsoft's [MS-XCA]
// specification: Plain LZ77 ("LZXPRESS") and LZ77+Huffman. It only
// decodes, never trusts sizes found in the input, and never panics.
package xca

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt is wrapped by every error about malformed compressed data.
var ErrCorrupt = errors.New("xca: corrupt compressed data")

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

// DecompressLZ77 decodes a Plain LZ77 stream ([MS-XCA] 2.4) and returns at
// most maxOut bytes. Decoding stops at the end of the input or once maxOut
// bytes have been produced, whichever comes first.
func DecompressLZ77(in []byte, maxOut int) ([]byte, error) {
	if maxOut < 0 {
		return nil, corrupt("negative output size %d", maxOut)
	}
	out := make([]byte, 0, min(maxOut, 16*len(in)+64))
	var flags uint32
	flagCount := 0
	pos := 0
	lastHalf := -1
	for len(out) < maxOut {
		if flagCount == 0 {
			if pos+4 > len(in) {
				return out, nil // flags exhausted: end of stream
			}
			flags = binary.LittleEndian.Uint32(in[pos:])
			pos += 4
			flagCount = 32
		}
		flagCount--
		if flags&(1<<uint(flagCount)) == 0 {
			if pos >= len(in) {
				return out, nil
			}
			out = append(out, in[pos])
			pos++
			continue
		}
		if pos == len(in) {
			return out, nil
		}
		if pos+2 > len(in) {
			return out, corrupt("match at input offset %d truncated", pos)
		}
		mb := int(binary.LittleEndian.Uint16(in[pos:]))
		pos += 2
		length := mb & 7
		offset := mb>>3 + 1
		if length == 7 {
			if lastHalf < 0 {
				if pos >= len(in) {
					return out, corrupt("length nibble at input offset %d missing", pos)
				}
				length = int(in[pos] & 0x0f)
				lastHalf = pos
				pos++
			} else {
				length = int(in[lastHalf] >> 4)
				lastHalf = -1
			}
			if length == 15 {
				if pos >= len(in) {
					return out, corrupt("length byte at input offset %d missing", pos)
				}
				length = int(in[pos])
				pos++
				if length == 255 {
					if pos+2 > len(in) {
						return out, corrupt("16-bit length at input offset %d missing", pos)
					}
					length = int(binary.LittleEndian.Uint16(in[pos:]))
					pos += 2
					if length == 0 {
						if pos+4 > len(in) {
							return out, corrupt("32-bit length at input offset %d missing", pos)
						}
						length = int(binary.LittleEndian.Uint32(in[pos:]))
						pos += 4
					}
					if length < 15+7 {
						return out, corrupt("match length %d at input offset %d too small", length, pos)
					}
					length -= 15 + 7
				}
				length += 15
			}
			length += 7
		}
		length += 3
		var err error
		if out, err = copyMatch(out, offset, length, maxOut); err != nil {
			return out, fmt.Errorf("%w (input offset %d)", err, pos)
		}
	}
	return out, nil
}

// copyMatch appends length bytes copied from offset bytes back, stopping at
// maxOut.
func copyMatch(out []byte, offset, length, maxOut int) ([]byte, error) {
	if offset <= 0 || offset > len(out) {
		return out, corrupt("match offset %d beyond the %d bytes decoded", offset, len(out))
	}
	if length > maxOut-len(out) {
		length = maxOut - len(out)
	}
	start := len(out) - offset
	for i := 0; i < length; i++ {
		out = append(out, out[start+i])
	}
	return out, nil
}

// DecompressHuffman decodes an LZ77+Huffman stream ([MS-XCA] 2.1/2.2) that
// decompresses to exactly outSize bytes.
func DecompressHuffman(in []byte, outSize int) ([]byte, error) {
	if outSize < 0 {
		return nil, corrupt("negative output size %d", outSize)
	}
	out := make([]byte, 0, min(outSize, 64*len(in)+64))
	pos := 0
	for len(out) < outSize {
		if pos+256 > len(in) {
			return out, corrupt("Huffman table at input offset %d truncated", pos)
		}
		table, err := buildTable(in[pos : pos+256])
		if err != nil {
			return out, fmt.Errorf("%w (table at input offset %d)", err, pos)
		}
		pos += 256
		r := bitReader{in: in, pos: pos}
		r.next = uint32(r.read16()) << 16
		r.next |= uint32(r.read16())
		r.extra = 16
		blockEnd := min(len(out)+65536, outSize)
		for len(out) < blockEnd {
			e := table[r.next>>17]
			if e.length == 0 {
				return out, corrupt("invalid Huffman code near input offset %d", r.pos)
			}
			r.consume(uint(e.length))
			sym := int(e.symbol)
			if sym < 256 {
				out = append(out, byte(sym))
				continue
			}
			sym -= 256
			length := sym & 15
			offBits := uint(sym >> 4)
			if length == 15 {
				if r.pos >= len(in) {
					return out, corrupt("match length byte at input offset %d missing", r.pos)
				}
				length = int(in[r.pos])
				r.pos++
				if length == 255 {
					if r.pos+2 > len(in) {
						return out, corrupt("16-bit match length at input offset %d missing", r.pos)
					}
					length = int(binary.LittleEndian.Uint16(in[r.pos:]))
					r.pos += 2
					if length == 0 {
						if r.pos+4 > len(in) {
							return out, corrupt("32-bit match length at input offset %d missing", r.pos)
						}
						length = int(binary.LittleEndian.Uint32(in[r.pos:]))
						r.pos += 4
					}
					if length < 15 {
						return out, corrupt("match length %d at input offset %d too small", length, r.pos)
					}
					length -= 15
				}
				length += 15
			}
			length += 3
			offset := int(r.peek(offBits)) + 1<<offBits
			r.consume(offBits)
			if out, err = copyMatch(out, offset, length, blockEnd); err != nil {
				return out, fmt.Errorf("%w (input offset %d)", err, r.pos)
			}
		}
		pos = r.pos
	}
	return out, nil
}

type bitReader struct {
	in    []byte
	pos   int
	next  uint32
	extra int
}

// read16 reads the next little-endian 16-bit word; past the end it reads
// zeros (the stream is validated by the output size instead).
func (r *bitReader) read16() uint16 {
	var v uint16
	if r.pos+2 <= len(r.in) {
		v = binary.LittleEndian.Uint16(r.in[r.pos:])
	} else if r.pos < len(r.in) {
		v = uint16(r.in[r.pos])
	}
	r.pos += 2
	return v
}

func (r *bitReader) peek(n uint) uint32 {
	if n == 0 {
		return 0
	}
	return r.next >> (32 - n)
}

func (r *bitReader) consume(n uint) {
	r.next <<= n
	r.extra -= int(n)
	if r.extra < 0 {
		r.next |= uint32(r.read16()) << uint(-r.extra)
		r.extra += 16
	}
}

type tableEntry struct {
	symbol uint16
	length uint8
}

// buildTable turns 512 four-bit code lengths into a 2^15-entry decoding
// table of canonical Huffman codes.
func buildTable(lengths []byte) ([]tableEntry, error) {
	table := make([]tableEntry, 1<<15)
	code := 0
	any := false
	for bits := 1; bits <= 15; bits++ {
		for sym := 0; sym < 512; sym++ {
			l := int(lengths[sym/2] >> (4 * uint(sym&1)) & 0x0f)
			if l != bits {
				continue
			}
			any = true
			n := 1 << uint(15-bits)
			if code+n > len(table) {
				return nil, corrupt("Huffman code lengths oversubscribed")
			}
			for i := 0; i < n; i++ {
				table[code+i] = tableEntry{symbol: uint16(sym), length: uint8(bits)}
			}
			code += n
		}
	}
	if !any {
		return nil, corrupt("Huffman table has no codes")
	}
	return table, nil
}
