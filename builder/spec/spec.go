// Package spec is the image spec: the YAML file that names a build's source
// image and options (sizes, compression, kernel command line, initramfs
// modules, the update keys the image trusts, outputs). Documented with
// examples in configs/.
package spec

import (
	"crypto"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/builder/format"
	"github.com/slate-os/slate/internal/strictyaml"
	"github.com/slate-os/slate/signature"
)

const (
	APIVersion = "slate.dev/v1alpha1"
	Kind       = "ImageSpec"
)

// Spec is one image build. Zero values mean "use the default".
type Spec struct {
	APIVersion string    `yaml:"apiVersion" json:"apiVersion"`
	Kind       string    `yaml:"kind" json:"kind"`
	Source     string    `yaml:"source" json:"source"`
	Version    string    `yaml:"version" json:"version,omitempty"`
	Disk       Disk      `yaml:"disk" json:"disk"`
	Root       Root      `yaml:"root" json:"root"`
	Kernel     Kernel    `yaml:"kernel" json:"kernel"`
	Initramfs  Initramfs `yaml:"initramfs" json:"initramfs"`
	Update     Update    `yaml:"update" json:"update"`
	// Extensions are system extensions the image carries in its root
	// (/usr/lib/slate/extensions), each an extension artifact: a registry
	// reference or oci:DIR[:TAG|@DIGEST] (relative to the spec file).
	// Each must match the image's os-release, and be signed by an update
	// key when the image has any (unless update.allowUnsigned). `slate
	// build --extension REF` adds more.
	Extensions []string `yaml:"extensions" json:"extensions,omitempty"`
	// SecureBoot, when set, makes the image boot as a signed Unified
	// Kernel Image under UEFI Secure Boot.
	SecureBoot SecureBoot `yaml:"secureBoot" json:"secureBoot,omitzero"`
	Outputs    Outputs    `yaml:"outputs" json:"outputs"`
}

// SecureBoot signs what a node boots with keys the user owns. The builder
// assembles one Unified Kernel Image (the image's systemd-stub with its
// kernel, the initramfs, os-release and a command line that carries the
// root hash) and signs it and the image's systemd-boot with the db key, so
// firmware with that key's certificate in its db boots nothing else: the
// root hash, and through dm-verity every byte of the root, is then as
// trustworthy as the key. Paths are relative to the spec file.
type SecureBoot struct {
	// Key and Certificate are the db signing key and its certificate
	// (PEM; slate keygen --secure-boot makes db.key and db.crt).
	Key         string `yaml:"key" json:"key,omitempty"`
	Certificate string `yaml:"certificate" json:"certificate,omitempty"`
	// EnrollKeys is a directory holding PK.auth, KEK.auth and db.auth
	// (slate keygen --secure-boot): the disk carries them on its ESP and
	// systemd-boot enrolls them on first boot when the firmware is in
	// Setup Mode. Only for machines meant for it: see the README.
	EnrollKeys string `yaml:"enrollKeys" json:"enrollKeys,omitempty"`
	// SBAT is the image's SBAT generation for the component "slate"
	// (1 when unset): raise it to revoke every image built with a lower
	// one (see the README for who enforces it).
	SBAT int `yaml:"sbat" json:"sbat,omitempty"`
}

// Enabled says whether the image boots under Secure Boot.
func (b SecureBoot) Enabled() bool { return b.Key != "" || b.Certificate != "" }

// SBATGeneration is the generation to embed: SBAT or 1.
func (b SecureBoot) SBATGeneration() int { return max(b.SBAT, 1) }

// Update is whom the image's agent trusts for upgrades. The builder bakes it
// into the root (package builder/nodefiles: /usr/lib/slate/update-keys and
// image.json), under dm-verity, so a node trusts what its image says whether
// or not it has a node config. A node config may add keys and allow unsigned
// artifacts, never remove the image's keys (see agent/upgrade, Policy).
type Update struct {
	// PublicKeys are the keys an update artifact must be signed by (any one
	// of them; several for rotation): each a path to a PEM public key file,
	// relative to the spec file, or a PEM block inline ("-----BEGIN PUBLIC
	// KEY-----..."). ECDSA P-256 or Ed25519, as slate keygen and cosign
	// make them. `slate build --update-key FILE` adds more.
	PublicKeys []string `yaml:"publicKeys" json:"publicKeys,omitempty"`
	// AllowUnsigned lets the image's agent install artifacts no trusted key
	// signed: for development images only.
	AllowUnsigned bool `yaml:"allowUnsigned" json:"allowUnsigned,omitempty"`
}

