package tape

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository"
)

// WriteOptions tune Write.
type WriteOptions struct {
	Device     Device
	RecordSize int   // default DefaultRecordSize
	Capacity   int64 // bytes per tape; 0: unbounded (a drive ends a tape at its physical end)
	// Machines limits the set to these machines (all when empty): the
	// catalog snapshot on tape holds only them.
	Machines []string
	// Since limits the packs to those created at or after it (an
	// incremental set, restored on top of an earlier full one).
	Since time.Time
	// NextTape is called before tape n (n > 1) of a set through one drive,
	// to have the operator load it; nil: go straight on.
	NextTape func(n int) error
	Progress func(n int64)
}

type label struct {
	Format     string    `json:"format"`
	Set        string    `json:"set"`
	Tape       int       `json:"tape"`
	Written    time.Time `json:"written"`
	RecordSize int       `json:"record_size"`
	Repository string    `json:"repository"`
	Machines   []string  `json:"machines,omitempty"`
	Since      time.Time `json:"since,omitzero"`
}

type fileStart struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	From int64  `json:"from"` // byte of the file this tape starts at (a file continued from the previous tape)
}

type fileEnd struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

type tapeEnd struct {
	Last bool `json:"last"`
}

// writer puts records on the tapes of a set in order.
type writer struct {
	ctx      context.Context
	opt      WriteOptions
	set      [16]byte
	lab      label
	rs       int
	perTape  int64 // records per tape (0: unbounded)
	tape     int
	f        *os.File
	drive    bool
	record   uint64
	buf      []byte
	toc      []catalog.TapeFile // files starting on the current tape
	all      []catalog.TapeFile
	bytes    int64
	openName string // file being written, for continuation
	openSize int64
	openPos  int64
}

func (w *writer) payload() int { return w.rs - headerSize }

func (w *writer) put(kind uint8, p []byte) error {
	encode(w.buf, header{Kind: kind, Tape: uint32(w.tape), Set: w.set, Record: w.record}, p)
	if _, err := w.f.Write(w.buf); err != nil {
		return fmt.Errorf("write tape %d (%s), record %d: %w", w.tape, w.opt.Device.Path(w.tape), w.record, err)
	}
	w.record++
	w.bytes += int64(w.rs)
	return nil
}

func (w *writer) putJSON(kind uint8, v any) error {
	b, _ := json.Marshal(v)
	return w.put(kind, b)
}

// tocRecords is how many records the table of contents needs with extra
// more entries.
func (w *writer) tocRecords(extra int) int64 {
	b, _ := json.Marshal(w.toc)
	n := int64(len(b)+extra*200)/int64(w.payload()) + 1
	return n
}

// room reports whether n more records fit on this tape with the table of
// contents (grown by extra entries) and the end record.
func (w *writer) room(n int64, extra int) bool {
	return w.perTape == 0 || int64(w.record)+n+w.tocRecords(extra)+1 <= w.perTape
}

func (w *writer) openTape(n int) error {
	if n > 1 && !w.opt.Device.Numbered() {
		if !isTapeDrive(w.opt.Device.Path(n)) {
			return fmt.Errorf("the set needs more than one tape: give --device a pattern with %%d (e.g. /backup/tape%%d) or a tape drive")
		}
		if w.opt.NextTape != nil {
			if err := w.opt.NextTape(n); err != nil {
				return err
			}
		}
	}
	path := w.opt.Device.Path(n)
	w.drive = isTapeDrive(path)
	flags := os.O_WRONLY
	if !w.drive {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("tape %d: %s exists; tapes are never overwritten (remove it or name another)", n, path)
	}
	if err != nil {
		return fmt.Errorf("tape %d: %w", n, err)
	}
	if w.drive {
		mt(path, "rewind")
	}
	w.f, w.tape, w.record, w.toc = f, n, 0, nil
	w.lab.Tape = n
	if err := w.putJSON(kindLabel, w.lab); err != nil {
		return err
	}
	if w.openName != "" {
		w.toc = append(w.toc, catalog.TapeFile{Name: w.openName, Size: w.openSize, Tape: n, Record: int64(w.record)})
		return w.putJSON(kindFileStart, fileStart{Name: w.openName, Size: w.openSize, From: w.openPos})
	}
	return nil
}

