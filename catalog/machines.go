package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Machine is a protected server.
type Machine struct {
	ID      int64     `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Volumes int       `json:"volumes"`
	Points  int       `json:"points"`
}

// AddMachine registers a machine whose token hashes to tokenHash.
func (db *DB) AddMachine(ctx context.Context, name string, tokenHash []byte) (Machine, error) {
	now := nowNS()
	res, err := db.w.ExecContext(ctx, `INSERT INTO machines(name, token_hash, created_ns) VALUES(?, ?, ?)`, name, tokenHash, now)
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return Machine{}, fmt.Errorf("machine %q: %w", name, ErrExists)
		}
		return Machine{}, fmt.Errorf("add machine %q: %w", name, err)
	}
	id, _ := res.LastInsertId()
	return Machine{ID: id, Name: name, Created: time.Unix(0, now).UTC()}, nil
}

// Machines lists every machine with its volume and point counts.
func (db *DB) Machines(ctx context.Context) ([]Machine, error) {
	rows, err := db.r.QueryContext(ctx, `
		SELECT m.id, m.name, m.created_ns,
			(SELECT COUNT(*) FROM volumes v WHERE v.machine_id = m.id),
			(SELECT COUNT(*) FROM points p JOIN volumes v ON v.id = p.volume_id WHERE v.machine_id = m.id AND p.state = 'committed')
		FROM machines m ORDER BY m.name`)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	defer rows.Close()
	var out []Machine
	for rows.Next() {
		var m Machine
		var ns int64
		if err := rows.Scan(&m.ID, &m.Name, &ns, &m.Volumes, &m.Points); err != nil {
			return nil, fmt.Errorf("list machines: %w", err)
		}
		m.Created = time.Unix(0, ns).UTC()
		out = append(out, m)
	}
	return out, rows.Err()
}

// MachineByToken finds the machine a token hash belongs to.
func (db *DB) MachineByToken(ctx context.Context, tokenHash []byte) (Machine, error) {
	var m Machine
	var ns int64
	err := db.r.QueryRowContext(ctx, `SELECT id, name, created_ns FROM machines WHERE token_hash = ?`, tokenHash).Scan(&m.ID, &m.Name, &ns)
	if errors.Is(err, sql.ErrNoRows) {
		return Machine{}, ErrNotFound
	}
	if err != nil {
		return Machine{}, fmt.Errorf("look up token: %w", err)
	}
	m.Created = time.Unix(0, ns).UTC()
	return m, nil
}

// MachineNames lists the machines' names, sorted, without counting their
// volumes and points.
func (db *DB) MachineNames(ctx context.Context) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT name FROM machines ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("list machines: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}
