package tape

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
)

// Info is what one tape says about itself: its label and table of
// contents.
type Info struct {
	Path       string             `json:"path"`
	Set        string             `json:"set"`
	Tape       int                `json:"tape"`
	Written    time.Time          `json:"written"`
	RecordSize int                `json:"record_size"`
	Repository string             `json:"repository"`
	Machines   []string           `json:"machines,omitempty"`
	Since      time.Time          `json:"since,omitzero"`
	Last       bool               `json:"last"`
	Records    int64              `json:"records"`
	Files      []catalog.TapeFile `json:"files"`
}

// tapeReader reads the records of one tape in order.
type tapeReader struct {
	path  string
	f     *os.File
	drive bool
	rs    int
	set   [16]byte
	tape  int
	next  uint64
	lab   label
}

func openTapeReader(path string, want int, set *[16]byte) (*tapeReader, error) {
	drive := isTapeDrive(path)
	if drive {
		mt(path, "rewind")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tape %d: %w", want, err)
	}
	t := &tapeReader{path: path, f: f, drive: drive}
	buf, err := readRecord(f, 0, drive)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tape %d (%s): label: %w", want, path, err)
	}
	h, p, err := decode(buf)
	if err == nil && h.Kind != kindLabel {
		err = fmt.Errorf("%w: the first record is a %s record, not a label", ErrFormat, payloadName(h.Kind))
	}
	if err == nil {
		err = json.Unmarshal(p, &t.lab)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tape %d (%s): label: %w", want, path, err)
	}
	if want > 0 && int(h.Tape) != want {
		f.Close()
		return nil, fmt.Errorf("%s is tape %d of its set; tape %d is needed", path, h.Tape, want)
	}
	if set != nil && *set != ([16]byte{}) && h.Set != *set {
		f.Close()
		return nil, fmt.Errorf("%s belongs to tape set %x, not %x", path, h.Set, *set)
	}
	t.rs, t.set, t.tape, t.next = int(h.RecordSize), h.Set, int(h.Tape), 1
	return t, nil
}

// read returns the next record of the tape.
func (t *tapeReader) read() (header, []byte, error) {
	buf, err := readRecord(t.f, t.rs, t.drive)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return header{}, nil, fmt.Errorf("tape %d (%s) ends at record %d without an end record: %w", t.tape, t.path, t.next, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return header{}, nil, fmt.Errorf("tape %d (%s), record %d: %w", t.tape, t.path, t.next, err)
	}
	h, p, err := decode(buf)
	if err == nil && (h.Set != t.set || int(h.Tape) != t.tape || h.Record != t.next) {
		err = fmt.Errorf("%w: record of set %x tape %d number %d, expected set %x tape %d number %d", ErrFormat, h.Set, h.Tape, h.Record, t.set, t.tape, t.next)
	}
	if err != nil {
		return h, nil, fmt.Errorf("tape %d (%s), record %d (byte %d): %w", t.tape, t.path, t.next, int64(t.next)*int64(t.rs), err)
	}
	t.next++
	return h, p, nil
}

func (t *tapeReader) close() { t.f.Close() }

// Inspect reads one tape's label and table of contents.
func Inspect(ctx context.Context, path string) (Info, error) {
	t, err := openTapeReader(path, 0, nil)
	if err != nil {
		return Info{}, err
	}
	defer t.close()
	info := Info{Path: path, Set: t.lab.Set, Tape: t.tape, Written: t.lab.Written, RecordSize: t.rs, Repository: t.lab.Repository,
		Machines: t.lab.Machines, Since: t.lab.Since, Files: []catalog.TapeFile{}}
	var toc []byte
	for {
		if err := ctx.Err(); err != nil {
			return info, err
		}
		h, p, err := t.read()
		if err != nil {
			return info, err
		}
		switch h.Kind {
		case kindTOC:
			toc = append(toc, p...)
		case kindEnd:
			var e tapeEnd
			if err := json.Unmarshal(p, &e); err != nil {
				return info, fmt.Errorf("tape %d: end record: %w", t.tape, err)
			}
			info.Last, info.Records = e.Last, int64(t.next)
			if len(toc) > 0 {
				if err := json.Unmarshal(toc, &info.Files); err != nil {
					return info, fmt.Errorf("tape %d: table of contents: %w", t.tape, err)
				}
			}
			return info, nil
		}
	}
}

