package artifact

import (
	"fmt"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/boot"
)

// ValidationError lists everything wrong with an artifact, each problem
// naming its field ("config.root.rootHash", "manifest.layers[1].mediaType").
type ValidationError struct {
	// Where is the artifact: "oci:DIR" or a registry reference; empty for
	// a Config given to Write.
	Where    string
	Problems []string
}

func (e *ValidationError) Error() string {
	what := e.Where + ": not a valid slate update artifact"
	if e.Where == "" {
		what = "invalid update artifact config"
	}
	if len(e.Problems) == 1 {
		return what + ": " + e.Problems[0]
	}
	return what + ":\n  " + strings.Join(e.Problems, "\n  ")
}

// Validate checks that a is a slate update artifact this code understands:
// the manifest's media types and its three layers in order (and the
// optional systemd-boot layer after them), every config field, and that
// the config agrees with the root layer's size. The error,
// a *ValidationError, lists every problem found. Open calls it.
func (a *Artifact) Validate() error {
	var problems []string
	if a.Image == nil {
		problems = append(problems, "no image")
	} else if m, err := a.Image.Manifest(); err != nil {
		problems = append(problems, fmt.Sprintf("manifest: %v", err))
	} else {
		problems = append(problems, checkManifest(m)...)
		problems = append(problems, checkLayerSizes(m)...)
		if len(m.Layers) > 0 && a.Config.Root.Size != m.Layers[0].Size {
			problems = append(problems, fmt.Sprintf("config.root.size: %d, but the root layer (manifest.layers[0]) is %d bytes",
				a.Config.Root.Size, m.Layers[0].Size))
		}
	}
	for i, l := range []v1.Layer{a.Root, a.Kernel, a.Initramfs, a.SystemdBoot} {
		if l == nil && !layerRoles[i].optional {
			problems = append(problems, fmt.Sprintf("%s layer: missing", layerRoles[i].name))
		}
	}
	if a.SystemdBoot == nil && a.Config.SystemdBootVersion != "" {
		problems = append(problems, fmt.Sprintf("config.systemdBootVersion: %q, but the artifact has no systemd-boot layer", a.Config.SystemdBootVersion))
	}
	problems = append(problems, checkConfig(a.Config)...)
	if len(problems) > 0 {
		return &ValidationError{Where: a.where, Problems: problems}
	}
	return nil
}

// layerRoles are the layers by position. Optional ones come last: a
// manifest may end before them.
var layerRoles = []struct {
	name      string
	mediaType types.MediaType
	title     string
	optional  bool
	maxSize   int64 // 0: no limit but the slot's (root) or the ESP's
}{
	{"root", RootMediaType, RootTitle, false, 0},
	{"kernel", KernelMediaType, KernelTitle, false, 0},
	{"initramfs", InitramfsMediaType, InitramfsTitle, false, 0},
	// Read whole into memory by the agent to find its version.
	{"systemd-boot", SystemdBootMediaType, SystemdBootTitle, true, boot.MaxSystemdBootSize},
}

// requiredLayers is how many layers every artifact has.
const requiredLayers = 3

// checkManifest checks what makes a manifest a slate update artifact. An
// empty result means the config and layers can be read by position.
func checkManifest(m *v1.Manifest) []string {
	var p []string
	if m.SchemaVersion != 2 {
		p = append(p, fmt.Sprintf("manifest.schemaVersion: %d, want 2", m.SchemaVersion))
	}
	if m.MediaType != types.OCIManifestSchema1 {
		p = append(p, fmt.Sprintf("manifest.mediaType: %q, want %q", m.MediaType, types.OCIManifestSchema1))
	}
	if m.ArtifactType != ArtifactType {
		p = append(p, fmt.Sprintf("manifest.artifactType: %q, want %q", m.ArtifactType, ArtifactType))
	}
	if m.Config.MediaType != ConfigMediaType {
		p = append(p, fmt.Sprintf("manifest.config.mediaType: %q, want %q", m.Config.MediaType, ConfigMediaType))
	}
	if len(m.Layers) < requiredLayers || len(m.Layers) > len(layerRoles) {
		p = append(p, fmt.Sprintf("manifest.layers: %d layers, want 3 (root, kernel, initramfs) or 4 (and systemd-boot)", len(m.Layers)))
	}
	for i, l := range m.Layers {
		if i >= len(layerRoles) {
			break
		}
		if l.MediaType != layerRoles[i].mediaType {
			p = append(p, fmt.Sprintf("manifest.layers[%d].mediaType: %q, want %q (%s)", i, l.MediaType, layerRoles[i].mediaType, layerRoles[i].name))
		}
		if l.Digest.Algorithm != "sha256" {
			p = append(p, fmt.Sprintf("manifest.layers[%d].digest: %q, want a sha256 digest", i, l.Digest))
		}
	}
	return p
}

