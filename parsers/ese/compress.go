package ese

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/rewind-cdp/rewind/parsers/xca"
)

// Compression schemes: the high 5 bits of a compressed value's first byte.
const (
	compress7BitASCII   = 1
	compress7BitUnicode = 2
	compressXpress      = 3
	compressScrub       = 4
	compressXpress9     = 5
	compressXpress10    = 6
	compressLZ4         = 7
)

// maxDecompressed bounds one decompressed value; ESE compresses values and
// long-value chunks of at most a page, and records the size in 16 bits.
const maxDecompressed = 1 << 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decompress expands one value compressed by ESE (7-bit ASCII or Unicode,
// Xpress plain LZ77, Xpress10 as LZ77+Huffman, or LZ4).
func Decompress(b []byte) ([]byte, error) { return decompress(b, maxDecompressed) }

func decompress(b []byte, limit int) ([]byte, error) {
	if len(b) == 0 {
		return nil, corruptf("compressed value is empty")
	}
	limit = min(limit, maxDecompressed*2)
	switch scheme := b[0] >> 3; scheme {
	case compress7BitASCII, compress7BitUnicode:
		if len(b) < 2 {
			return nil, corruptf("7-bit value of %d bytes", len(b))
		}
		bits := (len(b)-2)*8 + int(b[0]&7) + 1
		n := bits / 7
		wide := scheme == compress7BitUnicode
		outLen := n
		if wide {
			outLen *= 2
		}
		if outLen > limit {
			return nil, corruptf("7-bit value expands to %d bytes, more than %d", outLen, limit)
		}
		out := make([]byte, 0, outLen)
		for i := range n {
			bit := i * 7
			byteAt := 1 + bit/8
			v := uint16(b[byteAt])
			if byteAt+1 < len(b) {
				v |= uint16(b[byteAt+1]) << 8
			}
			c := byte(v>>uint(bit%8)) & 0x7f
			out = append(out, c)
			if wide {
				out = append(out, 0)
			}
		}
		return out, nil
	case compressXpress, compressLZ4:
		if len(b) < 3 {
			return nil, corruptf("compressed value of %d bytes has no size", len(b))
		}
		size := int(binary.LittleEndian.Uint16(b[1:]))
		if size > limit {
			return nil, corruptf("value claims %d bytes uncompressed, more than %d", size, limit)
		}
		var out []byte
		var err error
		if scheme == compressXpress {
			out, err = xca.DecompressLZ77(b[3:], size)
		} else {
			out, err = decompressLZ4(b[3:], size)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if len(out) != size {
			return nil, corruptf("value decompressed to %d bytes, header says %d", len(out), size)
		}
		return out, nil
	case compressXpress10:
		// Header: scheme, 16-bit size, CRC-32C of the plain data, 64-bit
		// CRC of the compressed data; the payload is LZ77+Huffman.
		if len(b) < 15 {
			return nil, corruptf("Xpress10 value of %d bytes", len(b))
		}
		size := int(binary.LittleEndian.Uint16(b[1:]))
		if size > limit {
			return nil, corruptf("value claims %d bytes uncompressed, more than %d", size, limit)
		}
		out, err := xca.DecompressHuffman(b[15:], size)
		if err != nil {
			return nil, fmt.Errorf("%w: Xpress10: %w", ErrCorrupt, err)
		}
		if crc := crc32.Checksum(out, castagnoli); crc != binary.LittleEndian.Uint32(b[3:]) {
			return nil, corruptf("Xpress10 value: CRC-32C %#08x of the output does not match %#08x", crc, binary.LittleEndian.Uint32(b[3:]))
		}
		return out, nil
	case compressXpress9:
		return nil, fmt.Errorf("%w: Xpress9 compression (undocumented)", ErrUnsupported)
	case compressScrub:
		return nil, corruptf("value was scrubbed (zeroed) by ESE")
	default:
		return nil, corruptf("unknown compression scheme %d (lead byte %#02x)", scheme, b[0])
	}
}

// decompressLZ4 decodes one LZ4 block into at most size bytes.
func decompressLZ4(in []byte, size int) ([]byte, error) {
	out := make([]byte, 0, size)
	pos := 0
	for pos < len(in) {
		tok := in[pos]
		pos++
		lit := int(tok >> 4)
		if lit == 15 {
			for {
				if pos >= len(in) {
					return out, corruptf("LZ4 literal length truncated")
				}
				c := in[pos]
				pos++
				lit += int(c)
				if c != 255 {
					break
				}
			}
		}
		if pos+lit > len(in) || len(out)+lit > size {
			return out, corruptf("LZ4 literals of %d bytes overrun", lit)
		}
		out = append(out, in[pos:pos+lit]...)
		pos += lit
		if pos >= len(in) {
			break
		}
		if pos+2 > len(in) {
			return out, corruptf("LZ4 offset truncated")
		}
		off := int(binary.LittleEndian.Uint16(in[pos:]))
		pos += 2
		ml := int(tok & 15)
		if ml == 15 {
			for {
				if pos >= len(in) {
					return out, corruptf("LZ4 match length truncated")
				}
				c := in[pos]
				pos++
				ml += int(c)
				if c != 255 {
					break
				}
			}
		}
		ml += 4
		if off == 0 || off > len(out) || len(out)+ml > size {
			return out, corruptf("LZ4 match (offset %d, length %d) invalid at %d", off, ml, len(out))
		}
		start := len(out) - off
		for i := range ml {
			out = append(out, out[start+i])
		}
	}
	return out, nil
}
