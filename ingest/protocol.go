// Package ingest is the backup server and its protocol: agents and the
// backup command stream volume blocks over HTTP/2 with TLS; the server
// asks only for blocks it lacks, stores them through the repository, and
// acknowledges a point only once it is durable. Sessions resume after a
// dropped connection from the last durable progress.
//
// The protocol, under /v1 with "Authorization: Bearer <machine token>":
//
//	POST /v1/sessions              JSON beginRequest → beginResponse
//	POST /v1/sessions/{id}/offer   binary offer: per block (index, zero?, hash);
//	                               answer: the indices of blocks to send
//	POST /v1/sessions/{id}/blocks  binary blocks: (index, hash, compression,
//	                               lengths, stored bytes) for each asked block
//	GET  /v1/sessions/{id}/push-stream  upgrades to a stream of pushes: ranges
//	                               of blocks sent compressed without offering
//	                               (see push.go)
//	POST /v1/sessions/{id}/commit  JSON commitRequest → commitResponse, once the
//	                               point is durable
package ingest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/repository/pack"
)

// DefaultListen is where the server listens unless told otherwise.
const DefaultListen = "127.0.0.1:7420"

// DefaultURL is the server clients talk to unless told otherwise.
const DefaultURL = "https://" + DefaultListen

// maxOffer bounds the blocks in one offer, and so a blocks request.
const maxOffer = 1024

// pushKnownLimit: a client stops pushing once the server held more than
// one in pushKnownLimit of the blocks of a push.
const pushKnownLimit = 4

type beginRequest struct {
	Machine   string `json:"machine"`
	Volume    string `json:"volume"`
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size"`
	Kind      string `json:"kind"`
	Label     string `json:"label"`
	// Stream opens a continuous-capture session: journal records are
	// shipped with /writes and every flush becomes a point. Epoch names
	// the agent's spool, whose sequence numbers the server remembers.
	Stream bool   `json:"stream,omitempty"`
	Epoch  string `json:"epoch,omitempty"`
	// VolumeKind is the volume's kind when it is created: "" or
	// catalog.VolumeBlock for a disk, catalog.VolumeDir for a directory
	// volume. A session of the wrong kind for an existing volume is refused.
	VolumeKind string `json:"volume_kind,omitempty"`
}

type beginResponse struct {
	Session    string `json:"session"`
	PointID    int64  `json:"point_id"`
	BlockSize  int64  `json:"block_size"`
	ResumeFrom int64  `json:"resume_from"`
	Resumed    bool   `json:"resumed"`
	// For stream sessions: the last journal record of this epoch the
	// server holds durably (ship from the next one), and whether the
	// agent must first send the whole volume (no point yet, or the
	// server does not know this spool).
	AckedSeq uint64 `json:"acked_seq"`
	NeedScan bool   `json:"need_scan"`
	// Compression is how the server prefers blocks sent; Compressions all
	// it accepts. A server that names none accepts none and zstd.
	Compression  string   `json:"compression,omitempty"`
	Compressions []string `json:"compressions,omitempty"`
	// Hash is the algorithm block hashes in offers and blocks use (the
	// repository's); a server that names none uses sha256.
	Hash string `json:"hash,omitempty"`
	// Push asks the client to push blocks rather than offer them: the
	// volume has no point to compare against (see push.go).
	Push bool `json:"push,omitempty"`
}

type commitRequest struct {
	Label string `json:"label,omitempty"`
}

// PointRef names a stored point. In answers to journal records it also
// carries the point's kind and the last record it includes.
type PointRef struct {
	ID   int64     `json:"id"`
	Time time.Time `json:"time"`
	Kind string    `json:"kind,omitempty"`
	Seq  uint64    `json:"seq,omitempty"`
}

