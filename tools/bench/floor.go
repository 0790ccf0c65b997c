package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rewind-cdp/rewind/repository/pack"
)

// floorResult is the CPU time, on one core, of the work any backup of the
// image over rewind's protocol must do, stage by stage: read the image,
// compress its non-zero blocks, encrypt them for TLS and decrypt them on
// the other end, decompress and hash them on the server (the
// verification that keeps a client from storing data under another
// block's hash). Everything else — sockets, HTTP/2, pack writes, the
// catalog, the runtime — is left out, so Seconds/CPUs is a lower bound on
// any such backup's wall time on this machine.
type floorResult struct {
	BlockBytes int64              `json:"block_bytes"` // non-zero 64 KiB blocks
	Stages     map[string]float64 `json:"cpu_seconds"`
	Seconds    float64            `json:"total_cpu_seconds"`
	CPUs       int                `json:"cpus"`
	MaxMBps    float64            `json:"max_mb_per_s"` // image / (Seconds/CPUs)
}

var floorStages = []string{"read the image", "S2 compress", "TLS encrypt (AES-128-GCM)", "TLS decrypt", "S2 decode", "BLAKE3"}

// threadCPU is the CPU time of the calling OS thread.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureFloor measures floorResult on image, on one locked thread.
func measureFloor(image string) (*floorResult, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open(image)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	codec, err := pack.NewCodecFor(pack.CompressionS2, 1)
	if err != nil {
		return nil, err
	}
	block, _ := aes.NewCipher(make([]byte, 16))
	gcm, _ := cipher.NewGCM(block)
	nonce := make([]byte, gcm.NonceSize())
	cost := map[string]time.Duration{}
	timed := func(stage string, fn func()) {
		t := threadCPU()
		fn()
		cost[stage] += threadCPU() - t
	}
	const bs, batch = 64 << 10, 4 << 20
	buf := make([]byte, batch)
	zero := make([]byte, bs)
	var comp, sealed, plain []byte
	comp = make([]byte, 0, pack.MaxStoredLen(bs))
	res := &floorResult{Stages: map[string]float64{}, CPUs: runtime.NumCPU()}
	var size int64
	for off := int64(0); ; off += batch {
		var n int
		var rerr error
		timed("read the image", func() { n, rerr = f.ReadAt(buf, off) })
		size += int64(n)
		for b := 0; b < n; b += bs {
			blk := buf[b:min(n, b+bs)]
			if bytes.Equal(blk, zero[:len(blk)]) {
				continue
			}
			res.BlockBytes += int64(len(blk))
			var stored []byte
			var id uint8
			timed("S2 compress", func() { stored, id = codec.Compress(blk, comp) })
			// TLS records carry at most 16 KiB.
			timed("TLS encrypt (AES-128-GCM)", func() {
				sealed = sealed[:0]
				for r := 0; r < len(stored); r += 16 << 10 {
					sealed = gcm.Seal(sealed, nonce, stored[r:min(len(stored), r+16<<10)], nil)
				}
			})
			timed("TLS decrypt", func() {
				step := 16<<10 + gcm.Overhead()
				for r := 0; r < len(sealed); r += step {
					gcm.Open(plain[:0], nonce, sealed[r:min(len(sealed), r+step)], nil)
				}
			})
			e := pack.Entry{Compression: id, ULen: uint32(len(blk))}
			var err error
			timed("S2 decode", func() { plain, err = codec.Expand(e, stored, plain) })
			if err != nil {
				return nil, err
			}
			timed("BLAKE3", func() { pack.Sum(pack.HashBLAKE3, plain) })
		}
		if rerr == io.EOF || n < batch {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	for _, s := range floorStages {
		res.Stages[s] = cost[s].Seconds()
		res.Seconds += cost[s].Seconds()
	}
	res.MaxMBps = float64(size) / 1e6 / (res.Seconds / float64(res.CPUs))
	return res, nil
}

func printFloor(w io.Writer, fl *floorResult, borgMBps float64) {
	fmt.Fprintf(w, "\nLower bound for any backup over rewind's protocol (one thread's CPU time on the first image, %s of non-zero blocks):\n", humanBytes(fl.BlockBytes))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	for _, s := range floorStages {
		fmt.Fprintf(tw, "%s\t%.2f CPU s\t\n", s, fl.Stages[s])
	}
	fmt.Fprintf(tw, "total\t%.2f CPU s\t\n", fl.Seconds)
	tw.Flush()
	fmt.Fprintf(w, "  on %d cores, never idle and with nothing else to do: at most %.1f MB/s", fl.CPUs, fl.MaxMBps)
	if borgMBps > 0 {
		fmt.Fprintf(w, " = %.2fx borg's first backup", fl.MaxMBps/borgMBps)
	}
	fmt.Fprintln(w)
}
