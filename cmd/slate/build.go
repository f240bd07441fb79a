package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/builder"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/progress"
)

func buildCmd() *cobra.Command {
	var (
		sbKey, sbCert, sbEnroll                                                             string
		sbat                                                                                int
		specFile, source, output, format, artifactDir, version, compression, initBin, agent string
		slotSize, espSize, stateSize                                                        spec.Size
		cmdline, modules, updateKeys, exts                                                  []string
		insecure, asJSON                                                                    bool
	)
	c := &cobra.Command{
		Use:   "build [-f spec.yaml] [--source REF] [--output disk.raw] [--artifact DIR]",
		Short: "Build a bootable A/B disk image and an update artifact from an OCI image",
		Long: `Build reads an OCI image, streams its flattened filesystem into a squashfs
root with a dm-verity hash tree, packs an initramfs with slate's init, and
writes a GPT disk (ESP with systemd-boot, slot A, an empty slot B, a state
partition) and, if asked, an update artifact as an OCI layout.

The root gets slate's files on top of the image: this slate binary as
/usr/bin/slate (the node's agent; --agent gives another, which must be a
static x86-64 build, CGO_ENABLED=0) and its systemd units, and what the
image's agent trusts for upgrades: the update keys (update.publicKeys in the
spec, --update-key) and update.allowUnsigned. An image with neither refuses
every upgrade unless its node config adds a key or allows unsigned artifacts.

System extensions (--extension, extensions in the spec) go into the root's
extension store, /usr/lib/slate/extensions, which a node config names them
from. Each is checked before the image is read: signed by one of the update
keys when the image has any (unless update.allowUnsigned), its image checked
against its verity root hash; and, once the image's os-release is known,
matched against it as systemd-sysext will: a mismatch fails the build.

The disk is raw unless --format (outputs.format) asks for another: qcow2,
vhd (a fixed VHD, what Azure imports), vmdk (streamOptimized, for VMware and
OVAs), gce (disk.raw in a gzip'd tar, what Compute Engine imports; the output
must end in .tar.gz), raw.zst or raw.xz. Every format is reproducible, and
slate inspect reads each back.

REF is a registry reference (registry.example/org/node:1.4), an OCI layout
(oci:DIR[:TAG|@sha256:DIGEST]) or a docker-save tarball (docker-archive:FILE).
Flags override the spec file. The same inputs give byte-identical outputs.`,
		Example: `  slate build --source oci:build/reference --output node.raw
  slate build -f configs/examples/image.yaml --version 1.4.1 --artifact node-1.4.1.oci
  slate build --source oci:build/reference --format vhd --output node.vhd
  slate build --source oci:build/reference --format gce --output node.tar.gz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := &spec.Spec{APIVersion: spec.APIVersion, Kind: spec.Kind}
			if specFile != "" {
				var err error
				if s, err = spec.Load(specFile); err != nil {
					return err
				}
			}
			f := cmd.Flags()
			set := func(name string, apply func()) {
				if f.Changed(name) {
					apply()
				}
			}
			set("source", func() { s.Source = source })
			set("output", func() { s.Outputs.Disk = output })
			set("format", func() { s.Outputs.Format = format })
			set("artifact", func() { s.Outputs.Artifact = artifactDir })
			set("version", func() { s.Version = version })
			set("compression", func() { s.Root.Compression = compression })
			set("slot-size", func() { s.Disk.SlotSize = slotSize })
			set("esp-size", func() { s.Disk.ESPSize = espSize })
			set("state-size", func() { s.Disk.StateSize = stateSize })
			set("cmdline", func() { s.Kernel.ExtraCmdline = append(s.Kernel.ExtraCmdline, cmdline...) })
			set("module", func() { s.Initramfs.Modules = append(s.Initramfs.Modules, modules...) })
			absSet := func(name string, dst *string, v string) error {
				if !f.Changed(name) {
					return nil
				}
				abs, err := filepath.Abs(v)
				*dst = abs
				return err
			}
			if err := errors.Join(absSet("secure-boot-key", &s.SecureBoot.Key, sbKey),
				absSet("secure-boot-cert", &s.SecureBoot.Certificate, sbCert),
				absSet("secure-boot-enroll", &s.SecureBoot.EnrollKeys, sbEnroll)); err != nil {
				return err
			}
			set("sbat", func() { s.SecureBoot.SBAT = sbat })
			s.Extensions = append(s.Extensions, exts...)
			for _, k := range updateKeys {
				abs, err := filepath.Abs(k)
				if err != nil {
					return err
				}
				s.Update.PublicKeys = append(s.Update.PublicKeys, abs)
			}
			if agent == "" {
				// One code base, three roles: the CLI that builds is the agent it installs.
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("finding this slate binary to install as the agent: %w (give --agent PATH)", err)
				}
				agent = self
			}
			o := builder.Options{Spec: *s, InitBinary: initBin, AgentBinary: agent, Progress: progress.New(os.Stderr)}
			o.SourceOptions.Insecure = insecure
			if insecure {
				o.ExtensionOptions = append(o.ExtensionOptions, artifact.Insecure())
			}
			res, err := builder.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(res)
			}
			fmt.Printf("built %s from %s in %.1fs\n", res.Version, res.Source, res.Total.Seconds())
			fmt.Printf("  kernel    %s\n  roothash  %s\n  root      %d MiB, initramfs %d KiB (%d modules)\n",
				res.KernelRelease, res.RootHash, res.RootSize>>20, res.InitramfsSize>>10, len(res.Initramfs))
			fmt.Printf("  modules   %s\n", strings.Join(res.Initramfs, " "))
			if len(res.InitramfsSkipped) > 0 {
				fmt.Printf("  skipped   %s (optional, not in this kernel)\n", strings.Join(res.InitramfsSkipped, " "))
			}
			if len(res.InitramfsUnresolved) > 0 {
				fmt.Printf("  softdeps  %s: not in this kernel, ignored as modprobe would\n", strings.Join(res.InitramfsUnresolved, ", "))
			}
			if res.Disk != "" {
				fmt.Printf("  disk      %s (%s, %d MiB)\n", res.Disk, res.Format, res.Plan.Size>>20)
				fmt.Printf("  state     %d MiB: %s; grows to the end of the disk at boot\n", res.State.Size>>20, res.State.Reason)
			}
			if res.Artifact != "" {
				fmt.Printf("  artifact  %s\n", res.Artifact)
			}
			if sb := res.SecureBoot; sb != nil {
				enroll := ""
				if sb.Enroll {
					enroll = "; the disk enrolls its keys on first boot in Setup Mode"
				}
				fmt.Printf("  uki       %d KiB, signed by %s (%s), SBAT generation %d%s\n", sb.UKISize>>10, sb.SignedBy, sb.Fingerprint, sb.SBAT, enroll)
			}
			switch {
			case len(res.UpdateKeys) > 0 && res.AllowUnsigned:
				fmt.Printf("  updates   signed by %s, or UNSIGNED (update.allowUnsigned)\n", strings.Join(res.UpdateKeys, ", "))
			case len(res.UpdateKeys) > 0:
				fmt.Printf("  updates   signed by %s\n", strings.Join(res.UpdateKeys, " or "))
			case res.AllowUnsigned:
				fmt.Println("  updates   UNSIGNED accepted (update.allowUnsigned): for development only")
			default:
				fmt.Println("  updates   none trusted: this image refuses every upgrade unless a node config adds update.publicKey (build with --update-key FILE or update.publicKeys)")
			}
			for _, e := range res.Extensions {
				signed := "signed by " + e.SignedBy
				switch {
				case e.Unverified != "":
					signed = "UNVERIFIED (update.allowUnsigned): " + e.Unverified
				case e.SignedBy == "":
					signed = "signature not checked (the image has no update key)"
				}
				fmt.Printf("  extension %s %s for %s (%s), %s\n", e.Name, e.Version, e.Release, e.Digest, signed)
			}
			for _, st := range res.Steps {
				fmt.Printf("  %-10s%s\n", st.Name, st.Elapsed.Round(10*time.Millisecond))
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&specFile, "file", "f", "", "image spec (YAML); see configs/")
	f.StringVar(&source, "source", "", "source image: registry ref, oci:DIR[:TAG|@DIGEST] or docker-archive:FILE")
	f.StringVarP(&output, "output", "o", "", "write the disk image here")
	f.StringVar(&format, "format", "", "disk format: raw (default), qcow2, vhd (Azure: fixed VHD), vmdk (VMware: streamOptimized), gce (GCE: disk.raw in a gzip'd tar; name the output .tar.gz), raw.zst or raw.xz (compressed raw); qcow2, vhd and vmdk need qemu-img, raw.xz the xz tool")
	f.StringVar(&artifactDir, "artifact", "", "write the update artifact here (an OCI layout directory)")
	f.StringVar(&version, "version", "", "version label (default: the image's org.opencontainers.image.version label, else its digest)")
	f.StringVar(&compression, "compression", "", "squashfs compressor: zstd (default), xz, gzip, lz4, lzo, lzma")
	f.Var(&slotSize, "slot-size", "size of each root slot, e.g. 2GiB (default: twice the root, at least 1GiB)")
	f.Var(&espSize, "esp-size", "size of the EFI system partition (default 256MiB)")
	f.Var(&stateSize, "state-size", "initial size of the state partition; it grows to the disk's end at boot (default: 64MiB, more if the image's /var needs it)")
	f.StringArrayVar(&cmdline, "cmdline", nil, "extra kernel command line argument, one per flag, commas kept (repeatable: --cmdline console=ttyS0,115200 --cmdline quiet)")
	f.StringSliceVar(&modules, "module", nil, "extra kernel module for the initramfs (repeatable, or a comma-separated list)")
	f.StringArrayVar(&exts, "extension", nil, "system extension the image carries in /usr/lib/slate/extensions: a registry reference or oci:DIR[:TAG|@DIGEST] (repeatable; adds to the spec's extensions); it must match the image's os-release and be signed by an update key when the image has any")
	f.StringArrayVar(&updateKeys, "update-key", nil, "public key file (PEM) that update artifacts must be signed by, baked into the image (repeatable; adds to the spec's update.publicKeys)")
	f.StringVar(&sbKey, "secure-boot-key", "", "sign the boot files with this Secure Boot db key (PEM; slate keygen --secure-boot makes db.key): the image boots as a signed Unified Kernel Image (spec: secureBoot.key)")
	f.StringVar(&sbCert, "secure-boot-cert", "", "the db key's certificate (PEM; db.crt) (spec: secureBoot.certificate)")
	f.StringVar(&sbEnroll, "secure-boot-enroll", "", "directory with PK.auth, KEK.auth and db.auth for systemd-boot to enroll on first boot, for machines in Setup Mode (spec: secureBoot.enrollKeys)")
	f.IntVar(&sbat, "sbat", 0, "SBAT generation of the image (spec: secureBoot.sbat; default 1)")
	f.StringVar(&initBin, "init", "", "use this init binary instead of the embedded one (development)")
	f.StringVar(&agent, "agent", "", "install this slate binary as the node's agent, /usr/bin/slate (default: this one; must be static)")
	f.BoolVar(&insecure, "insecure", false, "allow plain HTTP to the source and extension registries")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}