// List inspects the tapes of dev: every numbered tape that exists, or the
// one file or drive.
func List(ctx context.Context, dev Device) ([]Info, error) {
	if !dev.Numbered() {
		i, err := Inspect(ctx, dev.Path(1))
		return []Info{i}, err
	}
	var out []Info
	for n := 1; ; n++ {
		p := dev.Path(n)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if n == 1 {
				return nil, fmt.Errorf("no tape %s", p)
			}
			return out, nil
		}
		i, err := Inspect(ctx, p)
		if err != nil {
			return out, err
		}
		out = append(out, i)
	}
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	Device Device
	// Dir is the repository to rebuild: new or empty, or with Add an
	// existing repository of the same id (an incremental set on top of a
	// restored full one: missing packs are added, the catalog replaced by
	// the newer snapshot, the old one kept beside it).
	Dir      string
	Add      bool
	NextTape func(n int) error
	Progress func(n int64)
}

// Restored says what Restore did.
type Restored struct {
	Set   string `json:"set"`
	Tapes int    `json:"tapes"`
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
}

var validName = regexp.MustCompile(`^(config\.json|catalog\.db|packs/[0-9a-f]{2}/[0-9a-f]{16}\.pack)$`)

// Restore rebuilds a repository from the tapes of a set, verifying every
// record's CRC and every file's SHA-256.
func Restore(ctx context.Context, opt RestoreOptions) (Restored, error) {
	var res Restored
	if err := checkTarget(opt.Dir, opt.Add); err != nil {
		return res, err
	}
	var (
		set     [16]byte
		cur     *os.File
		curName string
		curPos  int64
		curSize int64
		sum     hash.Hash
		skip    bool // Add: a pack the repository already has
	)
	abort := func(err error) (Restored, error) {
		if cur != nil {
			cur.Close()
			os.Remove(cur.Name())
		}
		return res, err
	}
	for n := 1; ; n++ {
		if n > 1 && !opt.Device.Numbered() && opt.NextTape != nil {
			if err := opt.NextTape(n); err != nil {
				return abort(err)
			}
		}
		t, err := openTapeReader(opt.Device.Path(n), n, &set)
		if err != nil {
			return abort(err)
		}
		set = t.set
		res.Set, res.Tapes = t.lab.Set, n
		last := false
		for !last {
			if err := ctx.Err(); err != nil {
				t.close()
				return abort(err)
			}
			h, p, err := t.read()
			if err != nil {
				t.close()
				return abort(err)
			}
			switch h.Kind {
			case kindFileStart:
				var fs fileStart
				if err := json.Unmarshal(p, &fs); err != nil || !validName.MatchString(fs.Name) || fs.Size < 0 {
					t.close()
					return abort(fmt.Errorf("tape %d, record %d: file start %q: %w", n, h.Record, p, ErrFormat))
				}
				if fs.From > 0 { // continued from the previous tape
					if fs.Name != curName || fs.From != curPos {
						t.close()
						return abort(fmt.Errorf("tape %d continues %s at byte %d; the previous tape ended %s at byte %d", n, fs.Name, fs.From, curName, curPos))
					}
					continue
				}
				if curName != "" {
					t.close()
					return abort(fmt.Errorf("tape %d, record %d: %s starts before %s ended", n, h.Record, fs.Name, curName))
				}
				curName, curPos, curSize, sum = fs.Name, 0, fs.Size, sha256.New()
				final := filepath.Join(opt.Dir, filepath.FromSlash(fs.Name))
				_, statErr := os.Stat(final)
				skip = opt.Add && statErr == nil && fs.Name != "catalog.db" && fs.Name != "config.json"
				if !skip {
					if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
						t.close()
						return abort(err)
					}
					if cur, err = os.OpenFile(final+".from-tape", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600); err != nil {
						t.close()
						return abort(err)
					}
				}
			case kindData:
				if curName == "" || curPos+int64(len(p)) > curSize {
					t.close()
					return abort(fmt.Errorf("tape %d, record %d: data outside a file: %w", n, h.Record, ErrFormat))
				}
				if cur != nil {
					if _, err := cur.Write(p); err != nil {
						t.close()
						return abort(err)
					}
				}
				sum.Write(p)
				curPos += int64(len(p))
				res.Bytes += int64(len(p))
				if opt.Progress != nil {
					opt.Progress(int64(len(p)))
				}
			case kindFileEnd:
				var fe fileEnd
				if err := json.Unmarshal(p, &fe); err != nil || fe.Name != curName || curPos != curSize {
					t.close()
					return abort(fmt.Errorf("tape %d, record %d: end of %s after %d of %d bytes: %w", n, h.Record, curName, curPos, curSize, ErrFormat))
				}
				if got := hex.EncodeToString(sum.Sum(nil)); got != fe.SHA256 {
					t.close()
					return abort(fmt.Errorf("%s from the tapes has SHA-256 %s, the tape recorded %s", curName, got, fe.SHA256))
				}
				if cur != nil {
					if err := finishFile(cur, opt.Dir, curName, opt.Add); err != nil {
						t.close()
						return abort(err)
					}
					cur = nil
				}
				res.Files++
				curName = ""
			case kindTOC:
			case kindEnd:
				var e tapeEnd
				if err := json.Unmarshal(p, &e); err != nil {
					t.close()
					return abort(fmt.Errorf("tape %d: end record: %w", n, err))
				}
				last = true
				t.close()
				if e.Last {
					if curName != "" {
						return abort(fmt.Errorf("the last tape ends inside %s", curName))
					}
					return res, nil
				}
			default:
				t.close()
				return abort(fmt.Errorf("tape %d, record %d: unexpected %s record: %w", n, h.Record, payloadName(h.Kind), ErrFormat))
			}
		}
	}
}

