package catalog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Replication tables, created on first use (like the retention and tape
// tables), so catalogs without replication keep their schema version:
//
//   - peers: source servers allowed to replicate into this repository,
//     each with the hash of its replication token;
//   - replica_machines: which machines of this repository are replicas,
//     and of which peer (a machine without a row is protected locally);
//   - replication: on a source, per target and volume, the newest point
//     the target acknowledged, and the bytes sent to it.
const replSchema = `CREATE TABLE IF NOT EXISTS peers(
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	token_hash BLOB NOT NULL UNIQUE,
	created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS replica_machines(
	machine_id INTEGER PRIMARY KEY,
	peer_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS replication(
	target TEXT NOT NULL,
	volume_id INTEGER NOT NULL,
	point_id INTEGER NOT NULL,
	time_ns INTEGER NOT NULL,
	bytes_sent INTEGER NOT NULL DEFAULT 0,
	updated_ns INTEGER NOT NULL,
	PRIMARY KEY(target, volume_id));`

// ErrMachineClash is returned when a peer replicates a machine whose name
// is taken by a local machine or by another peer's replica.
var ErrMachineClash = errors.New("machine name taken")

// Peer is a source server allowed to replicate into this repository.
type Peer struct {
	ID       int64     `json:"id"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	Machines []string  `json:"machines"`
}

func (db *DB) hasTable(ctx context.Context, name string) (bool, error) {
	var n int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n); err != nil {
		return false, fmt.Errorf("look up table %s: %w", name, err)
	}
	return n > 0, nil
}

// ensureRepl creates the replication tables when missing.
func (db *DB) ensureRepl(ctx context.Context) error {
	ok, err := db.hasTable(ctx, "replication")
	if err != nil || ok {
		return err
	}
	if _, err := db.w.ExecContext(ctx, replSchema); err != nil {
		return fmt.Errorf("create replication tables: %w", err)
	}
	return nil
}

// AddPeer registers a peer whose replication token hashes to tokenHash.
func (db *DB) AddPeer(ctx context.Context, name string, tokenHash []byte) (Peer, error) {
	if err := db.ensureRepl(ctx); err != nil {
		return Peer{}, err
	}
	now := nowNS()
	res, err := db.w.ExecContext(ctx, `INSERT INTO peers(name, token_hash, created_ns) VALUES(?, ?, ?)`, name, tokenHash, now)
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return Peer{}, fmt.Errorf("peer %q: %w", name, ErrExists)
		}
		return Peer{}, fmt.Errorf("add peer %q: %w", name, err)
	}
	id, _ := res.LastInsertId()
	return Peer{ID: id, Name: name, Created: time.Unix(0, now).UTC()}, nil
}

// Peers lists the registered peers with the machines each replicates here.
func (db *DB) Peers(ctx context.Context) ([]Peer, error) {
	if ok, err := db.hasTable(ctx, "peers"); err != nil || !ok {
		return nil, err
	}
	rows, err := db.r.QueryContext(ctx, `SELECT p.id, p.name, p.created_ns, IFNULL((SELECT GROUP_CONCAT(m.name, ',') FROM replica_machines r
		JOIN machines m ON m.id = r.machine_id WHERE r.peer_id = p.id), '') FROM peers p ORDER BY p.name`)
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	defer rows.Close()
	var out []Peer
	for rows.Next() {
		var p Peer
		var ns int64
		var ms string
		if err := rows.Scan(&p.ID, &p.Name, &ns, &ms); err != nil {
			return nil, fmt.Errorf("list peers: %w", err)
		}
		p.Created = time.Unix(0, ns).UTC()
		p.Machines = []string{}
		if ms != "" {
			p.Machines = strings.Split(ms, ",")
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PeerByToken finds the peer a replication token hash belongs to.
func (db *DB) PeerByToken(ctx context.Context, tokenHash []byte) (Peer, error) {
	if ok, err := db.hasTable(ctx, "peers"); err != nil {
		return Peer{}, err
	} else if !ok {
		return Peer{}, ErrNotFound
	}
	var p Peer
	var ns int64
	err := db.r.QueryRowContext(ctx, `SELECT id, name, created_ns FROM peers WHERE token_hash = ?`, tokenHash).Scan(&p.ID, &p.Name, &ns)
	if errors.Is(err, sql.ErrNoRows) {
		return Peer{}, ErrNotFound
	}
	if err != nil {
		return Peer{}, fmt.Errorf("look up token: %w", err)
	}
	p.Created = time.Unix(0, ns).UTC()
	return p, nil
}

// MachineOwner returns the name of the peer whose replica machine is, or
// "" for a machine protected locally.
func (db *DB) MachineOwner(ctx context.Context, machineID int64) (string, error) {
	if ok, err := db.hasTable(ctx, "replica_machines"); err != nil || !ok {
		return "", err
	}
	var name string
	err := db.r.QueryRowContext(ctx, `SELECT p.name FROM replica_machines r JOIN peers p ON p.id = r.peer_id WHERE r.machine_id = ?`, machineID).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("owner of machine %d: %w", machineID, err)
	}
	return name, nil
}

// ReplicaMachine returns the machine a peer replicates under name,
// registering it for the peer when no machine has that name. A name taken
// by a local machine or another peer's replica is ErrMachineClash: the two
// are never mixed. A replica machine gets a random token nobody holds, so
// no agent can write it.
func (db *DB) ReplicaMachine(ctx context.Context, peer Peer, name string) (Machine, error) {
	if err := db.ensureRepl(ctx); err != nil {
		return Machine{}, err
	}
	// Known already (every point after the first): no write transaction.
	var id, ns int64
	var owner sql.NullInt64
	err := db.r.QueryRowContext(ctx, `SELECT m.id, m.created_ns, r.peer_id FROM machines m
		LEFT JOIN replica_machines r ON r.machine_id = m.id WHERE m.name = ?`, name).Scan(&id, &ns, &owner)
	if err == nil && owner.Valid && owner.Int64 == peer.ID {
		return Machine{ID: id, Name: name, Created: time.Unix(0, ns).UTC()}, nil
	}
	var m Machine
	err = db.tx(ctx, func(tx *sql.Tx) error {
		var id, ns int64
		var owner sql.NullInt64
		var ownerName sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT m.id, m.created_ns, r.peer_id, p.name FROM machines m
			LEFT JOIN replica_machines r ON r.machine_id = m.id LEFT JOIN peers p ON p.id = r.peer_id WHERE m.name = ?`, name).Scan(&id, &ns, &owner, &ownerName)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			tok := make([]byte, 32)
			rand.Read(tok)
			ns = nowNS()
			res, err := tx.ExecContext(ctx, `INSERT INTO machines(name, token_hash, created_ns) VALUES(?, ?, ?)`, name, tok, ns)
			if err != nil {
				return fmt.Errorf("add replica machine %q: %w", name, err)
			}
			id, _ = res.LastInsertId()
			if _, err := tx.ExecContext(ctx, `INSERT INTO replica_machines(machine_id, peer_id) VALUES(?, ?)`, id, peer.ID); err != nil {
				return fmt.Errorf("add replica machine %q: %w", name, err)
			}
		case err != nil:
			return fmt.Errorf("look up machine %q: %w", name, err)
		case !owner.Valid:
			return fmt.Errorf("machine %q is protected locally on this server: %w", name, ErrMachineClash)
		case owner.Int64 != peer.ID:
			return fmt.Errorf("machine %q is replicated here from peer %q: %w", name, ownerName.String, ErrMachineClash)
		}
		m = Machine{ID: id, Name: name, Created: time.Unix(0, ns).UTC()}
		return nil
	})
	return m, err
}

