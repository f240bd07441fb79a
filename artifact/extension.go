package artifact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/sysext"
)

// WriteExtension writes the system extension whose image (EXT.raw: the
// squashfs padded to 4 KiB, then its verity superblock and hash tree) is
// image as an OCI image layout at dir, and returns its manifest digest. The
// layout's index.json lists the one manifest, tagged with cfg.Version; the
// image layer's title is NAME.raw.
//
// The rules are Write's: cfg.Image.Size may be left zero (it is set to the
// image's size; when set, it must match), cfg.Created is stored in UTC, a
// config Validate would refuse is refused before the image is read, the
// same inputs give a byte-identical directory, and dir is replaced
// atomically, only if it is empty or a layout of slate extensions.
func WriteExtension(dir string, cfg sysext.Config, image Blob) (v1.Hash, error) {
	dir = filepath.Clean(dir)
	fail := func(err error) (v1.Hash, error) {
		return v1.Hash{}, fmt.Errorf("write extension %s: %w", dir, err)
	}
	cfg.Created = cfg.Created.UTC()
	pre := cfg
	if pre.Image.Size == 0 {
		pre.Image.Size = pre.Image.MinSize()
	}
	if p := checkExtensionConfig(pre); len(p) > 0 {
		return fail(&ValidationError{Problems: p, What: extensionKind.what})
	}
	d, err := writeDir(dir, extensionKind, func(tmp string) (v1.Hash, error) {
		lp, layers, err := stageLayers(tmp, extensionKind, []Blob{image})
		if err != nil {
			return v1.Hash{}, err
		}
		layers[0].title = ExtensionTitle(cfg.Name)
		if err := fillSize(extensionKind, &cfg.Image.Size, layers[0]); err != nil {
			return v1.Hash{}, err
		}
		if p := checkExtensionConfig(cfg); len(p) > 0 {
			return v1.Hash{}, &ValidationError{Problems: p, What: extensionKind.what}
		}
		return appendManifest(lp, extensionKind, cfg, layers, cfg.Version)
	})
	if err != nil {
		return fail(err)
	}
	return d, nil
}

// OpenExtension reads one system extension and validates it (see
// Validate). ref is what Open takes: oci:DIR, oci:DIR:TAG, oci:DIR@DIGEST
// or a registry reference, and must name one manifest: a tag that holds an
// index of extensions for several releases is refused (ResolveExtension
// picks from it). An update artifact is refused, wrapping ErrIsUpdate.
// WithPlatform applies to the extension's config.
func OpenExtension(ref string, opts ...Option) (*Artifact, error) {
	return openKind(ref, extensionKind, opts)
}

// maxIndexEntries bounds how many extensions one index may offer: each is
// a manifest and a config to fetch.
const maxIndexEntries = 64

// Extensions reads every system extension ref offers, each validated: the
// one manifest it names, or each entry of the index it names (Push makes
// those in registries). In a layout, oci:DIR lists every manifest that is
// not a signature, and a tag or digest that names an index lists its
// entries. An update artifact among them is refused, wrapping ErrIsUpdate.
func Extensions(ref string, opts ...Option) ([]*Artifact, error) {
	exts, err := listExtensions(ref, makeOptions(opts))
	if err != nil {
		return nil, err
	}
	for _, a := range exts {
		if err := a.Validate(); err != nil {
			return nil, err
		}
	}
	return exts, nil
}

