package catalog

import (
	"context"
	"fmt"
	"time"
)

// VolumeUsage is what a volume has cost the repository so far: its first
// committed point (the initial copy) and every change after it.
type VolumeUsage struct {
	Machine, Volume string
	Kind            string // VolumeBlock or VolumeDir
	Size            int64  // the volume's size (a directory volume's is its address space)
	Points          int
	First, Last     time.Time // times of the first and the last committed point
	// BaseLogical is the non-zero data of the first point; BaseStored what
	// its distinct chunks take in packs (after de-duplication and
	// compression).
	BaseLogical, BaseStored int64
	// ChangedLogical is the non-zero data written after the first point;
	// ChangedStored what the chunks it added (not already in the first
	// point) take in packs.
	ChangedLogical, ChangedStored int64
}

// Days is the span between the first and the last point, in days.
func (u VolumeUsage) Days() float64 { return u.Last.Sub(u.First).Hours() / 24 }

// DailyChange is the non-zero data written per day after the first point
// (0 when the volume has a single point or less than a minute of history).
func (u VolumeUsage) DailyChange() float64 {
	if u.Last.Sub(u.First) < time.Minute {
		return 0
	}
	return float64(u.ChangedLogical) / u.Days()
}

// ChangeReduction is the measured stored/logical ratio of the changes
// (de-duplication and compression), or of the first point when there are
// no changes yet.
func (u VolumeUsage) ChangeReduction() float64 {
	if u.ChangedLogical > 0 {
		return float64(u.ChangedStored) / float64(u.ChangedLogical)
	}
	if u.BaseLogical > 0 {
		return float64(u.BaseStored) / float64(u.BaseLogical)
	}
	return 1
}

// Need is the disk the volume needs to keep days of history: its initial
// copy plus days of changes at the measured rate and reduction.
func (u VolumeUsage) Need(days float64) float64 {
	return float64(u.BaseStored) + u.DailyChange()*days*u.ChangeReduction()
}

// Usage measures every volume with at least one committed point.
func (db *DB) Usage(ctx context.Context) ([]VolumeUsage, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT v.id, m.name, v.name, v.kind, v.size, COUNT(p.id), MIN(p.time_ns), MAX(p.time_ns)
		FROM volumes v JOIN machines m ON m.id = v.machine_id JOIN points p ON p.volume_id = v.id AND p.state = 'committed'
		GROUP BY v.id ORDER BY m.name, v.name`)
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	type vol struct {
		id int64
		u  VolumeUsage
	}
	var vols []vol
	for rows.Next() {
		var v vol
		var first, last int64
		if err := rows.Scan(&v.id, &v.u.Machine, &v.u.Volume, &v.u.Kind, &v.u.Size, &v.u.Points, &first, &last); err != nil {
			rows.Close()
			return nil, fmt.Errorf("usage: %w", err)
		}
		v.u.First, v.u.Last = time.Unix(0, first), time.Unix(0, last)
		vols = append(vols, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	out := make([]VolumeUsage, 0, len(vols))
	for _, v := range vols {
		var p0 int64
		q := db.r.QueryRowContext(ctx, `SELECT id FROM points WHERE volume_id = ? AND state = 'committed' ORDER BY time_ns, id LIMIT 1`, v.id)
		err := q.Scan(&p0)
		if err == nil {
			err = db.r.QueryRowContext(ctx, `SELECT IFNULL(SUM(c.ulen), 0) FROM blocks b JOIN chunks c ON c.id = b.chunk_id
				WHERE b.volume_id = ? AND b.seq = ?`, v.id, p0).Scan(&v.u.BaseLogical)
		}
		if err == nil {
			err = db.r.QueryRowContext(ctx, `SELECT IFNULL(SUM(clen), 0) FROM chunks
				WHERE id IN (SELECT chunk_id FROM blocks WHERE volume_id = ? AND seq = ?)`, v.id, p0).Scan(&v.u.BaseStored)
		}
		if err == nil {
			err = db.r.QueryRowContext(ctx, `SELECT IFNULL(SUM(c.ulen), 0) FROM blocks b JOIN chunks c ON c.id = b.chunk_id
				WHERE b.volume_id = ? AND b.seq IN (SELECT id FROM points WHERE volume_id = ? AND state = 'committed' AND id != ?)`,
				v.id, v.id, p0).Scan(&v.u.ChangedLogical)
		}
		if err == nil {
			err = db.r.QueryRowContext(ctx, `SELECT IFNULL(SUM(clen), 0) FROM chunks
				WHERE id IN (SELECT chunk_id FROM blocks WHERE volume_id = ? AND seq IN
					(SELECT id FROM points WHERE volume_id = ? AND state = 'committed' AND id != ?))
				AND id NOT IN (SELECT chunk_id FROM blocks WHERE volume_id = ? AND seq = ?)`,
				v.id, v.id, p0, v.id, p0).Scan(&v.u.ChangedStored)
		}
		if err != nil {
			return nil, fmt.Errorf("usage of %s/%s: %w", v.u.Machine, v.u.Volume, err)
		}
		out = append(out, v.u)
	}
	return out, nil
}
