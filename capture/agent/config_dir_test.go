package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigDirVolume(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "agent.toml")
		if err := os.WriteFile(p, []byte("machine = \"m\"\ntoken = \"rwd_x\"\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig(write("[[volume]]\nname = \"app\"\ndir = \"/srv/app.real\"\nmount = \"/srv/app\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if v := c.Volumes[0]; v.Source() != "/srv/app.real" || v.Mount != "/srv/app" || v.Interval() != 0 {
		t.Errorf("dir volume: %+v", v)
	}
	for body, want := range map[string]string{
		"[[volume]]\nname = \"app\"\ndir = \"/srv/a\"\n":                                          "needs mount",
		"[[volume]]\nname = \"app\"\ndir = \"/srv/a\"\nimage = \"/x.img\"\nmount = \"/m\"\n":      "exactly one of",
		"[[volume]]\nname = \"app\"\ndir = \"/srv/a\"\nmount = \"/m\"\nscan_interval = \"30s\"\n": "no scan_interval",
	} {
		if _, err := LoadConfig(write(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", body, err, want)
		}
	}
}
