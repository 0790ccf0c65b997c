package mdf

// SQL Server keeps xml values in its binary XML format ([MS-BINXML]):
// a 0xDF 0xFF signature, a version byte (1 or 2), the UTF-16 encoding
// marker 0xB0 0x04, then tokens. Names are defined once (NAME: a
// length-prefixed UTF-16 string; QNAME: namespace, prefix and local name
// as NAME numbers) and referred to by number afterwards. Counts and
// lengths are little-endian base-128 integers. The token values are those
// of the format's public reader (System.Xml's XmlSqlBinaryReader).
//
// decodeBinXML turns such a value back into XML text. It covers what
// untyped xml columns hold: elements, attributes, text, CDATA, comments,
// processing instructions, the XML declaration, and the atomic values of
// the common SQL and XSD types. No fixture holds an xml column: this is
// tested with hand-built streams only.

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
)

const (
	bxXmlDecl  = 0xFE
	bxEncoding = 0xFD
	bxDocType  = 0xFC
	bxSystem   = 0xFB
	bxPublic   = 0xFA
	bxSubset   = 0xF9
	bxElement  = 0xF8
	bxEndElem  = 0xF7
	bxAttr     = 0xF6
	bxEndAttrs = 0xF5
	bxPI       = 0xF4
	bxComment  = 0xF3
	bxCData    = 0xF2
	bxEndCData = 0xF1
	bxName     = 0xF0
	bxQName    = 0xEF
	bxXmlText  = 0xED
	bxNest     = 0xEC
	bxEndNest  = 0xEB
	bxExtn     = 0xEA
	bxNmFlush  = 0xE9

	bxSmallInt = 0x01
	bxInt      = 0x02
	bxReal     = 0x03
	bxFloat    = 0x04
	bxBit      = 0x06
	bxTinyInt  = 0x07
	bxBigInt   = 0x08
	bxBinary   = 0x0C
	bxChar     = 0x0D
	bxNChar    = 0x0E
	bxVarBin   = 0x0F
	bxVarChar  = 0x10
	bxNVarChar = 0x11
	bxText     = 0x16
	bxImage    = 0x17
	bxNText    = 0x18
	bxBoolean  = 0x86
	bxBinHex   = 0x84
	bxBase64   = 0x85
	bxByte     = 0x88
	bxUShort   = 0x89
	bxUInt     = 0x8A
	bxULong    = 0x8B
)

// isBinXML reports whether b starts with the binary XML signature.
func isBinXML(b []byte) bool {
	return len(b) >= 5 && b[0] == 0xDF && b[1] == 0xFF && (b[2] == 1 || b[2] == 2) && b[3] == 0xB0 && b[4] == 0x04
}

type binXML struct {
	b      []byte
	pos    int
	names  []string // 1-based: names[0] is ""
	qnames [][3]int // namespace, prefix, local name (NAME numbers)
	out    strings.Builder
}

func (x *binXML) errorf(format string, a ...any) error {
	return fmt.Errorf("%w: binary xml at %d: %s", ErrFormat, x.pos, fmt.Sprintf(format, a...))
}

func (x *binXML) byte() (byte, error) {
	if x.pos >= len(x.b) {
		return 0, x.errorf("truncated")
	}
	x.pos++
	return x.b[x.pos-1], nil
}

// mb reads a base-128 little-endian integer (at most 5 bytes).
func (x *binXML) mb() (int, error) {
	var v uint64
	for i := 0; i < 5; i++ {
		c, err := x.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if v > math.MaxInt32 {
				return 0, x.errorf("count %d too large", v)
			}
			return int(v), nil
		}
	}
	return 0, x.errorf("count longer than 5 bytes")
}

func (x *binXML) take(n int) ([]byte, error) {
	if n < 0 || n > len(x.b)-x.pos {
		return nil, x.errorf("%d bytes run past the value (%d left)", n, len(x.b)-x.pos)
	}
	x.pos += n
	return x.b[x.pos-n : x.pos], nil
}

// text reads a length-prefixed UTF-16 string.
func (x *binXML) text() (string, error) {
	n, err := x.mb()
	if err != nil {
		return "", err
	}
	if n > len(x.b) {
		return "", x.errorf("string of %d characters", n)
	}
	b, err := x.take(2 * n)
	if err != nil {
		return "", err
	}
	return decodeUTF16(b), nil
}