// Disk sizes. A slot holds one root image with its hash tree; it is fixed at
// build time and every later upgrade must fit in it, so it needs headroom.
type Disk struct {
	SlotSize  Size `yaml:"slotSize" json:"slotSize,omitempty"`
	ESPSize   Size `yaml:"espSize" json:"espSize,omitempty"`
	StateSize Size `yaml:"stateSize" json:"stateSize,omitempty"`
}

// Root is the root filesystem.
type Root struct {
	// Compression is the squashfs compressor: zstd (default), xz, gzip, lz4, lzo, lzma.
	Compression string `yaml:"compression" json:"compression,omitempty"`
	// CompressionLevel is the compressor's level (zstd 1-22, xz/lzma 0-9,
	// gzip/lzo 1-9); 0 means slate's default: 3 for zstd (tar2sqfs's own
	// default of 15 took 15x longer here for a 12% smaller root), the
	// tool's default otherwise.
	CompressionLevel int `yaml:"compressionLevel" json:"compressionLevel,omitempty"`
}

// Kernel is the boot entry's kernel command line, beyond what slate sets.
type Kernel struct {
	// Cmdline replaces the default console arguments when set.
	Cmdline []string `yaml:"cmdline" json:"cmdline,omitempty"`
	// ExtraCmdline is appended to the command line.
	ExtraCmdline []string `yaml:"extraCmdline" json:"extraCmdline,omitempty"`
}

// Initramfs lists kernel modules to add to the defaults.
type Initramfs struct {
	Modules []string `yaml:"modules" json:"modules,omitempty"`
}

// Outputs says what to write. At least one of Disk and Artifact.
type Outputs struct {
	Disk     string `yaml:"disk" json:"disk,omitempty"`
	Format   string `yaml:"format" json:"format,omitempty"` // raw (default), qcow2, vhd, vmdk, gce, raw.zst, raw.xz (package builder/format)
	Artifact string `yaml:"artifact" json:"artifact,omitempty"`
}

// Defaults.
const (
	DefaultESPSize   Size = 256 << 20
	DefaultStateSize Size = 64 << 20
	MinSlotSize      Size = 1 << 30
	// DefaultCompression is zstd: measured fastest to build and to read of
	// tar2sqfs's compressors at a ratio close to xz.
	DefaultCompression = "zstd"
	// DefaultZstdLevel measured on the reference image (290 MB of tar):
	// level 3 took 1.7 s for 106 MB, level 15 (tar2sqfs's default) 25 s for 93 MB.
	DefaultZstdLevel = 3
)

// DefaultCmdline makes the serial console primary, so cloud consoles and QEMU
// show the boot, and keeps the kernel's view of the root read-only.
var DefaultCmdline = []string{"console=tty0", "console=ttyS0,115200", "ro"}

var compressors = map[string]bool{"zstd": true, "xz": true, "gzip": true, "lz4": true, "lzo": true, "lzma": true}

// Load reads and validates a spec file. Errors name the file and the field.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Key files are relative to the spec file, wherever slate runs.
	for i, k := range s.Update.PublicKeys {
		if !isInlineKey(k) && !filepath.IsAbs(k) {
			s.Update.PublicKeys[i] = filepath.Join(filepath.Dir(path), k)
		}
	}
	// So are the Secure Boot files.
	for _, p := range []*string{&s.SecureBoot.Key, &s.SecureBoot.Certificate, &s.SecureBoot.EnrollKeys} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(filepath.Dir(path), *p)
		}
	}
	// So are extension layouts.
	for i, e := range s.Extensions {
		if dir, ok := strings.CutPrefix(e, "oci:"); ok && !filepath.IsAbs(dir) {
			s.Extensions[i] = "oci:" + filepath.Join(filepath.Dir(path), dir)
		}
	}
	return s, nil
}

// isInlineKey says whether an update.publicKeys entry is a PEM block rather
// than a file's path.
func isInlineKey(k string) bool { return strings.HasPrefix(strings.TrimSpace(k), "-----BEGIN ") }

