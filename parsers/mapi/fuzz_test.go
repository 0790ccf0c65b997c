package mapi

import (
	"testing"
)

func FuzzStoreBlob(f *testing.F) {
	f.Add(unhex(f, handBlob))
	f.Add(EncodeSubobjects([]Subobject{{0, 5}, {-1, 9}}))
	f.Add(unhex(f, "1f 00 37 00 48 00 69 00 00 00"))
	f.Add(unhex(f, "02 10 00 00 02 00 00 00 61 00 00 00 62 00 00 00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if props, err := ParseStoreBlob(b); err == nil {
			// What decodes must encode again and decode to the same.
			if enc, err := EncodeStoreBlob(props); err == nil {
				if _, err := ParseStoreBlob(enc); err != nil {
					t.Fatalf("re-encoded blob does not parse: %v", err)
				}
			}
		}
		_, _ = ParseSubobjects(b)
		_, _, _ = DecodeTagged(b, ROP)
		_, _, _ = DecodeTagged(b, Extended)
	})
}
