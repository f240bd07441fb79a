package artifact

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/fsync"
	"github.com/slate-os/slate/signature"
)

// Blob is the content of one layer: a file (Path) or a stream (Open). Set
// exactly one. Write reads it once, from start to end.
type Blob struct {
	Path string
	Open func() (io.ReadCloser, error)
}

func (b Blob) open() (io.ReadCloser, string, error) {
	switch {
	case b.Path != "" && b.Open != nil:
		return nil, "", errors.New("both Path and Open are set")
	case b.Path != "":
		f, err := os.Open(b.Path)
		return f, b.Path, err
	case b.Open != nil:
		rc, err := b.Open()
		return rc, "stream", err
	}
	return nil, "", errors.New("neither Path nor Open is set")
}

// Blobs are the layers Write puts in the artifact. SystemdBoot may be left
// zero (neither Path nor Open): the artifact then has no systemd-boot layer,
// like those written before it existed. The builder always gives it. UKI,
// the signed Unified Kernel Image of a Secure Boot image, needs SystemdBoot.
type Blobs struct {
	Root, Kernel, Initramfs, SystemdBoot, UKI Blob
}

func (b Blob) isZero() bool { return b.Path == "" && b.Open == nil }

// Write writes the update artifact as an OCI image layout at dir and
// returns its manifest digest. The layout's index.json lists the one
// manifest, tagged with cfg.Version (org.opencontainers.image.ref.name).
//
// cfg.Root.Size may be left zero: Write sets it to the root blob's size;
// when set, it must match. cfg.SystemdBootVersion may be left empty: Write
// sets it to the version in the systemd-boot blob's LoaderInfo, if it has
// one; when set, it must match. A systemd-boot blob without a readable
// version is still written (its nodes will not install it).
// cfg.Created is stored in UTC. Write refuses a
// config that Validate would refuse, before it reads any blob.
//
// The same inputs give a byte-identical directory (file modes included:
// 0755 directories, 0644 files).
//
// The layout is built in a sibling directory dir+".tmp-*" and renamed into
// place, so dir never holds a half-written layout. If dir exists it is
// replaced, as a build's previous output is, provided it is empty or is a
// slate update artifact layout (oci-layout, index.json and blobs/ only,
// every manifest of artifactType application/vnd.slate.update.v1);
// anything else is left alone and Write fails. On replacing, the old
// layout is moved aside to dir+".old-*" and removed once the new one is in
// place. A crash may leave those siblings behind, never a partial dir.
func Write(dir string, cfg Config, blobs Blobs) (v1.Hash, error) {
	dir = filepath.Clean(dir)
	fail := func(err error) (v1.Hash, error) {
		return v1.Hash{}, fmt.Errorf("write update artifact %s: %w", dir, err)
	}
	cfg.Created = cfg.Created.UTC()

	// Check the config before reading hundreds of MB. The root's size is
	// only known once it is copied; until then assume the smallest that
	// fits (Check reports inconsistent sizes anyway).
	pre := cfg
	if pre.Root.Size == 0 {
		pre.Root.Size = pre.Root.MinSize()
	}
	p := checkConfig(pre)
	if cfg.SystemdBootVersion != "" && blobs.SystemdBoot.isZero() {
		p = append(p, fmt.Sprintf("config.systemdBootVersion: %q, but no systemd-boot blob was given", cfg.SystemdBootVersion))
	}
	if !blobs.UKI.isZero() && blobs.SystemdBoot.isZero() {
		p = append(p, "a unified kernel image blob needs a systemd-boot blob (the layers' order)")
	}
	if len(p) > 0 {
		return fail(&ValidationError{Problems: p})
	}
	d, err := writeDir(dir, updateKind, func(tmp string) (v1.Hash, error) {
		return writeLayout(tmp, &cfg, blobs)
	})
	if err != nil {
		return fail(err)
	}
	return d, nil
}

