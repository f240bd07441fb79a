package artifact

import (
	"fmt"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/sysext"
)

// ValidationError lists everything wrong with an artifact, each problem
// naming its field ("config.root.rootHash", "manifest.layers[1].mediaType").
type ValidationError struct {
	// Where is the artifact: "oci:DIR" or a registry reference; empty for
	// a Config given to Write.
	Where    string
	Problems []string
	// What is the kind of artifact it should be: "" for an update
	// artifact, "system extension".
	What string
}

func (e *ValidationError) Error() string {
	kind := e.What
	if kind == "" {
		kind = updateKind.what
	}
	what := e.Where + ": not a valid slate " + kind
	if e.Where == "" {
		what = "invalid " + kind + " config"
	}
	if len(e.Problems) == 1 {
		return what + ": " + e.Problems[0]
	}
	return what + ":\n  " + strings.Join(e.Problems, "\n  ")
}

// Validate checks that a is a slate artifact this code understands. For an
// update artifact: the manifest's media types and its three layers in
// order (and the optional systemd-boot layer after them), every config
// field, and that the config agrees with the root layer's size. For a
// system extension: the manifest's media types and its one layer, every
// config field (sysext.Config.Check), and that the config agrees with the
// image layer's size. The error, a *ValidationError, lists every problem
// found. Open and OpenExtension call it.
func (a *Artifact) Validate() error {
	k := a.kind()
	var problems []string
	if a.Image == nil {
		problems = append(problems, "no image")
	} else if m, err := a.Image.Manifest(); err != nil {
		problems = append(problems, fmt.Sprintf("manifest: %v", err))
	} else {
		problems = append(problems, checkManifest(m, k)...)
		problems = append(problems, checkLayerSizes(m, k)...)
		if size := k.size(a); len(m.Layers) > 0 && size != m.Layers[0].Size {
			problems = append(problems, fmt.Sprintf("%s: %d, but the %s layer (manifest.layers[0]) is %d bytes",
				k.sizeField, size, k.roles[0].name, m.Layers[0].Size))
		}
	}
	for i, l := range k.layers(a) {
		if l == nil && !k.roles[i].optional {
			problems = append(problems, fmt.Sprintf("%s layer: missing", k.roles[i].name))
		}
	}
	problems = append(problems, k.check(a)...)
	if len(problems) > 0 {
		return &ValidationError{Where: a.where, Problems: problems, What: k.errWhat()}
	}
	return nil
}

// layerRole is a layer by its position in a manifest.
type layerRole struct {
	name      string
	mediaType types.MediaType
	title     string // "": set by the writer (an extension's NAME.raw)
	optional  bool
	maxSize   int64 // 0: no limit but the slot's (root) or the ESP's
}

// kind is what tells an update artifact and a system extension apart:
// their media types, layers and configs. Everything else (layouts,
// registries, signatures) they share.
type kind struct {
	what         string // for messages: "update artifact"
	artifactType string
	configType   types.MediaType
	// roles are the layers by position; optional ones come last, and a
	// manifest may end before them. The first required ones are required.
	roles     []layerRole
	required  int
	wantCount string // the layer counts allowed, for messages
	sizeField string // the config field that gives layer 0's size
	// layers are the artifact's layers by role; setLayer sets one.
	layers   func(a *Artifact) []v1.Layer
	setLayer func(a *Artifact, i int, l v1.Layer)
	size     func(a *Artifact) int64
	check    func(a *Artifact) []string // every config field
}

// errWhat is the kind for ValidationError.What: "" for updates, whose
// messages predate extensions.
func (k *kind) errWhat() string {
	if k == updateKind {
		return ""
	}
	return k.what
}

