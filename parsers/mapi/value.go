package mapi

import (
	"bytes"
	"encoding/binary"
	"math"
	"time"
)

// Counts gives the width of the count fields of a PropertyValue encoding
// ([MS-OXCDATA] 2.11.1): ROP buffers use 16-bit byte counts for binary
// values and 32-bit value counts for multi-valued properties; extended
// rules and MAPI over HTTP use 32 bits for both.
type Counts struct{ Binary, Multiple int }

// Count widths of the two contexts [MS-OXCDATA] 2.11.1 names.
var (
	ROP      = Counts{Binary: 2, Multiple: 4}
	Extended = Counts{Binary: 4, Multiple: 4}
)

// maxValues bounds the values of one multi-valued property we decode.
const maxValues = 1 << 20

type reader struct {
	b   []byte
	off int
}

func (r *reader) take(n int) ([]byte, error) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, corrupt("%d bytes at offset %d run past the %d-byte buffer", n, r.off, len(r.b))
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p, nil
}

func (r *reader) count(width int) (int, error) {
	p, err := r.take(width)
	if err != nil {
		return 0, err
	}
	if width == 2 {
		return int(binary.LittleEndian.Uint16(p)), nil
	}
	return int(binary.LittleEndian.Uint32(p) & 0x7FFFFFFF), nil
}

// DecodeValue decodes one PropertyValue of type t at the start of b and
// returns it with the number of bytes it used.
func DecodeValue(t PropType, b []byte, c Counts) (any, int, error) {
	r := &reader{b: b}
	v, err := r.value(t, c)
	return v, r.off, err
}

// DecodeTagged decodes one TaggedPropertyValue ([MS-OXCDATA] 2.11.4): a
// 4-byte property tag followed by the value.
func DecodeTagged(b []byte, c Counts) (Property, int, error) {
	r := &reader{b: b}
	p, err := r.take(4)
	if err != nil {
		return Property{}, 0, err
	}
	tag := PropTag(binary.LittleEndian.Uint32(p))
	v, err := r.value(tag.Type(), c)
	return Property{Tag: tag, Value: v}, r.off, err
}

func (r *reader) value(t PropType, c Counts) (any, error) {
	le := binary.LittleEndian
	if t.IsMultiple() {
		start := r.off
		n, err := r.count(c.Multiple)
		if err != nil {
			return nil, err
		}
		if n > maxValues || n > len(r.b)-r.off {
			return nil, corrupt("%d values at offset %d: more than the buffer can hold", n, start)
		}
		return r.multiple(t.Base(), n, c)
	}
	switch t {
	case PtypNull, PtypUnspecified:
		return nil, nil
	case PtypInteger16:
		p, err := r.take(2)
		if err != nil {
			return nil, err
		}
		return int16(le.Uint16(p)), nil
	case PtypInteger32:
		p, err := r.take(4)
		if err != nil {
			return nil, err
		}
		return int32(le.Uint32(p)), nil
	case PtypErrorCode:
		p, err := r.take(4)
		if err != nil {
			return nil, err
		}
		return ErrorCode(le.Uint32(p)), nil
	case PtypFloating32:
		p, err := r.take(4)
		if err != nil {
			return nil, err
		}
		return math.Float32frombits(le.Uint32(p)), nil
	case PtypFloating64:
		p, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(le.Uint64(p)), nil
	case PtypFloatingTime:
		p, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return FloatingTime(math.Float64frombits(le.Uint64(p))), nil
	case PtypCurrency, PtypInteger64:
		p, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return int64(le.Uint64(p)), nil
	case PtypTime:
		p, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return FileTime(le.Uint64(p)), nil
	case PtypBoolean:
		p, err := r.take(1)
		if err != nil {
			return nil, err
		}
		return p[0] != 0, nil
	case PtypGuid:
		p, err := r.take(16)
		if err != nil {
			return nil, err
		}
		return GUID(p), nil
	case PtypString:
		rest := r.b[r.off:]
		for i := 0; i+1 < len(rest); i += 2 {
			if rest[i] == 0 && rest[i+1] == 0 {
				r.off += i + 2
				return UTF16(rest[:i]), nil
			}
		}
		return nil, corrupt("PtypString at offset %d has no terminating null", r.off)
	case PtypString8:
		rest := r.b[r.off:]
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return nil, corrupt("PtypString8 at offset %d has no terminating null", r.off)
		}
		r.off += i + 1
		return string(rest[:i]), nil
	case PtypBinary, PtypServerId, PtypObject, PtypRestriction, PtypRuleAction:
		n, err := r.count(c.Binary)
		if err != nil {
			return nil, err
		}
		p, err := r.take(n)
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), p...), nil
	}
	return nil, corrupt("unsupported property type %v at offset %d", t, r.off)
}

func (r *reader) multiple(base PropType, n int, c Counts) (any, error) {
	switch base {
	case PtypInteger16:
		return collect[int16](r, base, n, c)
	case PtypInteger32:
		return collect[int32](r, base, n, c)
	case PtypInteger64, PtypCurrency:
		return collect[int64](r, base, n, c)
	case PtypFloating32:
		return collect[float32](r, base, n, c)
	case PtypFloating64:
		return collect[float64](r, base, n, c)
	case PtypTime, PtypFloatingTime:
		return collectTime(r, base, n, c)
	case PtypGuid:
		return collect[GUID](r, base, n, c)
	case PtypString, PtypString8:
		return collect[string](r, base, n, c)
	case PtypBinary:
		return collect[[]byte](r, base, n, c)
	}
	return nil, corrupt("unsupported multi-valued type %v at offset %d", base|MultipleFlag, r.off)
}

func collect[T any](r *reader, base PropType, n int, c Counts) ([]T, error) {
	out := make([]T, 0, min(n, 1024))
	for range n {
		v, err := r.value(base, c)
		if err != nil {
			return nil, err
		}
		out = append(out, v.(T))
	}
	return out, nil
}

func collectTime(r *reader, base PropType, n int, c Counts) (any, error) {
	return collect[time.Time](r, base, n, c)
}
