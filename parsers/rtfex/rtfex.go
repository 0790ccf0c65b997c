// Package rtfex turns the RTF bodies of mail messages back into what they
// were written as: the HTML that [MS-OXRTFEX] encapsulates in RTF
// (\fromhtml1 documents with \*\htmltag destinations and \htmlrtf
// suppression), or, for native RTF, its plain text. It handles the RTF a
// mail store writes, not every RTF feature, and never panics.
package rtfex

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf16"
)

// IsHTML reports whether rtf encapsulates HTML (\fromhtml1 in its header).
func IsHTML(rtf []byte) bool {
	head := rtf[:min(len(rtf), 1024)]
	return bytes.Contains(head, []byte(`\fromhtml1`))
}

// HTML returns the HTML encapsulated in rtf ([MS-OXRTFEX] 2.1.3), and
// false when rtf is not an encapsulation of HTML.
func HTML(rtf []byte) (string, bool) {
	if !IsHTML(rtf) {
		return "", false
	}
	return run(rtf, true), true
}

// Text returns the plain text of rtf: the text outside destinations, with
// \par and \line as CRLF and \tab as a tab.
func Text(rtf []byte) string { return run(rtf, false) }

type group struct {
	skip     bool // an ignorable destination (\*, fonttbl, colortbl, ...)
	htmltag  bool // inside {\*\htmltag ...}
	suppress bool // \htmlrtf on: RTF-only content
	uc       int  // \ucN: bytes to skip after \uN
}

// destinations whose text is not document text.
var skipDest = map[string]bool{
	"fonttbl": true, "colortbl": true, "stylesheet": true, "info": true, "pict": true,
	"object": true, "header": true, "footer": true, "listtable": true, "listoverridetable": true,
	"rsidtbl": true, "generator": true, "xmlnstbl": true, "themedata": true, "datastore": true,
	"latentstyles": true, "mmathPr": true, "filetbl": true, "revtbl": true,
}

func run(rtf []byte, htmlMode bool) string {
	var out bytes.Buffer
	st := []group{{uc: 1}}
	cur := func() *group { return &st[len(st)-1] }
	var pendingHigh rune // first half of a UTF-16 surrogate pair from \u
	emitting := func() bool {
		g := cur()
		if g.skip && !(htmlMode && g.htmltag) {
			return false
		}
		if htmlMode {
			return g.htmltag || !g.suppress
		}
		return true
	}
	emit := func(b ...byte) {
		if emitting() {
			out.Write(b)
		}
	}
	emitRune := func(r rune) {
		if emitting() {
			out.WriteString(string(r))
		}
	}
	skipBytes := 0
	firstInGroup := false
	for i := 0; i < len(rtf); {
		c := rtf[i]
		switch c {
		case '{':
			if len(st) < 4096 {
				st = append(st, *cur())
			}
			firstInGroup = true
			i++
			continue
		case '}':
			if len(st) > 1 {
				st = st[:len(st)-1]
			}
			firstInGroup = false
			i++
			continue
		case '\r', '\n':
			i++
			continue
		case '\\':
			if i+1 >= len(rtf) {
				i++
				continue
			}
			n := rtf[i+1]
			switch {
			case n == '\'':
				if i+4 <= len(rtf) {
					if v, err := strconv.ParseUint(string(rtf[i+2:i+4]), 16, 8); err == nil {
						if skipBytes > 0 {
							skipBytes--
						} else {
							emitRune(cp1252(byte(v)))
						}
					}
				}
				i += 4
				firstInGroup = false
				continue
			case n == '*':
				cur().skip = true
				i += 2
				continue
			case n == '\\' || n == '{' || n == '}':
				emit(n)
				i += 2
				firstInGroup = false
				continue
			case n == '~':
				emitRune(0xA0)
				i += 2
				continue
			case n == '\r' || n == '\n':
				emit('\r', '\n')
				i += 2
				continue
			case !isAlpha(n):
				i += 2
				continue
			}
			// control word
			j := i + 1
			for j < len(rtf) && isAlpha(rtf[j]) && j-i < 32 {
				j++
			}
			word := string(rtf[i+1 : j])
			k := j
			if k < len(rtf) && rtf[k] == '-' {
				k++
			}
			for k < len(rtf) && rtf[k] >= '0' && rtf[k] <= '9' && k-j < 11 {
				k++
			}
			param, hasParam := 0, false
			if k > j {
				if v, err := strconv.Atoi(string(rtf[j:k])); err == nil {
					param, hasParam = v, true
				}
			}
			if k < len(rtf) && rtf[k] == ' ' {
				k++
			}
			i = k
			wasFirst := firstInGroup
			firstInGroup = false
			g := cur()
			switch word {
			case "htmltag":
				g.htmltag = true
				g.skip = false
			case "htmlrtf":
				g.suppress = !hasParam || param != 0
			case "par", "line":
				if !htmlMode || g.htmltag || !g.suppress {
					emit('\r', '\n')
				}
			case "tab":
				emit('\t')
			case "uc":
				if hasParam && param >= 0 && param < 10 {
					g.uc = param
				}
			case "u":
				if hasParam {
					r := rune(int16(param))
					if r < 0 {
						r += 0x10000
					}
					switch {
					case utf16.IsSurrogate(r) && r < 0xDC00:
						pendingHigh = r
					case utf16.IsSurrogate(r) && pendingHigh != 0:
						emitRune(utf16.DecodeRune(pendingHigh, r))
						pendingHigh = 0
					default:
						emitRune(r)
					}
					skipBytes = g.uc
				}
			case "lquote":
				emitRune('\u2018')
			case "rquote":
				emitRune('\u2019')
			case "ldblquote":
				emitRune('\u201C')
			case "rdblquote":
				emitRune('\u201D')
			case "emdash":
				emitRune('\u2014')
			case "endash":
				emitRune('\u2013')
			case "bullet":
				emitRune('\u2022')
			default:
				if wasFirst && skipDest[word] {
					g.skip = true
				}
			}
			continue
		}
		if skipBytes > 0 {
			skipBytes--
			i++
			continue
		}
		firstInGroup = false
		emit(c)
		i++
	}
	s := out.String()
	if !htmlMode {
		s = strings.TrimLeft(s, "\r\n")
	}
	return s
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

var cp1252High = [32]rune{
	0x20ac, 0xfffd, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0xfffd, 0x017d, 0xfffd,
	0xfffd, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0xfffd, 0x017e, 0x0178,
}

// cp1252 decodes one Windows-1252 byte (\'hh escapes; \ansicpg other than
// 1252 is not honoured).
func cp1252(b byte) rune {
	if b >= 0x80 && b < 0xA0 {
		return cp1252High[b-0x80]
	}
	return rune(b)
}