// closeTape writes the table of contents and the end record.
func (w *writer) closeTape(last bool) error {
	b, _ := json.Marshal(w.toc)
	for len(b) > 0 {
		k := min(len(b), w.payload())
		if err := w.put(kindTOC, b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	if err := w.putJSON(kindEnd, tapeEnd{Last: last}); err != nil {
		return err
	}
	err := w.f.Sync()
	if w.drive {
		err = nil // drives do not fsync; the file mark below flushes
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if w.drive {
		mt(w.opt.Device.Path(w.tape), "weof", "1")
		if !last {
			mt(w.opt.Device.Path(w.tape), "offline")
		}
	}
	if err != nil {
		return fmt.Errorf("close tape %d: %w", w.tape, err)
	}
	return nil
}

// mt runs a tape drive operation when the mt tool is there.
func mt(dev string, args ...string) {
	if _, err := exec.LookPath("mt"); err == nil {
		exec.Command("mt", append([]string{"-f", dev}, args...)...).Run()
	}
}

// writeFile streams one file onto the set, across tapes when needed.
func (w *writer) writeFile(name, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return w.writeStream(name, path, f, size)
}

// writePack streams a pack from wherever the repository keeps it.
func (w *writer) writePack(ctx context.Context, repo *repository.Repo, name string, id, size int64) error {
	ra, have, release, err := repo.OpenPack(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	if size <= 0 {
		size = have
	}
	return w.writeStream(name, name, io.NewSectionReader(ra, 0, size), size)
}

// writeStream streams size bytes of f onto the set as the file name.
func (w *writer) writeStream(name, path string, f io.Reader, size int64) error {
	if !w.room(2, 1) {
		if err := w.closeTape(false); err != nil {
			return err
		}
		if err := w.openTape(w.tape + 1); err != nil {
			return err
		}
	}
	w.toc = append(w.toc, catalog.TapeFile{Name: name, Size: size, Tape: w.tape, Record: int64(w.record)})
	w.all = append(w.all, w.toc[len(w.toc)-1])
	if err := w.putJSON(kindFileStart, fileStart{Name: name, Size: size}); err != nil {
		return err
	}
	w.openName, w.openSize, w.openPos = name, size, 0
	h := sha256.New()
	chunk := make([]byte, w.payload())
	for w.openPos < size {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(f, chunk[:min(int64(len(chunk)), size-w.openPos)])
		if err != nil {
			return fmt.Errorf("read %s at byte %d: %w", path, w.openPos, err)
		}
		if !w.room(1, 0) {
			if err := w.closeTape(false); err != nil {
				return err
			}
			if err := w.openTape(w.tape + 1); err != nil {
				return err
			}
		}
		if err := w.put(kindData, chunk[:n]); err != nil {
			return err
		}
		h.Write(chunk[:n])
		w.openPos += int64(n)
		if w.opt.Progress != nil {
			w.opt.Progress(int64(n))
		}
	}
	w.openName = ""
	return w.putJSON(kindFileEnd, fileEnd{Name: name, SHA256: hex.EncodeToString(h.Sum(nil))})
}

// Write writes repo to a new tape set and records the set in the catalog.
func Write(ctx context.Context, repo *repository.Repo, opt WriteOptions) (catalog.TapeSet, error) {
	rs := opt.RecordSize
	if rs == 0 {
		rs = DefaultRecordSize
	}
	if rs < 4096 || rs > 16<<20 || rs%512 != 0 {
		return catalog.TapeSet{}, fmt.Errorf("record size %d: want a multiple of 512 from 4 KiB to 16 MiB", rs)
	}
	w := &writer{ctx: ctx, opt: opt, rs: rs, buf: make([]byte, rs)}
	if opt.Capacity > 0 {
		w.perTape = opt.Capacity / int64(rs)
		if w.perTape < 16 {
			return catalog.TapeSet{}, fmt.Errorf("a tape capacity of %d bytes holds fewer than 16 records of %d bytes", opt.Capacity, rs)
		}
	}
	rand.Read(w.set[:])
	setID := hex.EncodeToString(w.set[:])
	w.lab = label{Format: "rewind tape 1", Set: setID, Written: time.Now().UTC(), RecordSize: rs, Repository: repo.Config.ID, Machines: opt.Machines, Since: opt.Since}

	tmp, err := os.MkdirTemp("", "rewind-tape-")
	if err != nil {
		return catalog.TapeSet{}, err
	}
	defer os.RemoveAll(tmp)
	snap := filepath.Join(tmp, "catalog.db")
	if err := repo.Catalog.Snapshot(ctx, snap); err != nil {
		return catalog.TapeSet{}, err
	}
	packs, err := catalog.PrepareSnapshot(ctx, snap, opt.Machines, opt.Since)
	if err != nil {
		return catalog.TapeSet{}, err
	}
	type file struct {
		name, path string
		size       int64
		pack       int64 // read through the repository (its pack store)
	}
	files := []file{{"config.json", filepath.Join(repo.Dir, "config.json"), 0, 0}, {"catalog.db", snap, 0, 0}}
	for _, p := range packs {
		path := repo.PackPath(p.ID)
		rel, _ := filepath.Rel(repo.Dir, path)
		files = append(files, file{filepath.ToSlash(rel), path, p.Size, p.ID})
	}
	for i := range files {
		if files[i].pack == 0 && (files[i].size == 0 || files[i].name == "catalog.db" || files[i].name == "config.json") {
			st, err := os.Stat(files[i].path)
			if err != nil {
				return catalog.TapeSet{}, fmt.Errorf("%s: %w", files[i].name, err)
			}
			files[i].size = st.Size()
		}
	}
	if err := w.openTape(1); err != nil {
		return catalog.TapeSet{}, err
	}
	for _, f := range files {
		var err error
		if f.pack != 0 {
			err = w.writePack(ctx, repo, f.name, f.pack, f.size)
		} else {
			err = w.writeFile(f.name, f.path, f.size)
		}
		if err != nil {
			w.f.Close()
			return catalog.TapeSet{}, err
		}
	}
	if err := w.closeTape(true); err != nil {
		return catalog.TapeSet{}, err
	}
	set := catalog.TapeSet{ID: setID, Written: w.lab.Written, Tapes: w.tape, Bytes: w.bytes, Files: w.all}
	if err := repo.Catalog.RecordTapeSet(ctx, set); err != nil {
		return set, fmt.Errorf("the tapes are written, but recording the set in the catalog failed: %w", err)
	}
	return set, nil
}