// listExtensions reads what Extensions returns, not yet validated.
func listExtensions(ref string, o *options) ([]*Artifact, error) {
	rest, ok := strings.CutPrefix(ref, LayoutPrefix)
	if !ok {
		return remoteExtensions(ref, o)
	}
	dir, tag, digest := splitLayoutRef(rest)
	l, picked, err := readLayout(dir, tag, digest)
	if err != nil {
		return nil, err
	}
	var out []*Artifact
	for _, d := range picked {
		where := l.where + "@" + d.Digest.String()
		if !d.MediaType.IsIndex() {
			img, err := l.ii.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			a, err := l.artifact(img, d.Digest, where, extensionKind)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
			continue
		}
		im, err := l.index(d.Digest)
		if err != nil {
			return nil, err
		}
		ii, err := l.ii.ImageIndex(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		err = eachEntry(where, im, func(e v1.Descriptor, where string) error {
			img, err := ii.Image(e.Digest)
			if err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			a, err := l.artifact(img, e.Digest, where, extensionKind)
			out = append(out, a)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// eachEntry calls f for each entry of the index at where, after checking
// that it may be an extension's manifest.
func eachEntry(where string, im *v1.IndexManifest, f func(e v1.Descriptor, where string) error) error {
	if len(im.Manifests) > maxIndexEntries {
		return fmt.Errorf("%s: an index of %d manifests; an index of extensions has at most %d", where, len(im.Manifests), maxIndexEntries)
	}
	for _, e := range im.Manifests {
		w, _, _ := strings.Cut(where, "@")
		w += "@" + e.Digest.String()
		if e.MediaType != types.OCIManifestSchema1 {
			return fmt.Errorf("%s: an index entry of type %q, not an OCI image manifest; not a slate system extension", w, e.MediaType)
		}
		if err := f(e, w); err != nil {
			return err
		}
	}
	return nil
}

// remoteExtensions is listExtensions for a registry reference. The error
// of a reference that names nothing wraps the registry's (see notFound).
func remoteExtensions(s string, o *options) ([]*Artifact, error) {
	ref, desc, err := getRemote(s, o)
	if err != nil {
		return nil, err
	}
	repo := ref.Context()
	where := repo.String() + "@" + desc.Digest.String()
	if !desc.MediaType.IsIndex() {
		if desc.MediaType != types.OCIManifestSchema1 {
			return nil, fmt.Errorf("%s: %s is a %q, not an OCI image manifest; not a slate system extension", where, ref, desc.MediaType)
		}
		img, err := desc.Image()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		a, err := remoteArtifact(repo, img, desc.Digest, where, extensionKind, o)
		if err != nil {
			return nil, err
		}
		return []*Artifact{a}, nil
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	var out []*Artifact
	err = eachEntry(where, im, func(e v1.Descriptor, where string) error {
		// By digest: ggcr checks the manifest against it.
		img, err := remote.Image(repo.Digest(e.Digest.String()), o.remoteOptions()...)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		a, err := remoteArtifact(repo, img, e.Digest, where, extensionKind, o)
		out = append(out, a)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ResolveExtension reads the system extension that ref offers for an OS
// image whose os-release is host, on a node of architecture arch (OCI's
// name, boot.Arch, or systemd's, sysext.SystemdArch; "" is boot.Arch).
// ref is what Extensions takes; where it offers several (an index, Push
// makes them), the one whose signed config matches host (sysext.Match) and
// arch is taken, preferring one for host's ID over one for _any, then the
// first; all must be the same extension (by name). An entry that is not
// valid matches nothing. When none matches,
// the error is a *NoMatchError that lists what ref offers and why each
// does not fit.
func ResolveExtension(ref string, host sysext.Release, arch string, opts ...Option) (*Artifact, error) {
	exts, err := listExtensions(ref, makeOptions(opts))
	if err != nil {
		return nil, err
	}
	// An index Push made holds one extension's releases; a layout may hold
	// several extensions, which no OS release chooses between.
	var names []string
	for _, a := range exts {
		if !slices.Contains(names, a.Extension.Name) {
			names = append(names, a.Extension.Name)
		}
	}
	if len(names) > 1 {
		return nil, fmt.Errorf("%s offers several extensions (%s): name one by tag or digest", ref, strings.Join(names, ", "))
	}
	if arch == "" {
		arch = boot.Arch
	}
	ociArch, sdArch := archNames(arch)
	nm := &NoMatchError{Where: ref, Host: host, Arch: sdArch}
	var picked *Artifact
	for _, a := range exts {
		c := a.Extension
		var why string
		if err := a.Validate(); err != nil {
			why = err.Error()
		} else if c.Architecture != ociArch {
			why = fmt.Sprintf("it is for %s, this node is %s", c.Architecture, ociArch)
		} else if err := sysext.Match(c.Release, host, sdArch); err != nil {
			why = err.Error()
		}
		if why != "" {
			nm.Offered = append(nm.Offered, Offer{Digest: a.Digest, Config: *c, Why: why})
			continue
		}
		if picked == nil || (picked.Extension.Release.ID == "_any" && c.Release.ID != "_any") {
			picked = a
		}
	}
	if picked == nil {
		return nil, nm
	}
	return picked, nil
}

// NoMatchError is ResolveExtension's error when a reference offers no
// extension for the OS release asked for.
type NoMatchError struct {
	Where string         // the reference
	Host  sysext.Release // the os-release matched against
	Arch  string         // the node's architecture, systemd's name
	// Offered are the extensions the reference offers, each with why it
	// does not match.
	Offered []Offer
}

// Offer is an extension a reference offers.
type Offer struct {
	Digest v1.Hash
	Config sysext.Config
	Why    string
}

// Releases lists the releases the reference offers.
func (e *NoMatchError) Releases() []string {
	var r []string
	for _, o := range e.Offered {
		r = append(r, o.Config.Release.String())
	}
	return r
}

func (e *NoMatchError) Error() string {
	var offers []string
	for _, o := range e.Offered {
		offers = append(offers, fmt.Sprintf("%s (%s): %s", describe(&o.Config), o.Digest, o.Why))
	}
	return fmt.Sprintf("%s: no extension for %s on %s; it offers %s", e.Where, e.Host, e.Arch, strings.Join(offers, "; "))
}

// releaseKey is what Push replaces an index entry by: an extension for
// the same release and platform.
func releaseKey(c *sysext.Config) string {
	return c.Release.String() + " " + c.OS + "/" + c.Architecture
}

// mergeExtensions makes the index that tag holds once a (an extension) is
// pushed to it: nil when the tag holds nothing, or only an extension for
// the same release, so that it holds a's manifest itself; otherwise an
// index of what it held for other releases and a. A tag that holds an
// update artifact, another extension (by name), or anything else is
// refused.
func mergeExtensions(a *Artifact, tag name.Tag, o *options) (*extensionIndex, error) {
	held, err := remoteExtensions(tag.String(), o)
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s holds other than extensions: %w", tag, err)
	}
	key := releaseKey(a.Extension)
	entries := []*Artifact{a}
	for _, h := range held {
		switch {
		case h.Extension.Name != a.Extension.Name:
			return nil, fmt.Errorf("%s holds the extension %s (%s), not %s: push %s to a tag of its own",
				tag, h.Extension.Name, h.where, a.Extension.Name, a.Extension.Name)
		case h.Digest == a.Digest || releaseKey(h.Extension) == key:
			// replaced by a
		default:
			if err := h.Validate(); err != nil {
				return nil, fmt.Errorf("%s holds an invalid extension; delete it or push to another tag: %w", tag, err)
			}
			entries = append(entries, h)
		}
	}
	if len(entries) == 1 {
		return nil, nil
	}
	if len(entries) > maxIndexEntries {
		return nil, fmt.Errorf("%s would offer %d extensions, more than %d", tag, len(entries), maxIndexEntries)
	}
	return newExtensionIndex(entries)
}

// extensionIndex is an OCI index of extension manifests, as Push puts it
// under a tag (a remote.Taggable).
type extensionIndex struct {
	raw      []byte
	releases []string
}

func (i *extensionIndex) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *extensionIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }

// newExtensionIndex lists the extensions in the order of their release
// keys, so that the same extensions give the same index whatever order
// they were pushed in.
func newExtensionIndex(exts []*Artifact) (*extensionIndex, error) {
	exts = slices.Clone(exts)
	slices.SortFunc(exts, func(a, b *Artifact) int { return strings.Compare(releaseKey(a.Extension), releaseKey(b.Extension)) })
	im := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	idx := &extensionIndex{}
	for _, a := range exts {
		raw, err := a.Image.RawManifest()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.where, err)
		}
		c := a.Extension
		im.Manifests = append(im.Manifests, v1.Descriptor{
			MediaType:    types.OCIManifestSchema1,
			Size:         int64(len(raw)),
			Digest:       a.Digest,
			ArtifactType: ExtensionArtifactType,
			Platform:     &v1.Platform{OS: c.OS, Architecture: c.Architecture},
			Annotations: map[string]string{
				AnnotationExtensionRelease: c.Release.String(),
				AnnotationExtensionName:    c.Name,
			},
		})
		idx.releases = append(idx.releases, c.Release.String())
	}
	var err error
	idx.raw, err = json.Marshal(im)
	return idx, err
}
