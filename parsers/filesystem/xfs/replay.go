package xfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

// Log replay in memory: the committed transactions between the log tail
// and head are applied, as the kernel's recovery does, to an overlay of
// the volume, never to the volume itself. Only what the reader needs is
// replayed: buffer items (directory, B+tree, symlink, superblock blocks;
// honouring cancel records) and inode items (core, data fork); intents
// (extent frees, deferred mapping updates) and quota items are skipped.
// Log item headers are in the writer's byte order: only little-endian
// logs (every x86 and arm64 Linux) are replayed.

var le = binary.LittleEndian

const (
	logFmtLittleEndian = 1 // XLOG_FMT_LINUX_LE
	logCycleWords      = logHeaderCycle / bbSize
	clientTrans        = 0x69 // XFS_TRANSACTION
	opStart            = 0x01
	opCommit           = 0x02
	opWasCont          = 0x08
	transMagic         = 0x5452414e // "TRAN"
	itemBuf            = 0x123c
	itemInode          = 0x123b
	blfInodeBuf        = 0x1
	blfCancel          = 0x2              // XFS_BLF_CANCEL
	blfQuotaBufs       = 0x4 | 0x8 | 0x10 // user, project, group dquot buffers
	blfChunk           = 128
	ilogCore           = 0x001
	ilogDData          = 0x002
	ilogDExt           = 0x004
	ilogDBroot         = 0x008
	ilogAFork          = 0x040 | 0x080 | 0x100
)

// logItem is one log item: its format region and the regions after it.
type logItem struct {
	regions [][]byte
}

// overlay is a read-only view of a volume with 512-byte sectors replaced.
type overlay struct {
	r       io.ReaderAt
	mu      sync.RWMutex
	sectors map[int64][]byte
	keys    []int64 // sorted sector numbers, built by seal
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.r.ReadAt(p, off)
	if len(o.keys) == 0 {
		return n, err
	}
	first := off / bbSize
	last := (off + int64(n) - 1) / bbSize
	i := sort.Search(len(o.keys), func(i int) bool { return o.keys[i] >= first })
	for ; i < len(o.keys) && o.keys[i] <= last; i++ {
		s := o.keys[i]
		so := s * bbSize
		lo, hi := max(so, off), min(so+bbSize, off+int64(n))
		copy(p[lo-off:hi-off], o.sectors[s][lo-so:hi-so])
	}
	return n, err
}

// read returns the current bytes of [off, off+n) with patches applied.
func (o *overlay) read(off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	if m, err := o.r.ReadAt(b, off); m < n {
		return nil, &filesystem.Error{FS: name, Op: "replay log", Off: off, Err: fmt.Errorf("short read: %w", err)}
	}
	for s := off / bbSize; s*bbSize < off+int64(n); s++ {
		if sec, ok := o.sectors[s]; ok {
			so := s * bbSize
			lo, hi := max(so, off), min(so+bbSize, off+int64(n))
			copy(b[lo-off:hi-off], sec[lo-so:hi-so])
		}
	}
	return b, nil
}

// write patches [off, off+len(b)), which must be sector aligned.
func (o *overlay) write(off int64, b []byte) {
	for i := 0; i < len(b); i += bbSize {
		sec := make([]byte, bbSize)
		copy(sec, b[i:])
		o.sectors[(off+int64(i))/bbSize] = sec
	}
}

func (o *overlay) seal() {
	o.keys = o.keys[:0]
	for k := range o.sectors {
		o.keys = append(o.keys, k)
	}
	sort.Slice(o.keys, func(i, j int) bool { return o.keys[i] < o.keys[j] })
}

// logReader reads the circular log in 512-byte blocks.
type logReader struct {
	f     *FS
	start int64 // byte offset of the log
	nbb   int64
}

