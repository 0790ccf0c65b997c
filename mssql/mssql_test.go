package mssql

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestBadDSN(t *testing.T) {
	for _, dsn := range []string{"", "server=x;user id=sa", "http://host/", "sqlserver://"} {
		if _, err := Checkpoint(context.Background(), dsn); err == nil || !strings.Contains(err.Error(), "DSN") {
			t.Errorf("Checkpoint(%q): %v, want a DSN error", dsn, err)
		}
	}
}

func TestUnreachableServerNamesHostAndHidesPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Checkpoint(ctx, "sqlserver://sa:Secret123@127.0.0.1:1?database=db&dial+timeout=2")
	if err == nil {
		t.Fatal("Checkpoint against a closed port succeeded")
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error does not name the server: %v", err)
	}
	if strings.Contains(err.Error(), "Secret123") {
		t.Errorf("error shows the password: %v", err)
	}
}

// TestCheckpointLive runs against a real SQL Server when
// REWIND_TEST_MSSQL_DSN names one; no SQL Server runs on the CI machine.
func TestCheckpointLive(t *testing.T) {
	dsn := os.Getenv("REWIND_TEST_MSSQL_DSN")
	if dsn == "" {
		t.Skip("REWIND_TEST_MSSQL_DSN is not set: no SQL Server to checkpoint")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names, err := Checkpoint(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpointed %v", names)
}
