// Package testenv holds the helpers every test in the module shares: where
// the fixtures are, and what to do when a test needs root, /dev/fuse or a
// tool that is missing (skip with a message outside CI, fail inside CI,
// where everything must be installed).
package testenv

import (
	"compress/bzip2"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where nothing may
// skip for lack of a tool.
func InCI() bool { return os.Getenv("CI") == "true" }

// missing skips the test outside CI and fails it inside CI.
func missing(t testing.TB, what string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI must provide %s", what)
	}
	t.Skipf("skipped: needs %s", what)
}

// NeedTool makes sure every named program is on PATH.
func NeedTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing(t, "the tool "+n)
		}
	}
}

// NeedRoot makes sure the test runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "root")
	}
}

// NeedFUSE makes sure /dev/fuse is usable (and that we are root, which
// direct mounts need).
func NeedFUSE(t testing.TB) {
	t.Helper()
	NeedRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing(t, "/dev/fuse")
	}
}

// ModuleRoot returns the directory holding go.mod.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// FixturesDir returns the shared fixtures folder: $REWIND_FIXTURES, or
// ../shared/fixtures beside the module root.
func FixturesDir() string {
	if d := os.Getenv("REWIND_FIXTURES"); d != "" {
		return d
	}
	return filepath.Join(ModuleRoot(), "..", "shared", "fixtures")
}

// Fixture returns the path of a fixture file (relative to the fixtures
// folder), skipping the test with a clear message when it is absent.
// Fixtures are read in place, never copied into the repository.
func Fixture(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(FixturesDir(), rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("skipped: fixture %s not found (set REWIND_FIXTURES to the shared fixtures folder)", p)
	}
	return p
}

// FixtureBytes reads a fixture whole, decompressing .gz and .bz2 files.
func FixtureBytes(t testing.TB, rel string) []byte {
	t.Helper()
	f, err := os.Open(Fixture(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(rel, ".gz"):
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("fixture %s: %v", rel, err)
		}
		r = zr
	case strings.HasSuffix(rel, ".bz2"):
		r = bzip2.NewReader(f)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("fixture %s: %v", rel, err)
	}
	return b
}
