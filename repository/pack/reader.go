package pack

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Reader reads entries from one pack.
type Reader struct {
	r    io.ReaderAt
	size int64
	name string
}

// NewReader reads the pack of the given size from r; name is used in errors.
func NewReader(r io.ReaderAt, size int64, name string) *Reader {
	return &Reader{r: r, size: size, name: name}
}

func (r *Reader) readAt(b []byte, off int64) error {
	if off < 0 || off+int64(len(b)) > r.size {
		return &FormatError{r.name, off, fmt.Sprintf("read of %d bytes past the end of the %d-byte pack", len(b), r.size)}
	}
	n, err := r.r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == io.EOF {
		return &FormatError{r.name, off + int64(n), "unexpected end of pack"}
	}
	return fmt.Errorf("read pack %s at offset %d: %w", r.name, off, err)
}

// ReadEntry reads the entry at off, whose stored length is clen, checks its
// header and data checksums and returns the header and the stored bytes
// (appended to buf[:0]).
func (r *Reader) ReadEntry(off int64, clen uint32, buf []byte) (Entry, []byte, error) {
	if clen > MaxBlock {
		return Entry{}, nil, &FormatError{r.name, off, fmt.Sprintf("stored length %d exceeds the limit", clen)}
	}
	need := EntryHeaderSize + int(clen) + entryTrailer
	if cap(buf) < need {
		buf = make([]byte, need)
	}
	b := buf[:need]
	if err := r.readAt(b, off); err != nil {
		return Entry{}, nil, err
	}
	e, err := DecodeEntryHeader(r.name, off, b)
	if err != nil {
		return Entry{}, nil, err
	}
	if e.CLen != clen {
		return Entry{}, nil, &FormatError{r.name, off, fmt.Sprintf("entry holds %d stored bytes, catalog says %d", e.CLen, clen)}
	}
	data := b[EntryHeaderSize : EntryHeaderSize+int(clen)]
	if crc(data) != binary.LittleEndian.Uint32(b[EntryHeaderSize+int(clen):]) {
		return Entry{}, nil, &FormatError{r.name, off + EntryHeaderSize, "data checksum mismatch"}
	}
	return e, data, nil
}

// ReadEntryHeader reads and checks only the header of the entry at off.
func (r *Reader) ReadEntryHeader(off int64) (Entry, error) {
	var b [EntryHeaderSize]byte
	if err := r.readAt(b[:], off); err != nil {
		return Entry{}, err
	}
	return DecodeEntryHeader(r.name, off, b[:])
}

// Header checks the pack header and returns the pack id.
func (r *Reader) Header() (uint64, error) {
	var b [HeaderSize]byte
	if err := r.readAt(b[:], 0); err != nil {
		return 0, err
	}
	return DecodeHeader(r.name, b[:])
}

// Index reads and checks the index of a sealed pack.
func (r *Reader) Index() ([]Entry, error) {
	if r.size < HeaderSize+FooterSize {
		return nil, &FormatError{r.name, 0, fmt.Sprintf("%d bytes is too short for a sealed pack", r.size)}
	}
	fb := make([]byte, FooterSize)
	fo := r.size - FooterSize
	if err := r.readAt(fb, fo); err != nil {
		return nil, err
	}
	f, err := decodeFooter(r.name, fo, fb)
	if err != nil {
		return nil, err
	}
	idx := make([]byte, fo-f.indexOff) // bounded by the file size, checked in decodeFooter
	if err := r.readAt(idx, f.indexOff); err != nil {
		return nil, err
	}
	if crc(idx) != f.indexCRC {
		return nil, &FormatError{r.name, f.indexOff, "index checksum mismatch"}
	}
	entries := make([]Entry, f.entries)
	for i := range entries {
		p := idx[i*IndexEntrySize:]
		e := Entry{
			Offset: int64(binary.LittleEndian.Uint64(p)),
			ULen:   binary.LittleEndian.Uint32(p[8:]),
			CLen:   binary.LittleEndian.Uint32(p[12:]),
		}
		copy(e.Hash[:], p[16:48])
		if e.Offset < HeaderSize || e.Offset+e.Len() > f.indexOff {
			return nil, &FormatError{r.name, f.indexOff + int64(i*IndexEntrySize), fmt.Sprintf("index entry %d points outside the data", i)}
		}
		entries[i] = e
	}
	return entries, nil
}

// Walk visits the entries of a pack in order from the header, checking each
// entry's header and data checksums, and stops at the first entry that does
// not check out, at the index of a sealed pack, or at end. It returns the
// offset just past the last good entry; err says why it stopped early (nil
// at a clean end or at the index).
func (r *Reader) Walk(fn func(Entry) error) (end int64, err error) {
	if _, err := r.Header(); err != nil {
		return 0, err
	}
	off := int64(HeaderSize)
	var buf []byte
	for off < r.size {
		h, err := r.ReadEntryHeader(off)
		if err != nil {
			if r.isIndexAt(off) {
				return off, nil
			}
			return off, err
		}
		e, data, err := r.ReadEntry(off, h.CLen, buf)
		if err != nil {
			return off, err
		}
		buf = data[:0]
		if err := fn(e); err != nil {
			return off, err
		}
		off += e.Len()
	}
	return off, nil
}

// isIndexAt reports whether the sealed index of the pack starts at off.
func (r *Reader) isIndexAt(off int64) bool {
	fb := make([]byte, FooterSize)
	fo := r.size - FooterSize
	if fo < off || r.readAt(fb, fo) != nil {
		return false
	}
	f, err := decodeFooter(r.name, fo, fb)
	return err == nil && f.indexOff == off
}