func (x *binXML) qname(n int) (string, error) {
	if n < 1 || n > len(x.qnames) {
		return "", x.errorf("undefined qname %d (%d defined)", n, len(x.qnames))
	}
	q := x.qnames[n-1]
	for _, k := range q {
		if k < 0 || k >= len(x.names) {
			return "", x.errorf("undefined name %d", k)
		}
	}
	if p := x.names[q[1]]; p != "" {
		if x.names[q[2]] == "" {
			return p, nil // xmlns or xmlns:p declaration
		}
		return p + ":" + x.names[q[2]], nil
	}
	return x.names[q[2]], nil
}

// atom reads one atomic value after its token and returns it as text.
func (x *binXML) atom(tok byte) (string, error) {
	fixed := func(n int) ([]byte, error) { return x.take(n) }
	switch tok {
	case bxNVarChar, bxNChar, bxNText:
		return x.text()
	case bxVarChar, bxChar, bxText:
		// Length, 4-byte collation, then code-page bytes.
		n, err := x.mb()
		if err != nil {
			return "", err
		}
		if _, err := fixed(4); err != nil {
			return "", err
		}
		b, err := x.take(n)
		if err != nil {
			return "", err
		}
		return decodeCodePage(b, 1252), nil
	case bxVarBin, bxBinary, bxImage, bxBase64, bxBinHex:
		n, err := x.mb()
		if err != nil {
			return "", err
		}
		b, err := x.take(n)
		if err != nil {
			return "", err
		}
		if tok == bxBinHex {
			return strings.ToUpper(hex.EncodeToString(b)), nil
		}
		return base64.StdEncoding.EncodeToString(b), nil
	case bxTinyInt, bxByte:
		b, err := fixed(1)
		if err != nil {
			return "", err
		}
		if tok == bxByte {
			return strconv.Itoa(int(int8(b[0]))), nil
		}
		return strconv.Itoa(int(b[0])), nil
	case bxBit, bxBoolean:
		b, err := fixed(1)
		if err != nil {
			return "", err
		}
		if tok == bxBoolean {
			return strconv.FormatBool(b[0] != 0), nil
		}
		return strconv.Itoa(int(b[0] & 1)), nil
	case bxSmallInt, bxUShort:
		b, err := fixed(2)
		if err != nil {
			return "", err
		}
		if tok == bxUShort {
			return strconv.Itoa(int(binary.LittleEndian.Uint16(b))), nil
		}
		return strconv.Itoa(int(int16(binary.LittleEndian.Uint16(b)))), nil
	case bxInt, bxUInt:
		b, err := fixed(4)
		if err != nil {
			return "", err
		}
		if tok == bxUInt {
			return strconv.FormatUint(uint64(binary.LittleEndian.Uint32(b)), 10), nil
		}
		return strconv.Itoa(int(int32(binary.LittleEndian.Uint32(b)))), nil
	case bxBigInt, bxULong:
		b, err := fixed(8)
		if err != nil {
			return "", err
		}
		if tok == bxULong {
			return strconv.FormatUint(binary.LittleEndian.Uint64(b), 10), nil
		}
		return strconv.FormatInt(int64(binary.LittleEndian.Uint64(b)), 10), nil
	case bxReal:
		b, err := fixed(4)
		if err != nil {
			return "", err
		}
		return strconv.FormatFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), 'G', -1, 32), nil
	case bxFloat:
		b, err := fixed(8)
		if err != nil {
			return "", err
		}
		return strconv.FormatFloat(math.Float64frombits(binary.LittleEndian.Uint64(b)), 'G', -1, 64), nil
	}
	return "", x.errorf("atomic value type %#02x is not decoded", tok)
}

func isAtom(tok byte) bool { return tok < 0x20 || tok >= 0x7A && tok <= 0x8C }

var xmlTextEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
var xmlAttrEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")

