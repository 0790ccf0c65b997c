package mapi

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTags(t *testing.T) {
	// [MS-OXPROPS]: PidTagSubject is 0x0037001F, PidTagMessageDeliveryTime
	// 0x0E060040, PidTagAttachDataBinary 0x37010102.
	cases := []struct {
		tag  PropTag
		id   uint16
		typ  PropType
		name string
	}{
		{0x0037001F, PidTagSubject, PtypString, "PidTagSubject (0x0037001f)"},
		{0x0E060040, PidTagMessageDeliveryTime, PtypTime, "PidTagMessageDeliveryTime (0x0e060040)"},
		{0x37010102, PidTagAttachDataBinary, PtypBinary, "PidTagAttachDataBinary (0x37010102)"},
		{0x0E1B000B, PidTagHasAttachments, PtypBoolean, "PidTagHasAttachments (0x0e1b000b)"},
	}
	for _, c := range cases {
		if c.tag.ID() != c.id || c.tag.Type() != c.typ || Tag(c.id, c.typ) != c.tag || c.tag.String() != c.name {
			t.Errorf("%#08x: id %#x type %v string %q", uint32(c.tag), c.tag.ID(), c.tag.Type(), c.tag.String())
		}
	}
	if s := (PtypString | MultipleFlag).String(); s != "PtypMultipleString" {
		t.Errorf("multi string type is %q", s)
	}
	if s := PtypBinary.String(); s != "PtypBinary" {
		t.Errorf("%q", s)
	}
}

// Values and encodings from [MS-OXCDATA] 2.11.1 and 2.11.2.
func TestDecodeValue(t *testing.T) {
	unixEpoch := time.Unix(0, 0).UTC()
	cases := []struct {
		name string
		typ  PropType
		c    Counts
		in   string
		want any
		n    int
	}{
		{"Integer16", PtypInteger16, ROP, "34 12", int16(0x1234), 2},
		{"Integer32", PtypInteger32, ROP, "ff ff ff ff", int32(-1), 4},
		{"Integer64", PtypInteger64, ROP, "01 00 00 00 00 00 00 80", int64(-0x7fffffffffffffff), 8},
		{"Boolean", PtypBoolean, ROP, "01", true, 1},
		{"Floating64", PtypFloating64, ROP, "00 00 00 00 00 00 f0 3f", 1.0, 8},
		// 6:00 AM on January 4, 1900 is 5.25 ([MS-OXCDATA] 2.11.1, PtypFloatingTime).
		{"FloatingTime", PtypFloatingTime, ROP, "00 00 00 00 00 00 15 40", time.Date(1900, 1, 4, 6, 0, 0, 0, time.UTC), 8},
		// PtypTime is a FILETIME: 116444736000000000 ticks is 1970-01-01.
		{"Time", PtypTime, ROP, "00 80 3e d5 de b1 9d 01", unixEpoch, 8},
		{"String", PtypString, ROP, "48 00 69 00 00 00 ff", "Hi", 6},
		{"String non-ASCII", PtypString, ROP, "e9 00 74 00 e9 00 00 00", "été", 8},
		{"String8", PtypString8, ROP, "48 69 00", "Hi", 3},
		{"Binary ROP", PtypBinary, ROP, "03 00 01 02 03", []byte{1, 2, 3}, 5},
		{"Binary extended", PtypBinary, Extended, "03 00 00 00 01 02 03", []byte{1, 2, 3}, 7},
		// PS_MAPI {00020328-0000-0000-C000-000000000046}
		{"Guid", PtypGuid, ROP, "28 03 02 00 00 00 00 00 c0 00 00 00 00 00 00 46", GUID(unhex(t, "28 03 02 00 00 00 00 00 c0 00 00 00 00 00 00 46")), 16},
		{"MultipleInteger32", PtypInteger32 | MultipleFlag, ROP, "02 00 00 00 01 00 00 00 02 00 00 00", []int32{1, 2}, 12},
		{"MultipleString", PtypString | MultipleFlag, ROP, "02 00 00 00 61 00 00 00 62 00 00 00", []string{"a", "b"}, 12},
		{"MultipleBinary", PtypBinary | MultipleFlag, ROP, "01 00 00 00 02 00 aa bb", [][]byte{{0xaa, 0xbb}}, 8},
		{"MultipleTime", PtypTime | MultipleFlag, ROP, "01 00 00 00 00 80 3e d5 de b1 9d 01", []time.Time{unixEpoch}, 12},
	}
	for _, c := range cases {
		v, n, err := DecodeValue(c.typ, unhex(t, c.in), c.c)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(v, c.want) || n != c.n {
			t.Errorf("%s: got %#v (%d bytes), want %#v (%d)", c.name, v, n, c.want, c.n)
		}
	}
	if g := GUID(unhex(t, "28 03 02 00 00 00 00 00 c0 00 00 00 00 00 00 46")).String(); g != "00020328-0000-0000-c000-000000000046" {
		t.Errorf("GUID string %s", g)
	}
}

