package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/signature"
)

// LayoutPrefix marks an Open reference as an OCI layout directory.
const LayoutPrefix = "oci:"

// Option tunes Open and Push.
type Option func(*options)

type options struct {
	insecure bool
	keychain authn.Keychain
	ctx      context.Context
	os, arch string
	progress func(done, total int64)
}

func makeOptions(opts []Option) *options {
	o := &options{keychain: authn.DefaultKeychain, ctx: context.Background()}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Insecure lets registry references use plain HTTP.
func Insecure() Option { return func(o *options) { o.insecure = true } }

// WithKeychain sets where registry credentials come from (default
// authn.DefaultKeychain: the Docker config, as `docker login` writes it).
func WithKeychain(kc authn.Keychain) Option { return func(o *options) { o.keychain = kc } }

// WithContext bounds registry requests.
func WithContext(ctx context.Context) Option { return func(o *options) { o.ctx = ctx } }

// WithProgress reports Push's upload as it goes: the bytes sent and the
// bytes to send.
func WithProgress(f func(done, total int64)) Option {
	return func(o *options) { o.progress = f }
}

// WithPlatform makes Open refuse an artifact built for another platform
// (OCI naming: "linux", "amd64"). The agent passes the nodes' platform,
// boot.OS and boot.Arch.
func WithPlatform(os, arch string) Option {
	return func(o *options) { o.os, o.arch = os, arch }
}

// Open reads an update artifact and validates it (see Validate); it returns
// an error unless the artifact is valid. ref is either
//
//	oci:DIR           the layout's only manifest
//	oci:DIR:TAG       the manifest tagged TAG (org.opencontainers.image.ref.name)
//	oci:DIR@DIGEST    the manifest with that digest
//
// or a registry reference (registry.example/org/node-update:1.4, or
// ...@sha256:...). A DIR whose last element holds a colon is read as a
// plain directory when it exists as one.
//
// Open reads the manifest and the config only; the layers are read when
// their streams are.
func Open(ref string, opts ...Option) (*Artifact, error) {
	o := makeOptions(opts)
	var (
		a   *Artifact
		err error
	)
	if rest, ok := strings.CutPrefix(ref, LayoutPrefix); ok {
		dir, tag, digest := splitLayoutRef(rest)
		a, err = openLayout(dir, tag, digest)
	} else {
		a, err = openRemote(ref, o)
	}
	if err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	if o.arch != "" || o.os != "" {
		if a.Config.OS != o.os || a.Config.Architecture != o.arch {
			return nil, fmt.Errorf("%s: the artifact is for %s/%s, not %s/%s",
				a.where, a.Config.OS, a.Config.Architecture, o.os, o.arch)
		}
	}
	return a, nil
}

// splitLayoutRef splits "DIR", "DIR:TAG" or "DIR@DIGEST".
func splitLayoutRef(s string) (dir, tag, digest string) {
	if fi, err := os.Stat(s); err == nil && fi.IsDir() {
		return s, "", ""
	}
	if i := strings.LastIndex(s, "@"); i >= 0 && strings.Contains(s[i:], ":") {
		return s[:i], "", s[i+1:]
	}
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		return s[:i], s[i+1:], ""
	}
	return s, "", ""
}

