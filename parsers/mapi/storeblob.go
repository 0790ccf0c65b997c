package mapi

import (
	"encoding/binary"
	"math"
	"sort"
	"time"
	"unicode/utf16"
)

// The Exchange 2010-2019 store ("Managed Store") keeps most properties of
// a mailbox, folder, message or attachment row in its PropertyBlob column
// (and, for large ones, OffPagePropertyBlob) in a format that no published
// specification covers. What follows is taken from the store's own
// serializer as it appears in public decompilations of
// Microsoft.Exchange.Server.Storage.PropertyBlob and
// Microsoft.Exchange.Server.Storage.Common.SerializedValue; it could not be
// checked against a real Exchange database here.
//
//	header   magic "PrOP" (uint32 0x506F7250) | version uint16 (0x03xx) | count uint16
//	entries  count x { compressedType u8 | format u8 | propId u16 | offsetOrValue i32 },
//	         sorted by propId
//	values   the serialized values that are not inline, at their offsets
//
// A value is inline when its entry's format is Null (0), Boolean (8),
// Int16 (16), Int32 (24) or ReferenceZero (124): offsetOrValue holds it.
// Otherwise it starts at offsetOrValue with its own format byte (see
// readSerialized).
const (
	storeBlobMagic   = 0x506F7250
	storeBlobVersion = 0x0300
)

// Serialized value formats (high 5 bits of the format byte); the low 3
// bits carry an integer size, a length size, or a boolean.
const (
	fmtNull      = 0x00
	fmtBoolean   = 0x08
	fmtInt16     = 0x10
	fmtInt32     = 0x18
	fmtInt64     = 0x20
	fmtSingle    = 0x28
	fmtDouble    = 0x30
	fmtDateTime  = 0x38
	fmtGuid      = 0x40
	fmtString    = 0x48
	fmtBinary    = 0x50
	fmtReserved2 = 0x68
	fmtReserved1 = 0x70
	fmtReference = 0x78
	fmtMVFlag    = 0x80
	fmtRefZero   = 0x7C
	fmtUTF8      = 0x04
)

// compressed property types of the dictionary entries and their MAPI types.
var storeTypes = map[byte]PropType{
	0: PtypNull, 8: PtypBoolean, 16: PtypInteger16, 24: PtypInteger32, 32: PtypInteger64,
	36: PtypCurrency, 40: PtypFloating32, 48: PtypFloating64, 52: PtypFloatingTime,
	56: PtypTime, 64: PtypGuid, 72: PtypString, 80: PtypBinary, 84: PtypObject,
	104: PtypRestriction, 108: PtypRuleAction, 112: PtypServerId,
	144: PtypInteger16 | MultipleFlag, 152: PtypInteger32 | MultipleFlag,
	160: PtypInteger64 | MultipleFlag, 164: PtypCurrency | MultipleFlag,
	168: PtypFloating32 | MultipleFlag, 176: PtypFloating64 | MultipleFlag,
	180: PtypFloatingTime | MultipleFlag, 184: PtypTime | MultipleFlag,
	192: PtypGuid | MultipleFlag, 200: PtypString | MultipleFlag, 208: PtypBinary | MultipleFlag,
}

func storeTypeCode(t PropType) (byte, bool) {
	if t == PtypString8 {
		t = PtypString
	}
	if t == PtypString8|MultipleFlag {
		t = PtypString | MultipleFlag
	}
	for k, v := range storeTypes {
		if v == t {
			return k, true
		}
	}
	return 0, false
}

// IsStoreBlob reports whether b starts like a store property blob.
func IsStoreBlob(b []byte) bool {
	return len(b) >= 8 && binary.LittleEndian.Uint32(b) == storeBlobMagic
}

