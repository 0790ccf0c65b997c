package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Volume is one protected disk or partition of a machine.
type Volume struct {
	ID        int64  `json:"id"`
	MachineID int64  `json:"-"`
	Machine   string `json:"machine"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size"`
}

const volumeCols = `v.id, v.machine_id, m.name, v.name, v.size, v.block_size FROM volumes v JOIN machines m ON m.id = v.machine_id`

func scanVolume(s interface{ Scan(...any) error }) (Volume, error) {
	var v Volume
	err := s.Scan(&v.ID, &v.MachineID, &v.Machine, &v.Name, &v.Size, &v.BlockSize)
	return v, err
}

// Volume finds a volume by machine and volume name.
func (db *DB) Volume(ctx context.Context, machine, volume string) (Volume, error) {
	v, err := scanVolume(db.r.QueryRowContext(ctx, `SELECT `+volumeCols+` WHERE m.name = ? AND v.name = ?`, machine, volume))
	if errors.Is(err, sql.ErrNoRows) {
		return Volume{}, fmt.Errorf("volume %s/%s: %w", machine, volume, ErrNotFound)
	}
	if err != nil {
		return Volume{}, fmt.Errorf("look up volume %s/%s: %w", machine, volume, err)
	}
	return v, nil
}

// EnsureVolume returns the machine's volume of that name, creating it with
// the given size and block size when it does not exist yet. An existing
// volume keeps its block size.
func (db *DB) EnsureVolume(ctx context.Context, machineID int64, name string, size, blockSize int64) (Volume, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO volumes(machine_id, name, size, block_size, created_ns) VALUES(?, ?, ?, ?, ?)`,
			machineID, name, size, blockSize, nowNS())
		return err
	})
	if err != nil {
		return Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	v, err := scanVolume(db.r.QueryRowContext(ctx, `SELECT `+volumeCols+` WHERE v.machine_id = ? AND v.name = ?`, machineID, name))
	if err != nil {
		return Volume{}, fmt.Errorf("look up volume %q: %w", name, err)
	}
	return v, nil
}

// Volumes lists the volumes of a machine (of every machine when machine
// is ""), ordered by machine and name.
func (db *DB) Volumes(ctx context.Context, machine string) ([]Volume, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+volumeCols+` WHERE ? = '' OR m.name = ? ORDER BY m.name, v.name`, machine, machine)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	defer rows.Close()
	var out []Volume
	for rows.Next() {
		v, err := scanVolume(rows)
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
