package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/internal/fsync"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
)

// now stamps Added; tests replace it.
var now = time.Now

// maxSignatures bounds the bundle referrers copied with an extension
// (cosign adds one each time it signs; artifact reads at most 32 from a
// registry).
const maxSignatures = 32

// Add copies the extension a (artifact.OpenExtension, ResolveExtension)
// into the store for the node-config entry ref ("" when it is placed by
// name): its manifest, config, image layer and signatures. It does not
// judge the signatures (the caller checks them with the update policy
// before any layer is read); it checks that what it stores is what the
// manifest promises: the manifest against a.Digest, the config against the
// manifest, the image layer's size and digest as it streams to a temporary
// file, then the whole dm-verity tree against the config's root hash
// (verity.Verify). Only then are the blobs put in place and, last,
// index.json. progress, if not nil, gets the image bytes copied so far and
// the total.
//
// Adding a digest the store already holds copies no layer (unless the
// stored one is damaged: it is checked again): it updates Ref and Added and
// replaces the stored signatures with a's (a re-signed extension keeps
// passing the policy).
func (s *Store) Add(ctx context.Context, a *artifact.Artifact, ref string, progress func(done, total int64)) (Entry, error) {
	if a.Extension == nil || a.ExtensionImage == nil || a.Image == nil {
		return Entry{}, fmt.Errorf("%s: not a system extension (no extension config or image layer)", a.Where())
	}
	name := a.Extension.Name + " " + a.Extension.Version
	fail := func(err error) (Entry, error) {
		return Entry{}, fmt.Errorf("adding extension %s (%s) to %s: %w", name, a.Where(), s.Dir, err)
	}

	// The signed bytes, checked down from the manifest digest.
	rawManifest, err := a.Image.RawManifest()
	if err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	if err := artifact.CheckBlob(rawManifest, a.Digest, -1); err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	if m.ArtifactType != artifact.ExtensionArtifactType || len(m.Layers) != 1 {
		return fail(fmt.Errorf("manifest: artifactType %q with %d layers, want %s with one", m.ArtifactType, len(m.Layers), artifact.ExtensionArtifactType))
	}
	rawConfig, err := a.Image.RawConfigFile()
	if err != nil {
		return fail(fmt.Errorf("config: %w", err))
	}
	if err := artifact.CheckBlob(rawConfig, m.Config.Digest, m.Config.Size); err != nil {
		return fail(fmt.Errorf("config: %w", err))
	}
	var cfg sysext.Config
	if err := json.Unmarshal(rawConfig, &cfg); err != nil {
		return fail(fmt.Errorf("config %s: %w", m.Config.Digest, err))
	}
	layer := m.Layers[0]
	l := cfg.Image
	// verity.Verify reads slate's format: 4 KiB sha256 blocks, the tree
	// right after the data.
	if l.DataBlockSize != verity.BlockSize || l.HashBlockSize != verity.BlockSize || l.Algorithm != verity.Algorithm || l.HashOffset != l.DataSize {
		return fail(fmt.Errorf("config.image: %d/%d-byte %s blocks, hash tree at byte %d of %d: slate needs %d-byte sha256 blocks and the tree right after the data",
			l.DataBlockSize, l.HashBlockSize, l.Algorithm, l.HashOffset, l.DataSize, verity.BlockSize))
	}
	rootHash, err := hex.DecodeString(l.RootHash)
	if err != nil || len(rootHash) != sha256.Size {
		return fail(fmt.Errorf("config.image.rootHash %q is not a sha256 hash", l.RootHash))
	}
	if layer.Size != l.Size {
		return fail(fmt.Errorf("the image layer is %d bytes, config.image.size says %d", layer.Size, l.Size))
	}
	if layer.Digest.Algorithm != "sha256" {
		return fail(fmt.Errorf("the image layer's digest %s is not sha256", layer.Digest))
	}

	unlock, err := s.lock()
	if err != nil {
		return fail(err)
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return fail(err)
	}
	existing := -1
	for i, d := range idx.Manifests {
		if d.Digest == a.Digest && !isSignature(d) {
			existing = i
		}
	}
	if err := s.init(); err != nil {
		return fail(err)
	}
	// An image already stored (this extension's, added again, or another
	// manifest's with the same bytes) is checked where it lies, and copied
	// again if damaged.
	if err := s.putImage(ctx, a.ExtensionImage, layer, l, rootHash, progress); err != nil {
		return fail(err)
	}
	if err := s.putSmall(rawConfig, m.Config.Digest); err != nil {
		return fail(err)
	}
	if err := s.putSmall(rawManifest, a.Digest); err != nil {
		return fail(err)
	}
	sigs, err := s.putSignatures(a)
	if err != nil {
		return fail(err)
	}

	added := now().UTC()
	desc := v1.Descriptor{
		MediaType: types.OCIManifestSchema1, Digest: a.Digest, Size: int64(len(rawManifest)),
		ArtifactType: artifact.ExtensionArtifactType,
		Annotations:  map[string]string{AnnotationName: cfg.Name, AnnotationAdded: added.Format(time.RFC3339Nano)},
	}
	if ref != "" {
		desc.Annotations[AnnotationRef] = ref
	}
	if existing >= 0 {
		idx.Manifests[existing] = desc
	} else {
		idx.Manifests = append(idx.Manifests, desc)
	}
	idx.Manifests = mergeSignatures(idx.Manifests, a.Digest, sigs)
	if err := s.writeIndex(idx); err != nil {
		return fail(err)
	}
	// Replaced signatures' blobs; a failure here leaves only garbage the
	// next Prune removes.
	_ = s.removeUnreferenced(idx)
	return Entry{Digest: a.Digest, Config: cfg, Ref: ref, Added: added, ImagePath: s.blobPath(layer.Digest)}, nil
}

