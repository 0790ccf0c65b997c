package mdf

import (
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
)

// sqlSortCodePages maps SQL Server (SQL_*) sort order ids, kept in the
// high byte of a collation id, to their code pages.
func sqlSortCodePage(sortID int) int {
	switch {
	case sortID >= 30 && sortID <= 39:
		return 437
	case sortID >= 40 && sortID <= 49:
		return 850
	case sortID >= 50 && sortID <= 54:
		return 1252
	case sortID >= 55 && sortID <= 61:
		return 850
	case sortID >= 71 && sortID <= 75:
		return 1252
	case sortID >= 80 && sortID <= 96:
		return 1250
	case sortID >= 104 && sortID <= 108:
		return 1251
	case sortID >= 112 && sortID <= 124:
		return 1253
	case sortID >= 128 && sortID <= 130:
		return 1254
	case sortID >= 136 && sortID <= 138:
		return 1255
	case sortID >= 144 && sortID <= 146:
		return 1256
	case sortID >= 152 && sortID <= 160:
		return 1257
	case sortID >= 183 && sortID <= 186:
		return 1252
	}
	return 0
}

// windowsCollationCodePages maps the collation index (low 12 bits of a
// Windows collation's id) to its code page, for the indexes seen in real
// files. Unknown indexes fall back to 1252; Options.CodePage overrides.
var windowsCollationCodePages = map[int]int{
	3: 950,  // Chinese_Taiwan_Stroke (Big5)
	8: 1252, // Latin1_General
}

// CodePage returns the Windows code page used by char, varchar and text
// values stored under a collation id (syscolpars.collationid). It returns
// 1252 when the collation is not known.
func CodePage(collation int32) int {
	id := uint32(collation)
	if sort := int(id >> 24); sort != 0 {
		if cp := sqlSortCodePage(sort); cp != 0 {
			return cp
		}
	}
	if cp, ok := windowsCollationCodePages[int(id&0xfff)]; ok {
		return cp
	}
	return 1252
}

// CodePageEncoding returns the encoding of a Windows code page (nil when
// it is not supported; 65001, UTF-8, needs none).
func CodePageEncoding(cp int) encoding.Encoding {
	switch cp {
	case 437:
		return charmap.CodePage437
	case 850:
		return charmap.CodePage850
	case 874:
		return charmap.Windows874
	case 932:
		return japanese.ShiftJIS
	case 936:
		return simplifiedchinese.GBK
	case 949:
		return korean.EUCKR
	case 950:
		return traditionalchinese.Big5
	case 1250:
		return charmap.Windows1250
	case 1251:
		return charmap.Windows1251
	case 1252:
		return charmap.Windows1252
	case 1253:
		return charmap.Windows1253
	case 1254:
		return charmap.Windows1254
	case 1255:
		return charmap.Windows1255
	case 1256:
		return charmap.Windows1256
	case 1257:
		return charmap.Windows1257
	case 1258:
		return charmap.Windows1258
	}
	return nil
}

// SupportedCodePage reports whether cp can be decoded.
func SupportedCodePage(cp int) bool { return cp == 65001 || CodePageEncoding(cp) != nil }

// decodeCodePage turns code-page bytes into a string.
func decodeCodePage(b []byte, cp int) string {
	ascii := true
	for _, c := range b {
		if c >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return string(b)
	}
	if cp == 65001 && utf8.Valid(b) {
		return string(b)
	}
	enc := CodePageEncoding(cp)
	if enc == nil {
		enc = charmap.Windows1252
	}
	out, err := enc.NewDecoder().Bytes(b)
	if err != nil {
		return string([]rune(string(b)))
	}
	return string(out)
}
