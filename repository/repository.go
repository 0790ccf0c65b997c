// Package repository is the block repository: a directory holding the
// SQLite catalog and the pack files, with the operations built on both —
// storing blocks once (Store), reading any point back exactly (PointReader,
// Restore) and proving the whole is intact (Check).
//
// Layout of a repository directory:
//
//	config.json     format version, repository id, algorithms, pack size
//	catalog.db      the SQLite catalog (WAL)
//	packs/XX/ID.pack
//	packs.json      where sealed packs live when not here (see package packstore)
//	server.crt/.key the server's self-signed TLS identity (made by the server)
package repository

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
	"github.com/rewind-cdp/rewind/repository/packstore"
)

// Config is stored in config.json and never changes after Init, except
// through a migration.
type Config struct {
	Version          int       `json:"version"`
	ID               string    `json:"id"`
	Hash             string    `json:"hash"`
	Compression      string    `json:"compression"` // for blocks the server compresses, and offered to clients
	ZstdLevel        int       `json:"zstd_level"`
	PackSize         int64     `json:"pack_size"`
	DefaultBlockSize int64     `json:"default_block_size"`
	Created          time.Time `json:"created"`
}

const formatVersion = 1

// Defaults, chosen by measurement (see docs/design.md).
const (
	DefaultBlockSize = 64 << 10
	DefaultPackSize  = 32 << 20
	DefaultZstdLevel = 1
	// DefaultCompression is S2: on this machine's mixed disk blocks it
	// compresses 3.7× and decodes 2.5× faster than zstd's fastest level,
	// for a ratio of 0.48 against 0.41 (docs/design.md).
	DefaultCompression = "s2"
	// DefaultHash is BLAKE3: on 64 KiB blocks it hashes 1.5-1.7× faster
	// than SHA-256 with SHA-NI on this machine, and every new block is
	// hashed twice, by the client and by the server (docs/design.md).
	// Repositories made before keep SHA-256.
	DefaultHash = "blake3"
)

// ErrNotRepository is returned when a directory is not a Rewind repository.
var ErrNotRepository = errors.New("not a Rewind repository")

// Repo is an open repository.
type Repo struct {
	Dir     string
	Config  Config
	Catalog *catalog.DB
	codec   *pack.Codec
	hash    uint8 // pack.HashSHA256 or pack.HashBLAKE3, from Config.Hash
	files   *fileCache
	packs   packstore.Store
}

// DefaultDir returns $REWIND_REPO, or ~/.local/share/rewind.
func DefaultDir() string {
	if d := os.Getenv("REWIND_REPO"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "rewind")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".", "rewind-repo")
	}
	return filepath.Join(home, ".local", "share", "rewind")
}