// ParseStoreBlob decodes a store property blob (PropertyBlob,
// OffPagePropertyBlob or one RecipientList entry). An empty blob holds no
// properties.
func ParseStoreBlob(b []byte) ([]Property, error) {
	if len(b) == 0 {
		return nil, nil
	}
	le := binary.LittleEndian
	if len(b) < 8 {
		return nil, corrupt("property blob of %d bytes is shorter than its header", len(b))
	}
	if m := le.Uint32(b); m != storeBlobMagic {
		return nil, corrupt("property blob magic %#08x at offset 0, want %#08x", m, storeBlobMagic)
	}
	if v := le.Uint16(b[4:]); v&0xFF00 != storeBlobVersion {
		return nil, corrupt("property blob version %#04x at offset 4", v)
	}
	n := int(le.Uint16(b[6:]))
	dictEnd := 8 + 8*n
	if dictEnd > len(b) {
		return nil, corrupt("property blob claims %d properties at offset 6; %d bytes hold fewer", n, len(b))
	}
	out := make([]Property, 0, n)
	for i := range n {
		e := b[8+8*i:]
		ctype, format, id := e[0]&0xFC, e[1], le.Uint16(e[2:])
		ov := int32(le.Uint32(e[4:]))
		t, ok := storeTypes[ctype]
		if !ok {
			return nil, corrupt("property %#04x (entry at offset %d): unknown compressed type %#02x", id, 8+8*i, ctype)
		}
		p := Property{Tag: Tag(id, t)}
		switch format {
		case fmtNull:
		case fmtBoolean:
			p.Value = ov != 0
		case fmtInt16:
			p.Value = widen(int64(int16(ov)), t)
		case fmtInt32:
			p.Value = widen(int64(ov), t)
		case fmtRefZero, fmtReference:
			p.Ref = true
		default:
			if ov < int32(dictEnd) || int(ov) >= len(b) {
				return nil, corrupt("property %#04x (entry at offset %d): value offset %d outside %d..%d", id, 8+8*i, ov, dictEnd, len(b))
			}
			r := &reader{b: b, off: int(ov)}
			v, err := r.serialized(t)
			if err != nil {
				return nil, err
			}
			if format&0xF8 != b[ov]&0xF8 && !(format == fmtBinary && (b[ov]&0xF8 == fmtReserved1 || b[ov]&0xF8 == fmtReserved2)) {
				return nil, corrupt("property %#04x: entry format %#02x, value at offset %d has %#02x", id, format, ov, b[ov])
			}
			p.Value = v
		}
		out = append(out, p)
	}
	return out, nil
}

// widen converts an inline integer to the Go type of property type t.
func widen(v int64, t PropType) any {
	switch t {
	case PtypInteger16:
		return int16(v)
	case PtypInteger32:
		return int32(v)
	case PtypInteger64, PtypCurrency:
		return v
	case PtypBoolean:
		return v != 0
	}
	return int32(v)
}

// serialized reads one SerializedValue for a property of type t.
func (r *reader) serialized(t PropType) (any, error) {
	start := r.off
	h, err := r.take(1)
	if err != nil {
		return nil, err
	}
	f := h[0]
	le := binary.LittleEndian
	switch base := f & 0xF8; {
	case f == fmtNull:
		return nil, nil
	case base == fmtBoolean:
		return f&1 != 0, nil
	case base == fmtInt16 || base == fmtInt32 || base == fmtInt64:
		v, err := r.sizedInt(f&7, start)
		if err != nil {
			return nil, err
		}
		return widen(v, t), nil
	case base == fmtSingle:
		p, err := r.take(4)
		if err != nil {
			return nil, err
		}
		return math.Float32frombits(le.Uint32(p)), nil
	case base == fmtDouble:
		p, err := r.take(8)
		if err != nil {
			return nil, err
		}
		d := math.Float64frombits(le.Uint64(p))
		if t == PtypFloatingTime {
			return FloatingTime(d), nil
		}
		return d, nil
	case base == fmtDateTime:
		p, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return FileTime(le.Uint64(p)), nil
	case base == fmtGuid:
		p, err := r.take(16)
		if err != nil {
			return nil, err
		}
		return GUID(p), nil
	case base == fmtString:
		n, err := r.length(f&3, start)
		if err != nil {
			return nil, err
		}
		p, err := r.take(n)
		if err != nil {
			return nil, err
		}
		if f&fmtUTF8 != 0 {
			return string(p), nil
		}
		return UTF16(p), nil
	case base == fmtBinary || base == fmtReserved1 || base == fmtReserved2:
		n, err := r.length(f&3, start)
		if err != nil {
			return nil, err
		}
		p, err := r.take(n)
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), p...), nil
	case f&fmtMVFlag != 0:
		n, err := r.length(f&3, start)
		if err != nil {
			return nil, err
		}
		if n > maxValues || n > len(r.b)-r.off {
			return nil, corrupt("multi-value at offset %d claims %d values", start, n)
		}
		return r.serializedMulti(f&0xF8&^fmtMVFlag, t.Base(), n, start)
	}
	return nil, corrupt("unknown serialized value format %#02x at offset %d", f, start)
}

