// Package store keeps system extensions as an OCI image layout: the
// extension manifests, their configs and image layers, and their
// signatures (cosign .sig images under signature.Tag and Sigstore bundle
// referrers, listed in index.json as `slate sign` lists them), so that
// artifact.OpenExtension("oci:"+dir+"@"+digest) and VerifySignature read a
// stored extension exactly as they read one anywhere else, and a node
// checks its signature again at every boot.
//
// A node has two stores: NodeDir on the state partition, what the agent
// fetched for the node config's references, and ImageDir in the
// verity-protected root, what `slate build --extension` put in the image
// (rendered by Layer). index.json records, for each extension manifest,
// the node-config entry it was fetched for (Ref) and when (Added):
// Select picks by them.
//
// Writes are crash-safe: every blob is written under a temporary name,
// checked, fsynced and renamed into place, and index.json, replaced the
// same way, is written last, so a crash leaves the store as it was, plus
// blobs nothing names (Prune removes them). The extension image is checked
// whole before it is named: its digest and size, and its dm-verity tree
// against the root hash in its (signed) config. Writers take an flock on
// DIR/.lock; readers need no lock (index.json is replaced by rename), so a
// read-only store (ImageDir) reads like any other.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/internal/fsync"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
)

// Where a node's stores are.
const (
	// NodeDir is on the state partition: what the agent fetched.
	NodeDir = "/var/lib/slate/extensions"
	// ImageDir is in the root, read-only: what slate build --extension
	// put in the image.
	ImageDir = "/usr/lib/slate/extensions"
)

// ErrCorrupt is wrapped by Add's error when the extension's image is not
// what its manifest and config describe (its size, digest or verity tree):
// the extension is refused, not merely missing.
var ErrCorrupt = errors.New("the image is not what its manifest and config describe")

// Annotations of an extension manifest's descriptor in index.json.
const (
	// AnnotationRef is the node-config entry the extension was fetched
	// for; absent when it was placed by name (slate build --extension).
	AnnotationRef = "dev.slate.store.ref"
	// AnnotationAdded is when it was added, RFC 3339 in UTC.
	AnnotationAdded = "dev.slate.store.added"
	// AnnotationName is the extension's name, for people reading
	// index.json (the config is what counts).
	AnnotationName = "dev.slate.sysext.name"
)

const (
	lockName = ".lock"
	// tmpPrefix marks a blob being written; whatever a crash left is
	// removed by the next writer (which holds the lock).
	tmpPrefix = ".tmp-"
	// maxSmallBlob bounds a manifest, a config or a signature layer read
	// into memory.
	maxSmallBlob = 4 << 20
)

// Store is an extension store: an OCI image layout directory. The
// directory need not exist until something is added.
type Store struct{ Dir string }

// Open returns the store at dir. It reads nothing: a missing directory
// is an empty store.
func Open(dir string) *Store { return &Store{Dir: dir} }

// Entry is one extension in a store.
type Entry struct {
	// Digest is the extension's manifest digest.
	Digest v1.Hash
	// Config is its config (sysext.Config), covered by Digest.
	Config sysext.Config
	// Ref is the node-config entry it was fetched for; "" if it was
	// placed by name (slate build --extension).
	Ref string
	// Added is when it was added to the store.
	Added time.Time
	// ImagePath is the extension image's blob file: squashfs and verity
	// tree, checked against Config.Image when it was added.
	ImagePath string
}

// String names an entry in messages: "tools 1.2 (sha256:0123456789ab)".
func (e Entry) String() string {
	return fmt.Sprintf("%s %s (%s)", e.Config.Name, e.Config.Version, short(e.Digest))
}

func short(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Algorithm + ":" + h.Hex[:12]
	}
	return h.String()
}

func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.Dir, "blobs", h.Algorithm, h.Hex)
}

// where is the store in messages, as artifact names layouts.
func (s *Store) where() string { return artifact.LayoutPrefix + s.Dir }

