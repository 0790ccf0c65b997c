package catalog

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestMigrate1to2 opens a catalog made with schema version 1 (volumes had
// no kind): it is migrated, its volumes are block volumes, and dir volumes
// can be added beside them.
func TestMigrate1to2(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "catalog.db")
	old, err := sql.Open(driverName, dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	const v1 = `
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE machines(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash BLOB NOT NULL UNIQUE, created_ns INTEGER NOT NULL);
CREATE TABLE volumes(id INTEGER PRIMARY KEY, machine_id INTEGER NOT NULL REFERENCES machines(id), name TEXT NOT NULL,
	size INTEGER NOT NULL, block_size INTEGER NOT NULL, created_ns INTEGER NOT NULL, UNIQUE(machine_id, name));
INSERT INTO meta VALUES('schema', '1');
INSERT INTO machines VALUES(1, 'm', x'01', 0);
INSERT INTO volumes VALUES(1, 1, 'old', 4096, 4096, 0);`
	if _, err := old.ExecContext(ctx, v1); err != nil {
		t.Fatal(err)
	}
	old.Close()

	db, err := Open(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := db.Volume(ctx, "m", "old")
	if err != nil {
		t.Fatal(err)
	}
	if v.Kind != VolumeBlock {
		t.Fatalf("migrated volume has kind %q, want %q", v.Kind, VolumeBlock)
	}
	d, err := db.EnsureVolumeKind(ctx, 1, "data", VolumeDir, 1<<62, 65536)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != VolumeDir || d.Size != 1<<62 {
		t.Fatalf("dir volume: %+v", d)
	}
	// EnsureVolume of an existing dir volume keeps its kind.
	again, err := db.EnsureVolume(ctx, 1, "data", 4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if again.Kind != VolumeDir {
		t.Fatalf("dir volume became %q", again.Kind)
	}
	var ver string
	if err := db.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key='schema'`).Scan(&ver); err != nil || ver != schemaVersion {
		t.Fatalf("schema version %q (%v), want %s", ver, err, schemaVersion)
	}
	db.Close()
	// Opening again is a no-op.
	db2, err := Open(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	db2.Close()
}