func (l *logReader) read(bb, n int64) ([]byte, error) {
	b := make([]byte, n*bbSize)
	for i := int64(0); i < n; {
		pos := (bb + i) % l.nbb
		k := min(n-i, l.nbb-pos)
		off := l.start + pos*bbSize
		if m, err := l.f.r.ReadAt(b[i*bbSize:(i+k)*bbSize], off); int64(m) < k*bbSize {
			return nil, &filesystem.Error{FS: name, Op: "read log", Off: off, Err: fmt.Errorf("short read: %w", err)}
		}
		i += k
	}
	return b, nil
}

// replay applies the log to an overlay the reader then reads through.
func (f *FS) replay(ctx context.Context, pos logPos) error {
	o, n, err := f.replayLog(ctx, pos.head, pos.tail)
	if err != nil {
		return err
	}
	sb, err := readSuper(o, f.size)
	if err != nil {
		return err
	}
	f.r, f.sb, f.logState = o, sb, LogReplayed
	slog.Debug("xfs: log replayed in memory", "items", n, "sectors", len(o.keys))
	return nil
}

// replayLog applies the committed transactions between the tail and the
// head to an overlay, in two passes over the log like the kernel's: the
// first collects buffer cancel records, the second applies the items.
func (f *FS) replayLog(ctx context.Context, head, tail int64) (*overlay, int, error) {
	cancels := map[span]int{}
	err := f.walkLog(ctx, head, tail, func(items []logItem, _ int64) error {
		for _, it := range items {
			if b := it.regions[0]; le.Uint16(b) == itemBuf && len(b) >= 20 && le.Uint16(b[4:])&blfCancel != 0 {
				cancels[span{int64(le.Uint64(b[8:])), int64(le.Uint16(b[6:]))}]++
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	o := &overlay{r: f.r, sectors: map[int64][]byte{}}
	applied := 0
	err = f.walkLog(ctx, head, tail, func(items []logItem, lsn int64) error {
		n, err := f.applyItems(o, items, lsn, cancels)
		applied += n
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	o.seal()
	return o, applied, nil
}

// walkLog reads the records from the tail to the head, rebuilds the
// transactions and hands each committed one to fn, in log order.
func (f *FS) walkLog(ctx context.Context, head, tail int64, fn func(items []logItem, lsn int64) error) error {
	l := &logReader{f: f, start: f.fsbOff(f.sb.logstart), nbb: int64(f.sb.logblocks) * f.sb.bs / bbSize}
	bad := func(bb int64, format string, args ...any) error {
		return filesystem.Corrupt(name, "replay log", l.start+bb*bbSize, format, args...)
	}
	type trans struct {
		lsn     int64 // of the record holding the transaction's start
		regions [][]byte
	}
	open := map[uint32]*trans{}
	dist := (head - tail + l.nbb) % l.nbb
	for pos, walked := tail, int64(0); pos != head; {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := l.read(pos, 1)
		if err != nil {
			return err
		}
		if be.Uint32(h) != logRecordMagic {
			return bad(pos, "no record header")
		}
		if fmtv := be.Uint32(h[300:]); fmtv != logFmtLittleEndian {
			return bad(pos, "log written in format %d, only little-endian logs are replayed", fmtv)
		}
		dlen := int64(be.Uint32(h[12:]))
		nops := int(be.Uint32(h[40:]))
		hsize := int64(be.Uint32(h[320:]))
		hdrBBs := int64(1)
		if be.Uint32(h[8:])&2 != 0 && hsize > logHeaderCycle {
			hdrBBs = (hsize + logHeaderCycle - 1) / logHeaderCycle
		}
		dataBBs := (dlen + bbSize - 1) / bbSize
		// XLOG_MAX_RECORD_BSIZE: no record is larger than 256 KiB
		if dlen <= 0 || dlen > 256<<10 || hsize > 256<<10 || dataBBs > hdrBBs*logCycleWords || hdrBBs+dataBBs >= l.nbb {
			return bad(pos, "record of %d bytes with %d header blocks", dlen, hdrBBs)
		}
		if walked += hdrBBs + dataBBs; walked > dist {
			// an incomplete last record: the kernel drops it too
			slog.Debug("xfs: log record running past the head ends the replay", "block", pos)
			break
		}
		hdr, err := l.read(pos, hdrBBs)
		if err != nil {
			return err
		}
		data, err := l.read(pos+hdrBBs, dataBBs)
		if err != nil {
			return err
		}
		if f.sb.v5 && checkLogCRC && !recordCRCOK(hdr, data[:dlen]) {
			// a torn write at the head: the kernel stops there too
			slog.Debug("xfs: log record with a bad checksum ends the replay", "block", pos)
			break
		}
		// Put back the first word of every data block (replaced on disk by
		// the cycle number): the first 64 in the header, then 64 per
		// extended header.
		for i := int64(0); i < dataBBs; i++ {
			var w []byte
			if j, k := i/logCycleWords, i%logCycleWords; j == 0 {
				w = hdr[44+k*4:]
			} else {
				w = hdr[j*bbSize+4+k*4:]
			}
			copy(data[i*bbSize:i*bbSize+4], w[:4])
		}
		data = data[:dlen]
		for op, p := 0, 0; op < nops; op++ {
			if p+12 > len(data) {
				return bad(pos, "operation %d beyond the %d-byte record", op, len(data))
			}
			tid, n := be.Uint32(data[p:]), int(be.Uint32(data[p+4:]))
			client, flags := data[p+8], data[p+9]
			p += 12
			if n < 0 || p+n > len(data) {
				return bad(pos, "operation %d of %d bytes beyond the record", op, n)
			}
			payload := data[p : p+n]
			p += n
			if client != clientTrans {
				continue // unmount records
			}
			t := open[tid]
			if flags&opStart != 0 {
				open[tid] = &trans{lsn: int64(be.Uint64(h[16:]))}
				continue
			}
			if t == nil {
				continue // began before the tail
			}
			if n > 0 {
				if flags&opWasCont != 0 && len(t.regions) > 0 {
					t.regions[len(t.regions)-1] = append(t.regions[len(t.regions)-1], payload...)
				} else {
					t.regions = append(t.regions, append([]byte(nil), payload...))
				}
			}
			if flags&opCommit != 0 {
				items, err := splitItems(t.regions)
				if err != nil {
					return bad(pos, "transaction %#x: %v", tid, err)
				}
				delete(open, tid)
				if err := fn(items, t.lsn); err != nil {
					return err
				}
			}
		}
		pos = (pos + hdrBBs + dataBBs) % l.nbb
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkLogCRC is switched off by the log fuzz target so that patched
// records reach the parser.
var checkLogCRC = true

// recordCRCOK checks a v5 log record's CRC32C: the header (its h_crc taken
// as zero), the extended headers, then the data as written (cycle
// stamped).
func recordCRCOK(hdr, data []byte) bool {
	const recHeaderSize = 328 // sizeof(struct xlog_rec_header)
	const extHeaderSize = 260 // sizeof(struct xlog_rec_ext_header)
	h := make([]byte, recHeaderSize)
	copy(h, hdr)
	clear(h[32:36])
	crc := crc32.Update(0, castagnoli, h)
	for i := bbSize; i+extHeaderSize <= len(hdr); i += bbSize {
		crc = crc32.Update(crc, castagnoli, hdr[i:i+extHeaderSize])
	}
	crc = crc32.Update(crc, castagnoli, data)
	return crc == le.Uint32(hdr[32:])
}

// splitItems groups a transaction's regions (after its header) into items.
func splitItems(regions [][]byte) ([]logItem, error) {
	if len(regions) == 0 {
		return nil, nil
	}
	if len(regions[0]) < 16 || le.Uint32(regions[0]) != transMagic {
		return nil, fmt.Errorf("no transaction header")
	}
	var items []logItem
	for i := 1; i < len(regions); {
		if len(regions[i]) < 4 {
			return nil, fmt.Errorf("item format of %d bytes", len(regions[i]))
		}
		n := int(le.Uint16(regions[i][2:]))
		if n < 1 || i+n > len(regions) {
			return nil, fmt.Errorf("item of %d regions, %d left", n, len(regions)-i)
		}
		items = append(items, logItem{regions: regions[i : i+n]})
		i += n
	}
	return items, nil
}

// span is a buffer's first sector and length in sectors.
type span struct{ blkno, n int64 }

// applyItems replays one transaction's buffer and inode items and returns
// how many it applied. Like the kernel it takes regular buffers first,
// then inodes, then cancel records; cancels counts those still ahead.
// On v5 an item older than the structure it would overwrite (by the LSN
// stamped in it) is skipped, and what is replayed is stamped with lsn.
func (f *FS) applyItems(o *overlay, items []logItem, lsn int64, cancels map[span]int) (int, error) {
	order := func(it logItem) int {
		b := it.regions[0]
		switch {
		case le.Uint16(b) != itemBuf || len(b) < 20:
			return 1
		case le.Uint16(b[4:])&blfCancel != 0:
			return 3
		case le.Uint16(b[4:])&blfInodeBuf != 0:
			return 2
		}
		return 0
	}
	sorted := slices.Clone(items)
	slices.SortStableFunc(sorted, func(a, b logItem) int { return order(a) - order(b) })
	applied := 0
	for _, it := range sorted {
		b := it.regions[0]
		switch le.Uint16(b) {
		case itemBuf:
			if len(b) < 20 {
				return applied, fmt.Errorf("buffer item format of %d bytes", len(b))
			}
			flags := le.Uint16(b[4:])
			sp := span{int64(le.Uint64(b[8:])), int64(le.Uint16(b[6:]))}
			if flags&blfCancel != 0 {
				if cancels[sp]--; cancels[sp] <= 0 {
					delete(cancels, sp)
				}
				continue
			}
			if cancels[sp] > 0 || flags&(blfInodeBuf|blfQuotaBufs) != 0 {
				continue
			}
			ok, err := f.applyBuf(o, b, it.regions[1:], sp.blkno, sp.n, lsn)
			if err != nil {
				return applied, err
			}
			if ok {
				applied++
			}
		case itemInode:
			if sp, ok := inodeSpan(b); ok && cancels[span{sp[0], sp[1]}] > 0 {
				continue // its cluster was freed later in the log
			}
			ok, err := f.applyInode(o, it.regions, lsn)
			if err != nil {
				return applied, err
			}
			if ok {
				applied++
			}
		}
	}
	return applied, nil
}

// bufLSN returns where a v5 metadata block keeps its LSN, as the kernel's
// recovery recognises it (xlog_recover_get_buf_lsn), or -1. Blocks of
// another file system instance (other UUID) count as unknown.
func (f *FS) bufLSN(b []byte) int {
	if !f.sb.v5 || len(b) < 64 {
		return -1
	}
	at, uuid := -1, -1
	switch be.Uint32(b) {
	case 0x41423342, 0x41423343, 0x524d4233, 0x52334643, 0x49414233, 0x46494233: // AB3B AB3C RMB3 R3FC IAB3 FIB3: short btree blocks
		at, uuid = 24, 32
	case magicBmapV5:
		at, uuid = 32, 40
	case magicSymlink:
		at, uuid = 48, 16
	case magicBlockV5, magicDataV5, 0x58444633: // XDB3 XDD3 XDF3
		at, uuid = 16, 24
	default:
		switch be.Uint16(b[8:]) {
		case 0x3df1, 0x3dff, 0x3ebe: // directory leaf, leafn, da node (v5)
			at, uuid = 24, 32
		}
	}
	if at < 0 || !bytes.Equal(b[uuid:uuid+16], f.sb.metaUUID[:]) {
		return -1
	}
	return at
}

// newer reports whether an LSN stamped on disk is at or past lsn (0 and
// -1 are "none").
func newer(disk uint64, lsn int64, orEqual bool) bool {
	if disk == 0 || disk == ^uint64(0) {
		return false
	}
	if orEqual {
		return int64(disk) >= lsn
	}
	return int64(disk) > lsn
}

// applyBuf copies a buffer item's logged 128-byte chunks into the buffer.
func (f *FS) applyBuf(o *overlay, format []byte, regions [][]byte, blkno, nbb, lsn int64) (bool, error) {
	mapWords := int(le.Uint32(format[16:]))
	off := blkno * bbSize
	size := nbb * bbSize
	if blkno < 0 || nbb <= 0 || size > 1<<16 || off+size > f.size || 20+mapWords*4 > len(format) {
		return false, fmt.Errorf("buffer item for %d sectors at sector %d", nbb, blkno)
	}
	buf, err := o.read(off, int(size))
	if err != nil {
		return false, err
	}
	if at := f.bufLSN(buf); at >= 0 && newer(be.Uint64(buf[at:]), lsn, true) {
		return false, nil // the block on disk is already newer
	}
	bit := func(i int) bool { return le.Uint32(format[20+(i/32)*4:])>>(i%32)&1 != 0 }
	nbits := mapWords * 32
	r := 0
	for i := 0; i < nbits; {
		if !bit(i) {
			i++
			continue
		}
		j := i
		for j < nbits && bit(j) {
			j++
		}
		if r >= len(regions) {
			return false, fmt.Errorf("buffer item at sector %d: %d regions for its dirty map", blkno, len(regions))
		}
		at := i * blfChunk
		if at >= len(buf) {
			return false, fmt.Errorf("buffer item at sector %d: chunk %d beyond %d bytes", blkno, i, len(buf))
		}
		copy(buf[at:min(len(buf), j*blfChunk)], regions[r])
		r++
		i = j
	}
	if at := f.bufLSN(buf); at >= 0 {
		be.PutUint64(buf[at:], uint64(lsn))
	}
	o.write(off, buf)
	return true, nil
}

// inodeSpan returns the cluster buffer (sector, length) of an inode item.
func inodeSpan(b []byte) ([2]int64, bool) {
	switch len(b) {
	case 56:
		return [2]int64{int64(le.Uint64(b[40:])), int64(int32(le.Uint32(b[48:])))}, true
	case 52:
		return [2]int64{int64(le.Uint64(b[36:])), int64(int32(le.Uint32(b[44:])))}, true
	}
	return [2]int64{}, false
}

// applyInode copies a logged inode core (converted from the writer's byte
// order) and data fork into the inode's place.
func (f *FS) applyInode(o *overlay, regions [][]byte, lsn int64) (bool, error) {
	b := regions[0]
	var fields uint32
	var dsize int
	var blkno, boff int64
	switch len(b) {
	case 56: // xfs_inode_log_format (64-bit aligned)
		fields, dsize = le.Uint32(b[4:]), int(le.Uint16(b[10:]))
		blkno, boff = int64(le.Uint64(b[40:])), int64(int32(le.Uint32(b[52:])))
	case 52: // xfs_inode_log_format_32
		fields, dsize = le.Uint32(b[4:]), int(le.Uint16(b[10:]))
		blkno, boff = int64(le.Uint64(b[36:])), int64(int32(le.Uint32(b[48:])))
	default:
		return false, fmt.Errorf("inode item format of %d bytes", len(b))
	}
	off := blkno*bbSize + boff
	if blkno < 0 || boff < 0 || off+f.sb.isize > f.size || fields&ilogCore == 0 || len(regions) < 2 {
		return false, fmt.Errorf("inode item at sector %d+%d, fields %#x", blkno, boff, fields)
	}
	start := off &^ (bbSize - 1)
	buf, err := o.read(start, int((off+f.sb.isize-start+bbSize-1)&^(bbSize-1)))
	if err != nil {
		return false, err
	}
	dip := buf[off-start : off-start+f.sb.isize]
	core, logCore := 100, 96 // the v2 log core stops before di_next_unlinked
	if f.sb.v5 {
		core, logCore = 176, 176
	}
	if len(regions[1]) < logCore {
		return false, fmt.Errorf("inode core of %d bytes", len(regions[1]))
	}
	l := regions[1]
	if string(dip[:2]) == "IN" {
		switch {
		case f.sb.v5 && dip[4] >= 3 && newer(be.Uint64(dip[112:]), lsn, false):
			return false, nil // the inode on disk is newer (di_lsn)
		case !f.sb.v5:
			// v2 inodes order by di_flushiter, which wraps at 0xffff
			disk, logged := be.Uint16(dip[30:]), le.Uint16(l[30:])
			if logged < disk && !(disk == 0xffff && logged < 0x7fff) {
				return false, nil
			}
		}
	}
	logDinodeToDisk(l, dip, f.sb.v5)
	if f.sb.v5 {
		be.PutUint64(dip[112:], uint64(lsn)) // as the kernel stamps di_lsn
	}
	forkEnd := len(dip)
	if fo := int(dip[82]); fo != 0 {
		forkEnd = min(len(dip), core+fo*8)
	}
	fork := dip[core:forkEnd]
	if fields&(ilogDData|ilogDExt|ilogDBroot) != 0 && len(regions) > 2 {
		src := regions[2]
		if len(src) > dsize && dsize > 0 {
			src = src[:dsize]
		}
		if fields&ilogDBroot != 0 {
			if err := bmbtToBmdr(src, fork, f.sb.v5); err != nil {
				return false, err
			}
		} else {
			copy(fork, src)
		}
	}
	o.write(start, buf)
	return true, nil
}

// logDinodeToDisk converts an xfs_log_dinode (writer's byte order) into
// the big-endian on-disk core, keeping di_next_unlinked and the CRC.
func logDinodeToDisk(l, d []byte, v5 bool) {
	put16 := func(o int) { be.PutUint16(d[o:], le.Uint16(l[o:])) }
	put32 := func(o int) { be.PutUint32(d[o:], le.Uint32(l[o:])) }
	put64 := func(o int) { be.PutUint64(d[o:], le.Uint64(l[o:])) }
	var flags2 uint64
	if v5 {
		flags2 = le.Uint64(l[120:])
	}
	ts := func(o int) {
		if flags2&diflag2Bigtime != 0 {
			put64(o)
		} else {
			put32(o)
			put32(o + 4)
		}
	}
	put16(0)
	put16(2)
	d[4], d[5] = l[4], l[5]
	put16(6)
	put32(8)
	put32(12)
	put32(16)
	put16(20)
	put16(22)
	if v5 {
		put64(24)
	} else {
		copy(d[24:30], l[24:30])
		put16(30)
	}
	ts(32)
	ts(40)
	ts(48)
	put64(56)
	put64(64)
	put32(72)
	put32(76)
	put16(80)
	d[82], d[83] = l[82], l[83]
	put32(84)
	put16(88)
	put16(90)
	put32(92)
	if v5 {
		put64(104)
		put64(112)
		put64(120)
		put32(128)
		copy(d[132:144], l[132:144])
		ts(144)
		put64(152)
		copy(d[160:176], l[160:176])
	}
}

// bmbtToBmdr converts a logged B+tree root (an in-memory long-format
// block) into the inode's root format.
func bmbtToBmdr(src, dst []byte, v5 bool) error {
	hdr := 24
	if v5 {
		hdr = 72
	}
	if len(src) < hdr || len(dst) < 4 {
		return fmt.Errorf("B+tree root of %d bytes for a %d-byte fork", len(src), len(dst))
	}
	level, nrec := be.Uint16(src[4:]), int(be.Uint16(src[6:]))
	inMax := (len(src) - hdr) / 16
	outMax := (len(dst) - 4) / 16
	if nrec > inMax || nrec > outMax {
		return fmt.Errorf("B+tree root with %d records (room for %d and %d)", nrec, inMax, outMax)
	}
	clear(dst)
	be.PutUint16(dst, level)
	be.PutUint16(dst[2:], uint16(nrec))
	copy(dst[4:4+nrec*8], src[hdr:hdr+nrec*8])
	copy(dst[4+outMax*8:4+outMax*8+nrec*8], src[hdr+inMax*8:hdr+inMax*8+nrec*8])
	return nil
}
