// Package partition finds the volumes on a disk image: it reads MBR
// (with extended/logical partitions) and GPT partition tables (CRC-checked,
// falling back to the backup GPT), and treats a disk without a partition
// table as one whole-disk volume.
package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// Scheme names the kind of partition table a partition came from.
type Scheme string

const (
	SchemeNone Scheme = "none" // no partition table: the whole disk is one volume
	SchemeMBR  Scheme = "mbr"
	SchemeGPT  Scheme = "gpt"
)

// Partition is one volume on the disk.
type Partition struct {
	Index    int    // 1-based; MBR primaries 1-4 by slot, logical partitions from 5; GPT by entry slot
	Scheme   Scheme // table it came from
	Start    int64  // byte offset on the disk
	Length   int64  // bytes
	Type     string // GPT type GUID (upper case) or MBR type as "0x83"
	MBRType  byte   // MBR partition type byte (0 for GPT)
	TypeGUID string // GPT type GUID (empty for MBR)
	GUID     string // GPT unique partition GUID
	Name     string // GPT partition name (UTF-16 in the table)
	Bootable bool   // MBR active flag
	Logical  bool   // MBR logical partition inside an extended one
}

// Table is a parsed partition table.
type Table struct {
	Scheme     Scheme
	SectorSize int
	DiskGUID   string // GPT only
	Signature  uint32 // MBR disk signature
	BackupUsed bool   // GPT primary header or entries were damaged; the backup was used
	Partitions []Partition
}

// Error tells what failed and at which byte offset.
type Error struct {
	Op  string
	Off int64
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("partition: %s at offset %d: %v", e.Op, e.Off, e.Err)
}
func (e *Error) Unwrap() error { return e.Err }

// ErrCorrupt marks a damaged table.
var ErrCorrupt = errors.New("corrupt partition table")

const (
	maxLogical    = 256
	maxGPTEntries = 1 << 20 // bytes of entry array we accept
)

// Read returns the partitions of the disk image r of the given size. A disk
// without a partition table (a file system starting at offset 0) yields one
// partition of scheme "none" covering the whole disk.
func Read(r io.ReaderAt, size int64) ([]Partition, error) {
	t, err := ReadTable(r, size)
	if err != nil {
		return nil, err
	}
	return t.Partitions, nil
}

