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
	"github.com/slate-os/slate/sysext"
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
	return openKind(ref, updateKind, opts)
}

// openKind opens and validates the artifact at ref, which must be of kind
// want (nil: either).
func openKind(ref string, want *kind, opts []Option) (*Artifact, error) {
	o := makeOptions(opts)
	var (
		a   *Artifact
		err error
	)
	if rest, ok := strings.CutPrefix(ref, LayoutPrefix); ok {
		dir, tag, digest := splitLayoutRef(rest)
		a, err = openLayout(dir, tag, digest, want)
	} else {
		a, err = openRemote(ref, want, o)
	}
	if err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	if err := o.checkPlatform(a); err != nil {
		return nil, err
	}
	return a, nil
}

// checkPlatform refuses an artifact for another platform than WithPlatform's.
func (o *options) checkPlatform(a *Artifact) error {
	if o.arch == "" && o.os == "" {
		return nil
	}
	if os, arch := a.platform(); os != o.os || arch != o.arch {
		return fmt.Errorf("%s: the %s is for %s/%s, not %s/%s", a.where, a.kind().shortName(), os, arch, o.os, o.arch)
	}
	return nil
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

// ociLayout is an OCI layout directory as Open reads it: its index.json.
type ociLayout struct {
	dir, where string
	ii         v1.ImageIndex
	idx        *v1.IndexManifest
}

// readLayout reads the layout at dir and picks the manifests tag or digest
// name (see pick).
func readLayout(dir, tag, digest string) (*ociLayout, []v1.Descriptor, error) {
	l, err := readIndexJSON(dir)
	if err != nil {
		return nil, nil, err
	}
	picked, err := l.pick(tag, digest)
	if err != nil {
		return nil, nil, err
	}
	return l, picked, nil
}

func readIndexJSON(dir string) (*ociLayout, error) {
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
	return &ociLayout{dir: dir, where: where, ii: ii, idx: idx}, nil
}

// pick lists the manifests index.json lists with that digest or tag, or,
// with neither, every one that is not a signature; it fails on none.
func (l *ociLayout) pick(tag, digest string) ([]v1.Descriptor, error) {
	var picked []v1.Descriptor
	for _, d := range l.idx.Manifests {
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
		return nil, fmt.Errorf("%s: index.json has no manifest %s", l.where, digest)
	case len(picked) == 0 && tag != "":
		return nil, fmt.Errorf("%s: index.json has no manifest tagged %q (tags: %s)", l.where, tag, layoutTags(l.idx))
	case len(picked) == 0:
		return nil, fmt.Errorf("%s: index.json lists no manifest", l.where)
	}
	return picked, nil
}

func openLayout(dir, tag, digest string, want *kind) (*Artifact, error) {
	l, picked, err := readLayout(dir, tag, digest)
	if err != nil {
		return nil, err
	}
	if len(picked) > 1 {
		return nil, fmt.Errorf("%s: index.json lists %d manifests; name one as oci:DIR:TAG or oci:DIR@DIGEST (tags: %s)",
			l.where, len(picked), layoutTags(l.idx))
	}
	d := picked[0]
	where := l.where
	if digest != "" || tag != "" {
		where += "@" + d.Digest.String()
	}
	if d.MediaType.IsIndex() {
		im, err := l.index(d.Digest)
		if err != nil {
			return nil, err
		}
		return nil, indexError(where, d, im, want)
	}
	if d.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("%s: index.json lists %s as %q, not an OCI image manifest; not a slate %s", where, d.Digest, d.MediaType, want.name())
	}
	img, err := l.ii.Image(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return l.artifact(img, d.Digest, where, want)
}

// index reads the index that index.json lists as digest, checked against
// it (ggcr's layout reader trusts the blob files).
func (l *ociLayout) index(digest v1.Hash) (*v1.IndexManifest, error) {
	raw, err := os.ReadFile(filepath.Join(l.dir, "blobs", digest.Algorithm, digest.Hex))
	if err == nil {
		err = CheckBlob(raw, digest, -1)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: index %s: %w", l.where, digest, err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: index %s: %w", l.where, digest, err)
	}
	return im, nil
}

