package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// ReadWriterAt is a disk that can be read and written in place.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// ErrUnsupported marks a table Resize cannot change.
var ErrUnsupported = errors.New("unsupported partition layout")

// Resized says what Resize changed.
type Resized struct {
	Scheme Scheme
	// Grown is the partition that was extended to the end of the disk
	// (its new extent), or nil.
	Grown *Partition
}

// FitsIn reports whether a disk of oldSize bytes whose partition table r
// holds can be copied to a disk of newSize bytes: every partition must
// end within the new disk's usable space. A disk without a partition
// table fits only a disk at least as large (its file system fills it).
// keepFrom is where the part of the old disk that Resize rewrites begins (a
// GPT's backup entries and header): a copy may leave out everything from
// there on; it is oldSize when there is no such part.
func FitsIn(r io.ReaderAt, oldSize, newSize int64) (keepFrom int64, err error) {
	t, err := ReadTable(r, oldSize)
	if err != nil {
		return 0, err
	}
	limit := newSize
	keepFrom = oldSize
	switch t.Scheme {
	case SchemeNone:
		if newSize < oldSize {
			return 0, fmt.Errorf("the volume has no partition table: its file system fills all %d bytes and does not fit %d", oldSize, newSize)
		}
		return oldSize, nil
	case SchemeGPT:
		g, err := readGPTHeader(r, oldSize, t.SectorSize, 1)
		if err != nil {
			return 0, err
		}
		ss := int64(t.SectorSize)
		entSecs := (int64(g.numEntries)*int64(g.entrySize) + ss - 1) / ss
		limit = (newSize/ss - 1 - entSecs) * ss // end of the new last usable LBA
		keepFrom = (g.altLBA - entSecs) * ss
	case SchemeMBR:
		limit = min(newSize, (1<<32)*512)
	}
	for _, p := range t.Partitions {
		if p.Start+p.Length > limit {
			return 0, fmt.Errorf("partition %d ends at byte %d, beyond the %d bytes usable on a %d-byte disk", p.Index, p.Start+p.Length, limit, newSize)
		}
	}
	return keepFrom, nil
}

// Resize adapts the partition table of a disk of oldSize bytes copied to
// rw, a disk of newSize bytes: a GPT gets its backup entries and header at
// the new end, its last usable LBA and the protective MBR updated, and the
// stale backup header zeroed when it lies inside the new disk. With grow,
// the partition that ends last is extended to the end of the usable space
// (a GPT partition, or an MBR primary partition). The caller checks with
// FitsIn first when the disk shrinks.
func Resize(rw ReadWriterAt, oldSize, newSize int64, grow bool) (Resized, error) {
	t, err := ReadTable(rw, min(oldSize, newSize))
	if err != nil {
		return Resized{}, err
	}
	res := Resized{Scheme: t.Scheme}
	switch t.Scheme {
	case SchemeGPT:
		return res, resizeGPT(rw, t, oldSize, newSize, grow, &res)
	case SchemeMBR:
		if !grow {
			return res, nil
		}
		return res, growMBR(rw, t, newSize, &res)
	}
	return res, nil
}