func checkLayerSizes(m *v1.Manifest) []string {
	var p []string
	for i, l := range m.Layers {
		if i >= len(layerRoles) {
			break
		}
		role := layerRoles[i]
		switch {
		case l.Size <= 0:
			p = append(p, fmt.Sprintf("manifest.layers[%d].size: %d, the %s layer is empty", i, l.Size, role.name))
		case role.maxSize > 0 && l.Size > role.maxSize:
			p = append(p, fmt.Sprintf("manifest.layers[%d].size: %d bytes, more than a %s layer may be (%d)", i, l.Size, role.name, role.maxSize))
		}
	}
	return p
}

var (
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	sha256RE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	// loaderVersionRE: what boot.ParseLoaderInfo accepts as a version.
	loaderVersionRE = regexp.MustCompile(`^[!-~]{1,128}$`)
)

// architectures are the OCI/GOARCH names of Linux architectures.
var architectures = map[string]bool{
	"amd64": true, "arm64": true, "arm": true, "386": true,
	"riscv64": true, "ppc64le": true, "s390x": true, "loong64": true,
}

// perSlotArgs are kernel arguments the boot entry writer adds per slot or
// per disk; an artifact's Cmdline must leave them out.
var perSlotArgs = []string{boot.ArgSlot, boot.ArgRoot, boot.ArgRootHash, boot.ArgState, boot.ArgVersion}

// checkConfig checks every field of c.
func checkConfig(c Config) []string {
	var p []string
	bad := func(field, format string, args ...any) {
		p = append(p, "config."+field+": "+fmt.Sprintf(format, args...))
	}

	if c.Version == "" {
		bad("version", "missing")
	} else if !tagRE.MatchString(c.Version) {
		bad("version", "%q is not a valid OCI tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127}); it tags the artifact", c.Version)
	}
	switch {
	case c.Architecture == "":
		bad("architecture", "missing")
	case c.Architecture == "x86_64":
		bad("architecture", `"x86_64": use the OCI name "amd64"`)
	case c.Architecture == "aarch64":
		bad("architecture", `"aarch64": use the OCI name "arm64"`)
	case !architectures[c.Architecture]:
		bad("architecture", "%q is not a known Linux architecture", c.Architecture)
	}
	if c.OS != "linux" {
		bad("os", "%q, want \"linux\"", c.OS)
	}
	if c.Source == "" {
		bad("source", "missing")
	} else if !sha256RE.MatchString(c.Source) {
		bad("source", "%q is not an image digest (sha256: and 64 lowercase hex digits)", c.Source)
	}
	if c.KernelRelease == "" {
		bad("kernelRelease", "missing")
	} else if strings.ContainsAny(c.KernelRelease, "/ \t\n") {
		bad("kernelRelease", "%q has a slash or white space", c.KernelRelease)
	}
	if v := c.SystemdBootVersion; v != "" && !loaderVersionRE.MatchString(v) {
		bad("systemdBootVersion", "%q is not a systemd-boot version (printable ASCII without spaces, at most 128 characters)", v)
	}
	if strings.ContainsFunc(c.Cmdline, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		bad("cmdline", "has a control character (newline?)")
	}
	for _, f := range strings.Fields(c.Cmdline) {
		key, _, _ := strings.Cut(f, "=")
		for _, a := range perSlotArgs {
			if key == a {
				bad("cmdline", "has %q: that argument is set per slot when the boot entry is written; leave it out", f)
			}
		}
	}
	p = append(p, c.Root.Check("config.root")...)
	return p
}