// Init creates a repository in dir, which must be absent or empty.
func Init(ctx context.Context, dir string) (*Repo, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("create repository %s: %w", dir, err)
	case len(entries) > 0:
		return nil, fmt.Errorf("create repository %s: directory is not empty and %w", dir, ErrNotRepository)
	}
	if err := os.MkdirAll(filepath.Join(dir, "packs"), 0o700); err != nil {
		return nil, fmt.Errorf("create repository %s: %w", dir, err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	cfg := Config{
		Version: formatVersion, ID: hex.EncodeToString(id), Hash: DefaultHash, Compression: DefaultCompression,
		ZstdLevel: DefaultZstdLevel, PackSize: DefaultPackSize, DefaultBlockSize: DefaultBlockSize,
		Created: time.Now().UTC(),
	}
	db, err := catalog.Open(ctx, filepath.Join(dir, "catalog.db"), true)
	if err != nil {
		return nil, err
	}
	db.Close()
	b, _ := json.MarshalIndent(cfg, "", "  ")
	// config.json is written last: a directory with it is a whole repository.
	if err := writeFileSync(filepath.Join(dir, "config.json"), append(b, '\n')); err != nil {
		return nil, fmt.Errorf("create repository %s: %w", dir, err)
	}
	return Open(ctx, dir)
}

// OpenOptions tune OpenWith.
type OpenOptions struct {
	// Packs reaches the pack store. A URL records that store in the
	// repository (packs.json) for every later open; without one the
	// recorded store is used (credentials and cache size still come from
	// here or the environment), else the repository directory.
	Packs packstore.Options
}

// Open opens an existing repository.
func Open(ctx context.Context, dir string) (*Repo, error) {
	return OpenWith(ctx, dir, OpenOptions{})
}

// OpenWith opens an existing repository with opt.
func OpenWith(ctx context.Context, dir string, opt OpenOptions) (*Repo, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("repository %s: directory does not exist", dir)
		}
		return nil, fmt.Errorf("%s is %w (no config.json)", dir, ErrNotRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Version == 0 {
		return nil, fmt.Errorf("%s is %w (config.json unreadable)", dir, ErrNotRepository)
	}
	if cfg.Version != formatVersion {
		return nil, fmt.Errorf("repository %s has format version %d; this rewind reads %d", dir, cfg.Version, formatVersion)
	}
	comp, err := pack.CompressionID(cfg.Compression)
	hash, herr := pack.HashID(cfg.Hash)
	if herr != nil || err != nil || comp == pack.CompressionNone {
		return nil, fmt.Errorf("repository %s uses hash %q and compression %q, which this rewind does not know", dir, cfg.Hash, cfg.Compression)
	}
	codec, err := pack.NewCodecFor(comp, cfg.ZstdLevel)
	if err != nil {
		return nil, err
	}
	store, err := openPackStore(ctx, dir, opt.Packs)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	db, err := catalog.Open(ctx, filepath.Join(dir, "catalog.db"), false)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", dir, err)
	}
	return &Repo{Dir: dir, Config: cfg, Catalog: db, codec: codec, hash: hash, files: newFileCache(64), packs: store}, nil
}

// openPackStore opens the store recorded in dir, or the one opt names
// (recording it).
func openPackStore(ctx context.Context, dir string, opt packstore.Options) (packstore.Store, error) {
	loc, recorded, err := packstore.ReadLocation(dir)
	if err != nil {
		return nil, err
	}
	if opt.URL == "" && !recorded {
		return packstore.Dir{Root: dir}, nil
	}
	if opt.URL != "" && recorded && opt.URL != loc.URL {
		return nil, fmt.Errorf("its packs are in %s, not %s (moving packs between stores is not supported)", loc.URL, opt.URL)
	}
	if recorded {
		// Flags override what is recorded; the rest comes from the record.
		if opt.Endpoint == "" {
			opt.Endpoint = loc.Endpoint
		}
		if opt.Region == "" {
			opt.Region = loc.Region
		}
		opt.Insecure = opt.Insecure || loc.Insecure
		opt.URL = loc.URL
	}
	opt.FillFromEnv()
	store, err := packstore.NewS3(ctx, opt)
	if err != nil {
		return nil, err
	}
	if !recorded {
		if err := packstore.WriteLocation(dir, opt.Location); err != nil {
			return nil, err
		}
	}
	return store, nil
}

// OpenOrInit opens the repository in dir, creating it when dir is absent
// or empty.
func OpenOrInit(ctx context.Context, dir string) (*Repo, error) {
	return OpenOrInitWith(ctx, dir, OpenOptions{})
}

// OpenOrInitWith is OpenOrInit with options.
func OpenOrInitWith(ctx context.Context, dir string, opt OpenOptions) (*Repo, error) {
	if _, err := os.Stat(filepath.Join(dir, "config.json")); errors.Is(err, fs.ErrNotExist) {
		r, err := Init(ctx, dir)
		if err != nil {
			return nil, err
		}
		if opt.Packs.URL == "" {
			return r, nil
		}
		r.Close()
	}
	return OpenWith(ctx, dir, opt)
}

