package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ChunkRef locates a stored chunk. ID 0 is the all-zero block, stored
// nowhere.
type ChunkRef struct {
	ID     int64
	Hash   [32]byte
	PackID int64
	Offset int64
	CLen   uint32
	ULen   uint32
}

// NewChunk is a chunk made durable in a pack, to be indexed.
type NewChunk struct {
	Hash   [32]byte
	PackID int64
	Offset int64
	CLen   uint32
	ULen   uint32
}

// BlockWrite sets one block of a pending point to a chunk (by hash) or to
// zeros.
type BlockWrite struct {
	Blk  int64
	Hash [32]byte
	Zero bool
}

// PackState records a pack's state and size.
type PackState struct {
	ID    int64
	State string
	Size  int64
}

// Batch is one durable step of ingest, applied in one transaction: packs
// made durable, their chunks indexed, block rows of a pending point, its
// progress, and optionally its commit.
type Batch struct {
	Packs    []PackState
	Chunks   []NewChunk
	VolumeID int64
	PointID  int64
	Blocks   []BlockWrite
	Progress int64
	Commit   bool
	// On commit: the point's time (moved just past the volume's newest
	// point if it is not later), and, when set, its kind and label.
	Time  time.Time
	Kind  string
	Label string
	// On commit of a continuous-capture point: the agent's spool identity
	// and the last journal record the point includes; with Next, the
	// volume's next pending point is opened in the same transaction (its id
	// is stored in *Next).
	StreamEpoch string
	StreamSeq   uint64
	Next        *int64
	// Committed, when set, receives the point's time as committed.
	Committed *time.Time
	// AfterPrevious, in ApplyAll, makes the batch's point the one the
	// batch before it opened with Next (PointID is then ignored).
	AfterPrevious bool
}

// Apply writes a batch in one transaction.
func (db *DB) Apply(ctx context.Context, b Batch) error {
	return db.tx(ctx, func(tx *sql.Tx) error { return applyTx(ctx, newTxStmts(tx), b) })
}

// ApplyAll writes batches in order in one transaction: several points of
// a stream committed together share one disk flush (group commit). A
// batch with AfterPrevious fills the point the batch before it opened.
func (db *DB) ApplyAll(ctx context.Context, bs []Batch) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		ts := newTxStmts(tx)
		var prev *int64
		for i, b := range bs {
			if b.AfterPrevious {
				if prev == nil || *prev == 0 {
					return fmt.Errorf("batch %d of %d follows a batch that opened no point", i+1, len(bs))
				}
				b.PointID = *prev
			}
			if err := applyTx(ctx, ts, b); err != nil {
				return err
			}
			prev = b.Next
		}
		return nil
	})
}

// txStmts prepares each statement of a transaction once, however many
// batches run it (a capture stream commits several points in one
// transaction, each with the same few statements). The transaction closes
// them when it ends.
type txStmts struct {
	tx *sql.Tx
	m  map[string]*sql.Stmt
}

func newTxStmts(tx *sql.Tx) *txStmts { return &txStmts{tx: tx, m: map[string]*sql.Stmt{}} }

func (ts *txStmts) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := ts.m[q]; ok {
		return st, nil
	}
	st, err := ts.tx.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	ts.m[q] = st
	return st, nil
}

func (ts *txStmts) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := ts.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (ts *txStmts) scan(ctx context.Context, q string, args []any, dst ...any) error {
	st, err := ts.stmt(ctx, q)
	if err != nil {
		return err
	}
	return st.QueryRowContext(ctx, args...).Scan(dst...)
}

