package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	h "github.com/rewind-cdp/rewind/test/harness"
	"github.com/rewind-cdp/rewind/test/testenv"
)

// Every export format of a point holds exactly the restored raw volume
// (qemu-img compare), passes qemu-img check where it applies, and is
// recognised by qemu-img info; raw and the streaming formats also go to
// stdout; bad input is refused before anything is written.
func TestExportFormatsMatchRestore(t *testing.T) {
	testenv.NeedTool(t, "qemu-img")
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	s := h.StartServer(t, repo, "127.0.0.1:0")
	tok := h.AddMachine(t, repo, "web1")
	img := filepath.Join(dir, "disk.img")
	h.Image(t, img, 96<<20+4096, 7) // text, random and zero regions; not a multiple of the block size
	mustBackup(t, s, tok, "web1", "root", img)
	raw := filepath.Join(dir, "restored.img")
	if r := restore(t, repo, "web1", "root", "latest", raw); r.Code != 0 {
		t.Fatalf("restore: %s", r.Stderr)
	}

	for _, c := range []struct {
		format, qemu string
		check        bool
		extra        []string
	}{
		{"raw", "raw", false, nil},
		{"vhd", "vpc", false, nil}, // qemu-img cannot check vpc
		{"vhd-fixed", "vpc", false, nil},
		{"vhdx", "vhdx", true, nil},
		{"vmdk", "vmdk", true, nil},
		{"vmdk-stream", "vmdk", true, nil},
		{"qcow2", "qcow2", true, nil},
		{"qcow2", "qcow2", true, []string{"--compress"}},
	} {
		name := c.format + strings.Join(c.extra, "")
		out := filepath.Join(dir, "out-"+name)
		r := h.Run(t, nil, append([]string{"export", "--repo", repo, "--machine", "web1", "--volume", "root",
			"--format", c.format, "--out", out, "--json"}, c.extra...)...)
		if r.Code != 0 {
			t.Errorf("export %s: exit %d: %s", name, r.Code, r.Stderr)
			continue
		}
		var sum struct {
			Format      string `json:"format"`
			VolumeBytes int64  `json:"volume_bytes"`
			FileBytes   int64  `json:"file_bytes"`
		}
		if err := json.Unmarshal([]byte(r.Stdout), &sum); err != nil || sum.VolumeBytes != 96<<20+4096 {
			t.Errorf("export %s --json printed %q (%v)", name, r.Stdout, err)
		}
		if o, err := exec.Command("qemu-img", "compare", "-f", c.qemu, "-F", "raw", out, raw).CombinedOutput(); err != nil {
			t.Errorf("export %s: qemu-img compare with the restore: %v\n%s", name, err, o)
		}
		if o, err := exec.Command("qemu-img", "info", "-f", c.qemu, out).CombinedOutput(); err != nil {
			t.Errorf("export %s: qemu-img info: %v\n%s", name, err, o)
		}
		if c.check {
			if o, err := exec.Command("qemu-img", "check", "-f", c.qemu, out).CombinedOutput(); err != nil {
				t.Errorf("export %s: qemu-img check: %v\n%s", name, err, o)
			}
		}
		// (VHDX allocates 32 MiB blocks: none of this image's is all zero.)
		if st, err := os.Stat(out); err == nil && c.format != "raw" && c.format != "vhd-fixed" && c.format != "vhdx" && st.Size() >= 96<<20 {
			t.Errorf("export %s: %d bytes; the zero regions should take no space", name, st.Size())
		}
	}

	// Streaming formats to stdout.
	for _, f := range []struct{ format, qemu string }{{"raw", "raw"}, {"vmdk-stream", "vmdk"}} {
		out := filepath.Join(dir, "stdout-"+f.format)
		cmd := exec.Command(h.Binary(t), "export", "--repo", repo, "--machine", "web1", "--volume", "root", "--format", f.format, "--out", "-")
		fh, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout = fh
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err = cmd.Run()
		fh.Close()
		if err != nil {
			t.Errorf("export %s to stdout: %v: %s", f.format, err, stderr.String())
			continue
		}
		if o, err := exec.Command("qemu-img", "compare", "-f", f.qemu, "-F", "raw", out, raw).CombinedOutput(); err != nil {
			t.Errorf("export %s to stdout: qemu-img compare: %v\n%s", f.format, err, o)
		}
	}

	// Bad input: usage errors exit 2, failures 1; nothing is left behind.
	existing := filepath.Join(dir, "out-raw")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--format", "vdi", "--out", filepath.Join(dir, "x")}, 2, "--format"},
		{[]string{"--format", "qcow2", "--out", "-"}, 2, "seekable"},
		{[]string{"--format", "vhd", "--compress", "--out", filepath.Join(dir, "x")}, 2, "--compress"},
		{[]string{"--format", "vhd"}, 2, "--out"},
		{[]string{"--format", "vhd", "--at", "yesterday-ish", "--out", filepath.Join(dir, "x")}, 2, "yesterday-ish"},
		{[]string{"--format", "raw", "--out", existing}, 1, "--force"},
		{[]string{"--format", "raw", "--out", dir}, 1, "directory"},
	} {
		r := h.Run(t, nil, append([]string{"export", "--repo", repo, "--machine", "web1", "--volume", "root"}, c.args...)...)
		if r.Code != c.code || !strings.Contains(r.Stderr, c.want) || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 1 {
			t.Errorf("export %v: exit %d, stderr %q; want exit %d mentioning %q", c.args, r.Code, r.Stderr, c.code, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a refused export left a file behind")
	}
}