// artifact reads the artifact img of the layout, whose signatures are
// those index.json lists.
func (l *ociLayout) artifact(img v1.Image, digest v1.Hash, where string, want *kind) (*Artifact, error) {
	// ggcr's layout reader trusts the blob files: check manifest and
	// config against their digests here, layers as they are streamed.
	a, err := newArtifact(img, digest, where, true, want)
	if err != nil {
		return nil, err
	}
	ii, idx := l.ii, l.idx
	a.sigs = func() (v1.Image, error) {
		tag := signature.Tag(a.Digest)
		for _, sd := range idx.Manifests {
			if sd.Annotations[AnnotationRefName] == tag {
				img, err := ii.Image(sd.Digest)
				if err != nil {
					return nil, fmt.Errorf("%s: signatures %s: %w", l.where, tag, err)
				}
				// Trust no blob file: the manifest is checked here, the
				// payloads by signature.Verify.
				raw, err := img.RawManifest()
				if err == nil {
					err = CheckBlob(raw, sd.Digest, -1)
				}
				if err != nil {
					return nil, fmt.Errorf("%s: signatures %s: %w", l.where, tag, err)
				}
				return img, nil
			}
		}
		return nil, fmt.Errorf("%s: %w: index.json has no manifest tagged %s", l.where, signature.ErrNoSignature, tag)
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
					err = CheckBlob(raw, rd.Digest, -1) // trust no blob file
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

// getRemote fetches what the registry reference s names: a manifest or
// an index.
func getRemote(s string, o *options) (name.Reference, *remote.Descriptor, error) {
	ref, err := name.ParseReference(s, o.nameOptions()...)
	if err != nil {
		return nil, nil, fmt.Errorf("%q is neither %sDIR nor a registry reference: %w", s, LayoutPrefix, err)
	}
	desc, err := remote.Get(ref, o.remoteOptions()...)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	return ref, desc, nil
}

func openRemote(s string, want *kind, o *options) (*Artifact, error) {
	ref, desc, err := getRemote(s, o)
	if err != nil {
		return nil, err
	}
	where := ref.Context().String() + "@" + desc.Digest.String()
	if desc.MediaType.IsIndex() {
		im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return nil, indexError(where, desc.Descriptor, im, want)
	}
	if desc.MediaType != types.OCIManifestSchema1 {
		return nil, fmt.Errorf("%s: %s is a %q, not an OCI image manifest; not a slate %s", where, ref, desc.MediaType, want.name())
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return remoteArtifact(ref.Context(), img, desc.Digest, where, want, o)
}

// remoteArtifact reads the artifact img of repo, whose signatures are
// beside it in repo.
func remoteArtifact(repo name.Repository, img v1.Image, digest v1.Hash, where string, want *kind, o *options) (*Artifact, error) {
	// ggcr checks what it fetches from a registry against its digest.
	a, err := newArtifact(img, digest, where, false, want)
	if err != nil {
		return nil, err
	}
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

// indexError says why an index is no artifact: for one of extensions
// (Push makes those), which releases it offers.
func indexError(where string, d v1.Descriptor, im *v1.IndexManifest, want *kind) error {
	var offered []string
	for _, e := range im.Manifests {
		if e.ArtifactType == ExtensionArtifactType {
			offered = append(offered, e.Annotations[AnnotationExtensionName]+" for "+e.Annotations[AnnotationExtensionRelease])
		}
	}
	switch {
	case len(offered) == 0 || len(offered) != len(im.Manifests):
		return fmt.Errorf("%s: %s is a %q, not an OCI image manifest; not a slate %s", where, d.Digest, d.MediaType, want.name())
	case want == updateKind:
		return fmt.Errorf("%s: %w: an index of extensions (%s)", where, ErrIsExtension, strings.Join(offered, "; "))
	}
	return fmt.Errorf("%s: %w for %d OS releases (%s): name one by digest, or resolve it for an OS release",
		where, ErrIndex, len(offered), strings.Join(offered, "; "))
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
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tag, err)
	}
	return img, nil
}

// notFound says whether err is a registry's 404: no such manifest (or
// repository).
func notFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// newArtifact reads img's manifest and config. It fails on what keeps the
// fields from being filled, and when the manifest is of another kind than
// want (nil: either); Validate judges the rest.
func newArtifact(img v1.Image, digest v1.Hash, where string, verify bool, want *kind) (*Artifact, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", where, err)
	}
	if verify {
		if err := CheckBlob(rawManifest, digest, -1); err != nil {
			return nil, fmt.Errorf("%s: manifest: %w", where, err)
		}
	}
	var m v1.Manifest
	if err := json.Unmarshal(rawManifest, &m); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", where, err)
	}
	// A manifest that claims neither kind is judged as the one wanted.
	k := kindOf(&m)
	switch {
	case k == nil && want != nil:
		k = want
	case k == nil:
		k = updateKind
	}
	if want != nil && k != want {
		return nil, kindError(img, &m, where, k)
	}
	if p := checkManifest(&m, k); len(p) > 0 {
		return nil, &ValidationError{Where: where, Problems: p, What: k.errWhat()}
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", where, m.Config.Digest, err)
	}
	if err := CheckBlob(rawConfig, m.Config.Digest, m.Config.Size); err != nil {
		return nil, fmt.Errorf("%s: config: %w", where, err)
	}
	a := &Artifact{Digest: digest, Image: img, where: where}
	var cfg any = &a.Config
	if k == extensionKind {
		a.Extension = &sysext.Config{}
		cfg = a.Extension
	}
	if err := json.Unmarshal(rawConfig, cfg); err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", where, m.Config.Digest, err)
	}
	for i, ld := range m.Layers {
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: %s layer %s: %w", where, k.roles[i].name, ld.Digest, err)
		}
		k.setLayer(a, i, &rawLayer{layer: l, desc: ld, verify: verify, where: where})
	}
	return a, nil
}

