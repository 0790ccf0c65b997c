package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Point kinds.
const (
	KindScan     = "scan"
	KindFlush    = "flush"
	KindBookmark = "bookmark"
)

// Point is one moment of a volume that can be restored.
type Point struct {
	ID        int64     `json:"id"`
	VolumeID  int64     `json:"-"`
	Machine   string    `json:"machine"`
	Volume    string    `json:"volume"`
	Time      time.Time `json:"-"`
	Kind      string    `json:"kind"`
	Label     string    `json:"label"`
	Size      int64     `json:"size"`
	BlockSize int64     `json:"block_size"`
	// VolumeKind is the volume's kind (VolumeBlock or VolumeDir).
	VolumeKind string `json:"volume_kind"`
	State      string `json:"-"`
	Progress   int64  `json:"-"`
}

const pointCols = `p.id, p.volume_id, m.name, v.name, p.time_ns, p.kind, p.label, p.size, v.block_size, v.kind, p.state, p.progress
	FROM points p JOIN volumes v ON v.id = p.volume_id JOIN machines m ON m.id = v.machine_id`

func scanPoint(s interface{ Scan(...any) error }) (Point, error) {
	var p Point
	var ns int64
	err := s.Scan(&p.ID, &p.VolumeID, &p.Machine, &p.Volume, &ns, &p.Kind, &p.Label, &p.Size, &p.BlockSize, &p.VolumeKind, &p.State, &p.Progress)
	p.Time = time.Unix(0, ns).UTC()
	return p, err
}

func (db *DB) queryPoints(ctx context.Context, where string, args ...any) ([]Point, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+pointCols+` WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("list points: %w", err)
	}
	defer rows.Close()
	var out []Point
	for rows.Next() {
		p, err := scanPoint(rows)
		if err != nil {
			return nil, fmt.Errorf("list points: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

func (db *DB) onePoint(ctx context.Context, what string, where string, args ...any) (Point, error) {
	p, err := scanPoint(db.r.QueryRowContext(ctx, `SELECT `+pointCols+` WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return Point{}, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return Point{}, fmt.Errorf("%s: %w", what, err)
	}
	return p, nil
}

// Points lists committed points, oldest first; empty machine or volume
// names match all.
func (db *DB) Points(ctx context.Context, machine, volume string) ([]Point, error) {
	return db.queryPoints(ctx, `p.state = 'committed' AND (? = '' OR m.name = ?) AND (? = '' OR v.name = ?) ORDER BY m.name, v.name, p.time_ns, p.id`,
		machine, machine, volume, volume)
}

// Point returns a committed point by id.
func (db *DB) Point(ctx context.Context, id int64) (Point, error) {
	return db.onePoint(ctx, fmt.Sprintf("point %d", id), `p.id = ? AND p.state = 'committed'`, id)
}

// PointAt returns the newest committed point of the volume at or before t.
func (db *DB) PointAt(ctx context.Context, volumeID int64, t time.Time) (Point, error) {
	return db.onePoint(ctx, fmt.Sprintf("point at or before %s", t.UTC().Format(time.RFC3339Nano)),
		`p.volume_id = ? AND p.state = 'committed' AND p.time_ns <= ? ORDER BY p.time_ns DESC, p.id DESC LIMIT 1`, volumeID, t.UnixNano())
}

// LatestPoint returns the newest committed point of the volume.
func (db *DB) LatestPoint(ctx context.Context, volumeID int64) (Point, error) {
	return db.onePoint(ctx, "latest point", `p.volume_id = ? AND p.state = 'committed' ORDER BY p.time_ns DESC, p.id DESC LIMIT 1`, volumeID)
}

// BeginPoint returns the volume's pending point when one exists for a
// source of the same size (an interrupted backup, to be resumed), or
// creates a new pending point. A pending point of another size is
// discarded with its block rows first. Block rows written for a pending
// point are invisible to every committed point, since committed points of
// the volume all have smaller ids.
func (db *DB) BeginPoint(ctx context.Context, volumeID, size int64, kind, label string) (p Point, resumed bool, err error) {
	prev, err := db.onePoint(ctx, "pending point", `p.volume_id = ? AND p.state = 'pending' ORDER BY p.id DESC LIMIT 1`, volumeID)
	switch {
	case err == nil && prev.Size == size:
		return prev, true, nil
	case err == nil:
		if err := db.DiscardPoint(ctx, prev.ID); err != nil {
			return Point{}, false, err
		}
	case !errors.Is(err, ErrNotFound):
		return Point{}, false, err
	}
	var id int64
	err = db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO points(volume_id, time_ns, kind, label, size, state) VALUES(?, ?, ?, ?, ?, 'pending')`,
			volumeID, nowNS(), kind, label, size)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return Point{}, false, fmt.Errorf("begin point: %w", err)
	}
	p, err = db.onePoint(ctx, "new point", `p.id = ?`, id)
	return p, false, err
}

// DiscardPoint deletes a pending point and the block rows written for it.
func (db *DB) DiscardPoint(ctx context.Context, id int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var vol int64
		if err := tx.QueryRowContext(ctx, `SELECT volume_id FROM points WHERE id = ? AND state = 'pending'`, id).Scan(&vol); err != nil {
			return fmt.Errorf("discard point %d: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM blocks WHERE volume_id = ? AND seq = ?`, vol, id); err != nil {
			return fmt.Errorf("discard point %d: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM points WHERE id = ?`, id); err != nil {
			return fmt.Errorf("discard point %d: %w", id, err)
		}
		return nil
	})
}

// StreamPosition returns the spool identity and the last journal record
// included in the volume's newest committed point (empty and 0 when the
// volume has none, or its newest point was not continuous capture).
func (db *DB) StreamPosition(ctx context.Context, volumeID int64) (string, uint64, error) {
	var epoch string
	var seq uint64
	err := db.r.QueryRowContext(ctx, `SELECT stream_epoch, stream_seq FROM points WHERE volume_id = ? AND state = 'committed' ORDER BY id DESC LIMIT 1`, volumeID).Scan(&epoch, &seq)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("stream position of volume %d: %w", volumeID, err)
	}
	return epoch, seq, nil
}

// PendingPoint returns a pending point by id.
func (db *DB) PendingPoint(ctx context.Context, id int64) (Point, error) {
	return db.onePoint(ctx, fmt.Sprintf("pending point %d", id), `p.id = ? AND p.state = 'pending'`, id)
}

// PointsAfter lists the volume's committed points with an id above
// afterID, oldest first: what a reader that already knows the points up to
// afterID has not seen (a volume's points commit in id order).
func (db *DB) PointsAfter(ctx context.Context, volumeID, afterID int64) ([]Point, error) {
	return db.queryPoints(ctx, `p.volume_id = ? AND p.state = 'committed' AND p.id > ? ORDER BY p.time_ns, p.id`, volumeID, afterID)
}