func openLayout(dir, tag, digest string) (*Artifact, error) {
	where := LayoutPrefix + dir
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: not an OCI layout (no oci-layout file)", where)
		}
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	ii, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	idx, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: index.json: %w", where, err)
	}

	var picked []v1.Descriptor
	for _, d := range idx.Manifests {
		switch {
		case digest != "" && d.Digest.String() == digest,
			tag != "" && d.Annotations[AnnotationRefName] == tag,
			// Signatures sit beside the artifact; "the only manifest" is
			// the only one that is not a signature (a .sig image or a
			// Sigstore bundle referrer).
			digest == "" && tag == "" && !signature.IsTag(d.Annotations[AnnotationRefName]) && !signature.IsBundleType(d.ArtifactType):
			picked = append(picked, d)
		}
	}
	switch {
	case len(picked) == 0 && digest != "":
		return nil, fmt.Errorf("%s: index.json has no manifest %s", where, digest)
	case len(picked) == 0 && tag != "":
		return nil, fmt.Errorf("%s: index.json has no manifest tagged %q (tags: %s)", where, tag, layoutTags(idx))
	case len(picked) == 0:
		return nil, fmt.Errorf("%s: index.json lists no manifest", where)
	case len(picked) > 1:
		return nil, fmt.Errorf("%s: index.json lists %d manifests; name one as oci:DIR:TAG or oci:DIR@DIGEST (tags: %s)",
			where, len(picked), layoutTags(idx))
	}
	d := picked[0]
	if digest != "" || tag != "" {
		where += "@" + d.Digest.String()
	}
	if d.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("%s: index.json lists %s as %q, not an OCI image manifest; not a slate update artifact", where, d.Digest, d.MediaType)
	}
	img, err := ii.Image(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	// ggcr's layout reader trusts the blob files: check manifest and
	// config against their digests here, layers as they are streamed.
	a, err := newArtifact(img, d.Digest, where, true)
	if err != nil {
		return nil, err
	}
	a.sigs = func() (v1.Image, error) {
		tag := signature.Tag(a.Digest)
		for _, sd := range idx.Manifests {
			if sd.Annotations[AnnotationRefName] == tag {
				img, err := ii.Image(sd.Digest)
				if err != nil {
					return nil, fmt.Errorf("%s: signatures %s: %w", LayoutPrefix+dir, tag, err)
				}
				// Trust no blob file: the manifest is checked here, the
				// payloads by signature.Verify.
				raw, err := img.RawManifest()
				if err == nil {
					err = checkBlob(raw, sd.Digest, -1)
				}
				if err != nil {
					return nil, fmt.Errorf("%s: signatures %s: %w", LayoutPrefix+dir, tag, err)
				}
				return img, nil
			}
		}
		return nil, fmt.Errorf("%s: %w: index.json has no manifest tagged %s", LayoutPrefix+dir, signature.ErrNoSignature, tag)
	}
	a.referrers = func() ([]signature.Referrer, error) {
		// index.json lists them (slate sign --bundle puts them there), by
		// their artifact type; VerifyAttached checks their subject.
		var out []signature.Referrer
		for _, rd := range idx.Manifests {
			if !signature.IsBundleType(rd.ArtifactType) || rd.Digest == a.Digest {
				continue
			}
			r := signature.Referrer{Digest: rd.Digest}
			img, err := ii.Image(rd.Digest)
			if err == nil {
				var raw []byte
				if raw, err = img.RawManifest(); err == nil {
					err = checkBlob(raw, rd.Digest, -1) // trust no blob file
				}
			}
			if err != nil {
				r.Err = err
			} else {
				r.Image = img
			}
			out = append(out, r)
		}
		return out, nil
	}
	return a, nil
}

