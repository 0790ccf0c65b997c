package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Policy says which points of a volume to keep: every point of the last
// Within, then the newest point of each of the last Minutely minutes,
// Hourly hours, Daily days, Weekly ISO weeks and Monthly months that have
// points. Bookmarks and the newest point are always kept.
type Policy struct {
	Within   Duration `json:"within,omitempty"`
	Minutely int      `json:"minutely,omitempty"`
	Hourly   int      `json:"hourly,omitempty"`
	Daily    int      `json:"daily,omitempty"`
	Weekly   int      `json:"weekly,omitempty"`
	Monthly  int      `json:"monthly,omitempty"`
}

// Duration is a time.Duration written as text in JSON ("24h0m0s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// Empty reports whether the policy keeps nothing but bookmarks and the
// newest point (a policy nobody set).
func (p Policy) Empty() bool { return p == Policy{} }

// Keep returns the ids of the committed points (any order) to keep at now.
func (p Policy) Keep(points []Point, now time.Time) map[int64]bool {
	keep := map[int64]bool{}
	var newest *Point
	for i := range points {
		pt := &points[i]
		if pt.State != "" && pt.State != StateCommitted {
			continue
		}
		if newest == nil || pt.Time.After(newest.Time) || pt.Time.Equal(newest.Time) && pt.ID > newest.ID {
			newest = pt
		}
		if pt.Kind == KindBookmark || now.Sub(pt.Time) <= time.Duration(p.Within) {
			keep[pt.ID] = true
		}
	}
	if newest == nil {
		return keep
	}
	keep[newest.ID] = true
	sorted := make([]*Point, 0, len(points))
	for i := range points {
		if points[i].State == "" || points[i].State == StateCommitted {
			sorted = append(sorted, &points[i])
		}
	}
	// newest first
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && (sorted[j].Time.After(sorted[j-1].Time) || sorted[j].Time.Equal(sorted[j-1].Time) && sorted[j].ID > sorted[j-1].ID); j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	for _, b := range []struct {
		n   int
		key func(time.Time) string
	}{
		{p.Minutely, func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04") }},
		{p.Hourly, func(t time.Time) string { return t.UTC().Format("2006-01-02T15") }},
		{p.Daily, func(t time.Time) string { return t.UTC().Format("2006-01-02") }},
		{p.Weekly, func(t time.Time) string { y, w := t.UTC().ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{p.Monthly, func(t time.Time) string { return t.UTC().Format("2006-01") }},
	} {
		seen := map[string]bool{}
		for _, pt := range sorted {
			if len(seen) >= b.n {
				break
			}
			k := b.key(pt.Time)
			if !seen[k] {
				seen[k] = true
				keep[pt.ID] = true
			}
		}
	}
	return keep
}

const retentionSchema = `CREATE TABLE IF NOT EXISTS retention(
	machine TEXT NOT NULL,
	volume TEXT NOT NULL, -- '' for every volume of the machine
	policy TEXT NOT NULL,
	PRIMARY KEY(machine, volume))`

// SetPolicy stores the policy of a machine's volume (volume "" for all of
// the machine's volumes without one of their own).
func (db *DB) SetPolicy(ctx context.Context, machine, volume string, p Policy) error {
	b, _ := json.Marshal(p)
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, retentionSchema); err != nil {
			return fmt.Errorf("set retention: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO retention(machine, volume, policy) VALUES(?, ?, ?)`, machine, volume, string(b)); err != nil {
			return fmt.Errorf("set retention of %s/%s: %w", machine, volume, err)
		}
		return nil
	})
}

// Policies returns the stored policies keyed "machine/volume" (volume ""
// for machine-wide ones).
func (db *DB) Policies(ctx context.Context) (map[string]Policy, error) {
	out := map[string]Policy{}
	var n int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'retention'`).Scan(&n); err != nil || n == 0 {
		return out, err
	}
	rows, err := db.r.QueryContext(ctx, `SELECT machine, volume, policy FROM retention`)
	if err != nil {
		return nil, fmt.Errorf("retention policies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m, v, s string
		var p Policy
		if err := rows.Scan(&m, &v, &s); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			return nil, fmt.Errorf("retention policy of %s/%s: %w", m, v, err)
		}
		out[m+"/"+v] = p
	}
	return out, rows.Err()
}

// ErrNotDroppable is returned by DropPoint for a point that must stay.
var ErrNotDroppable = errors.New("point cannot be dropped")

// DropPoint removes committed point id, in one transaction: its block
// versions that the next committed point of the volume overwrites are
// deleted, the others move to that point, so every later point reads
// exactly what it read before. The newest committed point, and a point
// followed by a pending one before the next committed point, are not
// dropped (ErrNotDroppable).
func (db *DB) DropPoint(ctx context.Context, id int64) (moved, deleted int64, err error) {
	err = db.tx(ctx, func(tx *sql.Tx) error {
		var vol int64
		var state string
		err := tx.QueryRowContext(ctx, `SELECT volume_id, state FROM points WHERE id = ?`, id).Scan(&vol, &state)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("drop point %d: it no longer exists: %w", id, ErrNotDroppable)
		}
		if err != nil {
			return fmt.Errorf("drop point %d: %w", id, err)
		}
		if state != StateCommitted {
			return fmt.Errorf("drop point %d: it is %s: %w", id, state, ErrNotDroppable)
		}
		var next sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MIN(id) FROM points WHERE volume_id = ? AND state = 'committed' AND id > ?`, vol, id).Scan(&next); err != nil {
			return fmt.Errorf("drop point %d: %w", id, err)
		}
		if !next.Valid {
			return fmt.Errorf("drop point %d: it is the newest point of its volume: %w", id, ErrNotDroppable)
		}
		var pending int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM points WHERE volume_id = ? AND state = 'pending' AND id > ? AND id < ?`, vol, id, next.Int64).Scan(&pending); err != nil {
			return fmt.Errorf("drop point %d: %w", id, err)
		}
		if pending > 0 {
			return fmt.Errorf("drop point %d: a point in progress follows it: %w", id, ErrNotDroppable)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM blocks WHERE volume_id = ? AND seq = ? AND blk IN (SELECT blk FROM blocks WHERE volume_id = ? AND seq = ?)`, vol, id, vol, next.Int64)
		if err != nil {
			return fmt.Errorf("drop point %d: %w", id, err)
		}
		deleted, _ = res.RowsAffected()
		if res, err = tx.ExecContext(ctx, `UPDATE blocks SET seq = ? WHERE volume_id = ? AND seq = ?`, next.Int64, vol, id); err != nil {
			return fmt.Errorf("drop point %d: %w", id, err)
		}
		moved, _ = res.RowsAffected()
		_, err = tx.ExecContext(ctx, `DELETE FROM points WHERE id = ?`, id)
		return err
	})
	return moved, deleted, err
}