// NewestPointTime returns the time of the volume's newest committed point,
// or the zero time when it has none.
func (db *DB) NewestPointTime(ctx context.Context, volumeID int64) (time.Time, error) {
	var ns sql.NullInt64
	if err := db.r.QueryRowContext(ctx, `SELECT MAX(time_ns) FROM points WHERE volume_id = ? AND state = 'committed'`, volumeID).Scan(&ns); err != nil {
		return time.Time{}, fmt.Errorf("newest point of volume %d: %w", volumeID, err)
	}
	if !ns.Valid {
		return time.Time{}, nil
	}
	return time.Unix(0, ns.Int64).UTC(), nil
}

// PointAtExactly returns the volume's committed point of exactly time t.
func (db *DB) PointAtExactly(ctx context.Context, volumeID int64, t time.Time) (Point, error) {
	return db.onePoint(ctx, fmt.Sprintf("point at %s", t.UTC().Format(time.RFC3339Nano)),
		`p.volume_id = ? AND p.state = 'committed' AND p.time_ns = ? ORDER BY p.id LIMIT 1`, volumeID, t.UnixNano())
}

// BeginReplicaPoint opens the pending point that will receive a replicated
// point of time t, kind and label. The volume's pending point is resumed
// when it was opened for the same time and size (an interrupted
// replication); any other pending point is discarded. have reports that
// the volume already holds a committed point at or after t: the point
// must not be created again (p is then zero).
func (db *DB) BeginReplicaPoint(ctx context.Context, volumeID, size int64, t time.Time, kind, label string) (p Point, resumed, have bool, err error) {
	newest, err := db.NewestPointTime(ctx, volumeID)
	if err != nil {
		return Point{}, false, false, err
	}
	if !newest.IsZero() && !newest.Before(t) {
		return Point{}, false, true, nil
	}
	prev, err := db.onePoint(ctx, "pending point", `p.volume_id = ? AND p.state = 'pending' ORDER BY p.id DESC LIMIT 1`, volumeID)
	switch {
	case err == nil && prev.Size == size && prev.Time.Equal(t):
		return prev, true, false, nil
	case err == nil:
		if err := db.DiscardPoint(ctx, prev.ID); err != nil {
			return Point{}, false, false, err
		}
	case !errors.Is(err, ErrNotFound):
		return Point{}, false, false, err
	}
	var id int64
	err = db.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO points(volume_id, time_ns, kind, label, size, state) VALUES(?, ?, ?, ?, ?, 'pending')`,
			volumeID, t.UnixNano(), kind, label, size)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return Point{}, false, false, fmt.Errorf("begin replica point: %w", err)
	}
	p, err = db.onePoint(ctx, "new point", `p.id = ?`, id)
	return p, false, false, err
}

// ChangedBlock is a block whose version changed between two points, with
// the version it has at the later one (ID 0: zeros).
type ChangedBlock struct {
	Blk   int64
	Chunk ChunkRef
}

// ChangedBlocks lists, in block order from block from on, at most limit
// blocks of the volume whose newest version at point seq was written after
// point afterSeq, each with that version: what turns the volume at
// afterSeq into the volume at seq (afterSeq 0: every block ever written).
// It reads the volume's block rows from block from on, so paging through
// a delta costs one pass over the volume's rows.
func (db *DB) ChangedBlocks(ctx context.Context, volumeID, afterSeq, seq, from int64, limit int) ([]ChangedBlock, error) {
	rows, err := db.r.QueryContext(ctx, `
		SELECT b.blk, b.chunk_id, c.hash, c.pack_id, c.offset, c.clen, c.ulen
		FROM blocks b LEFT JOIN chunks c ON c.id = b.chunk_id
		WHERE b.volume_id = ?1 AND b.blk >= ?2 AND b.seq > ?3 AND b.seq <= ?4
			AND b.seq = (SELECT MAX(seq) FROM blocks b2 WHERE b2.volume_id = ?1 AND b2.blk = b.blk AND b2.seq <= ?4)
		ORDER BY b.blk LIMIT ?5`, volumeID, from, afterSeq, seq, limit)
	if err != nil {
		return nil, fmt.Errorf("blocks of volume %d changed between points %d and %d: %w", volumeID, afterSeq, seq, err)
	}
	defer rows.Close()
	var out []ChangedBlock
	for rows.Next() {
		var cb ChangedBlock
		var chunk int64
		var id, pk, off, clen, ulen sql.NullInt64
		var h []byte
		if err := rows.Scan(&cb.Blk, &chunk, &h, &pk, &off, &clen, &ulen); err != nil {
			return nil, fmt.Errorf("blocks of volume %d changed between points %d and %d: %w", volumeID, afterSeq, seq, err)
		}
		if chunk != 0 {
			if len(h) != 32 {
				return nil, fmt.Errorf("block %d of volume %d at point %d: chunk %d is missing from the index", cb.Blk, volumeID, seq, chunk)
			}
			id.Int64 = chunk
			cb.Chunk = ChunkRef{ID: id.Int64, PackID: pk.Int64, Offset: off.Int64, CLen: uint32(clen.Int64), ULen: uint32(ulen.Int64)}
			copy(cb.Chunk.Hash[:], h)
		}
		out = append(out, cb)
	}
	return out, rows.Err()
}

// UnsentBytes sums the stored size of the distinct chunks the volume's
// points after point afterSeq reference in their changed blocks: an upper
// bound of what replicating them sends (the target may hold some).
func (db *DB) UnsentBytes(ctx context.Context, volumeID, afterSeq int64) (int64, error) {
	var n int64
	err := db.r.QueryRowContext(ctx, `SELECT IFNULL(SUM(c.clen), 0) FROM chunks c WHERE c.id IN
		(SELECT b.chunk_id FROM blocks b JOIN points p ON p.id = b.seq WHERE b.volume_id = ? AND b.seq > ? AND p.state = 'committed')`,
		volumeID, afterSeq).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("unsent bytes of volume %d: %w", volumeID, err)
	}
	return n, nil
}

// ReplState is what a target acknowledged of one volume.
type ReplState struct {
	Target    string
	VolumeID  int64
	PointID   int64
	Time      time.Time
	BytesSent int64
	Updated   time.Time
}

// SetReplicated records that target acknowledged the volume's point
// (pointID, t), after bytes more were sent to it.
func (db *DB) SetReplicated(ctx context.Context, target string, volumeID, pointID int64, t time.Time, bytes int64) error {
	if err := db.ensureRepl(ctx); err != nil {
		return err
	}
	_, err := db.w.ExecContext(ctx, `INSERT INTO replication(target, volume_id, point_id, time_ns, bytes_sent, updated_ns) VALUES(?, ?, ?, ?, ?, ?)
		ON CONFLICT(target, volume_id) DO UPDATE SET point_id = excluded.point_id, time_ns = excluded.time_ns,
			bytes_sent = bytes_sent + excluded.bytes_sent, updated_ns = excluded.updated_ns`,
		target, volumeID, pointID, t.UnixNano(), bytes, nowNS())
	if err != nil {
		return fmt.Errorf("record replication of volume %d to %s: %w", volumeID, target, err)
	}
	return nil
}

// Replication lists the recorded replication state, by target and volume.
func (db *DB) Replication(ctx context.Context) ([]ReplState, error) {
	if ok, err := db.hasTable(ctx, "replication"); err != nil || !ok {
		return nil, err
	}
	rows, err := db.r.QueryContext(ctx, `SELECT target, volume_id, point_id, time_ns, bytes_sent, updated_ns FROM replication ORDER BY target, volume_id`)
	if err != nil {
		return nil, fmt.Errorf("replication state: %w", err)
	}
	defer rows.Close()
	var out []ReplState
	for rows.Next() {
		var s ReplState
		var t, u int64
		if err := rows.Scan(&s.Target, &s.VolumeID, &s.PointID, &t, &s.BytesSent, &u); err != nil {
			return nil, fmt.Errorf("replication state: %w", err)
		}
		s.Time, s.Updated = time.Unix(0, t).UTC(), time.Unix(0, u).UTC()
		out = append(out, s)
	}
	return out, rows.Err()
}

// LastCommittedID returns the highest id of any committed point: it grows
// whenever a point is committed, so a follower polls it cheaply.
func (db *DB) LastCommittedID(ctx context.Context) (int64, error) {
	var id int64
	err := db.r.QueryRowContext(ctx, `SELECT id FROM points WHERE state = 'committed' ORDER BY id DESC LIMIT 1`).Scan(&id)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("newest point: %w", err)
	}
	return id, nil
}

// FirstPointsAfter lists at most n of the volume's committed points with
// an id above afterID and a time after afterNS (Unix nanoseconds), oldest
// first.
func (db *DB) FirstPointsAfter(ctx context.Context, volumeID, afterID, afterNS int64, n int) ([]Point, error) {
	return db.queryPoints(ctx, `p.volume_id = ? AND p.state = 'committed' AND p.id > ? AND p.time_ns > ? ORDER BY p.time_ns, p.id LIMIT ?`,
		volumeID, afterID, afterNS, n)
}