// readIndex reads index.json; a store that does not exist yet has an
// empty one.
func (s *Store) readIndex() (*v1.IndexManifest, error) {
	p := filepath.Join(s.Dir, "index.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}, nil
	}
	if err != nil {
		return nil, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return idx, nil
}

// writeIndex replaces index.json durably (temporary file, fsync, rename,
// directory fsync).
func (s *Store) writeIndex(idx *v1.IndexManifest) error {
	raw, err := json.MarshalIndent(idx, "", "   ")
	if err != nil {
		return err
	}
	return fsync.WriteFile(filepath.Join(s.Dir, "index.json"), raw, 0o644)
}

// isSignature says whether an index.json descriptor is a signature (a
// .sig image or a Sigstore bundle referrer) rather than an extension.
func isSignature(d v1.Descriptor) bool {
	return signature.IsTag(d.Annotations[artifact.AnnotationRefName]) || signature.IsBundleType(d.ArtifactType)
}

// readSmall reads a manifest or config blob and checks it against its
// digest (and size, unless -1): a store trusts no file.
func (s *Store) readSmall(h v1.Hash, size int64) ([]byte, error) {
	if h.Algorithm != "sha256" {
		return nil, fmt.Errorf("blob %s: not a sha256 digest", h)
	}
	if size > maxSmallBlob {
		return nil, fmt.Errorf("blob %s: %d bytes, more than the %d a manifest or config may have", h, size, maxSmallBlob)
	}
	b, err := os.ReadFile(s.blobPath(h))
	if err != nil {
		return nil, err
	}
	if err := artifact.CheckBlob(b, h, size); err != nil {
		return nil, err
	}
	return b, nil
}

// List reads the store's extensions, in index.json's order (the order they
// were first added). A store that does not exist is empty. Each manifest
// and config is checked against its digest; an entry that cannot be read
// is left out and named in the error, which comes with the entries that
// could be read.
func (s *Store) List() ([]Entry, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("extension store %s: %w", s.Dir, err)
	}
	var (
		out  []Entry
		errs []error
	)
	for _, d := range idx.Manifests {
		if isSignature(d) {
			continue
		}
		e, err := s.entry(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("extension store %s: %s: %w", s.Dir, d.Digest, err))
			continue
		}
		out = append(out, e)
	}
	return out, errors.Join(errs...)
}

