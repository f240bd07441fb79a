// Package source opens the OCI image a build starts from: a registry
// reference, an OCI layout directory (oci:DIR[:TAG|@DIGEST]) or a
// docker-save tarball (docker-archive:FILE, or a path to a .tar file).
// From an index it picks linux/amd64, checking a layout's manifest against
// the digest its index gives (builder/flatten checks the rest as it reads).
// A path that does not exist is reported as such, never looked up in a
// registry (LocalPath).
package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slate-os/slate/boot"
)

// Platform is the only one slate builds for today.
var Platform = v1.Platform{OS: boot.OS, Architecture: boot.Arch}

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
	var nf *NotFoundError
	if errors.As(err, &nf) {
		return nil, fmt.Errorf("source: %w", err) // the error names the path
	}
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", ref, err)
	}
	return img, nil
}

// NotFoundError is a local path that does not exist: a typo, never a
// registry lookup.
type NotFoundError struct {
	Path string
	// Ref is set when Path could have been meant as a Docker Hub image.
	Ref bool
}

func (e *NotFoundError) Error() string {
	msg := "no such file or directory: " + e.Path
	if e.Ref {
		msg += " (an image on Docker Hub needs its tag or registry: " + e.Path + ":latest, docker.io/" + e.Path + ")"
	}
	return msg
}

// Is makes errors.Is(err, fs.ErrNotExist) hold.
func (e *NotFoundError) Is(target error) bool { return target == fs.ErrNotExist }

// LocalPath says whether ref names a file or directory here rather than an
// image in a registry, so that a typo is reported as a missing file and
// not looked up on Docker Hub. It does when ref exists, starts with /, ./,
// ../ or ~, or has no registry-like form: a name without a slash and
// without a tag or digest ("node.raw"), a path whose first element is not a
// registry host (a host has a dot or a port, or is localhost) and that has
// no tag or digest ("build/node.oci"), or anything that does not parse as a
// reference. Docker Hub's images are still reached with a tag
// ("debian:bookworm", "org/node:1.4") or in full ("docker.io/library/debian").
func LocalPath(ref string) bool {
	if _, err := os.Lstat(ref); err == nil {
		return true
	}
	for _, p := range []string{"/", "./", "../", "~"} {
		if strings.HasPrefix(ref, p) {
			return true
		}
	}
	if ref == "." || ref == ".." {
		return true
	}
	if _, err := name.ParseReference(ref); err != nil {
		return true
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	tagged := strings.Contains(last, ":") || strings.Contains(ref, "@")
	first, _, nested := strings.Cut(ref, "/")
	host := nested && (strings.ContainsAny(first, ".:") || first == "localhost")
	return !host && !tagged
}

// CheckLocal returns a *NotFoundError for a ref that LocalPath takes for a
// path and that does not exist, nil otherwise.
func CheckLocal(ref string) error {
	// oci:DIR[:TAG|@DIGEST] and docker-archive:FILE are local by their
	// prefix: the directory or file must be there.
	if p, ok := strings.CutPrefix(ref, "oci:"); ok {
		dir, _ := layoutRef(p)
		if _, err := os.Stat(dir); err != nil {
			return &NotFoundError{Path: dir}
		}
		return nil
	}
	if p, ok := strings.CutPrefix(ref, "docker-archive:"); ok {
		if _, err := os.Stat(p); err != nil {
			return &NotFoundError{Path: p}
		}
		return nil
	}
	if _, err := os.Lstat(ref); err == nil || !LocalPath(ref) {
		return nil
	}
	_, err := name.ParseReference(ref)
	return &NotFoundError{Path: ref, Ref: err == nil && !strings.HasPrefix(ref, ".") && !strings.HasPrefix(ref, "/") && !strings.HasPrefix(ref, "~")}
}

func open(ref string, opt Options) (v1.Image, error) {
	switch {
	case strings.HasPrefix(ref, "oci:"):
		return fromLayout(layoutRef(strings.TrimPrefix(ref, "oci:")))
	case strings.HasPrefix(ref, "docker-archive:"):
		return fromTarball(strings.TrimPrefix(ref, "docker-archive:"))
	}
	if fi, err := os.Stat(ref); err == nil {
		if fi.IsDir() {
			return fromLayout(ref, "")
		}
		return fromTarball(ref)
	}
	if err := CheckLocal(ref); err != nil {
		return nil, err
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

// layoutRef is SplitLayoutRef, except that a layout directory whose name
// has a colon is taken whole.
func layoutRef(s string) (dir, sel string) {
	if _, err := os.Stat(filepath.Join(s, "index.json")); err == nil {
		return s, ""
	}
	return SplitLayoutRef(s)
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
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, &NotFoundError{Path: dir}
	}
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