var updateKind = &kind{
	what:         "update artifact",
	artifactType: ArtifactType,
	configType:   ConfigMediaType,
	roles: []layerRole{
		{"root", RootMediaType, RootTitle, false, 0},
		{"kernel", KernelMediaType, KernelTitle, false, 0},
		{"initramfs", InitramfsMediaType, InitramfsTitle, false, 0},
		// Read whole into memory by the agent to find its version.
		{"systemd-boot", SystemdBootMediaType, SystemdBootTitle, true, boot.MaxSystemdBootSize},
		{"unified kernel image", UKIMediaType, UKITitle, true, 0},
	},
	required:  3,
	wantCount: "3 (root, kernel, initramfs), 4 (and systemd-boot) or 5 (and a unified kernel image)",
	sizeField: "config.root.size",
	layers: func(a *Artifact) []v1.Layer {
		return []v1.Layer{a.Root, a.Kernel, a.Initramfs, a.SystemdBoot, a.UKI}
	},
	setLayer: func(a *Artifact, i int, l v1.Layer) {
		switch i {
		case 0:
			a.Root = l
		case 1:
			a.Kernel = l
		case 2:
			a.Initramfs = l
		case 3:
			a.SystemdBoot = l
		case 4:
			a.UKI = l
		}
	},
	size: func(a *Artifact) int64 { return a.Config.Root.Size },
	check: func(a *Artifact) []string {
		p := checkConfig(a.Config)
		if a.SystemdBoot == nil && a.Config.SystemdBootVersion != "" {
			p = append(p, fmt.Sprintf("config.systemdBootVersion: %q, but the artifact has no systemd-boot layer", a.Config.SystemdBootVersion))
		}
		return p
	},
}

var extensionKind = &kind{
	what:         "system extension",
	artifactType: ExtensionArtifactType,
	configType:   ExtensionConfigMediaType,
	roles:        []layerRole{{"image", ExtensionMediaType, "", false, 0}},
	required:     1,
	wantCount:    "1 (the extension image)",
	sizeField:    "config.image.size",
	layers:       func(a *Artifact) []v1.Layer { return []v1.Layer{a.ExtensionImage} },
	setLayer:     func(a *Artifact, _ int, l v1.Layer) { a.ExtensionImage = l },
	size: func(a *Artifact) int64 {
		if a.Extension == nil {
			return 0
		}
		return a.Extension.Image.Size
	},
	check: func(a *Artifact) []string {
		if a.Extension == nil {
			return []string{"config: missing"}
		}
		return checkExtensionConfig(*a.Extension)
	},
}

// kindOf says which kind a manifest claims to be by its artifact type or
// config media type; nil: neither.
func kindOf(m *v1.Manifest) *kind {
	for _, k := range []*kind{updateKind, extensionKind} {
		if m.ArtifactType == k.artifactType || m.Config.MediaType == k.configType {
			return k
		}
	}
	return nil
}

// name is the kind for messages; nil is either kind.
func (k *kind) name() string {
	if k == nil {
		return "artifact"
	}
	return k.what
}

// shortName is "artifact" or "extension".
func (k *kind) shortName() string {
	if k == extensionKind {
		return "extension"
	}
	return "artifact"
}

func (a *Artifact) kind() *kind {
	if a.Extension != nil {
		return extensionKind
	}
	return updateKind
}

// checkManifest checks what makes a manifest a slate artifact of kind k.
// An empty result means the config and layers can be read by position.
func checkManifest(m *v1.Manifest, k *kind) []string {
	var p []string
	if m.SchemaVersion != 2 {
		p = append(p, fmt.Sprintf("manifest.schemaVersion: %d, want 2", m.SchemaVersion))
	}
	if m.MediaType != types.OCIManifestSchema1 {
		p = append(p, fmt.Sprintf("manifest.mediaType: %q, want %q", m.MediaType, types.OCIManifestSchema1))
	}
	if m.ArtifactType != k.artifactType {
		p = append(p, fmt.Sprintf("manifest.artifactType: %q, want %q", m.ArtifactType, k.artifactType))
	}
	if m.Config.MediaType != k.configType {
		p = append(p, fmt.Sprintf("manifest.config.mediaType: %q, want %q", m.Config.MediaType, k.configType))
	}
	if len(m.Layers) < k.required || len(m.Layers) > len(k.roles) {
		p = append(p, fmt.Sprintf("manifest.layers: %d layers, want %s", len(m.Layers), k.wantCount))
	}
	for i, l := range m.Layers {
		if i >= len(k.roles) {
			break
		}
		if l.MediaType != k.roles[i].mediaType {
			p = append(p, fmt.Sprintf("manifest.layers[%d].mediaType: %q, want %q (%s)", i, l.MediaType, k.roles[i].mediaType, k.roles[i].name))
		}
		if l.Digest.Algorithm != "sha256" {
			p = append(p, fmt.Sprintf("manifest.layers[%d].digest: %q, want a sha256 digest", i, l.Digest))
		}
	}
	return p
}

