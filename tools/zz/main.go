package main

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/zeebo/blake3"
)

func main() {
	img, _ := os.ReadFile(os.Args[1])
	zero := make([]byte, 65536)
	var blocks [][]byte
	for off := 0; off+65536 <= len(img); off += 65536 {
		b := img[off : off+65536]
		if !bytes.Equal(b, zero) {
			blocks = append(blocks, b)
		}
	}
	fmt.Println("blocks", len(blocks))
	dst := make([]byte, s2.MaxEncodedLen(65536))
	for _, enc := range []string{"encode", "snappy"} {
		var comp [][]byte
		for _, b := range blocks {
			if enc == "encode" {
				comp = append(comp, s2.Encode(nil, b))
			} else {
				comp = append(comp, s2.EncodeSnappy(nil, b))
			}
		}
		t := time.Now()
		for _, c := range comp {
			s2.Decode(dst, c)
		}
		fmt.Printf("decode %s %6.0f MB/s\n", enc, float64(len(blocks)*65536)/time.Since(t).Seconds()/1e6)
	}
	for _, name := range []string{"snappy", "encode", "snappy", "encode", "blake3"} {
		t := time.Now()
		var out, incomp int
		var incompT time.Duration
		for _, b := range blocks {
			t0 := time.Now()
			var n int
			switch name {
			case "encode":
				n = len(s2.Encode(dst, b))
			case "snappy":
				n = len(s2.EncodeSnappy(dst, b))
			case "better":
				n = len(s2.EncodeBetter(dst, b))
			case "blake3":
				blake3.Sum256(b)
				n = 65536
			}
			out += n
			if n > 65536*9/10 {
				incomp++
				incompT += time.Since(t0)
			}
		}
		el := time.Since(t)
		fmt.Printf("%-7s %6.0f MB/s out %d MB, incompressible %d blocks took %v\n", name, float64(len(blocks)*65536)/el.Seconds()/1e6, out>>20, incomp, incompT)
	}
}
