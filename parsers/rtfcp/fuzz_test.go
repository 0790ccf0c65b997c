package rtfcp

import "testing"

func FuzzDecompress(f *testing.F) {
	for _, v := range specVectors {
		f.Add(unhex(f, v.compressed))
	}
	f.Add(Compress([]byte("{\\rtf1 x}")))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Decompress(b)
		if err != nil {
			return
		}
		if h, _ := ParseHeader(b); len(out) > int(h.RawSize) {
			t.Fatalf("%d bytes out, RAWSIZE %d", len(out), h.RawSize)
		}
		// Without the CRC check the decoder must not panic either.
		_, _ = decompressLZFu(b, 1<<16)
	})
}
