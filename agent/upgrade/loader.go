package upgrade

// The boot loader follows the OS: an artifact carries its image's
// systemd-boot (artifact.SystemdBootMediaType), and an upgrade installs it on
// the ESP when it is newer than the one there, so that a node built from
// Debian bookworm (systemd-boot 252) and upgraded to trixie runs trixie's
// systemd-boot (257) too, as it runs trixie's kernel and systemd.
//
// Never older: the ESP's loader is shared by both slots, and a rollback, or
// an upgrade to an older image, keeps the newer one. That is safe because
// systemd-boot reads Type 1 entries (the Boot Loader Specification) and
// counts boots (+N-M in the entry's name) the same way since long before
// 252: a newer systemd-boot boots the older image's entry and keeps its
// boot counting, while an older one may not understand what a newer image
// relies on. This is bootctl's rule too (`bootctl update` never downgrades).
//
// Versions come from the binaries themselves (the LoaderInfo string in
// their .sdmagic section), the artifact's blob and the ESP's file alike,
// and compare as Debian versions (boot.CompareVersions). A file on the ESP
// that is not a readable systemd-boot (shim, GRUB, unknown) is never
// replaced, and neither is one the artifact's loader cannot be compared
// with; a path with no file gets none.

import (
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
)

// loaderPlan is what an upgrade does with the artifact's systemd-boot:
// decided in check, before any change, and carried out by installLoader
// once the slot's root, kernel and initramfs are written and verified,
// before its boot entry.
type loaderPlan struct {
	blob     []byte // the artifact's systemd-boot, checked against its digest
	version  string // its version; "" when it has none that can be read
	installs []loaderInstall
	// notes say, one log line each, why a loader is not installed.
	notes []string
}

// loaderInstall replaces the loader at path (version from) with the blob.
type loaderInstall struct{ path, from string }

// planLoader reads the artifact's systemd-boot (refusing the artifact if
// the blob does not match its digest or its config) and compares it with
// the ESP's loaders.
func planLoader(o *Options, a *artifact.Artifact) (*loaderPlan, error) {
	p := &loaderPlan{}
	if a.SystemdBoot == nil {
		p.notes = append(p.notes, "upgrade: the artifact carries no systemd-boot (built before artifacts did); the ESP's is left as it is")
		return p, nil
	}
	blob, err := readLoaderLayer(a.SystemdBoot)
	if err != nil {
		// The layer's errors name the artifact.
		return nil, fmt.Errorf("the artifact's systemd-boot layer: %w", err)
	}
	p.blob = blob
	v, err := boot.SystemdBootVersion(blob)
	cv := a.Config.SystemdBootVersion
	switch {
	case err != nil && cv != "":
		return nil, fmt.Errorf("artifact %s: config.systemdBootVersion is %s, but its systemd-boot layer has no readable version: %w", o.Ref, cv, err)
	case err != nil:
		p.notes = append(p.notes, fmt.Sprintf("upgrade: the artifact's systemd-boot is not installed: its version cannot be read (%v)", err))
		return p, nil
	case cv != "" && cv != v:
		return nil, fmt.Errorf("artifact %s: config.systemdBootVersion is %s, but its systemd-boot layer says %s", o.Ref, cv, v)
	}
	p.version = v

	loaders := o.ESP.Loaders()
	if len(loaders) == 0 {
		p.notes = append(p.notes, fmt.Sprintf("upgrade: systemd-boot %s is not installed: the ESP has no boot loader at %s",
			v, strings.Join(boot.LoaderPaths, " or ")))
	}
	for _, l := range loaders {
		switch c := l.Version; {
		case c == "":
			p.notes = append(p.notes, fmt.Sprintf("upgrade: %s on the ESP is left alone: %s", l.Path, l.Problem))
		case boot.CompareVersions(v, c) > 0:
			p.installs = append(p.installs, loaderInstall{path: l.Path, from: c})
		case boot.CompareVersions(v, c) == 0:
			p.notes = append(p.notes, fmt.Sprintf("upgrade: systemd-boot %s on the ESP (%s) is the artifact's", c, l.Path))
		default:
			p.notes = append(p.notes, fmt.Sprintf("upgrade: systemd-boot %s on the ESP (%s) is newer than the artifact's %s: kept", c, l.Path, v))
		}
	}
	return p, nil
}

// readLoaderLayer reads the systemd-boot layer whole; the stream's digest
// check at its end fails a blob that is not what the manifest says.
func readLoaderLayer(l v1.Layer) ([]byte, error) {
	size, err := l.Size()
	if err != nil {
		return nil, err
	}
	if size > boot.MaxSystemdBootSize {
		return nil, fmt.Errorf("%d bytes, more than a systemd-boot (at most %d)", size, boot.MaxSystemdBootSize)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, boot.MaxSystemdBootSize+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("%d bytes, the manifest says %d", len(b), size)
	}
	return b, nil
}

// installLoader carries out the plan: each loader is replaced crash-safely
// (ESP.InstallLoader), so a power cut leaves the old loader or the new one,
// and either boots both slots' entries.
func installLoader(o *Options, p *loaderPlan, logf func(string, ...any)) error {
	for _, n := range p.notes {
		logf("%s", n)
	}
	for _, in := range p.installs {
		logf("upgrade: systemd-boot %s → %s on the ESP (%s)", in.from, p.version, in.path)
		if err := o.ESP.InstallLoader(in.path, p.blob); err != nil {
			return err
		}
	}
	return nil
}

// espBytes is the space the plan needs on the ESP: each new loader is
// written beside the old one before the rename frees that (counting every
// old one as freed only at the end overestimates by at most one loader).
func (p *loaderPlan) espBytes(round func(int64) int64) int64 {
	var n int64
	for range p.installs {
		n += round(int64(len(p.blob)))
	}
	return n
}