// checkTarget accepts a new or empty directory, or with add an existing
// repository.
func checkTarget(dir string, add bool) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if add {
			return fmt.Errorf("%s does not exist: restore the full set first, then add incremental sets", dir)
		}
		return os.MkdirAll(dir, 0o700)
	case err != nil:
		return err
	case add:
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
			return fmt.Errorf("%s is not a repository to add tapes to: %w", dir, err)
		}
		return nil
	case len(ents) > 0:
		return fmt.Errorf("%s is not empty: tapes restore into a new repository (or --add to an existing one)", dir)
	}
	return nil
}

// finishFile syncs a restored file and puts it in place; with add, an
// existing catalog is kept beside the new one.
func finishFile(f *os.File, dir, name string, add bool) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	final := filepath.Join(dir, filepath.FromSlash(name))
	if add && name == "config.json" {
		old, err1 := os.ReadFile(final)
		neu, err2 := os.ReadFile(f.Name())
		os.Remove(f.Name())
		var a, b struct{ ID string }
		if err1 != nil || err2 != nil || json.Unmarshal(old, &a) != nil || json.Unmarshal(neu, &b) != nil || a.ID != b.ID {
			return fmt.Errorf("the tapes hold repository %q, %s is repository %q", b.ID, dir, a.ID)
		}
		return nil
	}
	if add && name == "catalog.db" {
		keep := final + ".before-tape-" + time.Now().UTC().Format("20060102T150405")
		if err := os.Rename(final, keep); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		for _, sfx := range []string{"-wal", "-shm"} {
			os.Rename(final+sfx, keep+sfx)
		}
	}
	return os.Rename(f.Name(), final)
}
