package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/builder/inspect"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/internal/progress"
	"github.com/slate-os/slate/signature"
	sysextbuild "github.com/slate-os/slate/sysext/build"
)

func inspectCmd() *cobra.Command {
	var (
		asJSON  bool
		keyFile string
	)
	c := &cobra.Command{
		Use:   "inspect DISK|ARTIFACT|EXT.raw",
		Short: "Show a disk image's partitions, slots and boot entries, an artifact's config, or a system extension",
		Long: `inspect shows a disk image's partitions, slots and boot entries (a disk in any
format slate build writes: raw, qcow2, vhd, vmdk, gce .tar.gz, raw.zst, raw.xz,
told apart by their bytes), or an update artifact's config and how many
signatures it carries. For a system extension
artifact (or a tag holding builds for several OS releases) it shows each
extension's name, version, extension-release, image and signatures; for an
EXT.raw (slate sysext build --output) its extension-release and the verity
root hash recomputed from the file, with the hash tree checked.

With --key PUB (a PEM public key, as update.publicKey takes) it also checks,
as a node does, that the artifact is signed by that key, in cosign's .sig
format or as a Sigstore bundle, and fails with the reason if it is not.`,
		Example: `  slate inspect node.raw
  slate inspect --json node-1.4.1.oci
  slate inspect gpu-tools.raw
  slate inspect --key release.key.pub registry.example/ext/gpu-tools:1.0
  slate inspect --key release.key.pub registry.example/org/node:1.4.1`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if sysextbuild.IsImage(args[0]) {
				return inspectExtension(args[0], asJSON, keyFile)
			}
			r, err := inspect.Path(args[0])
			if errors.Is(err, artifact.ErrIsExtension) {
				return inspectExtensionArtifacts(args[0], asJSON, keyFile)
			}
			if err != nil {
				return err
			}
			if asJSON && keyFile == "" {
				return printJSON(r)
			}
			if !asJSON {
				r.Text(os.Stdout)
			}
			if keyFile == "" {
				return nil
			}
			if r.Artifact == nil {
				return fmt.Errorf("--key checks an artifact's signature; %s is a disk", args[0])
			}
			b, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			key, err := signature.ParsePublicKey(string(b))
			if err != nil {
				return fmt.Errorf("%s: %w", keyFile, err)
			}
			ref := args[0]
			if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
				ref = artifact.LayoutPrefix + ref
			}
			a, err := artifact.Open(ref)
			if err != nil {
				return err
			}
			v, err := a.VerifySignature(key)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(struct {
					*inspect.Report
					VerifiedBy string `json:"verifiedBy"`
					Format     string `json:"verifiedFormat"`
				}{r, signature.KeyID(key), v.Format})
			}
			fmt.Printf("  verified signed by key %s (%s)\n", signature.KeyID(key), v.Format)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	c.Flags().StringVar(&keyFile, "key", "", "check that the artifact is signed by this PEM public key")
	return c
}

func pushCmd() *cobra.Command {
	var insecure bool
	c := &cobra.Command{
		Use:   "push LAYOUT REF",
		Short: "Push an update artifact or a system extension (an OCI layout) to a registry",
		Long: `Push sends the artifact in LAYOUT to REF, e.g. registry.example/org/node:1.4.1.
Credentials come from the Docker config (docker login), as with other OCI tools.

A system extension (slate sysext build --artifact) pushed to a tag that holds
the same extension for other OS releases joins them: the tag then holds an
index of them all, from which each node takes the one for its release. The
one for the same release is replaced.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pr := progress.New(os.Stderr)
			started := false
			opts := []artifact.Option{artifact.WithContext(cmd.Context()), artifact.WithProgress(func(done, total int64) {
				if !started {
					pr.Sized("push", total)
					started = true
				}
				pr.Bytes(done)
			})}
			if insecure {
				opts = append(opts, artifact.Insecure())
			}
			dir := strings.TrimPrefix(args[0], artifact.LayoutPrefix)
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				return &source.NotFoundError{Path: dir}
			}
			p, err := artifact.Push(dir, args[1], opts...)
			pr.Done()
			if err != nil {
				return err
			}
			fmt.Printf("pushed %s@%s\n", p.Ref, p.Digest)
			if p.Signed {
				fmt.Printf("pushed its signatures as %s\n", p.Ref.Context().Tag(signature.Tag(p.Digest)))
			}
			if p.Bundles > 0 {
				fmt.Printf("pushed its %d Sigstore bundle(s) as referrers\n", p.Bundles)
			}
			if len(p.Releases) > 0 {
				fmt.Printf("%s is an index (%s) of extensions for: %s\n", p.Ref, p.Index, strings.Join(p.Releases, "; "))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP to the registry")
	return c
}
