// Package artifact is slate's update artifact: an OCI artifact that carries
// everything an upgrade writes into a slot, stored as an OCI image layout
// (see ARCHITECTURE.md, "The artifact and the atomic swap").
//
// The artifact is one OCI image manifest:
//
//	mediaType     application/vnd.oci.image.manifest.v1+json
//	artifactType  application/vnd.slate.update.v1
//	config        application/vnd.slate.update.config.v1+json  (Config, JSON)
//	layers[0]     application/vnd.slate.rootfs.squashfs-verity.v1  rootfs.img
//	layers[1]     application/vnd.slate.kernel.v1                  vmlinuz
//	layers[2]     application/vnd.slate.initramfs.v1               initramfs
//	layers[3]     application/vnd.slate.systemd-boot.efi.v1        systemd-bootx64.efi
//	layers[4]     application/vnd.slate.uki.efi.v1                 uki.efi
//
// layers[3] is the image's systemd-boot (usr/lib/systemd/boot/efi/
// systemd-bootx64.efi), so that a node's boot loader follows its OS: an
// upgrade installs it on the ESP when it is newer than the one there
// (agent/upgrade). Write always writes it when given one, and the builder
// always gives it; Open accepts artifacts without it (written before it
// existed), whose upgrades leave the ESP's loader as it is. An agent from
// before this layer refuses an artifact that has it ("4 layers, want 3").
//
// The root layer is the squashfs padded to 4 KiB, then the dm-verity
// superblock and hash tree, byte for byte what goes into a root partition.
// layers[4], only in an image built for Secure Boot, is the signed Unified
// Kernel Image (the same kernel and initramfs with the image's systemd-stub
// and a command line carrying the root hash; package boot/uki), and
// layers[3] is then systemd-boot signed with the same key. The signatures
// are Authenticode, checked by the node's firmware and, before anything is
// written, by the agent against the node's enrolled db.
//
// Layers are stored as they are, never gzipped: squashfs is compressed
// already, and a layer's digest is the digest of the bytes written to disk.
//
// Write makes a layout directory (the output of `slate build`), Push copies it
// to a registry (`slate push`), and Open reads one back from a layout or a
// registry (the agent's `slate upgrade`). Nothing here holds a layer in
// memory: layers are files, hashed and copied as streams.
//
// A system extension (package sysext) travels the same way, as a manifest
// of its own kind:
//
//	artifactType  application/vnd.slate.sysext.v1
//	config        application/vnd.slate.sysext.config.v1+json  (sysext.Config, JSON)
//	layers[0]     application/vnd.slate.sysext.squashfs-verity.v1  NAME.raw
//
// WriteExtension, OpenExtension and ResolveExtension are its Write and Open;
// Sign, SignBundle, Push, VerifySignature and Attached take both kinds. One
// registry tag may hold an OCI index of extension manifests for several OS
// releases: Push merges into it, ResolveExtension picks from it by the
// signed configs.
package artifact

import (
	"errors"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
)

// Media types of the artifact and its parts.
const (
	ArtifactType    = "application/vnd.slate.update.v1"
	ConfigMediaType = types.MediaType("application/vnd.slate.update.config.v1+json")

	RootMediaType      = types.MediaType("application/vnd.slate.rootfs.squashfs-verity.v1")
	KernelMediaType    = types.MediaType("application/vnd.slate.kernel.v1")
	InitramfsMediaType = types.MediaType("application/vnd.slate.initramfs.v1")
	// SystemdBootMediaType is the optional systemd-boot layer: the EFI
	// binary as it is, at most boot.MaxSystemdBootSize bytes.
	SystemdBootMediaType = types.MediaType("application/vnd.slate.systemd-boot.efi.v1")
	// UKIMediaType is the optional signed Unified Kernel Image.
	UKIMediaType = types.MediaType("application/vnd.slate.uki.efi.v1")

	// A system extension's manifest, config (sysext.Config) and image.
	ExtensionArtifactType    = "application/vnd.slate.sysext.v1"
	ExtensionConfigMediaType = types.MediaType("application/vnd.slate.sysext.config.v1+json")
	ExtensionMediaType       = types.MediaType("application/vnd.slate.sysext.squashfs-verity.v1")
)

// Annotation keys and the layer titles Write sets.
const (
	// AnnotationTitle names a layer (a file name, as ORAS and others use it).
	AnnotationTitle = "org.opencontainers.image.title"
	// AnnotationRefName tags a manifest in an OCI layout's index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"

	RootTitle        = "rootfs.img"
	KernelTitle      = "vmlinuz"
	InitramfsTitle   = "initramfs"
	SystemdBootTitle = "systemd-bootx64.efi"
	UKITitle         = "uki.efi"

	// Each entry of a registry index of extensions carries these (Push
	// sets them), so that a person or a tool can tell the entries apart
	// without fetching them; ResolveExtension trusts only the signed
	// configs.
	AnnotationExtensionRelease = "dev.slate.sysext.release" // sysext.Release.String()
	AnnotationExtensionName    = "dev.slate.sysext.name"
)

// ExtensionTitle is the title of an extension's image layer.
func ExtensionTitle(name string) string { return name + ".raw" }