func (r *reader) sizedInt(size byte, start int) (int64, error) {
	le := binary.LittleEndian
	switch size {
	case 0:
		return 0, nil
	case 1:
		p, err := r.take(1)
		if err != nil {
			return 0, err
		}
		return int64(int8(p[0])), nil
	case 2:
		p, err := r.take(2)
		if err != nil {
			return 0, err
		}
		return int64(int16(le.Uint16(p))), nil
	case 3:
		p, err := r.take(4)
		if err != nil {
			return 0, err
		}
		return int64(int32(le.Uint32(p))), nil
	case 4:
		p, err := r.take(8)
		if err != nil {
			return 0, err
		}
		return int64(le.Uint64(p)), nil
	}
	return 0, corrupt("integer size code %d at offset %d", size, start)
}

func (r *reader) length(code byte, start int) (int, error) {
	switch code {
	case 0:
		return 0, nil
	case 1:
		return r.count1()
	case 2:
		return r.count(2)
	}
	n, err := r.count(4)
	if err != nil {
		return 0, err
	}
	if n > len(r.b) {
		return 0, corrupt("length %d at offset %d exceeds the %d-byte blob", n, start, len(r.b))
	}
	return n, nil
}

func (r *reader) count1() (int, error) {
	p, err := r.take(1)
	if err != nil {
		return 0, err
	}
	return int(p[0]), nil
}

// serializedMulti reads the n elements of a multi-valued SerializedValue:
// fixed-size elements are stored raw, strings and binaries each as a
// SerializedValue of their own.
func (r *reader) serializedMulti(elem byte, base PropType, n, start int) (any, error) {
	le := binary.LittleEndian
	fixed := func(size int) ([]byte, error) {
		if n*size > len(r.b)-r.off {
			return nil, corrupt("multi-value at offset %d: %d values of %d bytes run past the blob", start, n, size)
		}
		return r.take(n * size)
	}
	switch elem {
	case fmtInt16:
		p, err := fixed(2)
		if err != nil {
			return nil, err
		}
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(p[2*i:]))
		}
		return out, nil
	case fmtInt32:
		p, err := fixed(4)
		if err != nil {
			return nil, err
		}
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(p[4*i:]))
		}
		return out, nil
	case fmtInt64:
		p, err := fixed(8)
		if err != nil {
			return nil, err
		}
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(p[8*i:]))
		}
		return out, nil
	case fmtSingle:
		p, err := fixed(4)
		if err != nil {
			return nil, err
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(p[4*i:]))
		}
		return out, nil
	case fmtDouble:
		p, err := fixed(8)
		if err != nil {
			return nil, err
		}
		if base == PtypFloatingTime {
			out := make([]time.Time, n)
			for i := range out {
				out[i] = FloatingTime(math.Float64frombits(le.Uint64(p[8*i:])))
			}
			return out, nil
		}
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(p[8*i:]))
		}
		return out, nil
	case fmtDateTime:
		p, err := fixed(8)
		if err != nil {
			return nil, err
		}
		out := make([]time.Time, n)
		for i := range out {
			out[i] = FileTime(le.Uint64(p[8*i:]))
		}
		return out, nil
	case fmtGuid:
		p, err := fixed(16)
		if err != nil {
			return nil, err
		}
		out := make([]GUID, n)
		for i := range out {
			out[i] = GUID(p[16*i:])
		}
		return out, nil
	case fmtString:
		out := make([]string, 0, min(n, 1024))
		for range n {
			v, err := r.serialized(PtypString)
			if err != nil {
				return nil, err
			}
			s, _ := v.(string)
			out = append(out, s)
		}
		return out, nil
	case fmtBinary:
		out := make([][]byte, 0, min(n, 1024))
		for range n {
			v, err := r.serialized(PtypBinary)
			if err != nil {
				return nil, err
			}
			b, _ := v.([]byte)
			out = append(out, b)
		}
		return out, nil
	}
	return nil, corrupt("unknown multi-value element format %#02x at offset %d", elem, start)
}