// UpdatePublicKeys reads and parses update.publicKeys: inline PEM blocks and
// key files (a relative path is relative to the working directory here;
// Load made the spec file's relative to the file). Errors name the entry.
func (s *Spec) UpdatePublicKeys() ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for i, k := range s.Update.PublicKeys {
		field := fmt.Sprintf("update.publicKeys[%d]", i)
		text := k
		if !isInlineKey(k) {
			b, err := os.ReadFile(k)
			if err != nil {
				return nil, &strictyaml.FieldError{Path: field, Msg: fmt.Sprintf("reading the key: %v", err)}
			}
			text, field = string(b), field+" ("+k+")"
		}
		pub, err := signature.ParsePublicKey(text)
		if err != nil {
			return nil, &strictyaml.FieldError{Path: field, Msg: err.Error()}
		}
		keys = append(keys, pub)
	}
	return keys, nil
}

// Parse decodes and validates a spec document.
func Parse(data []byte) (*Spec, error) {
	var s Spec
	if err := strictyaml.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	if s.APIVersion != APIVersion {
		return nil, &strictyaml.FieldError{Path: "apiVersion", Msg: fmt.Sprintf("got %q, want %q", s.APIVersion, APIVersion)}
	}
	if s.Kind != Kind {
		return nil, &strictyaml.FieldError{Path: "kind", Msg: fmt.Sprintf("got %q, want %q", s.Kind, Kind)}
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

var (
	// versionRe is an OCI tag: the version also tags the update artifact.
	versionRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	moduleRe  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// Validate checks the fields' values; it is also run after flags override a spec.
func (s *Spec) Validate() error {
	fe := func(path, format string, a ...any) error {
		return &strictyaml.FieldError{Path: path, Msg: fmt.Sprintf(format, a...)}
	}
	if s.Version != "" && !versionRe.MatchString(s.Version) {
		return fe("version", "%q is not usable as an OCI tag: use letters, digits and . _ - (at most 128)", s.Version)
	}
	if c := s.Root.Compression; c != "" && !compressors[c] {
		return fe("root.compression", "unknown compressor %q (want zstd, xz, gzip, lz4, lzo or lzma)", c)
	}
	if l := s.Root.CompressionLevel; l != 0 {
		lo, hi := levelRange(s.CompressionOrDefault())
		if hi == 0 {
			return fe("root.compressionLevel", "%s has no levels", s.CompressionOrDefault())
		}
		if l < lo || l > hi {
			return fe("root.compressionLevel", "%d is out of range for %s (%d-%d)", l, s.CompressionOrDefault(), lo, hi)
		}
	}
	if s.Disk.ESPSize != 0 && s.Disk.ESPSize < 64<<20 {
		return fe("disk.espSize", "%s is too small: FAT32 and two kernels need at least 64MiB", s.Disk.ESPSize)
	}
	if s.Disk.StateSize != 0 && s.Disk.StateSize < 16<<20 {
		return fe("disk.stateSize", "%s is too small: at least 16MiB", s.Disk.StateSize)
	}
	for _, sz := range []struct {
		path string
		v    Size
	}{{"disk.slotSize", s.Disk.SlotSize}, {"disk.espSize", s.Disk.ESPSize}, {"disk.stateSize", s.Disk.StateSize}} {
		if sz.v%(1<<20) != 0 {
			return fe(sz.path, "%d is not a whole number of MiB", int64(sz.v))
		}
	}
	for i, a := range append(append([]string{}, s.Kernel.Cmdline...), s.Kernel.ExtraCmdline...) {
		if a == "" || strings.ContainsAny(a, " \t\n") {
			return fe("kernel.cmdline", "argument %d %q: one argument per list item, no spaces", i, a)
		}
		if boot.ReservedCmdlineArg(a) != "" {
			return fe("kernel.cmdline", "%q: slate.* arguments are set by the builder (only %s is the image's)", a, strings.Join(boot.ImageCmdlineArgs, ", "))
		}
	}
	for i, k := range s.Update.PublicKeys {
		p := fmt.Sprintf("update.publicKeys[%d]", i)
		if strings.TrimSpace(k) == "" {
			return fe(p, "empty: give a key file's path or a PEM block")
		}
		if isInlineKey(k) {
			if _, err := signature.ParsePublicKey(k); err != nil {
				return fe(p, "%v", err)
			}
		}
	}
	for i, e := range s.Extensions {
		if strings.TrimSpace(e) == "" || strings.ContainsAny(e, " \t\n") {
			return fe(fmt.Sprintf("extensions[%d]", i), "%q is not an extension reference (a registry reference or oci:DIR)", e)
		}
	}
	for i, m := range s.Initramfs.Modules {
		if !moduleRe.MatchString(m) {
			return fe(fmt.Sprintf("initramfs.modules[%d]", i), "%q is not a module name", m)
		}
	}
	if sb := s.SecureBoot; sb.Enabled() || sb.EnrollKeys != "" || sb.SBAT != 0 {
		switch {
		case sb.Key == "":
			return fe("secureBoot.key", "missing: Secure Boot needs the db key that signs the boot files (and secureBoot.certificate)")
		case sb.Certificate == "":
			return fe("secureBoot.certificate", "missing: Secure Boot needs the db key's certificate (and secureBoot.key)")
		case sb.SBAT < 0 || sb.SBAT > 1<<20:
			return fe("secureBoot.sbat", "%d is not a generation (1 or more)", sb.SBAT)
		}
	}
	if f := s.Outputs.Format; f != "" && !slices.Contains(format.Names, f) {
		return fe("outputs.format", "unknown format %q (want one of %s)", f, strings.Join(format.Names, ", "))
	}
	// GCE imports a gzip'd tar by its name: an archive called node.raw
	// would be one more thing to rename before the upload.
	if d := s.Outputs.Disk; s.Outputs.Format == format.GCE && d != "" && !strings.HasSuffix(d, ".tar.gz") {
		return fe("outputs.disk", "%q: outputs.format gce writes disk.raw in a gzip'd tar, which GCE imports as a .tar.gz: name it e.g. %s",
			d, gceName(d))
	}
	return nil
}

// gceName suggests a .tar.gz name for a GCE image that was given another.
func gceName(p string) string {
	base := filepath.Base(p)
	for _, ext := range []string{".tar.gz", ".tgz", ".tar", ".gz", ".raw", ".img"} {
		if b, ok := strings.CutSuffix(base, ext); ok && b != "" {
			base = b
			break
		}
	}
	return filepath.Join(filepath.Dir(p), base+".tar.gz")
}

func levelRange(comp string) (lo, hi int) {
	switch comp {
	case "zstd":
		return 1, 22
	case "xz", "lzma":
		return 0, 9
	case "gzip", "lzo":
		return 1, 9
	}
	return 0, 0
}

// CompressionLevelOrDefault is the level to ask for; 0 leaves tar2sqfs's default.
func (s *Spec) CompressionLevelOrDefault() int {
	if s.Root.CompressionLevel == 0 && s.CompressionOrDefault() == "zstd" {
		return DefaultZstdLevel
	}
	return s.Root.CompressionLevel
}

// DefaultPanic makes a panicking kernel reboot after 10 seconds. Kernels
// built with CONFIG_PANIC_TIMEOUT=0 (Debian's cloud kernel) otherwise hang
// on a panic forever: a hang spends no boot-counting try, so a slot whose
// kernel panics would never be rolled back.
const DefaultPanic = "panic=10"

// NoGPTAuto turns systemd-gpt-auto-generator off. slate mounts every
// partition of its disk itself (the slot through dm-verity, the state
// partition on /var, the ESP at /run/slate/esp when the agent needs it);
// the generator would act on the same partitions by their discoverable
// partition types, and on a read-only root it fails: systemd 257 sets up
// efi.automount for /efi, which an image's root need not have, leaving a
// failed unit on every boot (so every boot unhealthy); older versions mount
// the ESP on an empty /efi or /boot, a second writer beside the agent's.
const NoGPTAuto = "systemd.gpt_auto=0"

// Cmdline is the slot-independent kernel command line: the console
// arguments (DefaultCmdline or kernel.cmdline), DefaultPanic and NoGPTAuto
// unless the spec sets its own panic= or systemd.gpt_auto=, then
// kernel.extraCmdline. It travels in the update artifact, so an upgrade
// keeps it whichever agent installs it.
func (s *Spec) Cmdline() string {
	base := DefaultCmdline
	if len(s.Kernel.Cmdline) > 0 {
		base = s.Kernel.Cmdline
	}
	args := append([]string{}, base...)
	for _, d := range []string{DefaultPanic, NoGPTAuto} {
		if name, _, _ := strings.Cut(d, "="); !s.sets(name) {
			args = append(args, d)
		}
	}
	return strings.Join(append(args, s.Kernel.ExtraCmdline...), " ")
}

// sets says whether the spec's own arguments set the parameter name.
func (s *Spec) sets(name string) bool {
	for _, a := range append(append([]string{}, s.Kernel.Cmdline...), s.Kernel.ExtraCmdline...) {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// CompressionOrDefault returns the squashfs compressor to use.
func (s *Spec) CompressionOrDefault() string {
	if s.Root.Compression == "" {
		return DefaultCompression
	}
	return s.Root.Compression
}
