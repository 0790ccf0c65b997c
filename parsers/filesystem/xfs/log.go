package xfs

import (
	"fmt"

	"github.com/rewind-cdp/rewind/parsers/filesystem"
)

// Finding the log head and tail: the head is the first block whose cycle
// number drops (as the kernel's xlog_find_head finds it), the tail is named
// by the last record header before it, and the log is clean when that
// record is an unmount record.

// LogState is the state of the internal log.
type LogState int

const (
	LogUnknown  LogState = iota // external log, or the log could not be read
	LogClean                    // last record is an unmount record: nothing to replay
	LogDirty                    // committed changes wait in the log and were not replayed: metadata lags behind
	LogReplayed                 // the log was dirty; its committed changes were replayed in memory
)

func (s LogState) String() string {
	switch s {
	case LogClean:
		return "clean"
	case LogDirty:
		return "dirty"
	case LogReplayed:
		return "replayed"
	}
	return "unknown"
}

const (
	bbSize          = 512
	logRecordMagic  = 0xfeedbabe
	logUnmountTrans = 0x20 // XLOG_UNMOUNT_TRANS op flag
	logHeaderCycle  = 32 << 10
	maxRecordBBs    = (256<<10)/bbSize + 8     // largest record with its headers
	maxInFlightBBs  = 8 * (256 << 10) / bbSize // XLOG_TOTAL_REC_SHIFT: 8 in-core logs of 256 KiB
)

// LogState reports whether the internal log was clean, or dirty and
// replayed in memory, or dirty and not replayable (then recent changes are
// missing: the tree is that of the last checkpoint).
func (f *FS) LogState() LogState { return f.logState }

// logPos locates the head of the log and the tail named by the last
// record header before it.
type logPos struct {
	state      LogState
	head, tail int64 // in 512-byte blocks from the start of the log
}

func (f *FS) findLog() (logPos, error) {
	var none logPos
	if f.sb.logstart == 0 {
		return none, nil
	}
	start := f.fsbOff(f.sb.logstart)
	nbb := int64(f.sb.logblocks) * f.sb.bs / bbSize
	if start < 0 || nbb < 2 || start+nbb*bbSize > f.size {
		return none, filesystem.Corrupt(name, "find log head", 48, "log of %d blocks at block %d outside the volume", f.sb.logblocks, f.sb.logstart)
	}
	b := make([]byte, bbSize)
	read := func(bb int64) ([]byte, error) {
		off := start + bb*bbSize
		if n, err := f.r.ReadAt(b, off); n < bbSize {
			return nil, &filesystem.Error{FS: name, Op: "read log", Off: off, Err: fmt.Errorf("short read: %w", err)}
		}
		return b, nil
	}
	cycle := func(bb int64) (uint32, error) {
		x, err := read(bb)
		if err != nil {
			return 0, err
		}
		if be.Uint32(x) == logRecordMagic { // a record header: its h_cycle
			return be.Uint32(x[4:]), nil
		}
		return be.Uint32(x), nil // a data block: stamped with the cycle
	}
	first, err := cycle(0)
	if err != nil {
		return none, err
	}
	last, err := cycle(nbb - 1)
	if err != nil {
		return none, err
	}
	// The head is the first block still holding the previous cycle.
	head, stop := nbb, last-1
	if first != last {
		stop = last
		lo, hi := int64(0), nbb-1 // cycle(lo) == first, cycle(hi) == last
		for hi-lo > 1 {
			mid := (lo + hi) / 2
			c, err := cycle(mid)
			if err != nil {
				return none, err
			}
			if c == last {
				hi = mid
			} else {
				lo = mid
			}
		}
		head = hi
	}
	// Log writes in flight when the volume was captured can leave blocks
	// of the older cycle shortly before that point: the head is the first
	// of them (the kernel looks as far back as all in-core logs reach).
	scan := min(int64(maxInFlightBBs), head)
	if scan > 0 {
		buf := make([]byte, scan*bbSize)
		off := start + (head-scan)*bbSize
		if n, err := f.r.ReadAt(buf, off); int64(n) < scan*bbSize {
			return none, &filesystem.Error{FS: name, Op: "read log", Off: off, Err: fmt.Errorf("short read: %w", err)}
		}
		for i := int64(0); i < scan; i++ {
			x := buf[i*bbSize:]
			c := be.Uint32(x)
			if c == logRecordMagic {
				c = be.Uint32(x[4:])
			}
			if c == stop {
				head = head - scan + i
				break
			}
		}
	}
	// The last record header before the head.
	for i := int64(1); i <= maxRecordBBs && i <= nbb; i++ {
		bb := (head - i + nbb) % nbb
		x, err := read(bb)
		if err != nil {
			return none, err
		}
		if be.Uint32(x) != logRecordMagic || be.Uint32(x[4:]) == 0 {
			continue
		}
		ops := be.Uint32(x[40:])
		tail := int64(be.Uint32(x[28:])) // block half of h_tail_lsn (x is reused below)
		hsize := int64(be.Uint32(x[320:]))
		hdrBBs := int64(1)
		if ver := be.Uint32(x[8:]); ver&2 != 0 && hsize > logHeaderCycle {
			hdrBBs = (hsize + logHeaderCycle - 1) / logHeaderCycle
		}
		y, err := read((bb + hdrBBs) % nbb)
		if err != nil {
			return none, err
		}
		if tail >= nbb {
			return none, filesystem.Corrupt(name, "find log tail", start+bb*bbSize+24, "tail block %d in a log of %d", tail, nbb)
		}
		if ops == 1 && y[9]&logUnmountTrans != 0 {
			return logPos{LogClean, head, tail}, nil
		}
		return logPos{LogDirty, head, tail}, nil
	}
	return none, filesystem.Corrupt(name, "find log head", start+head*bbSize, "no record header within %d blocks before the head", maxRecordBBs)
}