// EncodeStoreBlob writes properties as a store property blob the way the
// store's serializer does (sorted by ID, small integers inline). It lets
// tests and fakes build the rows an Exchange database would hold.
func EncodeStoreBlob(props []Property) ([]byte, error) {
	ps := append([]Property(nil), props...)
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Tag.ID() < ps[j].Tag.ID() })
	le := binary.LittleEndian
	head := make([]byte, 8+8*len(ps))
	le.PutUint32(head, storeBlobMagic)
	le.PutUint16(head[4:], storeBlobVersion)
	le.PutUint16(head[6:], uint16(len(ps)))
	var vals []byte
	for i, p := range ps {
		code, ok := storeTypeCode(p.Tag.Type())
		if !ok {
			return nil, corrupt("cannot encode %v", p.Tag)
		}
		e := head[8+8*i:]
		e[0] = code
		le.PutUint16(e[2:], p.Tag.ID())
		var inline int32
		format := byte(fmtNull)
		switch v := p.Value.(type) {
		case nil:
		case bool:
			format = fmtBoolean
			if v {
				inline = 1
			}
		case int16:
			format, inline = fmtInt16, int32(v)
		case int32:
			format, inline = fmtInt32, v
		default:
			sv, err := serialize(v)
			if err != nil {
				return nil, err
			}
			format = sv[0] & 0xF8
			inline = int32(len(head) + len(vals))
			vals = append(vals, sv...)
		}
		if p.Ref {
			format, inline = fmtRefZero, 0
		}
		e[1] = format
		le.PutUint32(e[4:], uint32(inline))
	}
	return append(head, vals...), nil
}

func serialize(v any) ([]byte, error) {
	le := binary.LittleEndian
	switch x := v.(type) {
	case nil:
		return []byte{fmtNull}, nil
	case int64:
		return serializeInt(fmtInt64, x), nil
	case float32:
		return le.AppendUint32([]byte{fmtSingle}, math.Float32bits(x)), nil
	case float64:
		return le.AppendUint64([]byte{fmtDouble}, math.Float64bits(x)), nil
	case time.Time:
		return le.AppendUint64([]byte{fmtDateTime}, ToFileTime(x)), nil
	case GUID:
		return append([]byte{fmtGuid}, x[:]...), nil
	case string:
		u := utf16.Encode([]rune(x))
		if 2*len(u) <= len(x) { // the store keeps whichever encoding is shorter
			b := make([]byte, 2*len(u))
			for i, c := range u {
				le.PutUint16(b[2*i:], c)
			}
			return withLength(fmtString, b), nil
		}
		return withLength(fmtString|fmtUTF8, []byte(x)), nil
	case []byte:
		return withLength(fmtBinary, x), nil
	case []string:
		out := header(fmtMVFlag|fmtString, len(x))
		for _, s := range x {
			b, _ := serialize(s)
			out = append(out, b...)
		}
		return out, nil
	case [][]byte:
		out := header(fmtMVFlag|fmtBinary, len(x))
		for _, s := range x {
			out = append(out, withLength(fmtBinary, s)...)
		}
		return out, nil
	case []int32:
		out := header(fmtMVFlag|fmtInt32, len(x))
		for _, n := range x {
			out = le.AppendUint32(out, uint32(n))
		}
		return out, nil
	case []time.Time:
		out := header(fmtMVFlag|fmtDateTime, len(x))
		for _, t := range x {
			out = le.AppendUint64(out, ToFileTime(t))
		}
		return out, nil
	}
	return nil, corrupt("cannot encode a %T value", v)
}

