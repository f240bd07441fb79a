package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/sysext"
	sysextbuild "github.com/slate-os/slate/sysext/build"
)

func sysextCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "sysext",
		Short: "System extensions: build them; on a node, fetch and activate them",
		Long: `System extensions add software to /usr and /opt of some nodes (a GPU driver,
debugging tools) without a writable root: squashfs images with a dm-verity
tree, signed and shipped as OCI artifacts, merged by systemd-sysext at boot
when the node config names them and they match the running image.`,
	}
	c.AddCommand(sysextBuildCmd())
	c.AddCommand(sysextNodeCommands()...)
	return c
}

func sysextBuildCmd() *cobra.Command {
	var (
		o        sysextbuild.Options
		insecure bool
		asJSON   bool
	)
	c := &cobra.Command{
		Use:   "build --source REF|DIR (--for IMAGE | --id ID ...) [--output EXT.raw] [--artifact DIR]",
		Short: "Build a system extension image (EXT.raw) and/or its artifact from an OCI image or a directory",
		Long: `build makes a system extension: the /usr and /opt of an OCI image (registry
reference, oci:DIR[:TAG|@sha256:DIGEST], docker-archive:FILE) or of a
directory, as a squashfs with a dm-verity tree (the format of a root slot),
written to --output and/or as an extension artifact (an OCI layout) to
--artifact, which slate sign and slate push handle as update artifacts.

Anything outside /usr and /opt is an error naming the path: systemd-sysext
merges nothing else. The extension carries
/usr/lib/extension-release.d/extension-release.NAME, which says which OS
images it is for: the source's own if it has one (it names the extension
unless --name does, and must agree with it), else one written for the OS
image --for names (its ID and SYSEXT_LEVEL or VERSION_ID, from its
os-release), or from --id, --version-id, --sysext-level and --arch
(--id _any: every OS).

A directory's entries get owner 0:0 and one mtime ($SOURCE_DATE_EPOCH, else
1970), keep their modes, and may not be device nodes. The version is
--version, else the image's org.opencontainers.image.version label. The
same inputs give byte-identical outputs. slate inspect EXT.raw reads one back.`,
		Example: `  slate sysext build --source registry.example/org/gpu-driver:550 --for oci:build/node --output gpu.raw
  slate sysext build --source ./debug-tools --name debug --version 1.0 --id debian --version-id 12 --artifact debug-1.0.oci`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.SourceOptions.Insecure = insecure
			if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
				}
				o.ModTime = time.Unix(n, 0).UTC()
			}
			if o.Release.ID == "" && (o.Release.VersionID != "" || o.Release.SysextLevel != "" || o.Release.Architecture != "") {
				return errors.New("--version-id, --sysext-level and --arch need --id")
			}
			o.Log = os.Stderr
			res, err := sysextbuild.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(res)
			}
			c := res.Config
			how := "written for it"
			if res.ReleaseKept {
				how = "the source's own"
			}
			fmt.Printf("built extension %s %s\n", c.Name, c.Version)
			fmt.Printf("  release   %s (%s)\n", c.Release, how)
			if res.For != nil {
				fmt.Printf("  for       %s: %s\n", o.For, res.For)
			}
			if c.Source != "" {
				fmt.Printf("  source    %s\n", c.Source)
			}
			fmt.Printf("  image     %d bytes (squashfs %d, verity tree at %d), %d entries\n", c.Image.Size, c.Image.DataSize, c.Image.HashOffset, res.Entries)
			fmt.Printf("  roothash  %s\n", c.Image.RootHash)
			if res.DroppedXattrs > 0 {
				fmt.Printf("  xattrs    %d left out (system.*: squashfs cannot hold them)\n", res.DroppedXattrs)
			}
			if res.Output != "" {
				fmt.Printf("  output    %s\n", res.Output)
			}
			if res.Artifact != "" {
				fmt.Printf("  artifact  %s (%s)\n", res.Artifact, res.Digest)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.Source, "source", "", "what the extension holds: an OCI image (registry ref, oci:DIR[:TAG|@DIGEST], docker-archive:FILE) or a directory with usr/ and opt/")
	f.StringVar(&o.For, "for", "", "the OS image the extension is for (registry ref, oci:DIR, docker-archive:FILE, or its slate update artifact): its os-release gives the extension-release")
	f.StringVarP(&o.Output, "output", "o", "", "write the extension image (EXT.raw) here")
	f.StringVar(&o.Artifact, "artifact", "", "write the extension artifact here (an OCI layout directory)")
	f.StringVar(&o.Name, "name", "", "the extension's name (default: NAME of the source's extension-release.NAME)")
	f.StringVar(&o.Version, "version", "", "version label (default: the image's org.opencontainers.image.version label)")
	f.StringVar(&o.Release.ID, "id", "", "without --for: the OS ID the extension is for (_any: every OS)")
	f.StringVar(&o.Release.VersionID, "version-id", "", "with --id: the OS VERSION_ID it is for")
	f.StringVar(&o.Release.SysextLevel, "sysext-level", "", "with --id: the OS SYSEXT_LEVEL it is for")
	f.StringVar(&o.Release.Architecture, "arch", "", "with --id: ARCHITECTURE, in systemd's names (default "+sysext.SystemdArch+"; _any: every one)")
	f.StringVar(&o.Compression, "compression", "", "squashfs compressor: zstd (default), xz, gzip, lz4, lzo, lzma")
	f.BoolVar(&insecure, "insecure", false, "allow plain HTTP to the registries")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return c
}

// inspectExtension is slate inspect of an extension image file.
func inspectExtension(path string, asJSON bool, keyFile string) error {
	if keyFile != "" {
		return fmt.Errorf("--key checks an artifact's signature; %s is an extension image, whose root hash only its artifact's signed config vouches for", path)
	}
	r, err := sysextbuild.Inspect(path)
	if err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(r); err != nil {
			return err
		}
	} else {
		r.Text(os.Stdout)
	}
	if len(r.Problems) > 0 {
		return fmt.Errorf("%s: not a sound extension image: %s", path, r.Problems[0])
	}
	return nil
}