func TestDecodeTagged(t *testing.T) {
	p, n, err := DecodeTagged(unhex(t, "1f 00 37 00 48 00 69 00 00 00"), ROP)
	if err != nil || n != 10 || p.Tag.ID() != PidTagSubject || p.Value != "Hi" {
		t.Fatalf("%v %d %v", p, n, err)
	}
	for _, bad := range []string{"1f 00 37 00 48 00", "02 01 01 37 05 00 01", "03 10 00 00 ff ff ff 7f", "ff ff 00 00 00"} {
		if _, _, err := DecodeTagged(unhex(t, bad), ROP); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// A blob laid out by hand after the store's serializer: subject "Hi"
// (stored as UTF-8, shorter than UTF-16), PidTagMessageFlags 5 inline,
// PidTagHasAttachments true inline; entries sorted by property ID.
const handBlob = `50 72 6f 50 00 03 03 00
	48 48 37 00 20 00 00 00
	18 18 07 0e 05 00 00 00
	08 08 1b 0e 01 00 00 00
	4d 02 48 69`

func TestStoreBlobByHand(t *testing.T) {
	props, err := ParseStoreBlob(unhex(t, handBlob))
	if err != nil {
		t.Fatal(err)
	}
	want := []Property{
		{Tag: Tag(PidTagSubject, PtypString), Value: "Hi"},
		{Tag: Tag(PidTagMessageFlags, PtypInteger32), Value: int32(5)},
		{Tag: Tag(PidTagHasAttachments, PtypBoolean), Value: true},
	}
	if !reflect.DeepEqual(props, want) {
		t.Fatalf("got %#v", props)
	}
	enc, err := EncodeStoreBlob(want)
	if err != nil || !bytes.Equal(enc, unhex(t, handBlob)) {
		t.Fatalf("encoded % x, %v", enc, err)
	}
}

func TestStoreBlobRoundTrip(t *testing.T) {
	when := time.Date(2019, 3, 4, 5, 6, 7, 800, time.UTC)
	props := []Property{
		{Tag: Tag(PidTagSubject, PtypString), Value: "Quarterly report – Q3"},
		{Tag: Tag(PidTagMessageDeliveryTime, PtypTime), Value: when},
		{Tag: Tag(PidTagMessageSize, PtypInteger32), Value: int32(123456)},
		{Tag: Tag(0x6700, PtypInteger64), Value: int64(1) << 40},
		{Tag: Tag(0x6701, PtypInteger64), Value: int64(-300)},
		{Tag: Tag(0x6702, PtypInteger16), Value: int16(-2)},
		{Tag: Tag(0x6703, PtypFloating64), Value: 2.5},
		{Tag: Tag(0x6704, PtypGuid), Value: GUID{1, 2, 3}},
		{Tag: Tag(PidTagRtfCompressed, PtypBinary), Value: bytes.Repeat([]byte{7}, 300)},
		{Tag: Tag(0x6705, PtypString|MultipleFlag), Value: []string{"a", "ünï"}},
		{Tag: Tag(0x6706, PtypBinary|MultipleFlag), Value: [][]byte{{1}, {2, 3}}},
		{Tag: Tag(0x6707, PtypInteger32|MultipleFlag), Value: []int32{-1, 70000}},
		{Tag: Tag(0x6708, PtypTime|MultipleFlag), Value: []time.Time{when}},
		{Tag: Tag(0x6709, PtypBoolean), Value: false},
		{Tag: Tag(0x670A, PtypNull)},
		{Tag: Tag(PidTagBody, PtypString), Ref: true},
		{Tag: Tag(0x670B, PtypString), Value: ""},
	}
	enc, err := EncodeStoreBlob(props)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseStoreBlob(enc)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[uint16]Property{}
	for _, p := range got {
		byID[p.Tag.ID()] = p
	}
	for _, p := range props {
		g := byID[p.Tag.ID()]
		if !reflect.DeepEqual(g, p) {
			t.Errorf("%v: got %#v, want %#v", p.Tag, g, p)
		}
	}
}

func TestStoreBlobCorrupt(t *testing.T) {
	good := unhex(t, handBlob)
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"short":          good[:6],
		"magic":          mut(func(b []byte) []byte { b[0] = 0; return b }),
		"version":        mut(func(b []byte) []byte { b[5] = 2; return b }),
		"count":          mut(func(b []byte) []byte { b[6] = 0xff; return b }),
		"offset":         mut(func(b []byte) []byte { b[12] = 0x7f; return b }),
		"offset in dict": mut(func(b []byte) []byte { b[12] = 4; return b }),
		"length":         mut(func(b []byte) []byte { b[len(b)-3] = 0x4e; return b }),
		"type":           mut(func(b []byte) []byte { b[8] = 0xfc; return b }),
		"truncated":      good[:len(good)-1],
	}
	for name, b := range cases {
		if _, err := ParseStoreBlob(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestSubobjects(t *testing.T) {
	// reserved 0, one child, no indirect; child 0 -> Inid 5.
	b := unhex(t, "18 19 01 18 18 21 05")
	subs, err := ParseSubobjects(b)
	if err != nil || !reflect.DeepEqual(subs, []Subobject{{Child: 0, Inid: 5}}) {
		t.Fatalf("%v %v", subs, err)
	}
	if enc := EncodeSubobjects(subs); !bytes.Equal(enc, b) {
		t.Fatalf("encoded % x", enc)
	}
	in := []Subobject{{0, 1 << 40}, {1, 7}, {-1, 300}}
	got, err := ParseSubobjects(EncodeSubobjects(in))
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"18 19 05 18", "18 19 01 18 19 ff 21 05", "20", "18 1b ff ff ff 7f 18"} {
		if _, err := ParseSubobjects(unhex(t, bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