// ReadTable is Read with the table-level details.
func ReadTable(r io.ReaderAt, size int64) (*Table, error) {
	if size < 512 {
		return nil, &Error{"read sector 0", 0, fmt.Errorf("%w: disk of %d bytes", ErrCorrupt, size)}
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil && err != io.EOF {
		return nil, &Error{"read sector 0", 0, err}
	}
	// GPT: protective MBR entry 0xEE, or a GPT header without any MBR.
	hasSig := mbr[510] == 0x55 && mbr[511] == 0xAA
	protective := false
	if hasSig {
		for i := 0; i < 4; i++ {
			if mbr[446+i*16+4] == 0xEE {
				protective = true
			}
		}
	}
	if protective || !hasSig {
		for _, ss := range []int{512, 4096} {
			t, err := readGPT(r, size, ss)
			if err == nil {
				return t, nil
			}
			if protective && ss == 4096 {
				// A protective MBR promised a GPT: report the damage.
				if t0, err0 := readGPT(r, size, 512); err0 == nil {
					return t0, nil
				}
				return nil, err
			}
		}
	}
	whole := &Table{Scheme: SchemeNone, SectorSize: 512, Partitions: []Partition{{
		Index: 1, Scheme: SchemeNone, Start: 0, Length: size, Type: "whole-disk",
	}}}
	if !hasSig || LooksLikeVolume(mbr) {
		return whole, nil
	}
	t, err := readMBR(r, size, mbr)
	if err != nil {
		return nil, err
	}
	if len(t.Partitions) == 0 {
		return whole, nil
	}
	return t, nil
}

// LooksLikeVolume reports whether sector 0 is a file system boot sector
// (FAT, exFAT, NTFS) rather than a master boot record.
func LooksLikeVolume(s []byte) bool {
	if len(s) < 512 {
		return false
	}
	if bytes.Equal(s[3:11], []byte("NTFS    ")) || bytes.Equal(s[3:11], []byte("EXFAT   ")) {
		return true
	}
	if bytes.Equal(s[0:4], []byte("XFSB")) {
		return true
	}
	// FAT BPB: jump, power-of-two sector size and cluster size, reserved
	// sectors and 1-2 FATs, plus the "FAT" type string.
	if s[0] != 0xEB && s[0] != 0xE9 {
		return false
	}
	bps := binary.LittleEndian.Uint16(s[11:])
	spc := s[13]
	if bps < 512 || bps > 4096 || bps&(bps-1) != 0 || spc == 0 || spc&(spc-1) != 0 {
		return false
	}
	if binary.LittleEndian.Uint16(s[14:]) == 0 || s[16] == 0 || s[16] > 2 {
		return false
	}
	return bytes.HasPrefix(s[54:], []byte("FAT")) || bytes.HasPrefix(s[82:], []byte("FAT"))
}

func readMBR(r io.ReaderAt, size int64, mbr []byte) (*Table, error) {
	t := &Table{Scheme: SchemeMBR, SectorSize: 512, Signature: binary.LittleEndian.Uint32(mbr[440:])}
	for i := 0; i < 4; i++ {
		e := mbr[446+i*16 : 446+i*16+16]
		status, typ := e[0], e[4]
		lba := int64(binary.LittleEndian.Uint32(e[8:]))
		n := int64(binary.LittleEndian.Uint32(e[12:]))
		if typ == 0 || n == 0 {
			continue
		}
		if status != 0 && status != 0x80 {
			return nil, &Error{"read MBR entry", int64(446 + i*16), fmt.Errorf("%w: status byte %#x", ErrCorrupt, status)}
		}
		start, length := lba*512, n*512
		if start >= size {
			return nil, &Error{"read MBR entry", int64(446 + i*16), fmt.Errorf("%w: partition %d starts at %d beyond disk size %d", ErrCorrupt, i+1, start, size)}
		}
		if start+length > size {
			length = size - start // truncated image: keep what is there
		}
		if isExtended(typ) {
			logical, err := readEBRs(r, size, lba)
			if err != nil {
				return nil, err
			}
			t.Partitions = append(t.Partitions, logical...)
			continue
		}
		t.Partitions = append(t.Partitions, Partition{
			Index: i + 1, Scheme: SchemeMBR, Start: start, Length: length,
			Type: fmt.Sprintf("0x%02x", typ), MBRType: typ, Bootable: status == 0x80,
		})
	}
	// Logical partitions were appended in chain order; give them 5, 6, ...
	next := 5
	for i := range t.Partitions {
		if t.Partitions[i].Logical {
			t.Partitions[i].Index = next
			next++
		}
	}
	sortByIndex(t.Partitions)
	return t, nil
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0F || t == 0x85 }

// readEBRs walks the chain of extended boot records starting at extLBA.
func readEBRs(r io.ReaderAt, size int64, extLBA int64) ([]Partition, error) {
	var out []Partition
	seen := map[int64]bool{}
	ebr := make([]byte, 512)
	cur := extLBA
	for n := 0; ; n++ {
		if n >= maxLogical || seen[cur] {
			return out, &Error{"read EBR chain", cur * 512, fmt.Errorf("%w: loop or more than %d logical partitions", ErrCorrupt, maxLogical)}
		}
		seen[cur] = true
		off := cur * 512
		if off+512 > size {
			return out, &Error{"read EBR", off, fmt.Errorf("%w: beyond end of disk", ErrCorrupt)}
		}
		if _, err := r.ReadAt(ebr, off); err != nil && err != io.EOF {
			return out, &Error{"read EBR", off, err}
		}
		if ebr[510] != 0x55 || ebr[511] != 0xAA {
			return out, &Error{"read EBR", off, fmt.Errorf("%w: missing 0x55AA signature", ErrCorrupt)}
		}
		e1, e2 := ebr[446:462], ebr[462:478]
		if typ := e1[4]; typ != 0 {
			start := (cur + int64(binary.LittleEndian.Uint32(e1[8:]))) * 512
			length := int64(binary.LittleEndian.Uint32(e1[12:])) * 512
			if start < size && length > 0 {
				if start+length > size {
					length = size - start
				}
				out = append(out, Partition{Scheme: SchemeMBR, Start: start, Length: length,
					Type: fmt.Sprintf("0x%02x", typ), MBRType: typ, Bootable: e1[0] == 0x80, Logical: true})
			}
		}
		if e2[4] == 0 || !isExtended(e2[4]) {
			return out, nil
		}
		cur = extLBA + int64(binary.LittleEndian.Uint32(e2[8:]))
	}
}

type gptHeader struct {
	myLBA, altLBA, firstLBA, lastLBA int64
	entriesLBA                       int64
	numEntries, entrySize            uint32
	entriesCRC                       uint32
	diskGUID                         string
}

func readGPTHeader(r io.ReaderAt, size int64, ss int, lba int64) (*gptHeader, error) {
	off := lba * int64(ss)
	if off < 0 || off+int64(ss) > size {
		return nil, &Error{"read GPT header", off, fmt.Errorf("%w: beyond end of disk", ErrCorrupt)}
	}
	b := make([]byte, ss)
	if _, err := r.ReadAt(b, off); err != nil && err != io.EOF {
		return nil, &Error{"read GPT header", off, err}
	}
	if string(b[:8]) != "EFI PART" {
		return nil, &Error{"read GPT header", off, fmt.Errorf("%w: no EFI PART signature", ErrCorrupt)}
	}
	hs := binary.LittleEndian.Uint32(b[12:])
	if hs < 92 || int(hs) > ss {
		return nil, &Error{"read GPT header", off, fmt.Errorf("%w: header size %d", ErrCorrupt, hs)}
	}
	want := binary.LittleEndian.Uint32(b[16:])
	h := append([]byte(nil), b[:hs]...)
	binary.LittleEndian.PutUint32(h[16:], 0)
	if got := crc32.ChecksumIEEE(h); got != want {
		return nil, &Error{"read GPT header", off, fmt.Errorf("%w: header CRC %#x, want %#x", ErrCorrupt, got, want)}
	}
	g := &gptHeader{
		myLBA:      int64(binary.LittleEndian.Uint64(b[24:])),
		altLBA:     int64(binary.LittleEndian.Uint64(b[32:])),
		firstLBA:   int64(binary.LittleEndian.Uint64(b[40:])),
		lastLBA:    int64(binary.LittleEndian.Uint64(b[48:])),
		diskGUID:   guid(b[56:72]),
		entriesLBA: int64(binary.LittleEndian.Uint64(b[72:])),
		numEntries: binary.LittleEndian.Uint32(b[80:]),
		entrySize:  binary.LittleEndian.Uint32(b[84:]),
		entriesCRC: binary.LittleEndian.Uint32(b[88:]),
	}
	if g.entrySize < 128 || g.entrySize%8 != 0 || uint64(g.entrySize)*uint64(g.numEntries) > maxGPTEntries {
		return nil, &Error{"read GPT header", off, fmt.Errorf("%w: %d entries of %d bytes", ErrCorrupt, g.numEntries, g.entrySize)}
	}
	return g, nil
}

func readGPTEntries(r io.ReaderAt, size int64, ss int, g *gptHeader) ([]byte, error) {
	n := int64(g.numEntries) * int64(g.entrySize)
	off := g.entriesLBA * int64(ss)
	if g.entriesLBA < 0 || off < 0 || off+n > size || off+n < off {
		return nil, &Error{"read GPT entries", off, fmt.Errorf("%w: entry array beyond end of disk", ErrCorrupt)}
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil && err != io.EOF {
		return nil, &Error{"read GPT entries", off, err}
	}
	if got := crc32.ChecksumIEEE(b); got != g.entriesCRC {
		return nil, &Error{"read GPT entries", off, fmt.Errorf("%w: entries CRC %#x, want %#x", ErrCorrupt, got, g.entriesCRC)}
	}
	return b, nil
}

func readGPT(r io.ReaderAt, size int64, ss int) (*Table, error) {
	backup := false
	g, err := readGPTHeader(r, size, ss, 1)
	var ents []byte
	if err == nil {
		ents, err = readGPTEntries(r, size, ss, g)
	}
	if err != nil {
		// Backup header: at the alternate LBA if the primary told us, else the last sector.
		primaryErr := err
		last := size/int64(ss) - 1
		g2, err2 := readGPTHeader(r, size, ss, last)
		if err2 == nil {
			ents, err2 = readGPTEntries(r, size, ss, g2)
		}
		if err2 != nil {
			return nil, primaryErr
		}
		g, backup = g2, true
	}
	t := &Table{Scheme: SchemeGPT, SectorSize: ss, DiskGUID: g.diskGUID, BackupUsed: backup}
	for i := 0; i < int(g.numEntries); i++ {
		e := ents[i*int(g.entrySize) : (i+1)*int(g.entrySize)]
		if allZero(e[:16]) {
			continue
		}
		first := int64(binary.LittleEndian.Uint64(e[32:]))
		last := int64(binary.LittleEndian.Uint64(e[40:]))
		start := first * int64(ss)
		if first < 0 || last < first || start >= size || start < 0 {
			return nil, &Error{"read GPT entry", g.entriesLBA*int64(ss) + int64(i)*int64(g.entrySize), fmt.Errorf("%w: LBA %d-%d", ErrCorrupt, first, last)}
		}
		length := (last - first + 1) * int64(ss)
		if start+length > size || length < 0 {
			length = size - start
		}
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		name := string(utf16.Decode(u))
		if k := strings.IndexByte(name, 0); k >= 0 {
			name = name[:k]
		}
		tg := guid(e[:16])
		t.Partitions = append(t.Partitions, Partition{
			Index: i + 1, Scheme: SchemeGPT, Start: start, Length: length,
			Type: tg, TypeGUID: tg, GUID: guid(e[16:32]), Name: name,
		})
	}
	return t, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// guid formats a mixed-endian on-disk GUID.
func guid(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

func sortByIndex(p []Partition) {
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j].Index < p[j-1].Index; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

// Section returns a reader for the bytes of partition p.
func (p Partition) Section(r io.ReaderAt) *io.SectionReader {
	return io.NewSectionReader(r, p.Start, p.Length)
}
