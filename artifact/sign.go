package artifact

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/internal/fsync"
	"github.com/slate-os/slate/signature"
)

// Signatures reads the signature image stored beside the artifact, under
// signature.Tag(a.Digest) in the same repository or layout. Without one the
// error wraps signature.ErrNoSignature.
func (a *Artifact) Signatures() (v1.Image, error) {
	if a.sigs == nil {
		return nil, fmt.Errorf("%s: %w", a.where, signature.ErrNoSignature)
	}
	return a.sigs()
}

// Referrers reads the Sigstore bundle referrers of the artifact (cosign's
// newer format, see signature.VerifyBundle): in a registry through the
// referrers API or its tag fallback, in a layout from index.json. None is
// no error; one that cannot be read carries its error.
func (a *Artifact) Referrers() ([]signature.Referrer, error) {
	if a.referrers == nil {
		return nil, nil
	}
	return a.referrers()
}

// Attached reads every signature stored beside the artifact, in both of
// cosign's formats. Nothing attached is no error (see Attached.Empty).
func (a *Artifact) Attached() (signature.Attached, error) {
	var at signature.Attached
	sigs, err := a.Signatures()
	switch {
	case errors.Is(err, signature.ErrNoSignature):
	case err != nil:
		return at, err
	default:
		at.Legacy = sigs
	}
	if at.Referrers, err = a.Referrers(); err != nil {
		return at, err
	}
	return at, nil
}

// VerifySignature checks that the artifact is signed by key, in cosign's
// .sig format or as a Sigstore bundle (see signature.VerifyAttached). It
// reads only signatures (a few KiB), never the layers; the bundles only
// when no .sig signature verifies. Without any signature the error wraps
// signature.ErrNoSignature.
func (a *Artifact) VerifySignature(key crypto.PublicKey) (*signature.Verified, error) {
	sigs, err := a.Signatures()
	unsigned := err
	switch {
	case errors.Is(err, signature.ErrNoSignature):
		sigs = nil
	case err != nil:
		return nil, err
	default:
		p, err := signature.Verify(sigs, key, a.Digest)
		if err == nil {
			return &signature.Verified{Format: signature.FormatLegacy, Payload: p}, nil
		}
		unsigned = nil
		if errors.Is(err, signature.ErrNoSignature) {
			unsigned = fmt.Errorf("%s: %w", a.where, err)
		}
	}
	refs, err := a.Referrers()
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 && unsigned != nil {
		return nil, unsigned // as before bundles: "oci:DIR: not signed: ..."
	}
	v, err := signature.VerifyAttached(signature.Attached{Legacy: sigs, Referrers: refs}, key, a.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.where, err)
	}
	return v, nil
}

// Sign signs the artifact at ref (oci:DIR[:TAG|@DIGEST] or a registry
// reference; an update artifact or a system extension) with key and stores
// the signature beside it: in the layout's index.json or in the registry,
// under signature.Tag(digest), where `slate push` and cosign look. Signatures by other keys are kept; this key's
// earlier one of the same digest is replaced. identity is the repository
// the signer means (cosign's docker-reference; informative only); empty
// signs a registry artifact with its own repository. It returns the
// artifact's digest.
func Sign(ref string, key crypto.Signer, identity string, opts ...Option) (v1.Hash, error) {
	o := makeOptions(opts)
	a, err := openKind(ref, nil, opts)
	if err != nil {
		return v1.Hash{}, err
	}
	old, err := a.Signatures()
	if errors.Is(err, signature.ErrNoSignature) {
		old, err = nil, nil
	}
	if err != nil {
		return v1.Hash{}, err
	}
	tag := signature.Tag(a.Digest)

	if rest, ok := strings.CutPrefix(ref, LayoutPrefix); ok {
		dir, _, _ := splitLayoutRef(rest)
		sigs, err := signature.Sign(old, key, a.Digest, identity)
		if err != nil {
			return v1.Hash{}, err
		}
		if err := storeSignatures(dir, sigs, tag); err != nil {
			return v1.Hash{}, fmt.Errorf("%s: writing signature %s: %w", ref, tag, err)
		}
		return a.Digest, nil
	}

	r, err := name.ParseReference(ref, o.nameOptions()...)
	if err != nil {
		return v1.Hash{}, err
	}
	if identity == "" {
		identity = r.Context().Name()
	}
	sigs, err := signature.Sign(old, key, a.Digest, identity)
	if err != nil {
		return v1.Hash{}, err
	}
	target := r.Context().Tag(tag)
	if err := remote.Write(target, sigs, o.remoteOptions()...); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing signature %s: %w", target, err)
	}
	return a.Digest, nil
}

