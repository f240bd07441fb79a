package sysext

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/slate-os/slate/boot/verity"
)

// Config describes one extension: the config blob of its OCI artifact,
// covered by the manifest digest that signatures sign. Marshalled as JSON in
// field order, so the same Config gives the same bytes.
type Config struct {
	// Name is the extension's name: its extension-release.NAME file and the
	// directory systemd-sysext merges it from. A node config names an
	// extension by it (or by a reference that resolves to it).
	Name string `json:"name"`
	// Version is the extension's own version label; it tags the artifact.
	Version string `json:"version"`
	// Release is the extension-release it carries: the OS images it is for.
	Release Release `json:"release"`
	// Architecture (amd64) and OS (linux), in OCI's names.
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	// Source is the digest of the OCI image it was built from; empty when
	// it was built from a directory.
	Source string `json:"source,omitempty"`
	// Image is the extension image: squashfs and dm-verity tree, whose root
	// hash is checked every time the extension is used.
	Image verity.Layout `json:"image"`
	// Created is when the extension was built (the source image's creation
	// time, for reproducibility).
	Created time.Time `json:"created"`
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$`)
	tagRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	// os-release values slate accepts in an extension-release: no quoting
	// or white space surprises between its parser and systemd's.
	fieldRE  = regexp.MustCompile(`^[A-Za-z0-9._~+-]{1,128}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// CheckName checks an extension name: letters, digits and _ . + -,
// starting with a letter or digit, at most 128 characters, not "." or "..".
func CheckName(n string) error {
	if !nameRE.MatchString(n) || strings.Contains(n, "..") {
		return fmt.Errorf("%q is not an extension name (letters, digits and _ . + -, starting with a letter or digit, at most 128)", n)
	}
	return nil
}

// Check checks every field of c; each problem names its field.
func (c Config) Check() []string {
	var p []string
	bad := func(field, format string, args ...any) {
		p = append(p, "config."+field+": "+fmt.Sprintf(format, args...))
	}
	if err := CheckName(c.Name); err != nil {
		bad("name", "%v", err)
	}
	if !tagRE.MatchString(c.Version) {
		bad("version", "%q is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}); it tags the artifact", c.Version)
	}
	if c.Release.ID == "" {
		bad("release.id", "missing (systemd-sysext merges no extension without an ID; _any matches every OS)")
	}
	for _, f := range []struct{ name, v string }{
		{"id", c.Release.ID}, {"versionID", c.Release.VersionID}, {"sysextLevel", c.Release.SysextLevel}, {"architecture", c.Release.Architecture},
	} {
		if f.v != "" && !fieldRE.MatchString(f.v) {
			bad("release."+f.name, "%q is not a plain os-release value (letters, digits and . _ ~ + -)", f.v)
		}
	}
	for _, s := range strings.Fields(c.Release.Scope) {
		if s != "system" && s != "initrd" && s != "portable" {
			bad("release.scope", "%q is not a scope (system, initrd, portable)", s)
		}
	}
	if c.OS != "linux" {
		bad("os", "%q, want \"linux\"", c.OS)
	}
	if c.Architecture == "" {
		bad("architecture", "missing")
	}
	if c.Source != "" && !digestRE.MatchString(c.Source) {
		bad("source", "%q is not an image digest (sha256: and 64 lowercase hex digits)", c.Source)
	}
	p = append(p, c.Image.Check("config.image")...)
	return p
}

// ReleasePath is where an extension named name keeps its extension-release,
// without a leading slash.
func ReleasePath(name string) string {
	return "usr/lib/extension-release.d/extension-release." + name
}

// CheckPath says whether an extension may hold the entry at p (a tar
// path, relative or absolute): only /usr and /opt are merged by
// systemd-sysext, so anything else would be silently dropped on the node.
// The directories / , /usr and /opt themselves are allowed.
func CheckPath(p string) error {
	c := strings.TrimPrefix(path.Clean("/"+p), "/")
	switch {
	case c == "" || c == "usr" || c == "opt":
		return nil
	case strings.HasPrefix(c, "usr/") || strings.HasPrefix(c, "opt/"):
		return nil
	}
	return fmt.Errorf("/%s: an extension holds only /usr and /opt (systemd-sysext merges nothing else); move it or leave it out", c)
}
