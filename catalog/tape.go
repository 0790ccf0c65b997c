package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// Snapshot writes a consistent copy of the catalog to path (which must
// not exist), while ingest goes on.
func (db *DB) Snapshot(ctx context.Context, path string) error {
	conn, err := db.r.Conn(ctx)
	if err != nil {
		return fmt.Errorf("catalog snapshot: %w", err)
	}
	defer conn.Close()
	// A query-only connection refuses VACUUM INTO; lift it on this one.
	if _, err := conn.ExecContext(ctx, `PRAGMA query_only = 0`); err != nil {
		return fmt.Errorf("catalog snapshot: %w", err)
	}
	defer conn.ExecContext(context.Background(), `PRAGMA query_only = 1`)
	if _, err := conn.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		os.Remove(path)
		return fmt.Errorf("catalog snapshot to %s: %w", path, err)
	}
	return nil
}

// TapeFile is one file of a tape set, as its table of contents lists it.
type TapeFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Tape   int    `json:"tape"`   // tape of the set where the file starts
	Record int64  `json:"record"` // record number on that tape
}

// TapeSet is a set of tapes written by `rewind tape write`.
type TapeSet struct {
	ID      string     `json:"id"`
	Written time.Time  `json:"written"`
	Tapes   int        `json:"tapes"`
	Bytes   int64      `json:"bytes"`
	Files   []TapeFile `json:"files"`
}

const tapeSchema = `CREATE TABLE IF NOT EXISTS tape_sets(
	id TEXT PRIMARY KEY,
	written_ns INTEGER NOT NULL,
	tapes INTEGER NOT NULL,
	bytes INTEGER NOT NULL,
	toc TEXT NOT NULL)`

// RecordTapeSet keeps a written tape set and its table of contents.
func (db *DB) RecordTapeSet(ctx context.Context, s TapeSet) error {
	toc, err := json.Marshal(s.Files)
	if err != nil {
		return err
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, tapeSchema); err != nil {
			return fmt.Errorf("record tape set: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO tape_sets(id, written_ns, tapes, bytes, toc) VALUES(?, ?, ?, ?, ?)`,
			s.ID, s.Written.UnixNano(), s.Tapes, s.Bytes, string(toc)); err != nil {
			return fmt.Errorf("record tape set %s: %w", s.ID, err)
		}
		return nil
	})
}

// TapeSets lists the tape sets written from this repository, oldest first.
func (db *DB) TapeSets(ctx context.Context) ([]TapeSet, error) {
	var n int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'tape_sets'`).Scan(&n); err != nil || n == 0 {
		return nil, err
	}
	rows, err := db.r.QueryContext(ctx, `SELECT id, written_ns, tapes, bytes, toc FROM tape_sets ORDER BY written_ns`)
	if err != nil {
		return nil, fmt.Errorf("tape sets: %w", err)
	}
	defer rows.Close()
	var out []TapeSet
	for rows.Next() {
		var s TapeSet
		var ns int64
		var toc string
		if err := rows.Scan(&s.ID, &ns, &s.Tapes, &s.Bytes, &toc); err != nil {
			return nil, fmt.Errorf("tape sets: %w", err)
		}
		s.Written = time.Unix(0, ns)
		if err := json.Unmarshal([]byte(toc), &s.Files); err != nil {
			return nil, fmt.Errorf("tape set %s: table of contents: %w", s.ID, err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// SnapshotPack is a pack a catalog snapshot needs: the whole file (Size
// 0, sealed) or its first Size bytes (an open pack's durable part).
type SnapshotPack struct {
	ID, Size int64
}

// PrepareSnapshot limits the catalog snapshot at path to machines (all
// when empty) and returns the packs it needs, those created at or after
// since.
func PrepareSnapshot(ctx context.Context, path string, machines []string, since time.Time) ([]SnapshotPack, error) {
	sdb, err := Open(ctx, path, false)
	if err != nil {
		return nil, err
	}
	defer sdb.Close()
	db := sdb.w
	if len(machines) > 0 {
		q := strings.TrimSuffix(strings.Repeat("?,", len(machines)), ",")
		args := make([]any, len(machines))
		for i, m := range machines {
			args[i] = m
		}
		var found int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM machines WHERE name IN (`+q+`)`, args...).Scan(&found); err != nil {
			return nil, err
		}
		if found != len(machines) {
			return nil, fmt.Errorf("--machines names %d machines, the repository has %d of them", len(machines), found)
		}
		for _, stmt := range []string{
			`DELETE FROM blocks WHERE volume_id IN (SELECT v.id FROM volumes v JOIN machines m ON m.id = v.machine_id WHERE m.name NOT IN (` + q + `))`,
			`DELETE FROM points WHERE volume_id IN (SELECT v.id FROM volumes v JOIN machines m ON m.id = v.machine_id WHERE m.name NOT IN (` + q + `))`,
			`DELETE FROM volumes WHERE machine_id IN (SELECT id FROM machines WHERE name NOT IN (` + q + `))`,
			`DELETE FROM machines WHERE name NOT IN (` + q + `)`,
			`DELETE FROM chunks WHERE id NOT IN (SELECT DISTINCT chunk_id FROM blocks)`,
			`DELETE FROM packs WHERE id NOT IN (SELECT DISTINCT pack_id FROM chunks)`,
		} {
			if _, err := db.ExecContext(ctx, stmt, args...); err != nil {
				return nil, fmt.Errorf("limit the catalog snapshot to %v: %w", machines, err)
			}
		}
		if _, err := db.ExecContext(ctx, `VACUUM`); err != nil {
			return nil, err
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT id, state, size FROM packs WHERE created_ns >= ? AND id IN (SELECT DISTINCT pack_id FROM chunks) ORDER BY id`, since.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("packs in the catalog snapshot: %w", err)
	}
	defer rows.Close()
	var out []SnapshotPack
	for rows.Next() {
		var p SnapshotPack
		var state string
		if err := rows.Scan(&p.ID, &state, &p.Size); err != nil {
			return nil, err
		}
		if state == PackSealed {
			p.Size = 0
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