func layoutTags(idx *v1.IndexManifest) string {
	var tags []string
	for _, d := range idx.Manifests {
		if t := d.Annotations[AnnotationRefName]; t != "" {
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 {
		return "none"
	}
	sort.Strings(tags)
	return strings.Join(tags, ", ")
}

func (o *options) nameOptions() []name.Option {
	if o.insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

func (o *options) remoteOptions() []remote.Option {
	return []remote.Option{
		remote.WithAuthFromKeychain(o.keychain),
		remote.WithContext(o.ctx),
		remote.WithUserAgent("slate"),
	}
}

func openRemote(s string, o *options) (*Artifact, error) {
	ref, err := name.ParseReference(s, o.nameOptions()...)
	if err != nil {
		return nil, fmt.Errorf("%q is neither %sDIR nor a registry reference: %w", s, LayoutPrefix, err)
	}
	desc, err := remote.Get(ref, o.remoteOptions()...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	where := ref.Context().String() + "@" + desc.Digest.String()
	if desc.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("%s: %s is a %q, not an OCI image manifest; not a slate update artifact", where, ref, desc.MediaType)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	// ggcr checks what it fetches from a registry against its digest.
	a, err := newArtifact(img, desc.Digest, where, false)
	if err != nil {
		return nil, err
	}
	repo := ref.Context()
	a.sigs = func() (v1.Image, error) {
		img, err := remoteSignatures(repo, a.Digest, o)
		if err != nil {
			return nil, err
		}
		if img == nil {
			return nil, fmt.Errorf("%s: %w: no manifest tagged %s", repo, signature.ErrNoSignature, signature.Tag(a.Digest))
		}
		return img, nil
	}
	a.referrers = func() ([]signature.Referrer, error) { return remoteReferrers(repo, a.Digest, o) }
	return a, nil
}

// maxReferrers bounds how many bundle referrers of one artifact are read:
// cosign adds one each time it signs.
const maxReferrers = 32

// remoteReferrers lists the Sigstore bundle referrers of digest in repo:
// through the referrers API or, where the registry lacks it, the referrers
// tag (signature.ReferrersTag; ggcr falls back by itself). None is no error.
func remoteReferrers(repo name.Repository, digest v1.Hash, o *options) ([]signature.Referrer, error) {
	d := repo.Digest(digest.String())
	idx, err := remote.Referrers(d, o.remoteOptions()...)
	if err != nil {
		return nil, fmt.Errorf("%s: referrers: %w", d, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: referrers: %w", d, err)
	}
	var out []signature.Referrer
	fetched := 0
	for _, rd := range m.Manifests {
		// The listing's artifact type should be the manifest's (OCI
		// distribution spec), but some registries (ggcr's own) list the
		// config's media type, cosign's empty one: fetch those to see.
		bundle := signature.IsBundleType(rd.ArtifactType)
		if !bundle && rd.ArtifactType != "" && rd.ArtifactType != string(signature.EmptyMediaType) {
			continue
		}
		if fetched == maxReferrers {
			return nil, fmt.Errorf("%s: more than %d possible Sigstore bundles refer to it: clean them up (cosign clean, or delete the referrer manifests)", d, maxReferrers)
		}
		fetched++
		r := signature.Referrer{Digest: rd.Digest}
		// By digest: ggcr checks the manifest against it.
		img, err := remote.Image(repo.Digest(rd.Digest.String()), o.remoteOptions()...)
		if err == nil && !bundle {
			m, err := img.Manifest()
			if err != nil || !signature.IsBundleReferrer(m) {
				continue // not a signature
			}
		}
		if err != nil {
			r.Err = err
		} else {
			r.Image = img
		}
		out = append(out, r)
	}
	return out, nil
}

// remoteSignatures fetches the signature image of digest in repo; nil if
// there is none.
func remoteSignatures(repo name.Repository, digest v1.Hash, o *options) (v1.Image, error) {
	tag := repo.Tag(signature.Tag(digest))
	img, err := remote.Image(tag, o.remoteOptions()...)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tag, err)
	}
	return img, nil
}

// newArtifact reads img's manifest and config. It fails on what keeps the
// fields from being filled; Validate judges the rest.
func newArtifact(img v1.Image, digest v1.Hash, where string, verify bool) (*Artifact, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", where, err)
	}
	if verify {
		if err := checkBlob(rawManifest, digest, -1); err != nil {
			return nil, fmt.Errorf("%s: manifest: %w", where, err)
		}
	}
	var m v1.Manifest
	if err := json.Unmarshal(rawManifest, &m); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", where, err)
	}
	if p := checkManifest(&m); len(p) > 0 {
		return nil, &ValidationError{Where: where, Problems: p}
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", where, m.Config.Digest, err)
	}
	if err := checkBlob(rawConfig, m.Config.Digest, m.Config.Size); err != nil {
		return nil, fmt.Errorf("%s: config: %w", where, err)
	}
	a := &Artifact{Digest: digest, Image: img, where: where}
	if err := json.Unmarshal(rawConfig, &a.Config); err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", where, m.Config.Digest, err)
	}
	for i, ld := range m.Layers {
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: %s layer %s: %w", where, layerRoles[i].name, ld.Digest, err)
		}
		rl := &rawLayer{layer: l, desc: ld, verify: verify, where: where}
		switch i {
		case 0:
			a.Root = rl
		case 1:
			a.Kernel = rl
		case 2:
			a.Initramfs = rl
		case 3:
			a.SystemdBoot = rl
		}
	}
	return a, nil
}