// init makes the layout's skeleton: oci-layout and blobs/sha256.
func (s *Store) init() error {
	if err := os.MkdirAll(filepath.Join(s.Dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	p := filepath.Join(s.Dir, "oci-layout")
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	return fsync.WriteFile(p, []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// putSmall writes a manifest, config or signature blob, unless the store
// already has it intact.
func (s *Store) putSmall(b []byte, h v1.Hash) error {
	p := s.blobPath(h)
	if old, err := os.ReadFile(p); err == nil && artifact.CheckBlob(old, h, int64(len(b))) == nil {
		return nil
	}
	if err := artifact.CheckBlob(b, h, -1); err != nil {
		return err
	}
	return fsync.WriteFile(p, b, 0o644)
}

// putImage streams the image layer into a temporary blob, checks its size
// and digest and its verity tree against rootHash, and renames it into
// place. A blob already in place (another manifest's, the same bytes) is
// checked the same way where it is.
func (s *Store) putImage(ctx context.Context, l v1.Layer, desc v1.Descriptor, img verity.Layout, rootHash []byte, progress func(done, total int64)) error {
	final := s.blobPath(desc.Digest)
	if f, err := os.Open(final); err == nil {
		err := hashImage(ctx, f, nil, desc, progress)
		if err == nil {
			// The right bytes (another manifest's, or this one's): this
			// config must still describe them.
			err = verifyImage(f, img, rootHash)
			f.Close()
			if err != nil {
				return fmt.Errorf("image layer %s: %w", desc.Digest, err)
			}
			return nil
		}
		f.Close()
		if !errors.Is(err, ErrCorrupt) {
			return fmt.Errorf("image layer %s, already in the store: %w", desc.Digest, err)
		}
		// Damaged where it lies: replaced by a good copy.
		if err := os.Remove(final); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	dir := filepath.Dir(final)
	f, err := os.CreateTemp(dir, tmpPrefix+desc.Digest.Hex[:12]+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("image layer %s: %w", desc.Digest, err)
	}
	err = hashImage(ctx, f, rc, desc, progress)
	rc.Close()
	if err == nil {
		err = verifyImage(f, img, rootHash)
	}
	if err != nil {
		return fmt.Errorf("image layer %s: %w", desc.Digest, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	ok = true
	return fsync.Path(dir)
}

// hashImage checks the image in f against desc's size and digest: when
// src is not nil it first copies src into f, hashing as it goes;
// otherwise it hashes f as it is.
func hashImage(ctx context.Context, f *os.File, src io.Reader, desc v1.Descriptor, progress func(done, total int64)) error {
	h := sha256.New()
	var n int64
	buf := make([]byte, 1<<20)
	r := src
	if r == nil {
		r = f
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := r.Read(buf)
		if k > 0 {
			n += int64(k)
			if n > desc.Size {
				return fmt.Errorf("%w: more than its %d bytes", ErrCorrupt, desc.Size)
			}
			h.Write(buf[:k])
			if src != nil {
				if _, werr := f.Write(buf[:k]); werr != nil {
					return werr
				}
			}
			if progress != nil {
				progress(n, desc.Size)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			// The artifact's own check fails the stream at its end: the
			// whole image came, so the digest tells a bad one from a
			// broken connection.
			if n == desc.Size {
				if serr := checkSum(h, n, desc); serr != nil {
					return serr
				}
			}
			return err
		}
	}
	return checkSum(h, n, desc)
}

// verifyImage checks the whole verity tree in f against the config's
// root hash.
func verifyImage(f *os.File, img verity.Layout, rootHash []byte) error {
	if err := verity.Verify(f, img.DataSize, rootHash); err != nil {
		return fmt.Errorf("%w: its verity tree does not give the config's root hash %s: %v", ErrCorrupt, img.RootHash, err)
	}
	return nil
}

func checkSum(h hash.Hash, n int64, desc v1.Descriptor) error {
	if n != desc.Size {
		return fmt.Errorf("%w: %d bytes, want %d", ErrCorrupt, n, desc.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != desc.Digest.Hex {
		return fmt.Errorf("%w: digest sha256:%s, want %s", ErrCorrupt, got, desc.Digest)
	}
	return nil
}

// storedSignatures are the signature manifests Add put in the store.
type storedSignatures struct {
	legacy    *v1.Descriptor // the .sig image, tagged signature.Tag
	referrers []v1.Descriptor
}

// putSignatures copies a's signatures, in both formats, into the blobs.
func (s *Store) putSignatures(a *artifact.Artifact) (storedSignatures, error) {
	var out storedSignatures
	at, err := a.Attached()
	if err != nil {
		return out, fmt.Errorf("signatures: %w", err)
	}
	if at.Legacy != nil {
		d, err := s.putManifest(at.Legacy)
		if err != nil {
			return out, fmt.Errorf("signature image %s: %w", signature.Tag(a.Digest), err)
		}
		d.Annotations = map[string]string{artifact.AnnotationRefName: signature.Tag(a.Digest)}
		out.legacy = &d
	}
	for _, r := range at.Referrers {
		if r.Err != nil || r.Image == nil {
			continue // unreadable: it verifies nothing here either
		}
		if len(out.referrers) == maxSignatures {
			break
		}
		m, err := r.Image.Manifest()
		if err != nil || m.Subject == nil || m.Subject.Digest != a.Digest || !signature.IsBundleReferrer(m) {
			continue
		}
		d, err := s.putManifest(r.Image)
		if err != nil {
			return out, fmt.Errorf("signature bundle %s: %w", r.Digest, err)
		}
		// How artifact's layout reader finds bundles (as slate sign --bundle lists them).
		d.ArtifactType = string(signature.BundleMediaType)
		if signature.IsBundleType(m.ArtifactType) {
			d.ArtifactType = m.ArtifactType
		}
		out.referrers = append(out.referrers, d)
	}
	return out, nil
}

// putManifest copies a small image (a signature manifest, its config and
// layers) into the blobs, each checked against its digest.
func (s *Store) putManifest(img v1.Image) (v1.Descriptor, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	d, n, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("config: %w", err)
	}
	if err := artifact.CheckBlob(cfg, m.Config.Digest, m.Config.Size); err != nil {
		return v1.Descriptor{}, fmt.Errorf("config: %w", err)
	}
	if err := s.putSmall(cfg, m.Config.Digest); err != nil {
		return v1.Descriptor{}, err
	}
	for _, ld := range m.Layers {
		if ld.Size > maxSmallBlob {
			return v1.Descriptor{}, fmt.Errorf("layer %s: %d bytes, more than a signature's %d", ld.Digest, ld.Size, maxSmallBlob)
		}
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		b, err := io.ReadAll(io.LimitReader(rc, maxSmallBlob+1))
		rc.Close()
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		if err := artifact.CheckBlob(b, ld.Digest, ld.Size); err != nil {
			return v1.Descriptor{}, fmt.Errorf("layer: %w", err)
		}
		if err := s.putSmall(b, ld.Digest); err != nil {
			return v1.Descriptor{}, err
		}
	}
	if err := s.putSmall(raw, d); err != nil {
		return v1.Descriptor{}, err
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: n}, nil
}

// mergeSignatures replaces digest's signatures in ms with sigs: its .sig
// image (by tag) and its bundle referrers (those already listed stay once;
// those sigs no longer has are dropped, so the store mirrors the source).
func mergeSignatures(ms []v1.Descriptor, digest v1.Hash, sigs storedSignatures) []v1.Descriptor {
	tag := signature.Tag(digest)
	out := ms[:0:0]
	for _, d := range ms {
		if d.Annotations[artifact.AnnotationRefName] == tag {
			continue
		}
		if signature.IsBundleType(d.ArtifactType) && subjectOf(d) == digest {
			continue
		}
		out = append(out, d)
	}
	if sigs.legacy != nil {
		out = append(out, *sigs.legacy)
	}
	for _, r := range sigs.referrers {
		d := r
		d.Annotations = map[string]string{annotationSubject: digest.String()}
		out = append(out, d)
	}
	return out
}

// annotationSubject records a referrer's subject in its index.json
// descriptor, so that replacing an extension's signatures need not read
// every referrer manifest.
const annotationSubject = "dev.slate.store.subject"

func subjectOf(d v1.Descriptor) v1.Hash {
	h, _ := v1.NewHash(d.Annotations[annotationSubject])
	return h
}