func serializeInt(base byte, v int64) []byte {
	le := binary.LittleEndian
	switch {
	case v == 0:
		return []byte{base}
	case v >= math.MinInt8 && v <= math.MaxInt8:
		return []byte{base | 1, byte(v)}
	case v >= math.MinInt16 && v <= math.MaxInt16:
		return le.AppendUint16([]byte{base | 2}, uint16(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		return le.AppendUint32([]byte{base | 3}, uint32(v))
	}
	return le.AppendUint64([]byte{base | 4}, uint64(v))
}

func header(f byte, n int) []byte {
	le := binary.LittleEndian
	switch {
	case n == 0:
		return []byte{f}
	case n <= 0xFF:
		return []byte{f | 1, byte(n)}
	case n <= 0xFFFF:
		return le.AppendUint16([]byte{f | 2}, uint16(n))
	}
	return le.AppendUint32([]byte{f | 3}, uint32(n))
}

func withLength(f byte, b []byte) []byte { return append(header(f, len(b)), b...) }

// Subobject is one entry of a message's SubobjectsBlob: an attachment
// (Child >= 0, its attachment number) or an indirect descendant (Child
// -1), both naming a row of the Attachment table by its Inid.
type Subobject struct {
	Child int32
	Inid  int64
}

// ParseSubobjects decodes a SubobjectsBlob: three serialized Int32 values
// (reserved, child count, indirect count), then per child a serialized
// Int32 child number and Int64 Inid, then per indirect descendant an Int64
// Inid (from the store's AttachmentBlob serializer, like ParseStoreBlob).
func ParseSubobjects(b []byte) ([]Subobject, error) {
	if len(b) == 0 {
		return nil, nil
	}
	r := &reader{b: b}
	num := func(want byte) (int64, error) {
		start := r.off
		h, err := r.take(1)
		if err != nil {
			return 0, err
		}
		if h[0]&0xF8 != want || (want == fmtInt32 && h[0]&7 > 3) {
			return 0, corrupt("subobjects blob: format %#02x at offset %d, want %#02x", h[0], start, want)
		}
		return r.sizedInt(h[0]&7, start)
	}
	var hdr [3]int64
	for i := range hdr {
		v, err := num(fmtInt32)
		if err != nil {
			return nil, err
		}
		hdr[i] = v
	}
	children, indirect := hdr[1], hdr[2]
	if children < 0 || indirect < 0 || children > int64(len(b)) || indirect > int64(len(b))-children {
		return nil, corrupt("subobjects blob: %d children and %d indirect entries in %d bytes", children, indirect, len(b))
	}
	out := make([]Subobject, 0, children+indirect)
	for range children {
		c, err := num(fmtInt32)
		if err != nil {
			return nil, err
		}
		id, err := num(fmtInt64)
		if err != nil {
			return nil, err
		}
		if c < 0 || c == math.MaxInt32 {
			return nil, corrupt("subobjects blob: child number %d", c)
		}
		out = append(out, Subobject{Child: int32(c), Inid: id})
	}
	for range indirect {
		id, err := num(fmtInt64)
		if err != nil {
			return nil, err
		}
		out = append(out, Subobject{Child: -1, Inid: id})
	}
	return out, nil
}

// EncodeSubobjects writes a SubobjectsBlob (children first, as the store
// does).
func EncodeSubobjects(subs []Subobject) []byte {
	var kids, ind []Subobject
	for _, s := range subs {
		if s.Child >= 0 {
			kids = append(kids, s)
		} else {
			ind = append(ind, s)
		}
	}
	out := serializeInt(fmtInt32, 0)
	out = append(out, serializeInt(fmtInt32, int64(len(kids)))...)
	out = append(out, serializeInt(fmtInt32, int64(len(ind)))...)
	for _, s := range kids {
		out = append(out, serializeInt(fmtInt32, int64(s.Child))...)
		out = append(out, serializeInt(fmtInt64, s.Inid)...)
	}
	for _, s := range ind {
		out = append(out, serializeInt(fmtInt64, s.Inid)...)
	}
	return out
}
