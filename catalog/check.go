package catalog

import (
	"context"
	"database/sql"
	"fmt"
)

// Packs lists every registered pack.
func (db *DB) Packs(ctx context.Context) ([]PackState, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, state, size FROM packs ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	defer rows.Close()
	var out []PackState
	for rows.Next() {
		var p PackState
		if err := rows.Scan(&p.ID, &p.State, &p.Size); err != nil {
			return nil, fmt.Errorf("list packs: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PackChunks lists the chunks indexed in one pack, by offset.
func (db *DB) PackChunks(ctx context.Context, packID int64) ([]ChunkRef, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, hash, pack_id, offset, clen, ulen FROM chunks WHERE pack_id = ? ORDER BY offset`, packID)
	if err != nil {
		return nil, fmt.Errorf("list chunks of pack %d: %w", packID, err)
	}
	defer rows.Close()
	var out []ChunkRef
	for rows.Next() {
		var c ChunkRef
		var h []byte
		if err := rows.Scan(&c.ID, &h, &c.PackID, &c.Offset, &c.CLen, &c.ULen); err != nil {
			return nil, fmt.Errorf("list chunks of pack %d: %w", packID, err)
		}
		copy(c.Hash[:], h)
		out = append(out, c)
	}
	return out, rows.Err()
}

// DeletePack forgets an open pack that indexes no chunk.
func (db *DB) DeletePack(ctx context.Context, id int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM chunks WHERE pack_id = ?`, id).Scan(&n); err != nil {
			return fmt.Errorf("delete pack %d: %w", id, err)
		}
		if n > 0 {
			return fmt.Errorf("delete pack %d: it still indexes %d chunks", id, n)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM packs WHERE id = ?`, id)
		return err
	})
}

// DanglingBlocks returns the chunk ids that block rows reference but the
// chunk index lacks.
func (db *DB) DanglingBlocks(ctx context.Context) ([]int64, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT DISTINCT b.chunk_id FROM blocks b LEFT JOIN chunks c ON c.id = b.chunk_id WHERE b.chunk_id != 0 AND c.id IS NULL`)
	if err != nil {
		return nil, fmt.Errorf("find dangling blocks: %w", err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// AffectedPoints returns the committed points whose state includes any of
// the given chunks.
func (db *DB) AffectedPoints(ctx context.Context, chunkIDs []int64) ([]Point, error) {
	type span struct{ vol, from, to int64 } // to 0 = open-ended
	var spans []span
	next, err := db.r.PrepareContext(ctx, `SELECT IFNULL(MIN(seq), 0) FROM blocks WHERE volume_id = ? AND blk = ? AND seq > ?`)
	if err != nil {
		return nil, fmt.Errorf("find affected points: %w", err)
	}
	defer next.Close()
	for _, id := range chunkIDs {
		rows, err := db.r.QueryContext(ctx, `SELECT volume_id, blk, seq FROM blocks WHERE chunk_id = ?`, id)
		if err != nil {
			return nil, fmt.Errorf("find affected points: %w", err)
		}
		var refs [][3]int64
		for rows.Next() {
			var r [3]int64
			if err := rows.Scan(&r[0], &r[1], &r[2]); err != nil {
				rows.Close()
				return nil, err
			}
			refs = append(refs, r)
		}
		rows.Close()
		for _, r := range refs {
			var to int64
			if err := next.QueryRowContext(ctx, r[0], r[1], r[2]).Scan(&to); err != nil {
				return nil, fmt.Errorf("find affected points: %w", err)
			}
			spans = append(spans, span{r[0], r[2], to})
		}
	}
	seen := map[int64]bool{}
	var out []Point
	for _, s := range spans {
		ps, err := db.queryPoints(ctx, `p.volume_id = ? AND p.state = 'committed' AND p.id >= ? AND (? = 0 OR p.id < ?) ORDER BY p.id`, s.vol, s.from, s.to, s.to)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			if !seen[p.ID] {
				seen[p.ID] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// Stats sums up what the repository holds.
type Stats struct {
	Chunks      int64 `json:"chunks"`
	UniqueBytes int64 `json:"unique_bytes"`
	StoredBytes int64 `json:"stored_bytes"`
	BlockRows   int64 `json:"block_rows"`
	Points      int64 `json:"points"`
}

// Stats counts chunks, their bytes, block rows and points.
func (db *DB) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*), IFNULL(SUM(ulen), 0), IFNULL(SUM(clen), 0) FROM chunks`).Scan(&s.Chunks, &s.UniqueBytes, &s.StoredBytes)
	if err == nil {
		err = db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM blocks`).Scan(&s.BlockRows)
	}
	if err == nil {
		err = db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM points WHERE state = 'committed'`).Scan(&s.Points)
	}
	if err != nil {
		return Stats{}, fmt.Errorf("repository statistics: %w", err)
	}
	return s, nil
}