// decodeBinXML converts a binary XML value to XML text.
func decodeBinXML(b []byte) (string, error) {
	if !isBinXML(b) {
		return "", fmt.Errorf("%w: not a binary xml value", ErrFormat)
	}
	x := &binXML{b: b, pos: 5, names: []string{""}}
	var stack []string
	open := false // inside a start tag (attributes may follow)
	closeTag := func() {
		if open {
			x.out.WriteByte('>')
			open = false
		}
	}
	for x.pos < len(x.b) {
		if x.out.Len() > maxLOBSize {
			return "", x.errorf("xml text larger than %d bytes", maxLOBSize)
		}
		tok, _ := x.byte()
		switch {
		case tok == bxName:
			s, err := x.text()
			if err != nil {
				return "", err
			}
			x.names = append(x.names, s)
		case tok == bxQName:
			var q [3]int
			for i := range q {
				v, err := x.mb()
				if err != nil {
					return "", err
				}
				q[i] = v
			}
			x.qnames = append(x.qnames, q)
		case tok == bxNmFlush:
			x.names, x.qnames = x.names[:1], nil
		case tok == bxExtn:
			n, err := x.mb()
			if err != nil {
				return "", err
			}
			if _, err := x.take(n); err != nil {
				return "", err
			}
		case tok == bxNest, tok == bxEndNest:
		case tok == bxXmlDecl:
			v, err := x.text()
			if err != nil {
				return "", err
			}
			x.out.WriteString(`<?xml version="` + xmlAttrEscaper.Replace(v) + `"`)
			if x.pos < len(x.b) && x.b[x.pos] == bxEncoding {
				x.pos++
				e, err := x.text()
				if err != nil {
					return "", err
				}
				x.out.WriteString(` encoding="` + xmlAttrEscaper.Replace(e) + `"`)
			}
			sa, err := x.byte()
			if err != nil {
				return "", err
			}
			switch sa {
			case 1:
				x.out.WriteString(` standalone="yes"`)
			case 2:
				x.out.WriteString(` standalone="no"`)
			}
			x.out.WriteString("?>")
		case tok == bxElement:
			closeTag()
			n, err := x.mb()
			if err != nil {
				return "", err
			}
			name, err := x.qname(n)
			if err != nil {
				return "", err
			}
			if len(stack) > 1000 {
				return "", x.errorf("elements nested deeper than 1000")
			}
			stack = append(stack, name)
			x.out.WriteString("<" + name)
			open = true
		case tok == bxAttr:
			if !open {
				return "", x.errorf("attribute outside a start tag")
			}
			n, err := x.mb()
			if err != nil {
				return "", err
			}
			name, err := x.qname(n)
			if err != nil {
				return "", err
			}
			var val strings.Builder
			for x.pos < len(x.b) && isAtom(x.b[x.pos]) {
				t, _ := x.byte()
				s, err := x.atom(t)
				if err != nil {
					return "", err
				}
				val.WriteString(s)
			}
			x.out.WriteString(" " + name + `="` + xmlAttrEscaper.Replace(val.String()) + `"`)
		case tok == bxEndAttrs:
		case tok == bxEndElem:
			if len(stack) == 0 {
				return "", x.errorf("end of an element never started")
			}
			name := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if open {
				x.out.WriteString("/>")
				open = false
			} else {
				x.out.WriteString("</" + name + ">")
			}
		case tok == bxComment:
			closeTag()
			s, err := x.text()
			if err != nil {
				return "", err
			}
			x.out.WriteString("<!--" + s + "-->")
		case tok == bxPI:
			closeTag()
			n, err := x.mb()
			if err != nil {
				return "", err
			}
			name, err := x.qname(n)
			if err != nil {
				return "", err
			}
			s, err := x.text()
			if err != nil {
				return "", err
			}
			x.out.WriteString("<?" + name)
			if s != "" {
				x.out.WriteString(" " + s)
			}
			x.out.WriteString("?>")
		case tok == bxCData:
			closeTag()
			x.out.WriteString("<![CDATA[")
			for x.pos < len(x.b) && x.b[x.pos] == bxCData {
				x.pos++
			}
			s, err := x.text()
			if err != nil {
				return "", err
			}
			x.out.WriteString(s)
			for x.pos < len(x.b) && x.b[x.pos] == bxCData {
				x.pos++
				s, err := x.text()
				if err != nil {
					return "", err
				}
				x.out.WriteString(s)
			}
			if x.pos < len(x.b) && x.b[x.pos] == bxEndCData {
				x.pos++
			}
			x.out.WriteString("]]>")
		case tok == bxXmlText:
			closeTag()
			s, err := x.text()
			if err != nil {
				return "", err
			}
			x.out.WriteString(s)
		case isAtom(tok):
			closeTag()
			s, err := x.atom(tok)
			if err != nil {
				return "", err
			}
			x.out.WriteString(xmlTextEscaper.Replace(s))
		default:
			return "", x.errorf("token %#02x is not decoded", tok)
		}
	}
	if open || len(stack) > 0 {
		return "", x.errorf("value ends inside element %s", stack[len(stack)-1])
	}
	return x.out.String(), nil
}