// Garbage is what DeleteUnreferencedChunks freed.
type Garbage struct {
	Chunks      int64
	StoredBytes int64
	EmptyPacks  []int64 // sealed packs that no longer index any chunk
}

// DeleteUnreferencedChunks forgets every chunk no block version refers to
// and lists the sealed packs left without chunks (their files can go). A
// backup that counted on such a chunk fails its commit ("not indexed") and
// sends the block again on its retry.
func (db *DB) DeleteUnreferencedChunks(ctx context.Context) (Garbage, error) {
	var g Garbage
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), IFNULL(SUM(clen), 0) FROM chunks WHERE id NOT IN (SELECT DISTINCT chunk_id FROM blocks)`).Scan(&g.Chunks, &g.StoredBytes); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM chunks WHERE id NOT IN (SELECT DISTINCT chunk_id FROM blocks)`); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT id FROM packs WHERE state = 'sealed' AND id NOT IN (SELECT DISTINCT pack_id FROM chunks)`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return err
			}
			g.EmptyPacks = append(g.EmptyPacks, id)
		}
		return rows.Err()
	})
	if err != nil {
		return g, fmt.Errorf("collect unreferenced chunks: %w", err)
	}
	return g, nil
}

// ChunkMove is a chunk copied to another pack by compaction.
type ChunkMove struct {
	ID       int64
	FromPack int64
	Offset   int64 // in the new pack
}

// MoveChunks records, in one transaction, a new sealed pack and the chunks
// copied into it from older packs.
func (db *DB) MoveChunks(ctx context.Context, pack PackState, moves []ChunkMove) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE packs SET state = ?, size = ? WHERE id = ?`, pack.State, pack.Size, pack.ID); err != nil {
			return fmt.Errorf("record pack %d: %w", pack.ID, err)
		}
		st, err := tx.PrepareContext(ctx, `UPDATE chunks SET pack_id = ?, offset = ? WHERE id = ? AND pack_id = ?`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, m := range moves {
			if _, err := st.ExecContext(ctx, pack.ID, m.Offset, m.ID, m.FromPack); err != nil {
				return fmt.Errorf("move chunk %d to pack %d: %w", m.ID, pack.ID, err)
			}
		}
		return nil
	})
}
