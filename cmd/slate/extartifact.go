package main

import (
	"crypto"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
)

// extensionArtifacts is `slate inspect` of a layout or registry reference
// that holds system extensions: one, or an index of them for several OS
// releases.
type extensionArtifacts struct {
	Kind       string             `json:"kind"` // "extension"
	Path       string             `json:"path"`
	Extensions []extensionSummary `json:"extensions"`
}

type extensionSummary struct {
	Digest string        `json:"digest"`
	Where  string        `json:"where"`
	Config sysext.Config `json:"config"`
	// Signatures and Bundles count what is stored beside it, as for an
	// update artifact.
	Signatures int `json:"signatures"`
	Bundles    int `json:"bundles,omitempty"`
	// With --key: the key that signed it and the format, or why not.
	VerifiedBy     string `json:"verifiedBy,omitempty"`
	VerifiedFormat string `json:"verifiedFormat,omitempty"`
	NotVerified    string `json:"notVerified,omitempty"`
}

// inspectExtensionArtifacts shows the extensions arg (a layout directory,
// oci:DIR or a registry reference) offers and, with keyFile, checks each
// one's signature: the first that fails fails the command, after the
// report.
func inspectExtensionArtifacts(arg string, asJSON bool, keyFile string) error {
	ref := arg
	if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
		ref = artifact.LayoutPrefix + ref
	}
	var key crypto.PublicKey
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return err
		}
		if key, err = signature.ParsePublicKey(string(b)); err != nil {
			return fmt.Errorf("%s: %w", keyFile, err)
		}
	}
	exts, err := artifact.Extensions(ref)
	if err != nil {
		return err
	}
	r := extensionArtifacts{Kind: "extension", Path: arg}
	var failed error
	for _, a := range exts {
		s := extensionSummary{Digest: a.Digest.String(), Where: a.Where(), Config: *a.Extension}
		at, err := a.Attached()
		if err == nil {
			s.Signatures, s.Bundles, err = at.Count()
		}
		if err != nil {
			return fmt.Errorf("%s: signatures: %w", a.Where(), err)
		}
		if key != nil {
			if v, err := a.VerifySignature(key); err != nil {
				s.NotVerified = err.Error()
				if failed == nil {
					failed = err
				}
			} else {
				s.VerifiedBy, s.VerifiedFormat = signature.KeyID(key), v.Format
			}
		}
		r.Extensions = append(r.Extensions, s)
	}
	if asJSON {
		if err := printJSON(r); err != nil {
			return err
		}
	} else {
		r.text(os.Stdout)
	}
	return failed
}

func (r *extensionArtifacts) text(w io.Writer) {
	if len(r.Extensions) > 1 {
		fmt.Fprintf(w, "%s offers %d extensions, one per OS release\n", r.Path, len(r.Extensions))
	}
	for _, s := range r.Extensions {
		c, l := s.Config, s.Config.Image
		source := c.Source
		if source == "" {
			source = "a directory"
		}
		fmt.Fprintf(w, "extension %s %s (%s)\n  digest   %s\n  release  %s\n  arch     %s/%s\n  image    %d bytes (squashfs %d, verity tree at %d)\n  roothash %s\n  source   %s\n  created  %s\n",
			c.Name, c.Version, s.Where, s.Digest, c.Release, c.OS, c.Architecture,
			l.Size, l.DataSize, l.HashOffset, l.RootHash, source, c.Created.Format(time.RFC3339))
		signed := "no"
		if s.Signatures > 0 || s.Bundles > 0 {
			d, _ := v1.NewHash(s.Digest)
			signed = fmt.Sprintf("%d signature(s) under the tag %s, %d Sigstore bundle(s)", s.Signatures, signature.Tag(d), s.Bundles)
		}
		fmt.Fprintf(w, "  signed   %s\n", signed)
		switch {
		case s.VerifiedBy != "":
			fmt.Fprintf(w, "  verified signed by key %s (%s)\n", s.VerifiedBy, s.VerifiedFormat)
		case s.NotVerified != "":
			fmt.Fprintf(w, "  NOT verified: %s\n", strings.ReplaceAll(s.NotVerified, "\n", "\n    "))
		}
	}
}
