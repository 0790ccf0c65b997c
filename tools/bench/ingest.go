package main

import (
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/rewind-cdp/rewind/repository"
)

// ingestResult is the large-ingest phase: one big mixed file backed up by
// rewind to a fresh server.
type ingestResult struct {
	Bytes        int64   `json:"bytes"`
	TextBytes    int64   `json:"text_bytes"`
	RandomBytes  int64   `json:"random_bytes"`
	ZeroBytes    int64   `json:"zero_bytes"`
	Seconds      float64 `json:"seconds"`
	MBps         float64 `json:"mb_per_s"`
	BytesNew     int64   `json:"bytes_new"`
	BytesSent    int64   `json:"bytes_sent"`
	ServerRSSKiB int64   `json:"server_peak_rss_kib"`
	ClientRSSKiB int64   `json:"client_peak_rss_kib"`
	// CatalogBytes is catalog.db + catalog.db-wal after the server stopped;
	// CatalogBytesRunning the same just before it was stopped.
	CatalogBytes        int64   `json:"catalog_bytes"`
	CatalogBytesRunning int64   `json:"catalog_bytes_running"`
	UniqueBytes         int64   `json:"unique_bytes"`
	CatalogRatio        float64 `json:"catalog_ratio"`
}

// genMixed writes size bytes of deterministic mixed content to path: 16 MiB
// segments of text-like lines, pseudo-random bytes or zeros (left as holes).
func genMixed(path string, size int64, res *ingestResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.New(rand.NewChaCha8([32]byte{'i', 'n', 'g', 'e', 's', 't'}))
	vocab := make([][]byte, 4096)
	for i := range vocab {
		w := make([]byte, 2+rng.IntN(9))
		for j := range w {
			w[j] = byte('a' + rng.IntN(26))
		}
		vocab[i] = w
	}
	const seg = 16 << 20
	buf := make([]byte, seg)
	for off := int64(0); off < size; off += seg {
		n := int(min(seg, size-off))
		b := buf[:n]
		switch k := rng.IntN(100); {
		case k < 20:
			res.ZeroBytes += int64(n)
			continue // a hole reads as zeros
		case k < 55:
			fillRandom(rng, b)
			res.RandomBytes += int64(n)
		default:
			fillText(rng, vocab, b)
			res.TextBytes += int64(n)
		}
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	res.Bytes = size
	return f.Close()
}

// fillText fills b with lines of words from vocab.
func fillText(rng *rand.Rand, vocab [][]byte, b []byte) {
	i, col := 0, 0
	for i < len(b) {
		w := vocab[rng.IntN(len(vocab))]
		i += copy(b[i:], w)
		col += len(w)
		if i >= len(b) {
			break
		}
		if col > 60+rng.IntN(20) {
			b[i], col = '\n', 0
		} else {
			b[i] = ' '
			col++
		}
		i++
	}
}

// catalogBytes is the size of catalog.db plus its write-ahead log.
func catalogBytes(repo string) (int64, error) {
	var n int64
	for _, name := range []string{"catalog.db", "catalog.db-wal"} {
		st, err := os.Stat(filepath.Join(repo, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		n += st.Size()
	}
	return n, nil
}

// uniqueBytes opens the repository (no server may hold it) and returns the
// uncompressed bytes of the unique chunks it stores.
func uniqueBytes(ctx context.Context, dir string) (int64, error) {
	repo, err := repository.Open(ctx, dir)
	if err != nil {
		return 0, err
	}
	defer repo.Close()
	st, err := repo.Catalog.Stats(ctx)
	if err != nil {
		return 0, err
	}
	return st.UniqueBytes, nil
}

// runIngest generates the mixed file, backs it up to a fresh server and
// measures the server's peak RSS and the catalog's size.
func runIngest(ctx context.Context, run *runner, bin, work string, size int64, logf func(string, ...any)) (ingestResult, error) {
	var res ingestResult
	file := filepath.Join(work, "ingest.img")
	defer os.Remove(file)
	logf("ingest: generating %s of mixed content", humanBytes(size))
	if err := genMixed(file, size, &res); err != nil {
		return res, err
	}
	logf("ingest: %s text-like, %s random, %s zeros", humanBytes(res.TextBytes), humanBytes(res.RandomBytes), humanBytes(res.ZeroBytes))
	if err := warm(file); err != nil {
		return res, err
	}
	repo := filepath.Join(work, "ingest-repo")
	defer os.RemoveAll(repo)
	srv, token, err := newMachine(run, bin, repo, filepath.Join(work, "logs", "rewind-ingest-server.log"))
	if err != nil {
		return res, err
	}
	defer srv.stop() // no-op once stopped below
	logf("ingest: rewind backup of %s", humanBytes(size))
	r, b, err := rewindBackup(run, bin, srv, repo, token, file)
	if err != nil {
		return res, err
	}
	res.Seconds, res.MBps, res.ClientRSSKiB = r.Wall.Seconds(), mbps(size, r.Wall), r.MaxRSS
	res.BytesNew, res.BytesSent = b.BytesNew, b.BytesSent
	if res.CatalogBytesRunning, err = catalogBytes(repo); err != nil {
		return res, err
	}
	if res.ServerRSSKiB, err = srv.stop(); err != nil {
		return res, err
	}
	if res.CatalogBytes, err = catalogBytes(repo); err != nil {
		return res, err
	}
	if res.UniqueBytes, err = uniqueBytes(ctx, repo); err != nil {
		return res, err
	}
	if res.UniqueBytes > 0 {
		res.CatalogRatio = float64(res.CatalogBytes) / float64(res.UniqueBytes)
	}
	logf("ingest: %.1f MB/s, server peak RSS %s, catalog %s for %s unique (%.3f %%)",
		res.MBps, humanBytes(res.ServerRSSKiB<<10), humanBytes(res.CatalogBytes), humanBytes(res.UniqueBytes), 100*res.CatalogRatio)
	return res, nil
}
