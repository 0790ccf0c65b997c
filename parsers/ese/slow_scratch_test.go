package ese

import (
	"context"
	"math/rand"
	"testing"
	"time"
)

func TestScratchSlow(t *testing.T) {
	base, pages := fuzzBase(&testing.F{})
	_ = base
	rng := rand.New(rand.NewSource(1))
	for it := 0; it < 3000; it++ {
		w := rng.Intn(len(pages))
		off := int64(pages[w]+1) * 4096
		pg := append([]byte(nil), base[off:off+4096]...)
		for k := 0; k < 1+rng.Intn(8); k++ {
			pg[rng.Intn(4096)] = byte(rng.Intn(256))
		}
		start := time.Now()
		db, err := Open(context.Background(), &overlay{base: base, off: off, page: pg}, int64(len(base)))
		if err == nil {
			readAll(db)
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Logf("iteration %d page %d: %v", it, pages[w], d)
		}
	}
}