// Config is the artifact's config blob. It is marshalled as JSON in field
// order, so the same Config always gives the same bytes.
type Config struct {
	// Version is the image's version label. It also tags the manifest in
	// the layout and is the default tag for Push, so it must be a valid
	// OCI tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
	Version string `json:"version"`
	// Architecture in GOARCH/OCI naming: "amd64".
	Architecture string `json:"architecture"`
	// OS is "linux".
	OS string `json:"os"`
	// Source is the digest (sha256:...) of the OCI image the artifact was
	// built from.
	Source string `json:"source"`
	// KernelRelease is the kernel's `uname -r`.
	KernelRelease string `json:"kernelRelease"`
	// SystemdBootVersion is the version in the systemd-boot layer's
	// LoaderInfo ("257.9-1~deb13u1"). Write fills it in from the blob and
	// refuses a config that disagrees; empty when the artifact has no
	// systemd-boot layer or its blob has no readable version (a node then
	// installs none).
	SystemdBootVersion string `json:"systemdBootVersion,omitempty"`
	// Cmdline is the slot-independent part of the kernel command line. The
	// per-slot and per-disk arguments (boot.ArgSlot, ArgRoot, ArgRootHash,
	// ArgState, ArgVersion) are added by whoever writes the boot entry and
	// must not appear here. It may be empty.
	Cmdline string `json:"cmdline"`
	// Root describes the root layer and its dm-verity hash tree.
	Root RootInfo `json:"root"`
	// Created is taken from the source image so builds are reproducible.
	// Write stores it in UTC.
	Created time.Time `json:"created"`
	// OSRelease is the image's os-release, as far as matching extensions
	// goes: an upgrade fetches the extensions for it before it writes a
	// slot. Zero in artifacts from before extensions (and then omitted, so
	// their configs keep their bytes).
	OSRelease sysext.Release `json:"osRelease,omitzero"`
	// Extensions are the extensions the image carries in its root
	// (slate build --extension), in the order they were given.
	Extensions []CarriedExtension `json:"extensions,omitempty"`
}

// CarriedExtension is an extension an image carries in its root's store.
type CarriedExtension struct {
	Name    string         `json:"name"`
	Version string         `json:"version"`
	Release sysext.Release `json:"release"`
	// Digest is the extension artifact's manifest digest.
	Digest string `json:"digest"`
}

// RootInfo describes the root layer: the squashfs and its dm-verity
// superblock and hash tree, byte for byte what goes into a root partition.
type RootInfo = verity.Layout

// Artifact is an update artifact read by Open, or a system extension read
// by OpenExtension or ResolveExtension (Extension is set then, and Config,
// Root, Kernel, Initramfs and SystemdBoot are zero).
//
// The layers' Compressed and Uncompressed streams are the same, the bytes
// as stored (nothing is ever decompressed, even a gzipped initramfs), and
// DiffID equals Digest. A stream ends with an error instead of io.EOF if
// the bytes do not match the layer's digest or size, whether the artifact
// came from a layout or a registry: a reader must not trust what it wrote
// until it has read to io.EOF.
type Artifact struct {
	// Digest is the manifest digest.
	Digest v1.Hash
	// Config is the parsed config blob.
	Config Config
	// Root, Kernel and Initramfs are layers 0, 1 and 2 of the manifest;
	// nil if the manifest lacks them (Validate reports that).
	Root, Kernel, Initramfs v1.Layer
	// SystemdBoot is layer 3, the image's systemd-boot; nil for an artifact
	// written without it, which is valid.
	SystemdBoot v1.Layer
	// UKI is layer 4, the signed Unified Kernel Image of an image built
	// for Secure Boot; nil otherwise.
	UKI v1.Layer
	// Extension is a system extension's parsed config; nil for an update
	// artifact.
	Extension *sysext.Config
	// ExtensionImage is a system extension's layer 0, its image (squashfs
	// and verity tree).
	ExtensionImage v1.Layer
	// Image is the underlying OCI image (manifest, config, raw layers).
	Image v1.Image

	where string // "oci:DIR" or the registry reference, for messages
	// sigs reads the signature image stored beside the artifact
	// (signature.Tag), or fails wrapping signature.ErrNoSignature.
	sigs func() (v1.Image, error)
	// referrers reads the manifests stored beside the artifact that refer
	// to it and hold Sigstore bundles (cosign's newer format); nil: none.
	referrers func() ([]signature.Referrer, error)
}

// Where says where the artifact was read from: "oci:DIR[@DIGEST]" or a
// registry reference with its digest.
func (a *Artifact) Where() string { return a.where }

// Errors Open and OpenExtension wrap when a reference holds the other kind,
// and OpenExtension, Sign and SignBundle when it holds an index of
// extensions (Extensions lists them, ResolveExtension picks one).
var (
	ErrIsExtension = errors.New("a system extension, not an update artifact")
	ErrIsUpdate    = errors.New("an update artifact, not a system extension")
	ErrIndex       = errors.New("an index of extensions")
)

// version is what tags the artifact: its config's version.
func (a *Artifact) version() string {
	if a.Extension != nil {
		return a.Extension.Version
	}
	return a.Config.Version
}

// platform is the config's OS and architecture.
func (a *Artifact) platform() (os, arch string) {
	if a.Extension != nil {
		return a.Extension.OS, a.Extension.Architecture
	}
	return a.Config.OS, a.Config.Architecture
}

// describe names an extension for messages: "gpu 1.0 for ID=debian VERSION_ID=12".
func describe(c *sysext.Config) string {
	return fmt.Sprintf("%s %s for %s", c.Name, c.Version, c.Release)
}
