package pack

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Codec compresses blocks for storage and turns stored entries back into
// verified plain data. It is safe for concurrent use.
type Codec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// NewCodec returns a codec compressing with zstd at the given level
// (1 fastest … 4 best, as zstd.EncoderLevel).
func NewCodec(level int) (*Codec, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevel(level)), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxBlock))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &Codec{enc: enc, dec: dec}, nil
}

// SumBlock returns the content hash of a block.
func SumBlock(data []byte) Hash { return sha256.Sum256(data) }

// Compress returns the stored form of data and its compression id; data
// that does not shrink is stored as it is.
func (c *Codec) Compress(data, dst []byte) ([]byte, uint8) {
	out := c.enc.EncodeAll(data, dst[:0])
	if len(out) >= len(data) {
		return append(dst[:0], data...), CompressionNone
	}
	return out, CompressionZstd
}

// Decode turns stored bytes back into the block's data (appended to
// dst[:0]) and checks its length and content hash against e.
func (c *Codec) Decode(e Entry, stored, dst []byte) ([]byte, error) {
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
	default:
		return nil, fmt.Errorf("block %s: unknown compression id %d", e.Hash, e.Compression)
	}
	if len(out) != int(e.ULen) {
		return nil, fmt.Errorf("block %s: decoded %d bytes, expected %d", e.Hash, len(out), e.ULen)
	}
	if e.HashAlgo != HashSHA256 {
		return nil, fmt.Errorf("block %s: unknown hash algorithm id %d", e.Hash, e.HashAlgo)
	}
	if h := SumBlock(out); !bytes.Equal(h[:], e.Hash[:]) {
		return nil, fmt.Errorf("block %s: content hash mismatch (data is damaged)", e.Hash)
	}
	return out, nil
}