// SignBundle signs the artifact at ref with key in the Sigstore bundle
// format (signature.NewBundle), as cosign v3 does by default, and stores the
// bundle in a referrer manifest (signature.NewReferrer): in a registry, by
// digest (ggcr keeps the referrers tag up to date where the registry lacks
// the referrers API); in a layout, listed in index.json by its artifact
// type, where push sends it along. This key's earlier bundles of the
// artifact in a layout are replaced; others are kept. It returns the
// artifact's digest.
func SignBundle(ref string, key crypto.Signer, opts ...Option) (v1.Hash, error) {
	o := makeOptions(opts)
	a, err := openKind(ref, nil, opts)
	if err != nil {
		return v1.Hash{}, err
	}
	raw, err := a.Image.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	b, err := signature.NewBundle(key, a.Digest)
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := signature.NewReferrer(b, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: a.Digest, Size: int64(len(raw))},
		time.Now().UTC().Format(time.RFC3339))
	if err != nil {
		return v1.Hash{}, err
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}

	if rest, ok := strings.CutPrefix(ref, LayoutPrefix); ok {
		dir, _, _ := splitLayoutRef(rest)
		refs, err := a.Referrers()
		if err != nil {
			return v1.Hash{}, err
		}
		old := map[v1.Hash]bool{}
		for _, r := range refs {
			v, err := signature.VerifyAttached(signature.Attached{Referrers: []signature.Referrer{r}}, key.Public(), a.Digest)
			if err == nil && v.Format == signature.FormatBundle {
				old[r.Digest] = true // this key's earlier bundle of this artifact
			}
		}
		desc, err := partial.Descriptor(img)
		if err != nil {
			return v1.Hash{}, err
		}
		desc.ArtifactType = string(signature.BundleMediaType) // how Open and Push find it
		if err := storeManifest(dir, img, *desc, func(d v1.Descriptor) bool { return old[d.Digest] }); err != nil {
			return v1.Hash{}, fmt.Errorf("%s: writing bundle %s: %w", ref, d, err)
		}
		return a.Digest, nil
	}

	r, err := name.ParseReference(ref, o.nameOptions()...)
	if err != nil {
		return v1.Hash{}, err
	}
	target := r.Context().Digest(d.String())
	if err := remote.Write(target, img, o.remoteOptions()...); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing bundle %s: %w", target, err)
	}
	return a.Digest, nil
}

// storeSignatures puts sigs into the layout at dir under tag, replacing
// the manifest tagged so.
func storeSignatures(dir string, sigs v1.Image, tag string) error {
	desc, err := partial.Descriptor(sigs)
	if err != nil {
		return err
	}
	desc.Annotations = map[string]string{AnnotationRefName: tag}
	return storeManifest(dir, sigs, *desc, match.Annotation(AnnotationRefName, tag))
}

// storeManifest puts img into the layout at dir, listed in index.json as
// desc, and drops the manifests replace matches. The blobs go first;
// index.json is then replaced by rename, so a crash leaves the layout
// either as it was or signed. Blobs no manifest reaches any more (a
// replaced signature's) are removed after.
func storeManifest(dir string, img v1.Image, desc v1.Descriptor, replace match.Matcher) error {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	if err := lp.WriteImage(img); err != nil {
		return err
	}
	ii, err := lp.ImageIndex()
	if err != nil {
		return err
	}
	idx, err := mutate.AppendManifests(mutate.RemoveManifests(ii, replace),
		mutate.IndexAddendum{Add: img, Descriptor: desc}).IndexManifest()
	if err != nil {
		return err
	}
	raw, err := json.MarshalIndent(idx, "", "   ")
	if err != nil {
		return err
	}
	// ggcr writes blobs 0600 through temporary files; a layout is 0644
	// throughout (see Write), and durable before index.json names it. Only
	// img's blobs are new.
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	for _, d := range append([]v1.Descriptor{desc, m.Config}, m.Layers...) {
		p := filepath.Join(blobs, d.Digest.Hex)
		if err := os.Chmod(p, 0o644); err != nil {
			return err
		}
		if err := fsync.Path(p); err != nil {
			return err
		}
	}
	if err := fsync.Path(blobs); err != nil {
		return err
	}
	if err := fsync.WriteFile(filepath.Join(dir, "index.json"), raw, 0o644); err != nil {
		return err
	}
	return removeUnreferenced(dir, idx)
}

// removeUnreferenced deletes the sha256 blobs that neither idx's manifests
// nor their configs and layers name. Files that are no digest are left
// alone: they are not this code's to judge.
func removeUnreferenced(dir string, idx *v1.IndexManifest) error {
	keep := map[string]bool{}
	for _, d := range idx.Manifests {
		keep[d.Digest.Hex] = true
		raw, err := os.ReadFile(filepath.Join(dir, "blobs", d.Digest.Algorithm, d.Digest.Hex))
		if err != nil {
			return err
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
		keep[m.Config.Digest.Hex] = true
		for _, l := range m.Layers {
			keep[l.Digest.Hex] = true
		}
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	entries, err := os.ReadDir(blobs)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, err := v1.NewHash("sha256:" + e.Name()); err != nil || keep[e.Name()] || e.IsDir() {
			continue
		}
		if err := os.Remove(filepath.Join(blobs, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// pushSignatures copies the layout's signatures of a, if any, to repo.
func pushSignatures(a *Artifact, repo name.Repository, o *options) (bool, error) {
	sigs, err := a.Signatures()
	if errors.Is(err, signature.ErrNoSignature) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	target := repo.Tag(signature.Tag(a.Digest))
	if err := remote.Write(target, sigs, o.remoteOptions()...); err != nil {
		return false, fmt.Errorf("push signatures to %s: %w", target, err)
	}
	return true, nil
}

// pushReferrers copies the layout's Sigstore bundle referrers of a to repo,
// by digest (ggcr updates the referrers tag where the registry lacks the
// referrers API), and returns how many went.
func pushReferrers(a *Artifact, repo name.Repository, o *options) (int, error) {
	refs, err := a.Referrers()
	if err != nil {
		return 0, err
	}
	for _, r := range refs {
		if r.Err != nil {
			return 0, fmt.Errorf("bundle %s: %w", r.Digest, r.Err)
		}
		target := repo.Digest(r.Digest.String())
		if err := remote.Write(target, r.Image, o.remoteOptions()...); err != nil {
			return 0, fmt.Errorf("push bundle to %s: %w", target, err)
		}
	}
	return len(refs), nil
}