// writeDir makes the layout at dir: fill writes it into an empty sibling
// directory, which then replaces dir (see Write) once its files are synced.
// k is the kind of artifact an existing dir must hold to be replaced.
func writeDir(dir string, k *kind, fill func(tmp string) (v1.Hash, error)) (v1.Hash, error) {
	replace, err := checkOutputDir(dir, k)
	if err != nil {
		return v1.Hash{}, err
	}

	parent, base := filepath.Split(dir)
	if parent == "" {
		parent = "."
	}
	tmp, err := os.MkdirTemp(parent, base+".tmp-")
	if err != nil {
		return v1.Hash{}, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()

	digest, err := fill(tmp)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := normalizeAndSync(tmp); err != nil {
		return v1.Hash{}, err
	}
	if err := moveIntoPlace(tmp, dir, replace); err != nil {
		return v1.Hash{}, err
	}
	done = true
	return digest, nil
}

// writeLayout writes the whole update artifact layout into the empty
// directory tmp.
func writeLayout(tmp string, cfg *Config, blobs Blobs) (v1.Hash, error) {
	lp, layers, err := stageLayers(tmp, updateKind, []Blob{blobs.Root, blobs.Kernel, blobs.Initramfs, blobs.SystemdBoot, blobs.UKI})
	if err != nil {
		return v1.Hash{}, err
	}
	if len(layers) > updateKind.required { // Write refused a version without the blob
		if err := setSystemdBootVersion(cfg, layers[updateKind.required].path); err != nil {
			return v1.Hash{}, err
		}
	}

	if err := fillSize(updateKind, &cfg.Root.Size, layers[0]); err != nil {
		return v1.Hash{}, err
	}
	if p := checkConfig(*cfg); len(p) > 0 {
		return v1.Hash{}, &ValidationError{Problems: p}
	}
	return appendManifest(lp, updateKind, cfg, layers, cfg.Version)
}

// fillSize sets the config's size of layer 0 (k.sizeField) to the staged
// blob's, or checks it when set.
func fillSize(k *kind, size *int64, l *fileLayer) error {
	switch {
	case *size == 0:
		*size = l.size
	case *size != l.size:
		return &ValidationError{What: k.errWhat(), Problems: []string{
			fmt.Sprintf("%s: %d, but the %s blob is %d bytes", k.sizeField, *size, k.roles[0].name, l.size)}}
	}
	return nil
}

// stageLayers starts a layout of kind k in the empty directory tmp and
// copies each blob into it once, hashing it on the way. The layers are
// then files already in place; appendManifest's layout.AppendImage finds
// them there (right name, right size) and only writes the config, the
// manifest and index.json. Optional blobs, last, may be zero.
func stageLayers(tmp string, k *kind, blobs []Blob) (layout.Path, []*fileLayer, error) {
	lp, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return "", nil, err
	}
	blobDir := filepath.Join(tmp, "blobs", "sha256")
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		return "", nil, err
	}
	var layers []*fileLayer
	for i, b := range blobs {
		role := k.roles[i]
		if role.optional && b.isZero() {
			break // optional layers come last
		}
		l, err := stageBlob(blobDir, b)
		if err != nil {
			return "", nil, fmt.Errorf("%s layer: %w", role.name, err)
		}
		if l.size == 0 {
			return "", nil, fmt.Errorf("%s layer: empty", role.name)
		}
		if role.maxSize > 0 && l.size > role.maxSize {
			return "", nil, fmt.Errorf("%s layer: %d bytes, more than a %s may be (%d)", role.name, l.size, role.name, role.maxSize)
		}
		l.mediaType, l.title = role.mediaType, role.title
		layers = append(layers, l)
	}
	return lp, layers, nil
}

// appendManifest writes cfg (JSON, in field order) and a manifest of kind k
// over the staged layers into the layout, listed in index.json and tagged
// tag.
func appendManifest(lp layout.Path, k *kind, cfg any, layers []*fileLayer, tag string) (v1.Hash, error) {
	img := &image{artifactType: k.artifactType, layers: layers}
	var err error
	if img.rawConfig, err = json.Marshal(cfg); err != nil {
		return v1.Hash{}, err
	}
	cfgDigest, cfgSize, err := v1.SHA256(bytes.NewReader(img.rawConfig))
	if err != nil {
		return v1.Hash{}, err
	}
	img.configDigest = cfgDigest
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  k.artifactType,
		Config:        v1.Descriptor{MediaType: k.configType, Size: cfgSize, Digest: cfgDigest},
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, v1.Descriptor{
			MediaType:   l.mediaType,
			Size:        l.size,
			Digest:      l.digest,
			Annotations: map[string]string{AnnotationTitle: l.title},
		})
	}
	if img.rawManifest, err = json.Marshal(m); err != nil {
		return v1.Hash{}, err
	}

	vimg, err := partial.CompressedToImage(img)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := lp.AppendImage(vimg, layout.WithAnnotations(map[string]string{
		AnnotationRefName: tag,
	})); err != nil {
		return v1.Hash{}, err
	}
	return vimg.Digest()
}

// setSystemdBootVersion fills in or checks cfg.SystemdBootVersion from the
// staged systemd-boot blob at path, so that the config says what the blob
// holds (the agent checks the blob itself before installing it).
func setSystemdBootVersion(cfg *Config, path string) error {
	b, err := os.ReadFile(path) // at most boot.MaxSystemdBootSize
	if err != nil {
		return err
	}
	v, verr := boot.SystemdBootVersion(b)
	switch {
	case cfg.SystemdBootVersion == "":
		cfg.SystemdBootVersion = v // "" when unreadable
	case verr != nil:
		return &ValidationError{Problems: []string{
			fmt.Sprintf("config.systemdBootVersion: %q, but the systemd-boot blob has no readable version: %v", cfg.SystemdBootVersion, verr)}}
	case v != cfg.SystemdBootVersion:
		return &ValidationError{Problems: []string{
			fmt.Sprintf("config.systemdBootVersion: %q, but the systemd-boot blob says %q", cfg.SystemdBootVersion, v)}}
	}
	return nil
}

