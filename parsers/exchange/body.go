package exchange

import (
	"strings"
	"unicode/utf8"

	"github.com/rewind-cdp/rewind/parsers/ese"
	"github.com/rewind-cdp/rewind/parsers/mapi"
	"github.com/rewind-cdp/rewind/parsers/rtfcp"
	"github.com/rewind-cdp/rewind/parsers/rtfex"
)

// Body formats of the NativeBody column. The store maps its BodyType
// column to an internal 16-bit NativeBodyType property (as its property
// mapping code shows); that it takes the values of PidTagNativeBody
// ([MS-OXPROPS]: 1 plain text, 2 RTF, 3 HTML, 4 clear-signed) is
// inferred. The content is therefore sniffed too (sniffBody): a compressed
// RTF header or HTML markup wins over the column.
const (
	bodyPlain = 1
	bodyRTF   = 2
	bodyHTML  = 3
	bodySMIME = 4
)

type body struct {
	text, html string
	rtf        []byte
	warnings   []string
}

// decodeBody finds the text and HTML bodies of a message: PidTagBody,
// PidTagHtml and PidTagRtfCompressed when the blobs hold them (Exchange
// 2010), the NativeBody column in its BodyType format otherwise (Exchange
// 2013+ keeps the body there).
func decodeBody(props []mapi.Property, native []byte, bodyType, codepage int64) body {
	var b body
	b.text = propString(props, mapi.PidTagBody)
	switch v := propValue(props, mapi.PidTagHtml).(type) {
	case []byte:
		b.html = decodeCharset(v, codepage)
	case string:
		b.html = v
	}
	if rc, ok := propValue(props, mapi.PidTagRtfCompressed).([]byte); ok && len(rc) > 0 {
		rtf, err := rtfcp.Decompress(rc)
		if err != nil {
			b.warnings = append(b.warnings, "PidTagRtfCompressed: "+err.Error())
		} else {
			b.rtf = rtf
		}
	}
	if len(native) > 0 {
		native = unpackNative(native, bodyType)
		switch sniffBody(native, bodyType) {
		case bodyHTML:
			if b.html == "" {
				b.html = decodeCharset(native, codepage)
			}
		case bodyRTF:
			if b.rtf == nil {
				rtf, err := rtfcp.Decompress(native)
				if err != nil {
					b.warnings = append(b.warnings, "NativeBody (compressed RTF): "+err.Error())
				} else {
					b.rtf = rtf
				}
			}
		case bodySMIME:
			b.warnings = append(b.warnings, "clear-signed body kept as is")
			if b.text == "" {
				b.text = decodeText(native, codepage)
			}
		default:
			if b.text == "" {
				b.text = decodeText(native, codepage)
			}
		}
	}
	if b.rtf != nil {
		if h, ok := rtfex.HTML(b.rtf); ok && b.html == "" {
			b.html = h
		}
		if b.text == "" && b.html == "" {
			b.text = rtfex.Text(b.rtf)
		}
	}
	return b
}

// unpackNative undoes compression of a NativeBody value that ESE did not
// undo itself. Exchange 2013+ compresses bodies with Xpress (LZXPRESS,
// [MS-XCA]) behind ESE's one-byte compression header; parsers/ese
// decompresses columns marked compressed, and a value that still starts
// with that header (0x18, scheme 3) and that no body format can start with
// is decompressed here. This is inferred from the forensic literature, not
// checked on a real database.
func unpackNative(b []byte, bodyType int64) []byte {
	if len(b) < 3 || b[0]>>3 != 3 {
		return b
	}
	if bodyType == bodyRTF && len(b) >= rtfcp.HeaderSize {
		if _, err := rtfcp.ParseHeader(b); err == nil {
			return b
		}
	}
	if out, err := ese.Decompress(b); err == nil && len(out) > 0 {
		return out
	}
	return b
}

// decodeText reads a plain-text body: UTF-16LE when it looks like it (the
// store's native text), else decodeCharset.
func decodeText(b []byte, codepage int64) string {
	if codepage == 1200 || looksUTF16(b) {
		return strings.TrimRight(mapi.UTF16(b), "\x00")
	}
	return decodeCharset(b, codepage)
}

func looksUTF16(b []byte) bool {
	if len(b) < 4 || len(b)%2 != 0 {
		return false
	}
	zeros := 0
	for i := 1; i < len(b); i += 2 {
		if b[i] == 0 {
			zeros++
		}
	}
	return zeros*2 > len(b)/2 // most high bytes zero: Latin text in UTF-16
}

var cp1252 = [32]rune{
	0x20ac, 0xfffd, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0xfffd, 0x017d, 0xfffd,
	0xfffd, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0xfffd, 0x017e, 0x0178,
}

// decodeCharset turns body bytes into UTF-8: UTF-8 as is (code page 65001
// or valid UTF-8), UTF-16 for 1200, Windows-1252 otherwise.
func decodeCharset(b []byte, codepage int64) string {
	b = []byte(strings.TrimRight(string(b), "\x00"))
	switch {
	case codepage == 1200:
		return mapi.UTF16(b)
	case codepage == 65001 || utf8.Valid(b):
		return string(b)
	}
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c < 0x80:
			sb.WriteByte(c)
		case c < 0xa0:
			sb.WriteRune(cp1252[c-0x80])
		default:
			sb.WriteRune(rune(c))
		}
	}
	return sb.String()
}

// sniffBody tells the format of a NativeBody value from its content where
// the content is unambiguous, else trusts the BodyType column.
func sniffBody(b []byte, bodyType int64) int64 {
	if h, err := rtfcp.ParseHeader(b); err == nil && int64(h.CompSize)+4 <= int64(len(b)) {
		return bodyRTF
	}
	head := strings.ToLower(strings.TrimSpace(string(b[:min(len(b), 512)])))
	if strings.HasPrefix(head, "<!doctype html") || strings.HasPrefix(head, "<html") || strings.Contains(head, "<body") {
		return bodyHTML
	}
	if bodyType == bodyRTF {
		return bodyPlain // no compressed RTF header: not RTF, whatever the column says
	}
	return bodyType
}
