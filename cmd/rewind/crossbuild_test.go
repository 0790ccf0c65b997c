package main

import (
	"bytes"
	"debug/pe"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/rewind-cdp/rewind/test/testenv"
)

// TestWindowsCrossBuild builds this command for Windows without cgo, as a
// Windows release is built: the catalog must fall back to the pure-Go
// SQLite driver and the mount must use cgofuse's cgo-free WinFsp binding.
// The result must be an amd64 PE executable. (Nothing here can run it.)
func TestWindowsCrossBuild(t *testing.T) {
	testenv.NeedTool(t, "go")
	out := filepath.Join(t.TempDir(), "rewind.exe")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/rewind")
	cmd.Dir = testenv.ModuleRoot()
	cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=windows CGO_ENABLED=0 go build ./cmd/rewind: %v\n%s", err, b)
	}
	f, err := pe.Open(out)
	if err != nil {
		t.Fatalf("%s is not a PE executable: %v", out, err)
	}
	defer f.Close()
	if f.Machine != pe.IMAGE_FILE_MACHINE_AMD64 {
		t.Errorf("PE machine %#x, want amd64", f.Machine)
	}
	// A cgo-free build imports no C runtime DLL besides what Go itself uses.
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range libs {
		if bytes.Contains(bytes.ToLower([]byte(l)), []byte("msvcrt")) || bytes.Contains(bytes.ToLower([]byte(l)), []byte("winfsp")) {
			t.Errorf("the Windows build links %s at load time; WinFsp must be loaded at run time and no C runtime is wanted", l)
		}
	}
	t.Logf("imports %v", libs)
}
