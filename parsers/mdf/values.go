package mdf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"strings"
	"time"
)

// Decoded values have these Go types:
//
//	NULL                                          nil
//	bit                                           bool
//	tinyint, smallint, int, bigint                int64
//	real                                          float32
//	float                                         float64
//	decimal, numeric, money, smallmoney           Decimal
//	date, datetime, datetime2, smalldatetime      time.Time (UTC)
//	datetimeoffset                                time.Time (in its offset)
//	time                                          TimeOfDay
//	char, varchar, text, nchar, nvarchar, ntext   string
//	xml                                           string (decoded binary XML), or []byte when undecodable
//	binary, varbinary, image, rowversion, CLR     []byte
//	uniqueidentifier                              GUID
//	sql_variant                                   Variant

// Decimal is an exact decimal number: Unscaled × 10^-Scale.
type Decimal struct {
	Unscaled *big.Int
	Scale    int
}

// String renders the number with exactly Scale fractional digits.
func (d Decimal) String() string {
	if d.Unscaled == nil {
		return "0"
	}
	neg := d.Unscaled.Sign() < 0
	s := new(big.Int).Abs(d.Unscaled).String()
	if d.Scale > 0 {
		if len(s) <= d.Scale {
			s = strings.Repeat("0", d.Scale-len(s)+1) + s
		}
		s = s[:len(s)-d.Scale] + "." + s[len(s)-d.Scale:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// GUID is a uniqueidentifier in its stored byte order.
type GUID [16]byte

// String renders the GUID the way SQL Server prints it.
func (g GUID) String() string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

// TimeOfDay is a time value: the duration since midnight, with the
// column's fractional-second scale.
type TimeOfDay struct {
	D     time.Duration
	Scale int
}

// String renders hh:mm:ss[.fffffff].
func (t TimeOfDay) String() string {
	d := t.D
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	s := d / time.Second
	d -= s * time.Second
	out := fmt.Sprintf("%02d:%02d:%02d", h, m, s)
	if t.Scale > 0 {
		frac := fmt.Sprintf("%09d", int64(d))
		if t.Scale < 9 {
			frac = frac[:t.Scale]
		}
		out += "." + frac
	}
	return out
}

// Variant is a sql_variant value with its base type.
type Variant struct {
	Type  uint8 // system type id of the stored value
	Value any
}

var (
	epoch1900 = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	epoch0001 = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	unix1900  = epoch1900.Unix()
	unix0001  = epoch0001.Unix()
)

// decodeFixed decodes a fixed-length value of the given type from b (which
// has exactly the type's in-row size).
func decodeFixed(c *Column, b []byte) (any, error) {
	switch c.TypeID {
	case TypeTinyInt:
		return int64(b[0]), nil
	case TypeSmallInt:
		return int64(int16(binary.LittleEndian.Uint16(b))), nil
	case TypeInt:
		return int64(int32(binary.LittleEndian.Uint32(b))), nil
	case TypeBigInt:
		return int64(binary.LittleEndian.Uint64(b)), nil
	case TypeReal:
		return math.Float32frombits(binary.LittleEndian.Uint32(b)), nil
	case TypeFloat:
		if len(b) == 4 {
			return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), nil
		}
		return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
	case TypeMoney:
		return smallDecimal(int64(binary.LittleEndian.Uint64(b)), 4), nil
	case TypeSmallMoney:
		return smallDecimal(int64(int32(binary.LittleEndian.Uint32(b))), 4), nil
	case TypeDecimal, TypeNumeric:
		return decodeDecimal(b, c.Scale)
	case TypeDateTime:
		ticks := int64(int32(binary.LittleEndian.Uint32(b[0:4])))
		days := int64(int32(binary.LittleEndian.Uint32(b[4:8])))
		// 1/300 s ticks, rounded to milliseconds as SQL Server shows them.
		ms := (ticks*10 + 1) / 3
		return time.Unix(unix1900+days*86400+ms/1000, ms%1000*1e6).UTC(), nil
	case TypeSmallDateTime:
		mins := int64(binary.LittleEndian.Uint16(b[0:2]))
		days := int(binary.LittleEndian.Uint16(b[2:4]))
		return time.Unix(unix1900+int64(days)*86400+mins*60, 0).UTC(), nil
	case TypeDate:
		return dayTime(unix0001, int64(uint24(b)), 0), nil
	case TypeTime:
		return TimeOfDay{D: timeValue(b, c.Scale), Scale: c.Scale}, nil
	case TypeDateTime2:
		n := len(b) - 3
		d := timeValue(b[:n], c.Scale)
		return dayTime(unix0001, int64(uint24(b[n:])), d), nil
	case TypeDateTimeOffset:
		n := len(b) - 5
		d := timeValue(b[:n], c.Scale)
		utc := dayTime(unix0001, int64(uint24(b[n:n+3])), d)
		off := int(int16(binary.LittleEndian.Uint16(b[n+3:])))
		return utc.In(time.FixedZone(offsetName(off), off*60)), nil
	case TypeBit:
		return b[0] != 0, nil
	case TypeUniqueIdentifier:
		var g GUID
		copy(g[:], b)
		return g, nil
	case TypeChar:
		return decodeChar(c, b), nil
	case TypeNChar:
		return decodeUTF16(b), nil
	case TypeBinary, TypeTimestamp:
		return append([]byte(nil), b...), nil
	}
	return nil, fmt.Errorf("%w: no fixed-length decoder for type %s", ErrFormat, TypeName(c.TypeID))
}

// dayTime returns the UTC time days days and d after the Unix time epoch
// (cheaper than time.AddDate, exact for the whole 0001-9999 range).
func dayTime(epoch, days int64, d time.Duration) time.Time {
	return time.Unix(epoch+days*86400+int64(d/time.Second), int64(d%time.Second)).UTC()
}

func offsetName(min int) string {
	sign := '+'
	if min < 0 {
		sign = '-'
		min = -min
	}
	return fmt.Sprintf("%c%02d:%02d", sign, min/60, min%60)
}

func uint24(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 }

// timeValue decodes a time(scale) field of 3 to 5 bytes.
func timeValue(b []byte, scale int) time.Duration {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if scale < 0 || scale > 7 {
		scale = 7
	}
	// v counts units of 10^-scale seconds.
	mul := uint64(1)
	for i := scale; i < 9; i++ {
		mul *= 10
	}
	return time.Duration(v * mul)
}

// smallDecimal builds a Decimal from an int64 with one allocation (the
// big.Int and its words together).
func smallDecimal(v int64, scale int) Decimal {
	type box struct {
		i big.Int
		w [64 / bits.UintSize]big.Word
	}
	x := new(box)
	x.i.SetBits(x.w[:0])
	x.i.SetInt64(v)
	return Decimal{Unscaled: &x.i, Scale: scale}
}

func decodeDecimal(b []byte, scale int) (any, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty decimal", ErrFormat)
	}
	if len(b) <= 9 {
		// Up to 8 magnitude bytes: 64-bit path without the byte reversal.
		var u uint64
		for i := len(b) - 1; i >= 1; i-- {
			u = u<<8 | uint64(b[i])
		}
		if u <= math.MaxInt64 {
			v := int64(u)
			if b[0] == 0 {
				v = -v
			}
			return smallDecimal(v, scale), nil
		}
	}
	mag := make([]byte, len(b)-1)
	for i := range mag { // little-endian to big-endian
		mag[i] = b[len(b)-1-i]
	}
	v := new(big.Int).SetBytes(mag)
	if b[0] == 0 {
		v.Neg(v)
	}
	return Decimal{Unscaled: v, Scale: scale}, nil
}

func decodeChar(c *Column, b []byte) string {
	return decodeCodePage(b, c.CodePage)
}

// decodeVarInline decodes an in-row variable-length value.
func decodeVarInline(c *Column, b []byte) (any, error) {
	switch c.TypeID {
	case TypeVarChar, TypeChar, TypeText:
		return decodeChar(c, b), nil
	case TypeNVarChar, TypeNChar, TypeNText:
		return decodeUTF16(b), nil
	case TypeXML:
		// SQL Server stores xml in its binary XML format: decoded to
		// text; a value this decoder cannot read keeps its stored bytes.
		if s, err := decodeBinXML(b); err == nil {
			return s, nil
		}
		return append([]byte(nil), b...), nil
	case TypeSQLVariant:
		return decodeVariant(b)
	case TypeDecimal, TypeNumeric:
		// vardecimal storage is not supported; show the bytes.
		return append([]byte(nil), b...), nil
	}
	if n := fixedSize(c.TypeID, c.MaxLength, c.Precision, c.Scale); n > 0 && c.TypeID != TypeBinary && c.TypeID != TypeChar && c.TypeID != TypeNChar {
		if len(b) != n {
			return nil, fmt.Errorf("%w: %s value of %d bytes, want %d", ErrFormat, TypeName(c.TypeID), len(b), n)
		}
		return decodeFixed(c, b)
	}
	return append([]byte(nil), b...), nil
}

// decodeVariant decodes a sql_variant: base type, property bytes, value.
func decodeVariant(b []byte) (any, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: sql_variant of %d bytes", ErrFormat, len(b))
	}
	typ := b[0]
	plen := int(b[1])
	if 2+plen > len(b) {
		return nil, fmt.Errorf("%w: sql_variant properties (%d bytes) run past value", ErrFormat, plen)
	}
	props := b[2 : 2+plen]
	val := b[2+plen:]
	c := &Column{TypeID: typ, MaxLength: len(val), CodePage: 1252}
	switch typ {
	case TypeDecimal, TypeNumeric:
		if len(props) >= 2 {
			c.Precision, c.Scale = int(props[0]), int(props[1])
		}
	case TypeTime, TypeDateTime2, TypeDateTimeOffset:
		if len(props) >= 1 {
			c.Scale = int(props[0])
		}
	case TypeChar, TypeVarChar:
		if len(props) >= 6 {
			c.CodePage = CodePage(int32(binary.LittleEndian.Uint32(props[2:6])))
		}
	}
	var v any
	var err error
	switch typ {
	case TypeVarChar, TypeChar:
		v = decodeChar(c, val)
	case TypeNVarChar, TypeNChar:
		v = decodeUTF16(val)
	case TypeVarBinary, TypeBinary:
		v = append([]byte(nil), val...)
	default:
		n := fixedSize(typ, len(val), c.Precision, c.Scale)
		if n == 0 || n != len(val) {
			return nil, fmt.Errorf("%w: sql_variant base type %s with %d value bytes", ErrFormat, TypeName(typ), len(val))
		}
		v, err = decodeFixed(c, val)
	}
	if err != nil {
		return nil, err
	}
	return Variant{Type: typ, Value: v}, nil
}
