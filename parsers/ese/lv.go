package ese

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"
)

// maxLongValue bounds the size of one long value this reader assembles.
const maxLongValue = 1 << 30

type lvChunk struct {
	off  uint32
	data []byte
}

// longValue assembles the separated long value whose id (as stored in the
// record, little-endian, 4 or 8 bytes) is lid.
func (t *Table) longValue(ctx context.Context, lid []byte) ([]byte, error) {
	if len(lid) != 4 && len(lid) != 8 {
		return nil, corruptf("table %q: long value id of %d bytes", t.Name, len(lid))
	}
	if t.LVFDP == 0 {
		return nil, corruptf("table %q: separated long value but no long-value tree", t.Name)
	}
	key := make([]byte, len(lid))
	for i := range lid {
		key[i] = lid[len(lid)-1-i]
	}
	var (
		size    uint32
		hasRoot bool
		chunks  []lvChunk
	)
	collect := func(n node) (bool, error) {
		if !bytes.HasPrefix(n.key, key) {
			return bytes.Compare(n.key, key) < 0, nil
		}
		switch len(n.key) - len(key) {
		case 0:
			if len(n.data) < 8 {
				return false, corruptf("long value %x: root of %d bytes", key, len(n.data))
			}
			size = binary.LittleEndian.Uint32(n.data[4:])
			hasRoot = true
		case 4:
			chunks = append(chunks, lvChunk{off: binary.BigEndian.Uint32(n.key[len(key):]), data: n.data})
		}
		return true, nil
	}
	if err := t.db.seek(ctx, t.LVFDP, key, collect); err != nil {
		return nil, fmt.Errorf("table %q long value %x: %w", t.Name, key, err)
	}
	if !hasRoot {
		// The seek relies on branch keys; fall back to a full walk.
		chunks = nil
		err := t.db.walk(ctx, t.LVFDP, func(n node) error { _, err := collect(n); return err })
		if err != nil {
			return nil, fmt.Errorf("table %q long value %x: %w", t.Name, key, err)
		}
		if !hasRoot {
			return nil, corruptf("table %q: long value %x not found in the tree at page %d", t.Name, key, t.LVFDP)
		}
	}
	// Every chunk holds at most a page, even uncompressed: a size the
	// chunks cannot fill is corrupt.
	if size > maxLongValue || int64(size) > int64(len(chunks))*maxDecompressed {
		return nil, corruptf("table %q: long value %x claims %d bytes in %d chunks", t.Name, key, size, len(chunks))
	}
	sort.SliceStable(chunks, func(i, j int) bool { return chunks[i].off < chunks[j].off })
	out := make([]byte, 0, min(int(size), 1<<20))
	for i, c := range chunks {
		if c.off >= size {
			break
		}
		end := size
		if i+1 < len(chunks) && chunks[i+1].off < end {
			end = chunks[i+1].off
		}
		want := int(end - c.off)
		data := c.data
		if len(data) < want && len(data) > 0 {
			// A chunk shorter than its span is compressed.
			d, err := decompress(data, want)
			if err != nil {
				return nil, fmt.Errorf("table %q long value %x chunk at %d: %w", t.Name, key, c.off, err)
			}
			data = d
		}
		if int(c.off) > len(out) {
			return nil, corruptf("table %q: long value %x has no data at %d..%d", t.Name, key, len(out), c.off)
		}
		out = append(out[:c.off], data...)
	}
	if len(out) < int(size) {
		return nil, corruptf("table %q: long value %x has %d of its %d bytes", t.Name, key, len(out), size)
	}
	return out[:size], nil
}