func resizeGPT(rw ReadWriterAt, t *Table, oldSize, newSize int64, grow bool, res *Resized) error {
	ss := int64(t.SectorSize)
	g, err := readGPTHeader(rw, min(oldSize, newSize), t.SectorSize, 1)
	if err != nil {
		return fmt.Errorf("primary GPT header (needed to move the backup): %w", err)
	}
	ents, err := readGPTEntries(rw, min(oldSize, newSize), t.SectorSize, g)
	if err != nil {
		return err
	}
	entSecs := (int64(len(ents)) + ss - 1) / ss
	lastLBA := newSize/ss - 1
	lastUsable := lastLBA - 1 - entSecs
	if lastUsable <= g.firstLBA {
		return &Error{"resize GPT", 0, fmt.Errorf("a disk of %d bytes has no room for the partition table", newSize)}
	}
	if grow {
		var best int = -1
		var bestEnd int64
		for i := 0; i < int(g.numEntries); i++ {
			e := ents[i*int(g.entrySize):]
			if allZero(e[:16]) {
				continue
			}
			if end := int64(binary.LittleEndian.Uint64(e[40:])); end > bestEnd {
				best, bestEnd = i, end
			}
		}
		if best >= 0 && bestEnd < lastUsable {
			e := ents[best*int(g.entrySize):]
			binary.LittleEndian.PutUint64(e[40:], uint64(lastUsable))
			first := int64(binary.LittleEndian.Uint64(e[32:]))
			res.Grown = &Partition{Index: best + 1, Scheme: SchemeGPT, Start: first * ss, Length: (lastUsable - first + 1) * ss}
		}
	}
	crc := crc32.ChecksumIEEE(ents)
	hdr := make([]byte, ss)
	if _, err := rw.ReadAt(hdr, ss); err != nil {
		return &Error{"read GPT header", ss, err}
	}
	hs := binary.LittleEndian.Uint32(hdr[12:])
	put := func(my, alt, entries int64) []byte {
		h := append([]byte(nil), hdr...)
		binary.LittleEndian.PutUint64(h[24:], uint64(my))
		binary.LittleEndian.PutUint64(h[32:], uint64(alt))
		binary.LittleEndian.PutUint64(h[48:], uint64(lastUsable))
		binary.LittleEndian.PutUint64(h[72:], uint64(entries))
		binary.LittleEndian.PutUint32(h[88:], crc)
		binary.LittleEndian.PutUint32(h[16:], 0)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
		return h
	}
	// Stale backup header of the old disk, when it lies inside the new one.
	if old := (oldSize/ss - 1) * ss; old+ss <= newSize && old != lastLBA*ss {
		if _, err := rw.WriteAt(make([]byte, ss), old); err != nil {
			return &Error{"clear old backup GPT header", old, err}
		}
	}
	backupEnts := lastLBA - entSecs
	for _, w := range []struct {
		b   []byte
		off int64
	}{
		{ents, backupEnts * ss},
		{put(lastLBA, 1, backupEnts), lastLBA * ss},
		{ents, g.entriesLBA * ss},
		{put(1, lastLBA, g.entriesLBA), ss},
	} {
		if _, err := rw.WriteAt(w.b, w.off); err != nil {
			return &Error{"write GPT", w.off, err}
		}
	}
	// Protective MBR: one 0xEE entry covering the disk (capped at 2^32-1 sectors).
	mbr := make([]byte, 512)
	if _, err := rw.ReadAt(mbr, 0); err != nil {
		return &Error{"read protective MBR", 0, err}
	}
	for i := 0; i < 4; i++ {
		e := mbr[446+i*16:]
		if e[4] == 0xEE {
			n := min(newSize/512-1, 0xFFFFFFFF)
			binary.LittleEndian.PutUint32(e[12:], uint32(n))
			if _, err := rw.WriteAt(mbr, 0); err != nil {
				return &Error{"write protective MBR", 0, err}
			}
			break
		}
	}
	return nil
}

func growMBR(rw ReadWriterAt, t *Table, newSize int64, res *Resized) error {
	var last *Partition
	for i := range t.Partitions {
		if p := &t.Partitions[i]; last == nil || p.Start+p.Length > last.Start+last.Length {
			last = p
		}
	}
	if last == nil {
		return nil
	}
	if last.Logical {
		return &Error{"grow MBR partition", 0, fmt.Errorf("%w: partition %d is a logical partition; only a primary partition is grown", ErrUnsupported, last.Index)}
	}
	endSector := min(newSize/512, 1<<32-1)
	n := endSector - last.Start/512
	if n <= last.Length/512 {
		return nil
	}
	mbr := make([]byte, 512)
	if _, err := rw.ReadAt(mbr, 0); err != nil {
		return &Error{"read MBR", 0, err}
	}
	off := 446 + (last.Index-1)*16
	binary.LittleEndian.PutUint32(mbr[off+12:], uint32(n))
	if _, err := rw.WriteAt(mbr, 0); err != nil {
		return &Error{"write MBR", 0, err}
	}
	g := *last
	g.Length = n * 512
	res.Grown = &g
	return nil
}