func applyTx(ctx context.Context, ts *txStmts, b Batch) error {
	for _, p := range b.Packs {
		if _, err := ts.exec(ctx, `UPDATE packs SET state = ?, size = ? WHERE id = ?`, p.State, p.Size, p.ID); err != nil {
			return fmt.Errorf("record pack %d: %w", p.ID, err)
		}
	}
	if len(b.Chunks) > 0 {
		st, err := ts.stmt(ctx, `INSERT OR IGNORE INTO chunks(hash, pack_id, offset, clen, ulen) VALUES(?, ?, ?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("index chunks: %w", err)
		}
		for _, c := range b.Chunks {
			if _, err := st.ExecContext(ctx, c.Hash[:], c.PackID, c.Offset, c.CLen, c.ULen); err != nil {
				return fmt.Errorf("index chunk %x: %w", c.Hash, err)
			}
		}
	}
	if b.PointID == 0 {
		return nil
	}
	if len(b.Blocks) > 0 {
		look, err := ts.stmt(ctx, `SELECT id FROM chunks WHERE hash = ?`)
		if err != nil {
			return fmt.Errorf("record blocks: %w", err)
		}
		put, err := ts.stmt(ctx, `INSERT OR REPLACE INTO blocks(volume_id, blk, seq, chunk_id) VALUES(?, ?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("record blocks: %w", err)
		}
		for _, w := range b.Blocks {
			var id int64
			if !w.Zero {
				if err := look.QueryRowContext(ctx, w.Hash[:]).Scan(&id); err != nil {
					return fmt.Errorf("record block %d: chunk %x is not indexed: %w", w.Blk, w.Hash, err)
				}
			}
			if _, err := put.ExecContext(ctx, b.VolumeID, w.Blk, b.PointID, id); err != nil {
				return fmt.Errorf("record block %d: %w", w.Blk, err)
			}
		}
	}
	if b.Commit {
		var ns int64
		err := ts.scan(ctx, `UPDATE points SET state = 'committed', progress = ?,
			time_ns = MAX(?, (SELECT IFNULL(MAX(time_ns), 0) + 1 FROM points WHERE volume_id = ? AND state = 'committed')),
			kind = IIF(? = '', kind, ?), label = IIF(? = '', label, ?), stream_epoch = ?, stream_seq = ?
			WHERE id = ? AND state = 'pending' RETURNING time_ns`,
			[]any{b.Progress, b.Time.UnixNano(), b.VolumeID, b.Kind, b.Kind, b.Label, b.Label, b.StreamEpoch, b.StreamSeq, b.PointID}, &ns)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("commit point %d: it is not pending", b.PointID)
		}
		if err != nil {
			return fmt.Errorf("commit point %d: %w", b.PointID, err)
		}
		if b.Committed != nil {
			*b.Committed = time.Unix(0, ns).UTC()
		}
		if _, err := ts.exec(ctx, `UPDATE volumes SET size = (SELECT size FROM points WHERE id = ?) WHERE id = ?`, b.PointID, b.VolumeID); err != nil {
			return fmt.Errorf("commit point %d: %w", b.PointID, err)
		}
		if b.Next != nil {
			res, err := ts.exec(ctx, `INSERT INTO points(volume_id, time_ns, kind, label, size, state)
				SELECT volume_id, ?, 'crash', '', size, 'pending' FROM points WHERE id = ?`, nowNS(), b.PointID)
			if err != nil {
				return fmt.Errorf("open the point after %d: %w", b.PointID, err)
			}
			*b.Next, _ = res.LastInsertId()
		}
		return nil
	}
	if _, err := ts.exec(ctx, `UPDATE points SET progress = ? WHERE id = ?`, b.Progress, b.PointID); err != nil {
		return fmt.Errorf("record progress of point %d: %w", b.PointID, err)
	}
	return nil
}

