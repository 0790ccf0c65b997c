package mdf

import (
	"encoding/binary"
	"testing"
)

// appendBXText appends a length-prefixed UTF-16 string.
func appendBXText(b []byte, s string) []byte {
	u := utf16Encode(s)
	b = append(b, byte(len(u))) // short strings: one-byte count
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return b
}

func TestDecodeBinXML(t *testing.T) {
	b := []byte{0xDF, 0xFF, 0x01, 0xB0, 0x04}
	b = appendBXText(append(b, bxName), "root")
	b = appendBXText(append(b, bxName), "id")
	b = appendBXText(append(b, bxName), "x")
	b = append(b, bxQName, 0, 0, 1, bxQName, 0, 0, 2, bxQName, 0, 3, 1) // root, id, x:root
	b = append(b, bxElement, 1, bxAttr, 2, bxInt, 7, 0, 0, 0, bxEndAttrs)
	b = appendBXText(append(b, bxNVarChar), "a<b & \"é\"")
	b = append(b, bxElement, 3, bxEndElem)
	b = appendBXText(append(b, bxComment), " note ")
	b = appendBXText(append(b, bxCData), "<raw>")
	b = append(b, bxEndCData, bxEndElem)
	got, err := decodeBinXML(b)
	want := `<root id="7">a&lt;b &amp; "é"<x:root/><!-- note --><![CDATA[<raw>]]></root>`
	if err != nil || got != want {
		t.Fatalf("decodeBinXML = %q, %v\nwant %q", got, err, want)
	}
	// Through the column decoder: text for a good value, the stored
	// bytes for one it cannot read.
	c := &Column{TypeID: TypeXML, MaxLength: -1}
	if v, _ := decodeVarInline(c, b); v != want {
		t.Errorf("xml column value %v", v)
	}
	for _, bad := range [][]byte{
		b[:len(b)-1],                  // ends inside the root element
		append(b[:5:5], bxElement, 9), // undefined qname
		append(b[:5:5], 0x42),         // unknown token
		{0xDF, 0xFF, 0x01, 0xB0, 0x04, bxName, 0xff, 0xff, 0xff, 0xff, 0x0f}, // huge string
	} {
		if s, err := decodeBinXML(bad); err == nil {
			t.Errorf("decodeBinXML(%x) = %q, want an error", bad, s)
		}
		if v, _ := decodeVarInline(c, bad); v == nil {
			t.Errorf("undecodable xml value lost")
		}
	}
}
