// Package sysext is slate's system extensions: squashfs images with a
// dm-verity hash tree that systemd-sysext overlays on /usr and /opt, so
// that some nodes get software (a GPU driver, debugging tools) that is not
// in every image, without a writable root.
//
// This package is the contract the builder, the artifact and the agent
// share: the extension-release rules systemd-sysext applies (Release,
// Match), the extension's signed description (Config), and what an
// extension may hold (CheckPath). sysext/build makes an extension from an
// OCI image or a directory; sysext/store keeps fetched extensions on a node
// and in an image; the agent's extensions package fetches, verifies and
// activates them at boot (see ARCHITECTURE.md, "System extensions").
package sysext

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Release is what an os-release or extension-release file says that
// matters for matching an extension to an OS image.
type Release struct {
	// ID is the OS's ID (debian); "_any" in an extension matches every OS.
	ID string `json:"id"`
	// VersionID is VERSION_ID (12); empty on rolling releases.
	VersionID string `json:"versionID,omitempty"`
	// SysextLevel is SYSEXT_LEVEL: an OS that sets it accepts extensions of
	// that level whatever their VERSION_ID.
	SysextLevel string `json:"sysextLevel,omitempty"`
	// Architecture is ARCHITECTURE in systemd's names (x86-64, arm64); an
	// extension without it, or with "_any", runs on any.
	Architecture string `json:"architecture,omitempty"`
	// Scope is SYSEXT_SCOPE, space-separated (system initrd portable);
	// empty means every scope.
	Scope string `json:"scope,omitempty"`
}

// SystemdArch is systemd's name for the architecture slate builds (amd64).
const SystemdArch = "x86-64"

// ParseRelease reads an os-release or extension-release file (the
// os-release(5) syntax: KEY=VALUE, values optionally quoted, # comments).
// It returns the fields Release holds and every key, for messages.
func ParseRelease(b []byte) (Release, map[string]string, error) {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\"'") {
			return Release{}, nil, fmt.Errorf("line %d: %q is not KEY=VALUE", n, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			if v[0] == '"' {
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				} else {
					v = v[1 : len(v)-1]
				}
			} else {
				v = v[1 : len(v)-1]
			}
		}
		kv[k] = v
	}
	if err := sc.Err(); err != nil {
		return Release{}, nil, err
	}
	r := Release{ID: kv["ID"], VersionID: kv["VERSION_ID"], SysextLevel: kv["SYSEXT_LEVEL"], Architecture: kv["ARCHITECTURE"], Scope: kv["SYSEXT_SCOPE"]}
	return r, kv, nil
}

// File renders r as an extension-release file, in a fixed key order.
func (r Release) File() []byte {
	var b bytes.Buffer
	for _, f := range []struct{ k, v string }{
		{"ID", r.ID}, {"VERSION_ID", r.VersionID}, {"SYSEXT_LEVEL", r.SysextLevel},
		{"ARCHITECTURE", r.Architecture}, {"SYSEXT_SCOPE", r.Scope},
	} {
		if f.v != "" {
			fmt.Fprintf(&b, "%s=%s\n", f.k, quote(f.v))
		}
	}
	return b.Bytes()
}

func quote(v string) string {
	if strings.ContainsAny(v, " \t\"'\\$`") {
		return strconv.Quote(v)
	}
	return v
}

// String is the release as systemd would print its fields:
// "ID=debian VERSION_ID=12".
func (r Release) String() string {
	var parts []string
	for _, f := range []struct{ k, v string }{
		{"ID", r.ID}, {"VERSION_ID", r.VersionID}, {"SYSEXT_LEVEL", r.SysextLevel}, {"ARCHITECTURE", r.Architecture}, {"SYSEXT_SCOPE", r.Scope},
	} {
		if f.v != "" {
			parts = append(parts, f.k+"="+f.v)
		}
	}
	if len(parts) == 0 {
		return "(no ID)"
	}
	return strings.Join(parts, " ")
}

// ForHost is the extension-release an extension built for the OS whose
// os-release is host gets: its ID, and its SYSEXT_LEVEL when it has one,
// else its VERSION_ID; the architecture slate builds for.
func ForHost(host Release) Release {
	r := Release{ID: host.ID, Architecture: SystemdArch}
	if host.SysextLevel != "" {
		r.SysextLevel = host.SysextLevel
	} else {
		r.VersionID = host.VersionID
	}
	return r
}

// Match reports whether systemd-sysext merges an extension with release ext
// on a host whose os-release is host and whose architecture is arch
// (systemd's name), as systemd (252 to 257) decides it: the nil error is a
// match; otherwise the error says why not, in the fields' own names.
//
//   - ARCHITECTURE, when the extension sets it and not to _any, must be arch.
//   - ID must be the host's, unless it is _any (which matches any OS and
//     needs no version).
//   - A host without VERSION_ID and SYSEXT_LEVEL (a rolling release)
//     matches on ID alone.
//   - When both set SYSEXT_LEVEL, the levels must be equal; otherwise the
//     extension's VERSION_ID must equal the host's.
//   - SYSEXT_SCOPE, when set, must include "system".
func Match(ext, host Release, arch string) error {
	if ext.ID == "" {
		return fmt.Errorf("its extension-release has no ID")
	}
	if ext.Scope != "" && !slices.Contains(strings.Fields(ext.Scope), "system") {
		return fmt.Errorf("SYSEXT_SCOPE=%q does not include system", ext.Scope)
	}
	if ext.Architecture != "" && ext.Architecture != "_any" && ext.Architecture != arch {
		return fmt.Errorf("it is for ARCHITECTURE=%s, this node is %s", ext.Architecture, arch)
	}
	if ext.ID == "_any" {
		return nil
	}
	if ext.ID != host.ID {
		return fmt.Errorf("it is for ID=%s, this image is ID=%s", ext.ID, orNone(host.ID))
	}
	if host.VersionID == "" && host.SysextLevel == "" {
		return nil
	}
	if host.SysextLevel != "" && ext.SysextLevel != "" {
		if ext.SysextLevel != host.SysextLevel {
			return fmt.Errorf("it is for SYSEXT_LEVEL=%s, this image has SYSEXT_LEVEL=%s", ext.SysextLevel, host.SysextLevel)
		}
		return nil
	}
	if host.VersionID == "" {
		return fmt.Errorf("it has no SYSEXT_LEVEL, and this image has SYSEXT_LEVEL=%s and no VERSION_ID", host.SysextLevel)
	}
	if ext.VersionID == "" {
		return fmt.Errorf("it has neither SYSEXT_LEVEL nor VERSION_ID, and this image is VERSION_ID=%s", host.VersionID)
	}
	if ext.VersionID != host.VersionID {
		return fmt.Errorf("it is for %s VERSION_ID=%s, this image is VERSION_ID=%s", ext.ID, ext.VersionID, host.VersionID)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