// checkBlob checks b against a descriptor's digest and size (-1: any).
func checkBlob(b []byte, want v1.Hash, size int64) error {
	got, n, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if size >= 0 && n != size {
		return fmt.Errorf("blob %s is %d bytes, want %d", want, n, size)
	}
	if got != want {
		return fmt.Errorf("blob %s has digest %s", want, got)
	}
	return nil
}

// Pushed is what Push sent.
type Pushed struct {
	Ref     name.Reference // where the artifact is now
	Digest  v1.Hash        // its manifest digest, the same as the layout's
	Signed  bool           // whether the layout's .sig signatures went with it
	Bundles int            // how many of its Sigstore bundle referrers went
}

// Push copies the update artifact in layout dir to the registry reference
// ref, and its signatures (see Sign) beside it. ref may omit the tag
// (registry.example/org/node-update): the artifact's version is the tag
// then. A ref by digest must name this artifact. The layout must hold one
// artifact and be valid (see Validate).
func Push(dir, ref string, opts ...Option) (Pushed, error) {
	o := makeOptions(opts)
	a, err := openLayout(dir, "", "")
	if err == nil {
		err = a.Validate()
	}
	if err != nil {
		return Pushed{}, fmt.Errorf("push: %w", err)
	}

	var target name.Reference
	if repo, rerr := name.NewRepository(ref, o.nameOptions()...); rerr == nil {
		target = repo.Tag(a.Config.Version)
	} else if target, err = name.ParseReference(ref, o.nameOptions()...); err != nil {
		return Pushed{}, fmt.Errorf("push %s: %q is not a registry reference: %w", dir, ref, err)
	}
	if d, ok := target.(name.Digest); ok && d.DigestStr() != a.Digest.String() {
		return Pushed{}, fmt.Errorf("push %s: %s names another manifest than the artifact's %s", dir, ref, a.Digest)
	}
	// Push the layout's own image, so the registry gets the very bytes of
	// the layout's manifest and blobs.
	ropts := o.remoteOptions()
	var drained chan struct{}
	if o.progress != nil {
		updates, f := make(chan v1.Update, 64), o.progress
		drained = make(chan struct{})
		ropts = append(ropts, remote.WithProgress(updates))
		go func() {
			defer close(drained)
			for u := range updates { // closed when remote.Write returns
				if u.Error == nil {
					f(u.Complete, u.Total)
				}
			}
		}()
	}
	err = remote.Write(target, a.Image, ropts...)
	if drained != nil && err == nil {
		<-drained
	}
	if err != nil {
		return Pushed{}, fmt.Errorf("push %s to %s: %w", dir, target, err)
	}
	signed, err := pushSignatures(a, target.Context(), o)
	if err != nil {
		return Pushed{}, fmt.Errorf("push %s: %w", dir, err)
	}
	bundles, err := pushReferrers(a, target.Context(), o)
	if err != nil {
		return Pushed{}, fmt.Errorf("push %s: %w", dir, err)
	}
	return Pushed{Ref: target, Digest: a.Digest, Signed: signed, Bundles: bundles}, nil
}
