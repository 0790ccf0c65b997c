package pack

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// Codec compresses blocks for storage and turns stored entries back into
// verified plain data. It decodes every compression id; it compresses with
// one, chosen when it is made. It is safe for concurrent use.
type Codec struct {
	write uint8 // the compression id Compress uses
	enc   *zstd.Encoder
	dec   *zstd.Decoder
}

// Compression names, as config.json and the protocol spell them.
var compressionNames = map[string]uint8{"none": CompressionNone, "zstd": CompressionZstd, "s2": CompressionS2}

// CompressionID returns the id of a compression name (none, zstd, s2).
func CompressionID(name string) (uint8, error) {
	id, ok := compressionNames[name]
	if !ok {
		return 0, fmt.Errorf("unknown compression %q (none, zstd, s2)", name)
	}
	return id, nil
}

// CompressionName returns the name of a compression id.
func CompressionName(id uint8) string {
	for n, i := range compressionNames {
		if i == id {
			return n
		}
	}
	return fmt.Sprintf("compression-%d", id)
}

// Compressions lists the names of every compression this package decodes.
func Compressions() []string { return []string{"none", "zstd", "s2"} }

// NewCodec returns a codec compressing with zstd at the given level
// (1 fastest … 4 best, as zstd.EncoderLevel).
func NewCodec(level int) (*Codec, error) {
	return NewCodecFor(CompressionZstd, level)
}

// NewCodecFor returns a codec compressing with the given compression id;
// zstdLevel applies when that is zstd.
func NewCodecFor(compression uint8, zstdLevel int) (*Codec, error) {
	if _, err := CompressionID(CompressionName(compression)); err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevel(zstdLevel)), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxBlock))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &Codec{write: compression, enc: enc, dec: dec}, nil
}

// MaxStoredLen bounds the stored form of n bytes under every compression,
// so a buffer of that capacity never reallocates in Compress.
func MaxStoredLen(n int) int {
	return max(s2.MaxEncodedLen(n), n+n>>7+1024)
}

// Compression is the id Compress writes.
func (c *Codec) Compression() uint8 { return c.write }

// SumBlock returns the SHA-256 content hash of a block (HashSHA256).
func SumBlock(data []byte) Hash { return sha256.Sum256(data) }

// Sum returns the content hash of a block under a hash algorithm id that
// HashID returns (any other gives the zero hash, which no block has).
func Sum(algo uint8, data []byte) Hash {
	switch algo {
	case HashSHA256:
		return sha256.Sum256(data)
	case HashBLAKE3:
		return blake3.Sum256(data)
	}
	return Hash{}
}

// Compress returns the stored form of data and its compression id; data
// that does not shrink is stored as it is. The result is appended to
// dst[:0] (dst is reused when it is large enough).
func (c *Codec) Compress(data, dst []byte) ([]byte, uint8) {
	var out []byte
	switch c.write {
	case CompressionZstd:
		out = c.enc.EncodeAll(data, dst[:0])
	case CompressionS2:
		if n := s2.MaxEncodedLen(len(data)); n > 0 {
			if cap(dst) < n {
				dst = make([]byte, n)
			}
			out = s2.Encode(dst[:n], data)
		}
	}
	if out == nil || len(out) >= len(data) {
		return append(dst[:0], data...), CompressionNone
	}
	return out, c.write
}

// Decode turns stored bytes back into the block's data (appended to
// dst[:0]) and checks its length and content hash against e.
func (c *Codec) Decode(e Entry, stored, dst []byte) ([]byte, error) {
	out, err := c.Expand(e, stored, dst)
	if err != nil {
		return nil, err
	}
	if e.HashAlgo != HashSHA256 && e.HashAlgo != HashBLAKE3 {
		return nil, fmt.Errorf("block %s: unknown hash algorithm id %d", e.Hash, e.HashAlgo)
	}
	if h := Sum(e.HashAlgo, out); !bytes.Equal(h[:], e.Hash[:]) {
		return nil, fmt.Errorf("block %s: content hash mismatch (data is damaged)", e.Hash)
	}
	return out, nil
}

// Expand is Decode without the hash check, for a caller that computes the
// hash from the data: it decompresses stored bytes (appended to dst[:0])
// and checks their length against e.ULen.
func (c *Codec) Expand(e Entry, stored, dst []byte) ([]byte, error) {
	var out []byte
	switch e.Compression {
	case CompressionNone:
		out = append(dst[:0], stored...)
	case CompressionZstd:
		var err error
		out, err = c.dec.DecodeAll(stored, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("block %s: zstd: %w", e.Hash, err)
		}
	case CompressionS2:
		// The length prefix is checked against the entry before anything
		// is allocated.
		n, err := s2.DecodedLen(stored)
		if err != nil {
			return nil, fmt.Errorf("block %s: s2: %w", e.Hash, err)
		}
		if n != int(e.ULen) {
			return nil, fmt.Errorf("block %s: s2 block holds %d bytes, expected %d", e.Hash, n, e.ULen)
		}
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		out, err = s2.Decode(dst[:n], stored)
		if err != nil {
			return nil, fmt.Errorf("block %s: s2: %w", e.Hash, err)
		}
	default:
		return nil, fmt.Errorf("block %s: unknown compression id %d", e.Hash, e.Compression)
	}
	if len(out) != int(e.ULen) {
		return nil, fmt.Errorf("block %s: decoded %d bytes, expected %d", e.Hash, len(out), e.ULen)
	}
	return out, nil
}