// Close closes the catalog and any open pack files.
func (r *Repo) Close() error {
	r.files.closeAll()
	return r.Catalog.Close()
}

// Codec returns the repository's block codec.
func (r *Repo) Codec() *pack.Codec { return r.codec }

// Hash returns the id of the hash algorithm new blocks are stored under
// (every entry names its own, so reading needs no such choice).
func (r *Repo) Hash() uint8 { return r.hash }

// PackPath returns the file of a pack.
func (r *Repo) PackPath(id int64) string {
	return filepath.Join(r.Dir, "packs", fmt.Sprintf("%02x", id&0xff), fmt.Sprintf("%016x.pack", id))
}

// PackName is how a pack is named to people and to the pack store: its
// path inside the repository.
func (r *Repo) PackName(id int64) string {
	return filepath.ToSlash(filepath.Join("packs", fmt.Sprintf("%02x", id&0xff), fmt.Sprintf("%016x.pack", id)))
}

// entryBufs holds buffers for the stored bytes of one entry while it is
// decoded (Decode copies out of them).
var entryBufs = sync.Pool{New: func() any { return new([]byte) }}

// ReadChunk reads a chunk and returns its verified data, appended to
// dst[:0]. Damage is an error naming the pack and offset, never wrong data.
func (r *Repo) ReadChunk(ctx context.Context, c catalog.ChunkRef, dst []byte) ([]byte, error) {
	pr, err := r.packReader(ctx, c.PackID)
	if err != nil {
		return nil, err
	}
	bp := entryBufs.Get().(*[]byte)
	defer entryBufs.Put(bp)
	if need := (pack.Entry{CLen: c.CLen}).Len(); c.CLen <= pack.MaxBlock && int64(cap(*bp)) < need {
		*bp = make([]byte, need)
	}
	e, stored, err := pr.ReadEntry(c.Offset, c.CLen, *bp)
	if err != nil {
		return nil, err
	}
	if e.Hash != c.Hash || e.ULen != c.ULen {
		return nil, &pack.FormatError{Pack: r.PackName(c.PackID), Offset: c.Offset, Msg: fmt.Sprintf("entry holds block %s, catalog expects %x", e.Hash, c.Hash)}
	}
	out, err := r.codec.Decode(e, stored, dst)
	if err != nil {
		return nil, &pack.FormatError{Pack: r.PackName(c.PackID), Offset: c.Offset, Msg: err.Error()}
	}
	return out, nil
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadStored reads a chunk as it is stored in its pack (compressed, with
// its entry: hash, compression, lengths), checked against the pack's
// checksum and the catalog's hash, for sending to another repository
// without decompressing it. A chunk whose pack a prune rewrote meanwhile
// is looked up again.
func (r *Repo) ReadStored(ctx context.Context, c catalog.ChunkRef, buf []byte) (pack.Entry, []byte, error) {
	e, stored, err := r.readStored(ctx, c, buf)
	if errors.Is(err, fs.ErrNotExist) {
		if c, err = r.Catalog.Chunk(ctx, c.Hash); err == nil {
			e, stored, err = r.readStored(ctx, c, buf)
		}
	}
	return e, stored, err
}

func (r *Repo) readStored(ctx context.Context, c catalog.ChunkRef, buf []byte) (pack.Entry, []byte, error) {
	pr, err := r.packReader(ctx, c.PackID)
	if err != nil {
		return pack.Entry{}, nil, err
	}
	e, stored, err := pr.ReadEntry(c.Offset, c.CLen, buf)
	if err != nil {
		return pack.Entry{}, nil, err
	}
	if e.Hash != c.Hash || e.ULen != c.ULen {
		return pack.Entry{}, nil, &pack.FormatError{Pack: r.PackName(c.PackID), Offset: c.Offset, Msg: fmt.Sprintf("entry holds block %s, catalog expects %x", e.Hash, c.Hash)}
	}
	return e, stored, nil
}
