package main

import "testing"

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"256M": 256 << 20, "1G": 1 << 30, "65536": 65536, "512k": 512 << 10, "2GiB": 2 << 30, "1MB": 1 << 20} {
		if got, err := parseByteSize(in); err != nil || got != want {
			t.Errorf("parseByteSize(%q) = %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1M", "lots", "1.5G", "99999999999T"} {
		if got, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) = %d, want an error", in, got)
		}
	}
}
