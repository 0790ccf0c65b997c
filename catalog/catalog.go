// Package catalog is the repository's SQLite catalog: machines and their
// tokens, volumes, points in time, the chunk index (content hash → place in
// a pack) and the block versions behind every point.
//
// Block versions are stored per changed block: a row (volume, block, seq,
// chunk) says that from point seq on, block holds chunk, until a later row
// for the same block. A point's state is, for each block, the newest row at
// or before the point's seq, found by one index seek, so resolving
// "volume V at time T" never replays history. Chunk id 0 is the all-zero
// block and has no chunk row. Point, pack and chunk ids are never reused.
package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"
)

// ErrNotFound is returned when a named machine, volume or point is absent.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating something that already exists.
var ErrExists = errors.New("already exists")

// schemaVersion 2 added volumes.kind (see migrate).
const schemaVersion = "2"

const schema = `
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS machines(
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	token_hash BLOB NOT NULL UNIQUE,
	created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS volumes(
	id INTEGER PRIMARY KEY,
	machine_id INTEGER NOT NULL REFERENCES machines(id),
	name TEXT NOT NULL,
	size INTEGER NOT NULL,
	block_size INTEGER NOT NULL,
	created_ns INTEGER NOT NULL,
	kind TEXT NOT NULL DEFAULT 'block',
	UNIQUE(machine_id, name));
CREATE TABLE IF NOT EXISTS points(
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	volume_id INTEGER NOT NULL REFERENCES volumes(id),
	time_ns INTEGER NOT NULL,
	kind TEXT NOT NULL,
	label TEXT NOT NULL DEFAULT '',
	size INTEGER NOT NULL,
	state TEXT NOT NULL,
	progress INTEGER NOT NULL DEFAULT 0,
	stream_epoch TEXT NOT NULL DEFAULT '',
	stream_seq INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS points_volume_time ON points(volume_id, state, time_ns);
CREATE TABLE IF NOT EXISTS packs(
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	state TEXT NOT NULL,
	size INTEGER NOT NULL DEFAULT 0,
	created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	hash BLOB NOT NULL UNIQUE,
	pack_id INTEGER NOT NULL REFERENCES packs(id),
	offset INTEGER NOT NULL,
	clen INTEGER NOT NULL,
	ulen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocks(
	volume_id INTEGER NOT NULL,
	blk INTEGER NOT NULL,
	seq INTEGER NOT NULL,
	chunk_id INTEGER NOT NULL,
	PRIMARY KEY(volume_id, blk, seq)) WITHOUT ROWID;
`

// Point states.
const (
	StatePending   = "pending"
	StateCommitted = "committed"
)

// Pack states.
const (
	PackOpen   = "open"
	PackSealed = "sealed"
)

// DB is an open catalog: one writer connection and a pool of readers.
type DB struct {
	w *sql.DB
	r *sql.DB
	// chunkByHash and blockMap are prepared once: ingest looks a chunk up
	// for every block it is sent, and a block up for every partial write
	// of a capture stream.
	chunkByHash *sql.Stmt
	blockMap    *sql.Stmt
}

// Open opens the catalog at path. With create it makes the file and schema
// when missing; without, a missing file is an error.
func Open(ctx context.Context, path string, create bool) (*DB, error) {
	if !create {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open catalog: %w", err)
		}
	}
	w, err := sql.Open(driverName, dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open(driverName, dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	db := &DB{w: w, r: r}
	if create {
		if _, err := w.ExecContext(ctx, schema); err != nil {
			db.Close()
			return nil, fmt.Errorf("create catalog schema in %s: %w", path, err)
		}
		if _, err := w.ExecContext(ctx, `INSERT OR IGNORE INTO meta(key, value) VALUES('schema', ?)`, schemaVersion); err != nil {
			db.Close()
			return nil, fmt.Errorf("write catalog version: %w", err)
		}
	}
	var v string
	if err := r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key='schema'`).Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog %s: not a Rewind catalog: %w", path, err)
	}
	if v == "1" {
		if err := db.migrate1to2(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("catalog %s: %w", path, err)
		}
		v = schemaVersion
	}
	if v != schemaVersion {
		db.Close()
		return nil, fmt.Errorf("catalog %s: schema version %s, this rewind reads %s", path, v, schemaVersion)
	}
	if db.chunkByHash, err = r.PrepareContext(ctx, `SELECT id, pack_id, offset, clen, ulen FROM chunks WHERE hash = ?`); err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	if db.blockMap, err = r.PrepareContext(ctx, blockMapQuery); err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog %s: %w", path, err)
	}
	return db, nil
}

// Close closes every connection.
func (db *DB) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{db.chunkByHash, db.blockMap} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, db.w.Close(), db.r.Close())...)
}

// tx runs fn in one write transaction.
func (db *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin catalog transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit catalog transaction: %w", err)
	}
	return nil
}

func nowNS() int64 { return time.Now().UnixNano() }

// migrate1to2 adds the volume kind (block or dir) to a version 1 catalog:
// every volume it holds is a block volume.
func (db *DB) migrate1to2(ctx context.Context) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT name FROM pragma_table_info('volumes') WHERE name = 'kind'`)
		if err != nil {
			return fmt.Errorf("migrate schema 1 to 2: %w", err)
		}
		has := rows.Next()
		rows.Close()
		if !has {
			if _, err := tx.ExecContext(ctx, `ALTER TABLE volumes ADD COLUMN kind TEXT NOT NULL DEFAULT 'block'`); err != nil {
				return fmt.Errorf("migrate schema 1 to 2: add volumes.kind: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE meta SET value = '2' WHERE key = 'schema'`); err != nil {
			return fmt.Errorf("migrate schema 1 to 2: %w", err)
		}
		return nil
	})
}
