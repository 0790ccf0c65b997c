package partition

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// gptDisk builds a small GPT disk image in memory (seed only).
func gptDisk() []byte {
	d := make([]byte, 1<<20)
	d[446+4] = 0xEE
	binary.LittleEndian.PutUint32(d[446+8:], 1)
	binary.LittleEndian.PutUint32(d[446+12:], uint32(len(d)/512-1))
	d[510], d[511] = 0x55, 0xAA
	ents := d[1024 : 1024+128*128]
	copy(ents[0:16], []byte{0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4})
	ents[16] = 1
	binary.LittleEndian.PutUint64(ents[32:], 34)
	binary.LittleEndian.PutUint64(ents[40:], 1000)
	h := d[512:604]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x10000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[24:], 1)
	binary.LittleEndian.PutUint64(h[32:], uint64(len(d)/512-1))
	binary.LittleEndian.PutUint64(h[40:], 34)
	binary.LittleEndian.PutUint64(h[48:], uint64(len(d)/512-34))
	binary.LittleEndian.PutUint64(h[72:], 2)
	binary.LittleEndian.PutUint32(h[80:], 128)
	binary.LittleEndian.PutUint32(h[84:], 128)
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(ents))
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
	return d
}

func mbrDisk() []byte {
	d := make([]byte, 1<<20)
	e := func(b []byte, slot int, typ byte, lba, n uint32) {
		o := 446 + slot*16
		b[o+4] = typ
		binary.LittleEndian.PutUint32(b[o+8:], lba)
		binary.LittleEndian.PutUint32(b[o+12:], n)
		b[510], b[511] = 0x55, 0xAA
	}
	e(d, 0, 0x83, 1200, 100)
	e(d, 1, 0x05, 300, 1000)
	e(d[300*512:], 0, 0x07, 10, 20)
	e(d[300*512:], 1, 0x05, 100, 50)
	e(d[400*512:], 0, 0x0c, 10, 20)
	return d
}

func TestSynthetic(t *testing.T) {
	ps, err := Read(bytes.NewReader(gptDisk()), 1<<20)
	if err != nil || len(ps) != 1 || ps[0].Start != 34*512 || ps[0].TypeGUID != "0FC63DAF-8483-4772-8E79-3D69D8477DE4" {
		t.Errorf("gpt %+v %v", ps, err)
	}
	ps, err = Read(bytes.NewReader(mbrDisk()), 1<<20)
	if err != nil || len(ps) != 3 || ps[1].Index != 5 || ps[1].Start != 310*512 || ps[2].Index != 6 || ps[2].Start != 410*512 {
		t.Errorf("mbr %+v %v", ps, err)
	}
	ps, err = Read(bytes.NewReader(make([]byte, 4096)), 4096)
	if err != nil || len(ps) != 1 || ps[0].Scheme != SchemeNone {
		t.Errorf("blank %+v %v", ps, err)
	}
}

// FuzzRead: any first 64 KiB (MBR, GPT header and entries, EBR chain) must
// give partitions or an error, never a panic, and partitions stay on disk.
func FuzzRead(f *testing.F) {
	f.Add(gptDisk()[:64<<10])
	f.Add(mbrDisk()[:64<<10])
	f.Fuzz(func(t *testing.T, head []byte) {
		d := make([]byte, 1<<20)
		copy(d, head)
		ps, err := Read(bytes.NewReader(d), int64(len(d)))
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.Start < 0 || p.Length < 0 || p.Start+p.Length > int64(len(d)) {
				t.Fatalf("partition outside the disk: %+v", p)
			}
		}
	})
}
