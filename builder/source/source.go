// Package source opens the OCI image a build starts from: a registry
// reference, an OCI layout directory (oci:DIR[:TAG|@DIGEST]) or a
// docker-save tarball (docker-archive:FILE, or a path to a .tar file).
// From an index it picks linux/amd64, checking a layout's manifest against
// the digest its index gives (builder/flatten checks the rest as it reads).
package source

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Platform is the only one slate builds for today.
var Platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Options tune how a reference is opened.
type Options struct {
	// Insecure allows plain HTTP to a registry.
	Insecure bool
	// Keychain resolves registry credentials; authn.DefaultKeychain if nil.
	Keychain authn.Keychain
}

// Open resolves ref to an image.
func Open(ref string, opt Options) (v1.Image, error) {
	img, err := open(ref, opt)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	return img, nil
}

func open(ref string, opt Options) (v1.Image, error) {
	switch {
	case strings.HasPrefix(ref, "oci:"):
		rest := strings.TrimPrefix(ref, "oci:")
		if _, err := os.Stat(filepath.Join(rest, "index.json")); err == nil {
			return fromLayout(rest, "") // a directory whose name has a colon
		}
		dir, sel := SplitLayoutRef(rest)
		return fromLayout(dir, sel)
	case strings.HasPrefix(ref, "docker-archive:"):
		return fromTarball(strings.TrimPrefix(ref, "docker-archive:"))
	}
	if fi, err := os.Stat(ref); err == nil {
		if fi.IsDir() {
			return fromLayout(ref, "")
		}
		return fromTarball(ref)
	}
	var nopts []name.Option
	if opt.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("not a file, an oci: layout or a registry reference: %w", err)
	}
	kc := opt.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	return remote.Image(r, remote.WithAuthFromKeychain(kc), remote.WithPlatform(Platform))
}

// SplitLayoutRef splits "DIR[:TAG|@DIGEST]" into the directory and the
// selector ("TAG" or "sha256:..."), allowing colons in DIR when what follows
// the last one looks like a path.
func SplitLayoutRef(s string) (dir, sel string) {
	if i := strings.LastIndex(s, "@"); i >= 0 && strings.HasPrefix(s[i+1:], "sha256:") {
		return s[:i], s[i+1:]
	}
	if i := strings.LastIndex(s, ":"); i >= 0 && !strings.ContainsAny(s[i+1:], "/") && s[i+1:] != "" {
		return s[:i], s[i+1:]
	}
	return s, ""
}

func fromTarball(path string) (v1.Image, error) {
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return nil, fmt.Errorf("reading docker-save tarball: %w", err)
	}
	return Archive{img}, nil
}

// Archive is an image read from a docker-save tarball. Its manifest.json
// names no layer digests: go-containerregistry computes them from the
// layers (compressing an uncompressed one to do so), so the config's
// diff_ids are what its layers can be checked against, and builder/flatten
// reads them uncompressed.
type Archive struct{ v1.Image }

// DiffIDsOnly says so to builder/flatten.
func (Archive) DiffIDsOnly() bool { return true }

func fromLayout(dir, sel string) (v1.Image, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return nil, fmt.Errorf("%s is not an OCI layout (no index.json)", dir)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	return pick(idx, sel, dir)
}

// pick finds the image in an index: by digest, by ref.name annotation, or the
// only one; nested indexes are searched for linux/amd64.
func pick(idx v1.ImageIndex, sel, where string) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var cands []v1.Descriptor
	for _, d := range m.Manifests {
		switch {
		case sel == "":
			cands = append(cands, d)
		case strings.HasPrefix(sel, "sha256:"):
			if d.Digest.String() == sel {
				cands = append(cands, d)
			}
		case d.Annotations["org.opencontainers.image.ref.name"] == sel:
			cands = append(cands, d)
		}
	}
	if len(cands) == 0 {
		if sel == "" {
			return nil, fmt.Errorf("%s holds no image", where)
		}
		return nil, fmt.Errorf("%s has no image %q", where, sel)
	}
	var found []v1.Image
	for _, d := range cands {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if err := sameDigest(child, d, where); err != nil {
				return nil, err
			}
			img, err := pick(child, "", where)
			if err != nil {
				continue
			}
			found = append(found, img)
		case d.MediaType.IsImage():
			if d.Platform != nil && !d.Platform.Satisfies(Platform) {
				continue
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			if err := sameDigest(img, d, where); err != nil {
				return nil, err
			}
			if cf, err := img.ConfigFile(); err == nil && cf.Architecture != "" && cf.Architecture != Platform.Architecture {
				continue
			}
			found = append(found, img)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%s has no %s/%s image", where, Platform.OS, Platform.Architecture)
	case 1:
		return found[0], nil
	}
	return nil, errors.New(where + " holds several images: name one with :TAG or @sha256:DIGEST")
}

// sameDigest checks a layout's manifest (or nested index) blob against the
// digest its index gives: a layout's blobs are files, and go-containerregistry
// reads them as they are (builder/flatten checks the config and layers).
func sameDigest(blob interface{ Digest() (v1.Hash, error) }, d v1.Descriptor, where string) error {
	got, err := blob.Digest()
	if err != nil {
		return err
	}
	if got != d.Digest {
		return fmt.Errorf("%s: blob %s hashes to %s: not what the index names", where, d.Digest, got)
	}
	return nil
}