// CreatePack registers a new, open pack and returns its id.
func (db *DB) CreatePack(ctx context.Context) (int64, error) {
	var id int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO packs(state, created_ns) VALUES('open', ?)`, nowNS())
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("register pack: %w", err)
	}
	return id, nil
}

// Chunk looks a chunk up by content hash.
func (db *DB) Chunk(ctx context.Context, hash [32]byte) (ChunkRef, error) {
	c := ChunkRef{Hash: hash}
	err := db.chunkByHash.QueryRowContext(ctx, hash[:]).Scan(&c.ID, &c.PackID, &c.Offset, &c.CLen, &c.ULen)
	if errors.Is(err, sql.ErrNoRows) {
		return ChunkRef{}, ErrNotFound
	}
	if err != nil {
		return ChunkRef{}, fmt.Errorf("look up chunk %x: %w", hash, err)
	}
	return c, nil
}

// indexedBatch is how many hashes one query of Indexed asks about.
const indexedBatch = 128

// Indexed reports, for each hash, whether the chunk index holds it: one
// query per 128 hashes instead of one per hash.
func (db *DB) Indexed(ctx context.Context, hashes [][32]byte) ([]bool, error) {
	out := make([]bool, len(hashes))
	at := make(map[[32]byte][]int, len(hashes))
	args := make([]any, 0, indexedBatch)
	for start := 0; start < len(hashes); start += indexedBatch {
		group := hashes[start:min(start+indexedBatch, len(hashes))]
		clear(at)
		args = args[:0]
		for i, h := range group {
			if _, dup := at[h]; !dup {
				args = append(args, h[:])
			}
			at[h] = append(at[h], start+i)
		}
		q := `SELECT hash FROM chunks WHERE hash IN (?` + strings.Repeat(`, ?`, len(args)-1) + `)`
		rows, err := db.r.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("look up %d chunks: %w", len(args), err)
		}
		for rows.Next() {
			var h []byte
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up chunks: %w", err)
			}
			if len(h) == 32 {
				for _, i := range at[[32]byte(h)] {
					out[i] = true
				}
			}
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return nil, fmt.Errorf("look up chunks: %w", err)
		}
		rows.Close()
	}
	return out, nil
}

const blockMapQuery = `
	WITH RECURSIVE w(blk) AS (SELECT ?1 UNION ALL SELECT blk + 1 FROM w WHERE blk + 1 < ?2),
	v(blk, chunk_id) AS MATERIALIZED (
		SELECT blk, (SELECT chunk_id FROM blocks b WHERE b.volume_id = ?3 AND b.blk = w.blk AND b.seq <= ?4
			ORDER BY b.seq DESC LIMIT 1) FROM w)
	SELECT v.blk, v.chunk_id, c.id, c.hash, c.pack_id, c.offset, c.clen, c.ulen
	FROM v LEFT JOIN chunks c ON c.id = v.chunk_id
	WHERE v.chunk_id != 0`

// BlockMap resolves blocks [first, first+len(dst)) of a volume as of point
// seq into dst: for each block, the newest version at or before seq (the
// zero chunk when there is none). Each block costs one index seek, all of
// them in one statement.
func (db *DB) BlockMap(ctx context.Context, volumeID, seq, first int64, dst []ChunkRef) error {
	clear(dst)
	if len(dst) == 0 {
		return nil
	}
	rows, err := db.blockMap.QueryContext(ctx, first, first+int64(len(dst)), volumeID, seq)
	if err != nil {
		return fmt.Errorf("resolve blocks %d–%d of volume %d at point %d: %w", first, first+int64(len(dst))-1, volumeID, seq, err)
	}
	defer rows.Close()
	for rows.Next() {
		var blk, want int64
		var id, pk, off, clen, ulen sql.NullInt64
		var h []byte
		if err := rows.Scan(&blk, &want, &id, &h, &pk, &off, &clen, &ulen); err != nil {
			return fmt.Errorf("resolve blocks of volume %d at point %d: %w", volumeID, seq, err)
		}
		if blk < first || blk >= first+int64(len(dst)) {
			return fmt.Errorf("resolve blocks of volume %d at point %d: got block %d outside %d–%d", volumeID, seq, blk, first, first+int64(len(dst))-1)
		}
		if !id.Valid || len(h) != 32 {
			return fmt.Errorf("resolve block %d of volume %d at point %d: chunk %d is missing from the index", blk, volumeID, seq, want)
		}
		c := ChunkRef{ID: id.Int64, PackID: pk.Int64, Offset: off.Int64, CLen: uint32(clen.Int64), ULen: uint32(ulen.Int64)}
		copy(c.Hash[:], h)
		dst[blk-first] = c
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("resolve blocks of volume %d at point %d: %w", volumeID, seq, err)
	}
	return nil
}
