// Package mapi decodes MAPI properties: property tags and types
// ([MS-OXCDATA] 2.9 and 2.11.1), the property identifiers Exchange uses
// ([MS-OXPROPS]), PropertyValue and TaggedPropertyValue encodings
// ([MS-OXCDATA] 2.11.2-2.11.4), and the property blobs the Exchange
// 2010-2019 store keeps in its ESE tables (see storeblob.go). Decoders never
// trust counts or lengths from the input and never panic.
package mapi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf16"
)

// ErrCorrupt is wrapped by every error about malformed property data.
var ErrCorrupt = errors.New("mapi: corrupt property data")

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

// PropType is a property data type ([MS-OXCDATA] 2.11.1).
type PropType uint16

// Property data types.
const (
	PtypUnspecified  PropType = 0x0000
	PtypNull         PropType = 0x0001
	PtypInteger16    PropType = 0x0002
	PtypInteger32    PropType = 0x0003
	PtypFloating32   PropType = 0x0004
	PtypFloating64   PropType = 0x0005
	PtypCurrency     PropType = 0x0006
	PtypFloatingTime PropType = 0x0007
	PtypErrorCode    PropType = 0x000A
	PtypBoolean      PropType = 0x000B
	PtypObject       PropType = 0x000D
	PtypInteger64    PropType = 0x0014
	PtypString8      PropType = 0x001E
	PtypString       PropType = 0x001F
	PtypTime         PropType = 0x0040
	PtypGuid         PropType = 0x0048
	PtypServerId     PropType = 0x00FB
	PtypRestriction  PropType = 0x00FD
	PtypRuleAction   PropType = 0x00FE
	PtypBinary       PropType = 0x0102

	// MultipleFlag marks the multi-valued form of a type (PtypMultipleX =
	// 0x1000 | PtypX).
	MultipleFlag PropType = 0x1000
)

var typeNames = map[PropType]string{
	PtypUnspecified: "PtypUnspecified", PtypNull: "PtypNull", PtypInteger16: "PtypInteger16",
	PtypInteger32: "PtypInteger32", PtypFloating32: "PtypFloating32", PtypFloating64: "PtypFloating64",
	PtypCurrency: "PtypCurrency", PtypFloatingTime: "PtypFloatingTime", PtypErrorCode: "PtypErrorCode",
	PtypBoolean: "PtypBoolean", PtypObject: "PtypObject", PtypInteger64: "PtypInteger64",
	PtypString8: "PtypString8", PtypString: "PtypString", PtypTime: "PtypTime", PtypGuid: "PtypGuid",
	PtypServerId: "PtypServerId", PtypRestriction: "PtypRestriction", PtypRuleAction: "PtypRuleAction",
	PtypBinary: "PtypBinary",
}

// IsMultiple reports whether t is a multi-valued type.
func (t PropType) IsMultiple() bool { return t&MultipleFlag != 0 }

// Base returns the single-valued type of a multi-valued type.
func (t PropType) Base() PropType { return t &^ MultipleFlag }

func (t PropType) String() string {
	if t.IsMultiple() {
		if s, ok := typeNames[t.Base()]; ok {
			return "PtypMultiple" + s[4:]
		}
	}
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("PropType(%#04x)", uint16(t))
}

// PropTag is a property tag: the property ID in the high 16 bits and the
// type in the low 16 ([MS-OXCDATA] 2.9).
type PropTag uint32

// Tag builds a property tag.
func Tag(id uint16, t PropType) PropTag { return PropTag(uint32(id)<<16 | uint32(t)) }

// ID returns the property identifier.
func (t PropTag) ID() uint16 { return uint16(t >> 16) }

// Type returns the property type.
func (t PropTag) Type() PropType { return PropType(t & 0xFFFF) }

func (t PropTag) String() string {
	if n, ok := names[t.ID()]; ok {
		return fmt.Sprintf("%s (%#08x)", n, uint32(t))
	}
	return fmt.Sprintf("%#08x", uint32(t))
}

// Name returns the canonical [MS-OXPROPS] name of a property ID, or "".
func Name(id uint16) string { return names[id] }

// Property IDs Exchange mail items use ([MS-OXPROPS]).
const (
	PidTagMessageClass                uint16 = 0x001A
	PidTagSubject                     uint16 = 0x0037
	PidTagClientSubmitTime            uint16 = 0x0039
	PidTagSentRepresentingName        uint16 = 0x0042
	PidTagSentRepresentingEmail       uint16 = 0x0065 // PidTagSentRepresentingEmailAddress
	PidTagTransportMessageHeaders     uint16 = 0x007D
	PidTagRecipientType               uint16 = 0x0C15
	PidTagSenderName                  uint16 = 0x0C1A
	PidTagSenderEmailAddress          uint16 = 0x0C1F
	PidTagDisplayBcc                  uint16 = 0x0E02
	PidTagDisplayCc                   uint16 = 0x0E03
	PidTagDisplayTo                   uint16 = 0x0E04
	PidTagMessageDeliveryTime         uint16 = 0x0E06
	PidTagMessageFlags                uint16 = 0x0E07
	PidTagMessageSize                 uint16 = 0x0E08
	PidTagNormalizedSubject           uint16 = 0x0E1D
	PidTagHasAttachments              uint16 = 0x0E1B
	PidTagBody                        uint16 = 0x1000
	PidTagRtfCompressed               uint16 = 0x1009
	PidTagHtml                        uint16 = 0x1013
	PidTagNativeBody                  uint16 = 0x1016
	PidTagInternetMessageId           uint16 = 0x1035
	PidTagInReplyToId                 uint16 = 0x1042
	PidTagDisplayName                 uint16 = 0x3001
	PidTagAddressType                 uint16 = 0x3002
	PidTagEmailAddress                uint16 = 0x3003
	PidTagCreationTime                uint16 = 0x3007
	PidTagLastModificationTime        uint16 = 0x3008
	PidTagAttachDataBinary            uint16 = 0x3701
	PidTagAttachExtension             uint16 = 0x3703
	PidTagAttachFilename              uint16 = 0x3704
	PidTagAttachMethod                uint16 = 0x3705
	PidTagAttachLongFilename          uint16 = 0x3707
	PidTagAttachMimeTag               uint16 = 0x370E
	PidTagAttachContentId             uint16 = 0x3712
	PidTagSmtpAddress                 uint16 = 0x39FE
	PidTagSenderSmtpAddress           uint16 = 0x5D01
	PidTagSentRepresentingSmtpAddress uint16 = 0x5D02
	PidTagInternetCodepage            uint16 = 0x3FDE
	PidTagMessageCodepage             uint16 = 0x3FFD
	PidTagContainerClass              uint16 = 0x3613
)