// stageBlob copies b into dir under its sha256 name.
func stageBlob(dir string, b Blob) (*fileLayer, error) {
	rc, name, err := b.open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, ".stage-")
	if err != nil {
		return nil, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name()) // gone after the rename; cleans up after an error
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), rc, make([]byte, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("copy %s: %w", name, err)
	}
	if err := rc.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	hexsum := hex.EncodeToString(h.Sum(nil))
	path := filepath.Join(dir, hexsum)
	if err := os.Rename(f.Name(), path); err != nil {
		return nil, err
	}
	return &fileLayer{
		path:   path,
		digest: v1.Hash{Algorithm: "sha256", Hex: hexsum},
		size:   n,
	}, nil
}

// image is the partial.CompressedImageCore Write hands to ggcr: our own
// config and manifest bytes (no image config, no diff_ids) and file layers.
type image struct {
	artifactType string
	rawConfig    []byte
	configDigest v1.Hash
	rawManifest  []byte
	layers       []*fileLayer
}

var _ partial.CompressedImageCore = (*image)(nil)

func (i *image) RawConfigFile() ([]byte, error)      { return i.rawConfig, nil }
func (i *image) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *image) RawManifest() ([]byte, error)        { return i.rawManifest, nil }
func (i *image) ArtifactType() (string, error)       { return i.artifactType, nil }
func (i *image) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range i.layers {
		if l.digest == h {
			return l, nil
		}
	}
	if h == i.configDigest {
		return partial.ConfigLayer(i)
	}
	return nil, fmt.Errorf("no blob %s in the artifact", h)
}

// checkOutputDir decides whether Write may put a layout at dir: true if
// an existing directory is to be replaced.
func checkOutputDir(dir string, k *kind) (replace bool, err error) {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s exists and is not a directory; refusing to replace it", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	if len(entries) == 0 {
		return true, nil
	}
	if why := notSlateLayout(dir, entries, k); why != "" {
		return false, fmt.Errorf("%s exists and is not a slate %s (%s); refusing to replace it: remove it or choose another output", dir, k.what, why)
	}
	return true, nil
}

// notSlateLayout says why dir is not a layout of slate artifacts of kind
// k, or "".
func notSlateLayout(dir string, entries []fs.DirEntry, k *kind) string {
	for _, e := range entries {
		switch e.Name() {
		case "oci-layout", "index.json", "blobs":
		default:
			return fmt.Sprintf("it holds %q", e.Name())
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return "no readable index.json"
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return "no oci-layout file"
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return "index.json: " + err.Error()
	}
	for _, d := range idx.Manifests {
		if d.ArtifactType != k.artifactType && !signature.IsTag(d.Annotations[AnnotationRefName]) && !signature.IsBundleType(d.ArtifactType) {
			return fmt.Sprintf("index.json lists %s of artifact type %q", d.Digest, d.ArtifactType)
		}
	}
	return ""
}

// normalizeAndSync gives every file in the tree mode 0644 and every
// directory 0755 (ggcr and os.MkdirTemp use others), then syncs them all,
// files before their directories, so the rename publishes durable data.
func normalizeAndSync(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
			return os.Chmod(path, 0o755)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			return err
		}
		return fsync.Path(path)
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := fsync.Path(dirs[i]); err != nil {
			return err
		}
	}
	return nil
}

// moveIntoPlace renames the finished layout tmp to dir, first moving an
// existing dir aside when replace is set.
func moveIntoPlace(tmp, dir string, replace bool) error {
	parent := filepath.Dir(tmp)
	if !replace {
		if err := os.Rename(tmp, dir); err != nil {
			return err
		}
		return fsync.Path(parent)
	}
	// tmp's name is unique in parent; so is the name derived from it.
	base := filepath.Base(dir)
	old := filepath.Join(parent, base+".old-"+strings.TrimPrefix(filepath.Base(tmp), base+".tmp-"))
	if err := os.Rename(dir, old); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if rerr := os.Rename(old, dir); rerr != nil {
			return fmt.Errorf("%w (and restoring the previous layout from %s failed: %v)", err, old, rerr)
		}
		return err
	}
	if err := fsync.Path(parent); err != nil {
		return err
	}
	return os.RemoveAll(old)
}