type commitResponse struct {
	Point     PointRef `json:"point"`
	BytesNew  int64    `json:"bytes_new"`
	BlocksNew int64    `json:"blocks_new"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// offerEntry is one block offered: its index and content hash, or zero.
type offerEntry struct {
	Blk  int64
	Zero bool
	Hash pack.Hash
}

const offerEntrySize = 8 + 1 + pack.HashSize

// An offer covers the block range [First, End) and lists every block in
// it, so the server can track progress over whole ranges.
type offer struct {
	First, End int64
	Entries    []offerEntry
}

func encodeOffer(o offer) []byte {
	b := make([]byte, 20, 20+len(o.Entries)*offerEntrySize)
	binary.LittleEndian.PutUint64(b, uint64(o.First))
	binary.LittleEndian.PutUint64(b[8:], uint64(o.End))
	binary.LittleEndian.PutUint32(b[16:], uint32(len(o.Entries)))
	for _, e := range o.Entries {
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Blk))
		z := byte(0)
		if e.Zero {
			z = 1
		}
		b = append(b, z)
		b = append(b, e.Hash[:]...)
	}
	return b
}

func decodeOffer(b []byte) (offer, error) {
	if len(b) < 20 {
		return offer{}, errors.New("offer: short header")
	}
	o := offer{First: int64(binary.LittleEndian.Uint64(b)), End: int64(binary.LittleEndian.Uint64(b[8:]))}
	n := int(binary.LittleEndian.Uint32(b[16:]))
	if n > maxOffer || len(b) != 20+n*offerEntrySize {
		return offer{}, fmt.Errorf("offer: %d entries in %d bytes", n, len(b))
	}
	if o.First < 0 || o.End < o.First || o.End-o.First > maxOffer {
		return offer{}, fmt.Errorf("offer: bad range [%d, %d)", o.First, o.End)
	}
	p := b[20:]
	for i := 0; i < n; i++ {
		e := offerEntry{Blk: int64(binary.LittleEndian.Uint64(p)), Zero: p[8] == 1}
		copy(e.Hash[:], p[9:9+pack.HashSize])
		if e.Blk < o.First || e.Blk >= o.End {
			return offer{}, fmt.Errorf("offer: block %d outside [%d, %d)", e.Blk, o.First, o.End)
		}
		o.Entries = append(o.Entries, e)
		p = p[offerEntrySize:]
	}
	return o, nil
}

func encodeIndices(idx []uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(idx)))
	for _, i := range idx {
		b = binary.LittleEndian.AppendUint32(b, i)
	}
	return b
}

func decodeIndices(b []byte, limit int) ([]uint32, error) {
	if len(b) < 4 {
		return nil, errors.New("short answer to offer")
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > limit || len(b) != 4+4*n {
		return nil, fmt.Errorf("answer to offer names %d blocks in %d bytes", n, len(b))
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4+4*i:])
		if int(out[i]) >= limit {
			return nil, fmt.Errorf("answer to offer names block %d of %d", out[i], limit)
		}
	}
	return out, nil
}

// blockHeaderSize is the fixed part of one block in a blocks request.
const blockHeaderSize = 8 + pack.HashSize + 1 + 4 + 4

type sentBlock struct {
	Blk    int64
	Entry  pack.Entry // Hash, Compression, ULen
	Stored []byte
}

func appendBlock(b []byte, s sentBlock) []byte {
	return append(appendBlockHeader(b, s, len(s.Stored)), s.Stored...)
}

// appendBlockHeader appends the fixed part of a block whose stored bytes
// (clen of them) follow.
func appendBlockHeader(b []byte, s sentBlock, clen int) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Blk))
	b = append(b, s.Entry.Hash[:]...)
	b = append(b, s.Entry.Compression)
	b = binary.LittleEndian.AppendUint32(b, s.Entry.ULen)
	return binary.LittleEndian.AppendUint32(b, uint32(clen))
}

// readBlock reads one block of a blocks request, whose hash is under
// algorithm hash; io.EOF at a clean end.
func readBlock(r io.Reader, maxLen uint32, hash uint8, buf []byte) (sentBlock, []byte, error) {
	var h [blockHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return sentBlock{}, buf, errors.New("blocks: truncated block header")
		}
		return sentBlock{}, buf, err
	}
	s, clen, err := decodeBlockHeader(h[:], maxLen, hash)
	if err != nil {
		return sentBlock{}, buf, err
	}
	if cap(buf) < int(clen) {
		buf = make([]byte, clen)
	}
	s.Stored = buf[:clen]
	if _, err := io.ReadFull(r, s.Stored); err != nil {
		return sentBlock{}, buf, fmt.Errorf("blocks: block %d: %w", s.Blk, err)
	}
	return s, buf, nil
}

// cutBlock is readBlock from bytes in memory: the block's stored bytes
// stay in b; it returns the rest of b.
func cutBlock(b []byte, maxLen uint32, hash uint8) (sentBlock, []byte, error) {
	if len(b) < blockHeaderSize {
		return sentBlock{}, nil, errors.New("blocks: truncated block header")
	}
	s, clen, err := decodeBlockHeader(b, maxLen, hash)
	if err != nil {
		return sentBlock{}, nil, err
	}
	b = b[blockHeaderSize:]
	if uint32(len(b)) < clen {
		return sentBlock{}, nil, fmt.Errorf("blocks: block %d: %d of its %d bytes", s.Blk, len(b), clen)
	}
	s.Stored = b[:clen:clen]
	return s, b[clen:], nil
}

// decodeBlockHeader decodes the fixed part of a block and returns it with
// the length of its stored bytes.
func decodeBlockHeader(h []byte, maxLen uint32, hash uint8) (sentBlock, uint32, error) {
	s := sentBlock{Blk: int64(binary.LittleEndian.Uint64(h))}
	copy(s.Entry.Hash[:], h[8:8+pack.HashSize])
	s.Entry.Compression = h[40]
	s.Entry.HashAlgo = hash
	s.Entry.ULen = binary.LittleEndian.Uint32(h[41:])
	clen := binary.LittleEndian.Uint32(h[45:])
	if s.Entry.ULen > maxLen || clen > maxLen+maxLen/8+1024 {
		return sentBlock{}, 0, fmt.Errorf("blocks: block %d claims %d/%d bytes, above the volume's block size %d", s.Blk, s.Entry.ULen, clen, maxLen)
	}
	return s, clen, nil
}

// tokenPrefix marks Rewind machine tokens, so a token pasted in the wrong
// place is recognisable.
const tokenPrefix = "rwd_"

// NewToken returns a new random machine token.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashToken is what the catalog stores of a token.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return h[:]
}