var names = map[uint16]string{
	PidTagMessageClass: "PidTagMessageClass", PidTagSubject: "PidTagSubject",
	PidTagClientSubmitTime: "PidTagClientSubmitTime", PidTagSentRepresentingName: "PidTagSentRepresentingName",
	PidTagSentRepresentingEmail:   "PidTagSentRepresentingEmailAddress",
	PidTagTransportMessageHeaders: "PidTagTransportMessageHeaders", PidTagRecipientType: "PidTagRecipientType",
	PidTagSenderName: "PidTagSenderName", PidTagSenderEmailAddress: "PidTagSenderEmailAddress",
	PidTagDisplayBcc: "PidTagDisplayBcc", PidTagDisplayCc: "PidTagDisplayCc", PidTagDisplayTo: "PidTagDisplayTo",
	PidTagMessageDeliveryTime: "PidTagMessageDeliveryTime", PidTagMessageFlags: "PidTagMessageFlags",
	PidTagMessageSize: "PidTagMessageSize", PidTagNormalizedSubject: "PidTagNormalizedSubject",
	PidTagHasAttachments: "PidTagHasAttachments", PidTagBody: "PidTagBody",
	PidTagRtfCompressed: "PidTagRtfCompressed", PidTagHtml: "PidTagHtml", PidTagNativeBody: "PidTagNativeBody",
	PidTagInternetMessageId: "PidTagInternetMessageId", PidTagInReplyToId: "PidTagInReplyToId",
	PidTagDisplayName: "PidTagDisplayName", PidTagAddressType: "PidTagAddressType",
	PidTagEmailAddress: "PidTagEmailAddress", PidTagCreationTime: "PidTagCreationTime",
	PidTagLastModificationTime: "PidTagLastModificationTime", PidTagAttachDataBinary: "PidTagAttachDataBinary",
	PidTagAttachExtension: "PidTagAttachExtension", PidTagAttachFilename: "PidTagAttachFilename",
	PidTagAttachMethod: "PidTagAttachMethod", PidTagAttachLongFilename: "PidTagAttachLongFilename",
	PidTagAttachMimeTag: "PidTagAttachMimeTag", PidTagAttachContentId: "PidTagAttachContentId",
	PidTagSmtpAddress: "PidTagSmtpAddress", PidTagSenderSmtpAddress: "PidTagSenderSmtpAddress",
	PidTagSentRepresentingSmtpAddress: "PidTagSentRepresentingSmtpAddress",
	PidTagInternetCodepage:            "PidTagInternetCodepage", PidTagMessageCodepage: "PidTagMessageCodepage",
	PidTagContainerClass: "PidTagContainerClass",
}

// GUID is a 16-byte GUID in Microsoft byte order.
type GUID [16]byte

func (g GUID) String() string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(g[:]), le.Uint16(g[4:]), le.Uint16(g[6:]), g[8:10], g[10:])
}

// ErrorCode is a PtypErrorCode value.
type ErrorCode uint32

// Property is one decoded property. Value holds: int16, int32, int64
// (Integer64 and Currency), float32, float64, bool, string (String and
// String8), []byte (Binary, ServerId, Restriction, RuleAction, Object),
// time.Time (Time and FloatingTime), GUID, ErrorCode, nil (Null), or a
// slice of these for multi-valued types.
type Property struct {
	Tag   PropTag
	Value any
	// Ref is set when the store keeps the value outside the blob (in the
	// LargePropertyValueBlob column or the off-page blob); Value is nil.
	Ref bool
}

// FileTime converts a FILETIME (100 ns ticks since 1601-01-01 UTC).
func FileTime(v uint64) time.Time {
	const perSec = 10_000_000
	return time.Unix(int64(v/perSec)-filetimeUnixDelta, int64(v%perSec)*100).UTC()
}

// ToFileTime converts t to a FILETIME (0 before 1601).
func ToFileTime(t time.Time) uint64 {
	s := t.Unix() + filetimeUnixDelta
	if s < 0 {
		return 0
	}
	return uint64(s)*10_000_000 + uint64(t.Nanosecond()/100)
}

// filetimeUnixDelta is the number of seconds from 1601-01-01 to 1970-01-01.
const filetimeUnixDelta = 11644473600

var oleEpoch = time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC)

// FloatingTime converts a PtypFloatingTime (days since 1899-12-30, the
// fraction being the time of day).
func FloatingTime(f float64) time.Time {
	if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 3e6 {
		return time.Time{}
	}
	return oleEpoch.Add(time.Duration(f * float64(24*time.Hour)))
}

// UTF16 decodes little-endian UTF-16 (an odd trailing byte is dropped).
func UTF16(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