func (s *Store) entry(d v1.Descriptor) (Entry, error) {
	raw, err := s.readSmall(d.Digest, d.Size)
	if err != nil {
		return Entry{}, fmt.Errorf("manifest: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return Entry{}, fmt.Errorf("manifest: %w", err)
	}
	if m.ArtifactType != artifact.ExtensionArtifactType || len(m.Layers) != 1 {
		return Entry{}, fmt.Errorf("manifest: artifactType %q with %d layers: not a slate extension (%s, one layer)",
			m.ArtifactType, len(m.Layers), artifact.ExtensionArtifactType)
	}
	rawConfig, err := s.readSmall(m.Config.Digest, m.Config.Size)
	if err != nil {
		return Entry{}, fmt.Errorf("config: %w", err)
	}
	e := Entry{Digest: d.Digest, Ref: d.Annotations[AnnotationRef], ImagePath: s.blobPath(m.Layers[0].Digest)}
	if err := json.Unmarshal(rawConfig, &e.Config); err != nil {
		return Entry{}, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if a := d.Annotations[AnnotationAdded]; a != "" {
		if e.Added, err = time.Parse(time.RFC3339Nano, a); err != nil {
			return Entry{}, fmt.Errorf("index.json: annotation %s: %w", AnnotationAdded, err)
		}
	}
	return e, nil
}

// Artifact opens the stored extension d as artifact.OpenExtension does
// (its signatures included, for VerifySignature).
func (s *Store) Artifact(d v1.Hash) (*artifact.Artifact, error) {
	return artifact.OpenExtension(s.where() + "@" + d.String())
}

// lock takes the store's writer lock, creating the directory; call the
// returned function to release it.
func (s *Store) lock() (func(), error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("extension store: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("extension store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("extension store %s: lock: %w", s.Dir, err)
	}
	return func() { f.Close() }, nil
}

// Prune removes the extensions keep says no to, with their signatures,
// and every blob nothing in index.json names any more (and what a crash
// left half-written). It returns the removed entries. An entry that
// cannot be read is kept: Prune removes only what it can name. keep runs
// under the writer lock, so no Add comes between its verdicts and the
// removal; it may call List (readers take no lock).
func (s *Store) Prune(keep func(Entry) bool) ([]Entry, error) {
	if _, err := os.Stat(s.Dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("extension store %s: %w", s.Dir, err)
	}
	var removed []Entry
	kept := map[v1.Hash]bool{}
	gone := map[v1.Hash]bool{}
	for _, d := range idx.Manifests {
		if isSignature(d) {
			continue
		}
		e, err := s.entry(d)
		if err != nil || keep(e) {
			kept[d.Digest] = true
			continue
		}
		gone[d.Digest] = true
		removed = append(removed, e)
	}
	var ms []v1.Descriptor
	for _, d := range idx.Manifests {
		switch {
		case gone[d.Digest]:
			continue
		case signature.IsTag(d.Annotations[artifact.AnnotationRefName]):
			if !s.signs(d.Annotations[artifact.AnnotationRefName], kept) {
				continue
			}
		case signature.IsBundleType(d.ArtifactType):
			if subj, err := s.subject(d); err != nil || !kept[subj] {
				continue
			}
		}
		ms = append(ms, d)
	}
	if len(removed) > 0 || len(ms) != len(idx.Manifests) {
		idx.Manifests = ms
		if err := s.writeIndex(idx); err != nil {
			return nil, fmt.Errorf("extension store %s: %w", s.Dir, err)
		}
	}
	if err := s.removeUnreferenced(idx); err != nil {
		return removed, fmt.Errorf("extension store %s: %w", s.Dir, err)
	}
	return removed, nil
}

// signs says whether a .sig tag belongs to one of the digests.
func (s *Store) signs(tag string, digests map[v1.Hash]bool) bool {
	for d := range digests {
		if signature.Tag(d) == tag {
			return true
		}
	}
	return false
}

// subject is the digest a referrer manifest refers to.
func (s *Store) subject(d v1.Descriptor) (v1.Hash, error) {
	raw, err := s.readSmall(d.Digest, d.Size)
	if err != nil {
		return v1.Hash{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, err
	}
	if m.Subject == nil {
		return v1.Hash{}, errors.New("no subject")
	}
	return m.Subject.Digest, nil
}

// referenced is every blob idx names: its manifests, their configs and
// layers. A manifest that cannot be read keeps only itself.
func (s *Store) referenced(idx *v1.IndexManifest) map[string]bool {
	keep := map[string]bool{}
	for _, d := range idx.Manifests {
		keep[d.Digest.Hex] = true
		raw, err := s.readSmall(d.Digest, d.Size)
		if err != nil {
			continue
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			continue
		}
		keep[m.Config.Digest.Hex] = true
		for _, l := range m.Layers {
			keep[l.Digest.Hex] = true
		}
	}
	return keep
}

// removeUnreferenced deletes the sha256 blobs idx does not reach and the
// temporary files a crash left. The caller holds the lock.
func (s *Store) removeUnreferenced(idx *v1.IndexManifest) error {
	keep := s.referenced(idx)
	dir := filepath.Join(s.Dir, "blobs", "sha256")
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	removed := false
	for _, de := range des {
		n := de.Name()
		_, herr := v1.NewHash("sha256:" + n)
		// Temporary files: Add's (tmpPrefix) and fsync.WriteFile's (.NAME.tmp-*).
		tmp := strings.HasPrefix(n, ".") && strings.Contains(n, tmpPrefix)
		if de.IsDir() || keep[n] || (herr != nil && !tmp) {
			continue // not a blob: not this code's to judge
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			return err
		}
		removed = true
	}
	if removed {
		return fsync.Path(dir)
	}
	return nil
}

// Select picks the extension a node-config extensions entry means among
// entries: a reference (nodeconfig.IsExtensionRef) matches the entries
// fetched for it (Entry.Ref), a name the entries of that name
// (Config.Name). Among those whose extension-release matches host
// (sysext.Match, arch in systemd's naming), the most recently added wins
// (ties: the higher digest, so the choice never depends on order). The
// strings say, for each other candidate, why it was not taken. ok is false
// when no candidate matches.
func Select(entries []Entry, entry string, host sysext.Release, arch string) (Entry, []string, bool) {
	isRef := nodeconfig.IsExtensionRef(entry)
	var (
		best  Entry
		found bool
		why   []string
		fits  []Entry
	)
	for _, e := range entries {
		if (isRef && e.Ref != entry) || (!isRef && e.Config.Name != entry) {
			continue
		}
		if err := sysext.Match(e.Config.Release, host, arch); err != nil {
			why = append(why, fmt.Sprintf("%s: not for this image: %v", e, err))
			continue
		}
		fits = append(fits, e)
		if !found || e.Added.After(best.Added) || (e.Added.Equal(best.Added) && e.Digest.String() > best.Digest.String()) {
			best, found = e, true
		}
	}
	for _, e := range fits {
		switch {
		case e.Digest == best.Digest:
		case e.Added.Before(best.Added):
			why = append(why, fmt.Sprintf("%s: %s was added later", e, best))
		default:
			why = append(why, fmt.Sprintf("%s: %s was added at the same time and has the higher digest", e, best))
		}
	}
	return best, why, found
}
