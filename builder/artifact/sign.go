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

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slate-os/slate/builder/signature"
	"github.com/slate-os/slate/internal/fsync"
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

// VerifySignature checks that the artifact is signed by key. It reads only
// the signature image (a few hundred bytes), never the layers.
func (a *Artifact) VerifySignature(key crypto.PublicKey) (*signature.Payload, error) {
	sigs, err := a.Signatures()
	if err != nil {
		return nil, err
	}
	p, err := signature.Verify(sigs, key, a.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.where, err)
	}
	return p, nil
}

// Sign signs the artifact at ref (oci:DIR[:TAG|@DIGEST] or a registry
// reference) with key and stores the signature beside it: in the layout's
// index.json or in the registry, under signature.Tag(digest), where `slate
// push` and cosign look. Signatures by other keys are kept; this key's
// earlier one of the same digest is replaced. identity is the repository
// the signer means (cosign's docker-reference; informative only); empty
// signs a registry artifact with its own repository. It returns the
// artifact's digest.
func Sign(ref string, key crypto.Signer, identity string, opts ...Option) (v1.Hash, error) {
	o := makeOptions(opts)
	a, err := Open(ref, opts...)
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

// storeSignatures puts sigs into the layout at dir under tag, replacing
// the manifest tagged so. The blobs go first; index.json is then replaced
// by rename, so a crash leaves the layout either as it was or signed. Blobs
// no manifest reaches any more (a replaced signature's) are removed after.
func storeSignatures(dir string, sigs v1.Image, tag string) error {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	if err := lp.WriteImage(sigs); err != nil {
		return err
	}
	ii, err := lp.ImageIndex()
	if err != nil {
		return err
	}
	desc, err := partial.Descriptor(sigs)
	if err != nil {
		return err
	}
	desc.Annotations = map[string]string{AnnotationRefName: tag}
	idx, err := mutate.AppendManifests(mutate.RemoveManifests(ii, match.Annotation(AnnotationRefName, tag)),
		mutate.IndexAddendum{Add: sigs, Descriptor: *desc}).IndexManifest()
	if err != nil {
		return err
	}
	raw, err := json.MarshalIndent(idx, "", "   ")
	if err != nil {
		return err
	}
	// ggcr writes blobs 0600 through temporary files; a layout is 0644
	// throughout (see Write), and durable before index.json names it. Only
	// the signature image's blobs are new.
	m, err := sigs.Manifest()
	if err != nil {
		return err
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	for _, d := range append([]v1.Descriptor{*desc, m.Config}, m.Layers...) {
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
	if err := replaceFile(filepath.Join(dir, "index.json"), raw); err != nil {
		return err
	}
	return removeUnreferenced(dir, idx)
}

// replaceFile writes path through a temporary file, fsync and rename.
func replaceFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := fsync.Path(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return fsync.Path(filepath.Dir(path))
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
