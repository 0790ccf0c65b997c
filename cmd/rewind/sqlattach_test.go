package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

func TestSQLAttachPrintInPlace(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	code, out, errs := runSQL(t, "sql", "attach", f, "--name", "pubs_old", "--server-path", `E:\Data\pubs's.mdf`, "--print")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := `CREATE DATABASE [pubs_old] ON (FILENAME = N'E:\Data\pubs''s.mdf') FOR ATTACH_REBUILD_LOG;`
	if strings.TrimSpace(out) != want {
		t.Errorf("got %s\nwant %s", out, want)
	}
	code, out, _ = runSQL(t, "sql", "attach", f, "--name", "p", "--log", "/data/p_log.ldf", "--print")
	abs, _ := filepath.Abs(f)
	if code != 0 || strings.TrimSpace(out) != "CREATE DATABASE [p] ON (FILENAME = N'"+abs+"') LOG ON (FILENAME = N'/data/p_log.ldf') FOR ATTACH;" {
		t.Errorf("exit %d: %s", code, out)
	}
}

func TestSQLAttachCopyTo(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2005_611_pubs_orig2000.mdf")
	dir := t.TempDir()
	code, out, errs := runSQL(t, "sql", "attach", f, "--name", "pubs2000", "--copy-to", dir, "--server-dir", `D:\Restore\`, "--print")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if want := `CREATE DATABASE [pubs2000] ON (FILENAME = N'D:\Restore\pubs2000.mdf') FOR ATTACH_REBUILD_LOG;`; strings.TrimSpace(out) != want {
		t.Errorf("got %s\nwant %s", out, want)
	}
	orig, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := os.ReadFile(filepath.Join(dir, "pubs2000.mdf"))
	if err != nil || !bytes.Equal(orig, cp) {
		t.Fatalf("copy differs from the original (%v)", err)
	}
	// A second copy onto the same name is refused without --force.
	if code, _, errs := runSQL(t, "sql", "attach", f, "--name", "pubs2000", "--copy-to", dir, "--print"); code != 1 || !strings.Contains(errs, "exists") {
		t.Errorf("overwrite: exit %d, %s", code, errs)
	}
	if code, _, errs := runSQL(t, "sql", "attach", f, "--name", "pubs2000", "--copy-to", dir, "--print", "--force"); code != 0 {
		t.Errorf("--force: exit %d, %s", code, errs)
	}
}

func TestSQLAttachUsage(t *testing.T) {
	f := testenv.Fixture(t, "mdf/sql2008_655_pubs_itsligo.mdf")
	for _, a := range [][]string{
		{"sql", "attach", f, "--to", "sqlserver://h"},                                                      // no --name
		{"sql", "attach", f, "--name", "x"},                                                                // no --to, no --print
		{"sql", "attach", "--machine", "m", "--volume", "v", "--path", "/a.mdf", "--name", "x", "--print"}, // no --copy-to
		{"sql", "attach", f, "--name", "x", "--server-dir", `D:\`, "--print"},                              // --server-dir without --copy-to
	} {
		if code, _, errs := runSQL(t, a...); code != 2 {
			t.Errorf("%q: exit %d (%s), want 2", a, code, errs)
		}
	}
	if code, _, errs := runSQL(t, "sql", "attach", filepath.Join(t.TempDir(), "none.mdf"), "--name", "x", "--print"); code != 1 || !strings.Contains(errs, "none.mdf") {
		t.Errorf("missing file: exit %d, %s", code, errs)
	}
}
