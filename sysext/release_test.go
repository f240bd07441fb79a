package sysext

import (
	"strings"
	"testing"
)

func TestParseRelease(t *testing.T) {
	r, kv, err := ParseRelease([]byte(`# Debian
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
ID=debian
VERSION_ID="12"
SYSEXT_LEVEL='1.2'
ARCHITECTURE=x86-64

HOME_URL="https://www.debian.org/"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Release{ID: "debian", VersionID: "12", SysextLevel: "1.2", Architecture: "x86-64"}
	if r != want {
		t.Errorf("got %+v, want %+v", r, want)
	}
	if kv["PRETTY_NAME"] != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("PRETTY_NAME %q", kv["PRETTY_NAME"])
	}
	if _, _, err := ParseRelease([]byte("ID=debian\nnot a line\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a line without = gave %v, want an error naming line 2", err)
	}
	// File and ParseRelease round-trip, values with spaces quoted.
	in := Release{ID: "debian", VersionID: "12", Scope: "system portable"}
	back, _, err := ParseRelease(in.File())
	if err != nil || back != in {
		t.Errorf("round trip of %q: %+v, %v", in.File(), back, err)
	}
}

// The cases systemd-sysext (252 to 257) decides, in its own terms.
func TestMatch(t *testing.T) {
	deb12 := Release{ID: "debian", VersionID: "12"}
	for _, c := range []struct {
		name      string
		ext, host Release
		arch      string
		why       string // "" for a match, else part of the reason
	}{
		{"same ID and VERSION_ID", Release{ID: "debian", VersionID: "12"}, deb12, SystemdArch, ""},
		{"another VERSION_ID", Release{ID: "debian", VersionID: "13"}, deb12, SystemdArch, "VERSION_ID=13, this image is VERSION_ID=12"},
		{"another ID", Release{ID: "fedora", VersionID: "12"}, deb12, SystemdArch, "ID=fedora, this image is ID=debian"},
		{"no ID", Release{VersionID: "12"}, deb12, SystemdArch, "no ID"},
		{"_any matches every OS", Release{ID: "_any"}, Release{ID: "fedora", VersionID: "40"}, SystemdArch, ""},
		{"_any still checks the architecture", Release{ID: "_any", Architecture: "arm64"}, deb12, SystemdArch, "ARCHITECTURE=arm64"},
		{"architecture", Release{ID: "debian", VersionID: "12", Architecture: "arm64"}, deb12, SystemdArch, "ARCHITECTURE=arm64, this node is x86-64"},
		{"architecture _any", Release{ID: "debian", VersionID: "12", Architecture: "_any"}, deb12, SystemdArch, ""},
		{"architecture x86-64", Release{ID: "debian", VersionID: "12", Architecture: "x86-64"}, deb12, SystemdArch, ""},
		{"no version info on the extension", Release{ID: "debian"}, deb12, SystemdArch, "neither SYSEXT_LEVEL nor VERSION_ID"},
		{"rolling host: ID alone", Release{ID: "arch", VersionID: "1"}, Release{ID: "arch"}, SystemdArch, ""},
		{"levels equal, versions differ", Release{ID: "flatcar", SysextLevel: "1.0", VersionID: "1"}, Release{ID: "flatcar", SysextLevel: "1.0", VersionID: "2"}, SystemdArch, ""},
		{"levels differ", Release{ID: "flatcar", SysextLevel: "1.0"}, Release{ID: "flatcar", SysextLevel: "2.0", VersionID: "2"}, SystemdArch, "SYSEXT_LEVEL=1.0, this image has SYSEXT_LEVEL=2.0"},
		{"host level, extension version", Release{ID: "flatcar", VersionID: "2"}, Release{ID: "flatcar", SysextLevel: "2.0", VersionID: "2"}, SystemdArch, ""},
		{"extension level, host without", Release{ID: "debian", SysextLevel: "1", VersionID: "12"}, deb12, SystemdArch, ""},
		{"extension level only, host version only", Release{ID: "debian", SysextLevel: "1"}, deb12, SystemdArch, "neither SYSEXT_LEVEL nor VERSION_ID"},
		{"host level only, extension without", Release{ID: "flatcar", VersionID: "2"}, Release{ID: "flatcar", SysextLevel: "2.0"}, SystemdArch, "no SYSEXT_LEVEL"},
		{"scope system", Release{ID: "debian", VersionID: "12", Scope: "initrd system"}, deb12, SystemdArch, ""},
		{"scope initrd only", Release{ID: "debian", VersionID: "12", Scope: "initrd"}, deb12, SystemdArch, "SYSEXT_SCOPE"},
	} {
		err := Match(c.ext, c.host, c.arch)
		switch {
		case c.why == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.why != "" && err == nil:
			t.Errorf("%s: matched, want refused (%s)", c.name, c.why)
		case c.why != "" && !strings.Contains(err.Error(), c.why):
			t.Errorf("%s: %v, want it to say %q", c.name, err, c.why)
		}
	}
}

func TestForHost(t *testing.T) {
	if got := ForHost(Release{ID: "debian", VersionID: "12", Architecture: "ignored"}); got != (Release{ID: "debian", VersionID: "12", Architecture: SystemdArch}) {
		t.Errorf("debian: %+v", got)
	}
	got := ForHost(Release{ID: "flatcar", VersionID: "4000", SysextLevel: "1.0"})
	if got != (Release{ID: "flatcar", SysextLevel: "1.0", Architecture: SystemdArch}) {
		t.Errorf("a host with SYSEXT_LEVEL: %+v, want the level and no VERSION_ID", got)
	}
	if Match(got, Release{ID: "flatcar", VersionID: "4001", SysextLevel: "1.0"}, SystemdArch) != nil {
		t.Error("an extension for a level does not match the next version of that level")
	}
}

func TestCheckPath(t *testing.T) {
	for p, ok := range map[string]bool{
		"usr": true, "usr/bin/tool": true, "./usr/lib/x": true, "/opt/gpu/lib": true, "opt": true, "": true, ".": true,
		"etc/tool.conf": false, "var/lib/x": false, "usrx/y": false, "../usr/x": true, "lib/modules/x.ko": false,
	} {
		err := CheckPath(p)
		if (err == nil) != ok {
			t.Errorf("CheckPath(%q) = %v, want ok=%v", p, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "only /usr and /opt") {
			t.Errorf("CheckPath(%q): %v does not say what is allowed", p, err)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	c := Config{Name: "tools", Version: "1.0", Release: Release{ID: "debian", VersionID: "12"}, Architecture: "amd64", OS: "linux"}
	c.Image.Algorithm, c.Image.RootHash = "sha256", strings.Repeat("a", 64)
	c.Image.DataBlockSize, c.Image.HashBlockSize = 4096, 4096
	c.Image.DataSize, c.Image.HashOffset = 8192, 8192
	c.Image.Size = c.Image.MinSize()
	if p := c.Check(); len(p) != 0 {
		t.Fatalf("a good config: %v", p)
	}
	for field, edit := range map[string]func(*Config){
		"config.name":              func(c *Config) { c.Name = "../x" },
		"config.version":           func(c *Config) { c.Version = "1 0" },
		"config.release.id":        func(c *Config) { c.Release.ID = "" },
		"config.release.versionID": func(c *Config) { c.Release.VersionID = `12"; rm` },
		"config.release.scope":     func(c *Config) { c.Release.Scope = "everything" },
		"config.os":                func(c *Config) { c.OS = "windows" },
		"config.source":            func(c *Config) { c.Source = "latest" },
		"config.image.rootHash":    func(c *Config) { c.Image.RootHash = "abc" },
	} {
		b := c
		edit(&b)
		p := b.Check()
		if len(p) == 0 || !strings.HasPrefix(p[0], field+":") {
			t.Errorf("%s: problems %v, want one naming it", field, p)
		}
	}
}
