package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// FileConfig is the agent's configuration file (TOML): one server, one
// machine, several volumes.
//
//	server     = "https://backup.example:7420"
//	ca         = "/etc/rewind/server.crt"
//	token_file = "/etc/rewind/token"      # or token = "rwd_…"
//	machine    = "web1"
//	spool_root = "/var/lib/rewind/agent"  # optional
//
//	[[volume]]
//	name  = "data"
//	image = "/srv/data.img"    # or device = "/dev/sdb"
//	mount = "/srv/data"        # optional: mount its filesystem here
//	spool_limit = 1073741824   # optional, bytes
//
//	[[volume]]
//	name = "legacy"
//	device = "/dev/sdc"
//	scan_interval = "30s"      # no shim: compare the whole volume every interval
//
//	[[volume]]
//	name  = "appdata"
//	dir   = "/var/lib/app.real"  # the directory shim: serve dir at mount
//	mount = "/var/lib/app"
type FileConfig struct {
	Server    string         `toml:"server"`
	CA        string         `toml:"ca"`
	Token     string         `toml:"token"`
	TokenFile string         `toml:"token_file"`
	Machine   string         `toml:"machine"`
	SpoolRoot string         `toml:"spool_root"`
	Volumes   []VolumeConfig `toml:"volume"`
}

// VolumeConfig is one [[volume]] of the configuration file.
type VolumeConfig struct {
	Name         string `toml:"name"`
	Image        string `toml:"image"`
	Device       string `toml:"device"`
	Dir          string `toml:"dir"`
	Mount        string `toml:"mount"`
	Spool        string `toml:"spool"`
	SpoolLimit   int64  `toml:"spool_limit"`
	BlockSize    int64  `toml:"block_size"`
	ScanInterval string `toml:"scan_interval"`
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (FileConfig, error) {
	var c FileConfig
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		return c, fmt.Errorf("config %s: unknown setting %q", path, un[0].String())
	}
	if c.Token == "" && c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return c, fmt.Errorf("config %s: token_file: %w", path, err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	switch {
	case c.Machine == "":
		return c, fmt.Errorf("config %s: machine is required", path)
	case c.Token == "":
		return c, fmt.Errorf("config %s: token or token_file is required", path)
	case len(c.Volumes) == 0:
		return c, fmt.Errorf("config %s: no [[volume]]", path)
	}
	if c.SpoolRoot == "" {
		c.SpoolRoot = filepath.Dir(DefaultSpoolDir("m", "v"))
	}
	seen := map[string]bool{}
	for i := range c.Volumes {
		v := &c.Volumes[i]
		where := fmt.Sprintf("config %s: volume %d", path, i+1)
		if v.Name == "" {
			return c, fmt.Errorf("%s: name is required", where)
		}
		if seen[v.Name] {
			return c, fmt.Errorf("%s: volume %q appears twice", where, v.Name)
		}
		seen[v.Name] = true
		n := 0
		for _, src := range []string{v.Image, v.Device, v.Dir} {
			if src != "" {
				n++
			}
		}
		if n != 1 {
			return c, fmt.Errorf("%s (%s): give exactly one of image, device or dir", where, v.Name)
		}
		if v.Dir != "" && (v.Mount == "" || v.ScanInterval != "") {
			return c, fmt.Errorf("%s (%s): a dir volume needs mount (where the directory is served) and takes no scan_interval", where, v.Name)
		}
		if v.ScanInterval != "" {
			d, err := time.ParseDuration(v.ScanInterval)
			if err != nil || d < time.Second {
				return c, fmt.Errorf("%s (%s): scan_interval %q: a duration of at least 1s, like \"30s\"", where, v.Name, v.ScanInterval)
			}
			if v.Mount != "" {
				return c, fmt.Errorf("%s (%s): mount applies to shim-protected volumes, not to scan_interval ones", where, v.Name)
			}
		}
		if v.Spool == "" {
			v.Spool = filepath.Join(c.SpoolRoot, c.Machine+"-"+v.Name)
		}
		if v.SpoolLimit == 0 {
			v.SpoolLimit = 1 << 30
		}
	}
	return c, nil
}

// Interval is the volume's scan interval, zero for shim protection.
func (v VolumeConfig) Interval() time.Duration {
	d, _ := time.ParseDuration(v.ScanInterval)
	return d
}

// Source is the image, device or directory.
func (v VolumeConfig) Source() string {
	switch {
	case v.Image != "":
		return v.Image
	case v.Dir != "":
		return v.Dir
	}
	return v.Device
}