func checkLayerSizes(m *v1.Manifest, k *kind) []string {
	var p []string
	for i, l := range m.Layers {
		if i >= len(k.roles) {
			break
		}
		role := k.roles[i]
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
	if msg := checkArch(c.Architecture); msg != "" {
		bad("architecture", "%s", msg)
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
	if c.OSRelease != (sysext.Release{}) {
		p = append(p, checkRelease("config.osRelease", c.OSRelease)...)
	}
	names := map[string]bool{}
	for i, e := range c.Extensions {
		field := fmt.Sprintf("extensions[%d]", i)
		if err := sysext.CheckName(e.Name); err != nil {
			bad(field+".name", "%v", err)
		} else if names[e.Name] {
			bad(field+".name", "%q again: systemd-sysext merges one extension of a name", e.Name)
		}
		names[e.Name] = true
		if !tagRE.MatchString(e.Version) {
			bad(field+".version", "%q is not a valid OCI tag", e.Version)
		}
		if e.Release.ID == "" {
			bad(field+".release.id", "missing")
		}
		p = append(p, checkRelease("config."+field+".release", e.Release)...)
		if !sha256RE.MatchString(e.Digest) {
			bad(field+".digest", "%q is not a manifest digest (sha256: and 64 lowercase hex digits)", e.Digest)
		}
	}
	return p
}

// checkArch says what is wrong with an OCI architecture name, or "".
func checkArch(arch string) string {
	switch {
	case arch == "":
		return "missing"
	case arch == "x86_64":
		return `"x86_64": use the OCI name "amd64"`
	case arch == "aarch64":
		return `"aarch64": use the OCI name "arm64"`
	case systemdArchs[arch] == "":
		return fmt.Sprintf("%q is not a known Linux architecture", arch)
	}
	return ""
}

// systemdArchs maps OCI's (GOARCH's) names of Linux architectures to
// systemd's (ARCHITECTURE= in os-release and extension-release).
var systemdArchs = map[string]string{
	"amd64": "x86-64", "arm64": "arm64", "arm": "arm", "386": "x86",
	"riscv64": "riscv64", "ppc64le": "ppc64-le", "s390x": "s390x", "loong64": "loongarch64",
}

// archNames takes an architecture in OCI's or systemd's naming and returns
// both ("amd64", "x86-64"); an unknown name is returned as both.
func archNames(arch string) (oci, systemd string) {
	if s, ok := systemdArchs[arch]; ok {
		return arch, s
	}
	for o, s := range systemdArchs {
		if s == arch {
			return o, s
		}
	}
	return arch, arch
}

// releaseValueRE is what slate accepts as an os-release value it matches
// on, as sysext.Config.Check does: no quoting or white space surprises.
var releaseValueRE = regexp.MustCompile(`^[A-Za-z0-9._~+-]{1,128}$`)

// checkRelease checks the values of a release carried in an update
// artifact's config; field is its name there.
func checkRelease(field string, r sysext.Release) []string {
	var p []string
	for _, f := range []struct{ name, v string }{
		{"id", r.ID}, {"versionID", r.VersionID}, {"sysextLevel", r.SysextLevel}, {"architecture", r.Architecture},
	} {
		if f.v != "" && !releaseValueRE.MatchString(f.v) {
			p = append(p, fmt.Sprintf("%s.%s: %q is not a plain os-release value (letters, digits and . _ ~ + -)", field, f.name, f.v))
		}
	}
	for _, s := range strings.Fields(r.Scope) {
		if s != "system" && s != "initrd" && s != "portable" {
			p = append(p, fmt.Sprintf("%s.scope: %q is not a scope (system, initrd, portable)", field, s))
		}
	}
	return p
}

// checkExtensionConfig checks an extension's config: sysext's rules, and
// that its architectures are known and agree.
func checkExtensionConfig(c sysext.Config) []string {
	p := c.Check()
	if c.Architecture != "" {
		if msg := checkArch(c.Architecture); msg != "" {
			p = append(p, "config.architecture: "+msg)
		} else if ra := c.Release.Architecture; ra != "" && ra != "_any" && ra != systemdArchs[c.Architecture] {
			p = append(p, fmt.Sprintf("config.release.architecture: %q, but the extension is for %s (%s)", ra, c.Architecture, systemdArchs[c.Architecture]))
		}
	}
	return p
}