// kindError refuses an artifact of kind k where the other kind was
// wanted, naming what it is when its config can be read.
func kindError(img v1.Image, m *v1.Manifest, where string, k *kind) error {
	raw, err := img.RawConfigFile()
	if err == nil {
		err = CheckBlob(raw, m.Config.Digest, m.Config.Size)
	}
	if k == extensionKind {
		var c sysext.Config
		if err == nil && json.Unmarshal(raw, &c) == nil {
			return fmt.Errorf("%s: %w (%s)", where, ErrIsExtension, describe(&c))
		}
		return fmt.Errorf("%s: %w", where, ErrIsExtension)
	}
	var c Config
	if err == nil && json.Unmarshal(raw, &c) == nil {
		return fmt.Errorf("%s: %w (version %s)", where, ErrIsUpdate, c.Version)
	}
	return fmt.Errorf("%s: %w", where, ErrIsUpdate)
}

// CheckBlob checks b against a descriptor's digest and size (-1: any).
func CheckBlob(b []byte, want v1.Hash, size int64) error {
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
	// Index is the digest of the index of extensions the tag holds now,
	// when it holds extensions for other releases too; zero when it holds
	// the manifest itself. Releases are the releases that index offers.
	Index    v1.Hash
	Releases []string
}

// Push copies the artifact in layout dir (an update artifact or a system
// extension) to the registry reference ref, and its signatures (see Sign)
// beside it. ref may omit the tag (registry.example/org/node-update): the
// artifact's version is the tag then. A ref by digest must name this
// artifact. The layout must hold one artifact and be valid (see Validate).
//
// The manifest and its signatures are in the registry before the tag names
// them, so that no one who reads the tag finds the artifact unsigned.
//
// An extension pushed to a tag that holds extensions of the same name for
// other releases (or other platforms) joins them: the tag then holds an
// OCI index of them all, each entry annotated with its release and name
// (AnnotationExtensionRelease, AnnotationExtensionName), the one for the
// same release replaced. Two pushes to the same tag at the same time may
// lose one of them: push one after the other.
func Push(dir, ref string, opts ...Option) (Pushed, error) {
	o := makeOptions(opts)
	a, err := openLayout(dir, "", "", nil)
	if err == nil {
		err = a.Validate()
	}
	if err != nil {
		return Pushed{}, fmt.Errorf("push: %w", err)
	}

	var target name.Reference
	if repo, rerr := name.NewRepository(ref, o.nameOptions()...); rerr == nil {
		target = repo.Tag(a.version())
	} else if target, err = name.ParseReference(ref, o.nameOptions()...); err != nil {
		return Pushed{}, fmt.Errorf("push %s: %q is not a registry reference: %w", dir, ref, err)
	}
	if d, ok := target.(name.Digest); ok && d.DigestStr() != a.Digest.String() {
		return Pushed{}, fmt.Errorf("push %s: %s names another manifest than the artifact's %s", dir, ref, a.Digest)
	}
	tag, byTag := target.(name.Tag)
	var index *extensionIndex
	if a.Extension != nil && byTag {
		if index, err = mergeExtensions(a, tag, o); err != nil {
			return Pushed{}, fmt.Errorf("push %s: %w", dir, err)
		}
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
	byDigest := target.Context().Digest(a.Digest.String())
	err = remote.Write(byDigest, a.Image, ropts...)
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
	p := Pushed{Ref: target, Digest: a.Digest, Signed: signed, Bundles: bundles}
	switch {
	case index != nil:
		if err := remote.Put(tag, index, o.remoteOptions()...); err != nil {
			return Pushed{}, fmt.Errorf("push %s: the index of extensions to %s: %w", dir, tag, err)
		}
		p.Index, _, _ = v1.SHA256(bytes.NewReader(index.raw))
		p.Releases = index.releases
	case byTag:
		if err := remote.Put(tag, a.Image, o.remoteOptions()...); err != nil {
			return Pushed{}, fmt.Errorf("push %s: tagging %s: %w", dir, tag, err)
		}
	}
	return p, nil
}
