package artifact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
)

var (
	debian12 = sysext.Release{ID: "debian", VersionID: "12"}
	debian13 = sysext.Release{ID: "debian", VersionID: "13"}
)

// extInputs are an extension's config and image file, consistent with
// each other, for the OS release host.
type extInputs struct {
	cfg   sysext.Config
	image string
}

func makeExt(t testing.TB, name string, host sysext.Release, seed int64) extInputs {
	t.Helper()
	l := RootInfo{
		DataSize: 3 * 4096, HashOffset: 3 * 4096,
		RootHash: fmt.Sprintf("%064x", seed), Salt: strings.Repeat("5a", 32),
		Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096,
	}
	b := make([]byte, l.MinSize())
	rand.New(rand.NewSource(seed)).Read(b)
	path := filepath.Join(t.TempDir(), name+".raw")
	writeFile(t, path, b)
	return extInputs{
		cfg: sysext.Config{
			Name: name, Version: "1.0", Release: sysext.ForHost(host),
			Architecture: "amd64", OS: "linux",
			Source: "sha256:" + strings.Repeat("fedcba9876543210", 4),
			Image:  l, Created: time.Date(2024, 7, 1, 8, 0, 0, 0, time.FixedZone("CEST", 2*3600)),
		},
		image: path,
	}
}

func (in extInputs) write(t testing.TB, dir string) v1.Hash {
	t.Helper()
	d, err := WriteExtension(dir, in.cfg, Blob{Path: in.image})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func mustOpenExtension(t testing.TB, ref string, opts ...Option) *Artifact {
	t.Helper()
	a, err := OpenExtension(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestWriteOpenExtension(t *testing.T) {
	in := makeExt(t, "gpu", debian12, 1)
	dir := filepath.Join(t.TempDir(), "gpu.oci")
	digest := in.write(t, dir)

	a := mustOpenExtension(t, "oci:"+dir)
	want := in.cfg
	want.Created = want.Created.UTC()
	want.Image.Size = in.cfg.Image.MinSize()
	if a.Digest != digest || a.Extension == nil || !reflect.DeepEqual(*a.Extension, want) {
		t.Errorf("read back %s %+v\nwant     %s %+v", a.Digest, a.Extension, digest, want)
	}
	if a.Root != nil || a.Config.Version != "" {
		t.Errorf("an extension has update fields: %+v", a.Config)
	}
	img, _ := os.ReadFile(in.image)
	if !bytes.Equal(readAll(t, a.ExtensionImage), img) {
		t.Error("image layer differs from the image")
	}
	m, err := a.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != ExtensionArtifactType || m.Config.MediaType != ExtensionConfigMediaType ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != ExtensionMediaType || m.Layers[0].Annotations[AnnotationTitle] != "gpu.raw" {
		t.Errorf("manifest %+v", m)
	}
	if idx := readIndex(t, dir); len(idx.Manifests) != 1 || idx.Manifests[0].Annotations[AnnotationRefName] != "1.0" {
		t.Errorf("index.json %+v", idx)
	}
	for _, ref := range []string{"oci:" + dir + ":1.0", "oci:" + dir + "@" + digest.String()} {
		if a := mustOpenExtension(t, ref); a.Digest != digest {
			t.Errorf("%s: %s", ref, a.Digest)
		}
	}
	if _, err := OpenExtension("oci:"+dir, WithPlatform("linux", "arm64")); err == nil || !strings.Contains(err.Error(), "the extension is for linux/amd64, not linux/arm64") {
		t.Errorf("other platform: %v", err)
	}

	// Reproducible: the same inputs, written again elsewhere.
	dir2 := filepath.Join(t.TempDir(), "again")
	if d := in.write(t, dir2); d != digest || !reflect.DeepEqual(tree(t, dir), tree(t, dir2)) {
		t.Errorf("second write differs: %s", d)
	}
	// Replaced in place; an update artifact's layout is not replaced by an
	// extension's, nor the other way round.
	in.cfg.Version = "1.1"
	if d := in.write(t, dir); d == digest {
		t.Error("a new version has the old digest")
	}
	upd := filepath.Join(t.TempDir(), "update")
	makeInputs(t, 2, false).write(t, upd)
	if _, err := WriteExtension(upd, in.cfg, Blob{Path: in.image}); err == nil || !strings.Contains(err.Error(), "is not a slate system extension") {
		t.Errorf("over an update artifact: %v", err)
	}
	if _, err := Write(dir, makeInputs(t, 2, false).cfg, makeInputs(t, 2, false).blobs()); err == nil || !strings.Contains(err.Error(), "is not a slate update artifact") {
		t.Errorf("update over an extension: %v", err)
	}
}

func TestWriteExtensionBadConfig(t *testing.T) {
	unread := Blob{Open: func() (io.ReadCloser, error) {
		t.Error("the image was read")
		return nil, errors.New("read")
	}}
	for _, c := range []struct {
		name string
		edit func(c *sysext.Config)
		blob bool // give the real image
		want string
	}{
		{"name", func(c *sysext.Config) { c.Name = "../x" }, false, `config.name: "../x" is not an extension name`},
		{"no release id", func(c *sysext.Config) { c.Release.ID = "" }, false, "config.release.id: missing"},
		{"arch name", func(c *sysext.Config) { c.Architecture = "x86_64" }, false, `config.architecture: "x86_64": use the OCI name "amd64"`},
		{"arch disagrees", func(c *sysext.Config) { c.Release.Architecture = "arm64" }, false, `config.release.architecture: "arm64", but the extension is for amd64 (x86-64)`},
		{"size", func(c *sysext.Config) { c.Image.Size = c.Image.MinSize() + 4096 }, true, "config.image.size: 24576, but the image blob is 20480 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := makeExt(t, "gpu", debian12, 1)
			c.edit(&in.cfg)
			b := unread
			if c.blob {
				b = Blob{Path: in.image}
			}
			dir := filepath.Join(t.TempDir(), "out")
			_, err := WriteExtension(dir, in.cfg, b)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "system extension") {
				t.Errorf("error %v\nwant %q", err, c.want)
			}
			if _, serr := os.Stat(dir); serr == nil {
				t.Error("an output was left")
			}
		})
	}
}

func TestOpenExtensionBroken(t *testing.T) {
	good := filepath.Join(t.TempDir(), "good")
	makeExt(t, "gpu", debian12, 1).write(t, good)
	for _, c := range []struct {
		name string
		edit func(m, cfg map[string]any)
		want []string
	}{
		{"image size", func(m, cfg map[string]any) {
			cfg["image"].(map[string]any)["size"] = 1 << 20
		}, []string{"config.image.size: 1048576, but the image layer (manifest.layers[0]) is 20480 bytes"}},
		{"two layers", func(m, cfg map[string]any) {
			m["layers"] = append(m["layers"].([]any), m["layers"].([]any)[0])
		}, []string{"manifest.layers: 2 layers, want 1 (the extension image)"}},
		{"layer type", func(m, cfg map[string]any) {
			m["layers"].([]any)[0].(map[string]any)["mediaType"] = string(RootMediaType)
		}, []string{`manifest.layers[0].mediaType: "application/vnd.slate.rootfs.squashfs-verity.v1", want "application/vnd.slate.sysext.squashfs-verity.v1" (image)`}},
		{"release", func(m, cfg map[string]any) {
			cfg["release"] = map[string]any{"versionID": "12", "scope": "kernel"}
		}, []string{"config.release.id: missing", `config.release.scope: "kernel" is not a scope`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "broken")
			copyDir(t, good, dir)
			rewrite(t, dir, c.edit)
			_, err := OpenExtension("oci:" + dir)
			for _, w := range append(c.want, "oci:"+dir+": not a valid slate system extension") {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v\nlacks %q", err, w)
				}
			}
		})
	}

	t.Run("tampered config", func(t *testing.T) {
		// The config blob edited in place: its digest no longer matches.
		dir := filepath.Join(t.TempDir(), "tampered")
		copyDir(t, good, dir)
		a := mustOpenExtension(t, "oci:"+dir)
		m, _ := a.Image.Manifest()
		path := filepath.Join(dir, "blobs", "sha256", m.Config.Digest.Hex)
		b, _ := os.ReadFile(path)
		writeFile(t, path, bytes.Replace(b, []byte(`"versionID":"12"`), []byte(`"versionID":"13"`), 1))
		if _, err := OpenExtension("oci:" + dir); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("config: blob %s has digest", m.Config.Digest)) {
			t.Errorf("tampered config: %v", err)
		}
	})
}

// Open takes only update artifacts, OpenExtension only extensions: each
// says what the other is.
func TestOpenKinds(t *testing.T) {
	ext := filepath.Join(t.TempDir(), "ext")
	makeExt(t, "gpu", debian12, 1).write(t, ext)
	upd := filepath.Join(t.TempDir(), "upd")
	makeInputs(t, 2, false).write(t, upd)
	host, opts := startRegistry(t, nil)
	for _, dir := range []string{ext, upd} {
		if _, err := Push(dir, host+"/slate/"+filepath.Base(dir)+":x", opts...); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		where, ref string
		open       func(string, ...Option) (*Artifact, error)
		is         error
		want       string
	}{
		{"layout", "oci:" + ext, Open, ErrIsExtension, "a system extension, not an update artifact (gpu 1.0 for ID=debian VERSION_ID=12 ARCHITECTURE=x86-64)"},
		{"layout", "oci:" + upd, OpenExtension, ErrIsUpdate, "an update artifact, not a system extension (version 1.4.0)"},
		{"registry", host + "/slate/ext:x", Open, ErrIsExtension, "/slate/ext@sha256:"},
		{"registry", host + "/slate/upd:x", OpenExtension, ErrIsUpdate, "/slate/upd@sha256:"},
		{"registry", host + "/slate/upd:x", func(ref string, o ...Option) (*Artifact, error) {
			_, err := Extensions(ref, o...)
			return nil, err
		}, ErrIsUpdate, "version 1.4.0"},
	} {
		_, err := c.open(c.ref, opts...)
		if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %v with %q", c.where, c.ref, err, c.is, c.want)
		}
	}
}

// Sign, SignBundle and VerifySignature treat an extension as an update
// artifact, in a layout and in a registry; signatures travel with push.
func TestSignExtension(t *testing.T) {
	host, opts := startRegistry(t, nil)
	k1, k2 := ecKey(t), edKey(t)
	dir := filepath.Join(t.TempDir(), "gpu")
	digest := makeExt(t, "gpu", debian12, 1).write(t, dir)
	a := mustOpenExtension(t, "oci:"+dir)
	if _, err := a.VerifySignature(&k1.PublicKey); !errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("unsigned: %v", err)
	}
	if d, err := Sign("oci:"+dir, k1, "registry.example/slate/gpu"); err != nil || d != digest {
		t.Fatalf("sign: %s %v", d, err)
	}
	if _, err := SignBundle("oci:"+dir+":1.0", k2); err != nil {
		t.Fatal(err)
	}
	a = mustOpenExtension(t, "oci:"+dir)
	for _, c := range []struct {
		key    any
		format string
	}{{&k1.PublicKey, signature.FormatLegacy}, {k2.Public(), signature.FormatBundle}} {
		if v, err := a.VerifySignature(c.key); err != nil || v.Format != c.format {
			t.Errorf("layout, %s: %v", c.format, err)
		}
	}
	if at, err := a.Attached(); err != nil || at.Empty() {
		t.Errorf("attached: %+v %v", at, err)
	}

	p, err := Push(dir, host+"/slate/gpu", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if p.Ref.String() != host+"/slate/gpu:1.0" || p.Digest != digest || !p.Signed || p.Bundles != 1 || len(p.Releases) != 0 {
		t.Errorf("pushed %+v", p)
	}
	r := mustOpenExtension(t, host+"/slate/gpu:1.0", opts...)
	for _, key := range []any{&k1.PublicKey, k2.Public()} {
		if _, err := r.VerifySignature(key); err != nil {
			t.Errorf("registry: %v", err)
		}
	}
	// Signed in the registry, by another key.
	k3 := ecKey(t)
	if _, err := Sign(host+"/slate/gpu:1.0", k3, "", opts...); err != nil {
		t.Fatal(err)
	}
	if v, err := mustOpenExtension(t, host+"/slate/gpu@"+digest.String(), opts...).VerifySignature(&k3.PublicKey); err != nil {
		t.Errorf("signed in the registry: %v", err)
	} else if got := v.Payload.Critical.Identity.DockerReference; got != host+"/slate/gpu" {
		t.Errorf("identity %q", got)
	}

	// A config changed after signing is another manifest: unsigned.
	tampered := filepath.Join(t.TempDir(), "tampered")
	copyDir(t, dir, tampered)
	rewrite(t, tampered, func(m, cfg map[string]any) {
		cfg["release"].(map[string]any)["versionID"] = "13"
	})
	ta := mustOpenExtension(t, "oci:"+tampered)
	if ta.Digest == digest {
		t.Fatal("rewrite kept the digest")
	}
	for _, key := range []any{&k1.PublicKey, k2.Public()} {
		if _, err := ta.VerifySignature(key); err == nil {
			t.Errorf("tampered config verified with %T", key)
		}
	}
}

// Two releases of one extension pushed to one tag: an index, from which
// ResolveExtension picks by the signed configs.
func TestPushResolveIndex(t *testing.T) {
	host, opts := startRegistry(t, nil)
	key := ecKey(t)
	tag := host + "/slate/gpu:1.0"
	write := func(host sysext.Release, seed int64) (string, v1.Hash) {
		dir := filepath.Join(t.TempDir(), "gpu")
		d := makeExt(t, "gpu", host, seed).write(t, dir)
		if _, err := Sign("oci:"+dir, key, ""); err != nil {
			t.Fatal(err)
		}
		return dir, d
	}
	dir12, d12 := write(debian12, 12)
	dir13, d13 := write(debian13, 13)

	// An empty tag gets the manifest itself.
	p, err := Push(dir12, tag, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if desc := remoteDesc(t, tag, opts); desc.MediaType != types.OCIManifestSchema1 || desc.Digest != d12 || p.Index != (v1.Hash{}) {
		t.Errorf("after one push the tag holds %s %s (%+v)", desc.MediaType, desc.Digest, p)
	}
	// Another release: an index of both.
	p, err = Push(dir13, tag, opts...)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{debian12.String() + " ARCHITECTURE=x86-64", debian13.String() + " ARCHITECTURE=x86-64"}
	if !reflect.DeepEqual(p.Releases, want) || p.Index == (v1.Hash{}) || !p.Signed {
		t.Errorf("pushed %+v", p)
	}
	idx := remoteIndex(t, tag, opts)
	if len(idx.Manifests) != 2 {
		t.Fatalf("index %+v", idx)
	}
	for i, e := range idx.Manifests {
		if e.Digest != []v1.Hash{d12, d13}[i] || e.ArtifactType != ExtensionArtifactType || e.Annotations[AnnotationExtensionRelease] != want[i] ||
			e.Annotations[AnnotationExtensionName] != "gpu" || e.Platform == nil || e.Platform.Architecture != "amd64" {
			t.Errorf("index entry %d: %+v", i, e)
		}
	}
	if exts, err := Extensions(tag, opts...); err != nil || len(exts) != 2 {
		t.Errorf("Extensions: %d %v", len(exts), err)
	}

	for _, c := range []struct {
		host sysext.Release
		arch string
		want v1.Hash
	}{{debian12, "amd64", d12}, {debian13, "x86-64", d13}, {debian13, "", d13}} {
		a, err := ResolveExtension(tag, c.host, c.arch, opts...)
		if err != nil {
			t.Errorf("%s: %v", c.host, err)
			continue
		}
		if a.Digest != c.want || a.Extension.Release.VersionID != c.host.VersionID {
			t.Errorf("%s: resolved %s, want %s", c.host, a.Digest, c.want)
		}
		if _, err := a.VerifySignature(&key.PublicKey); err != nil {
			t.Errorf("%s: resolved, but %v", c.host, err)
		}
	}
	_, err = ResolveExtension(tag, sysext.Release{ID: "debian", VersionID: "14"}, "amd64", opts...)
	var nm *NoMatchError
	if !errors.As(err, &nm) || !reflect.DeepEqual(nm.Releases(), want) ||
		!strings.Contains(err.Error(), "no extension for ID=debian VERSION_ID=14 on x86-64; it offers gpu 1.0 for ID=debian VERSION_ID=12") ||
		!strings.Contains(err.Error(), "this image is VERSION_ID=14") {
		t.Errorf("no match: %v", err)
	}
	if _, err := ResolveExtension(tag, debian12, "arm64", opts...); !errors.As(err, &nm) || !strings.Contains(err.Error(), "it is for amd64, this node is arm64") {
		t.Errorf("other arch: %v", err)
	}

	// One manifest is wanted: the index is refused, each entry by digest read.
	if _, err := OpenExtension(tag, opts...); !errors.Is(err, ErrIndex) || !strings.Contains(err.Error(), "for 2 OS releases") {
		t.Errorf("OpenExtension of the index: %v", err)
	}
	if _, err := Open(tag, opts...); !errors.Is(err, ErrIsExtension) {
		t.Errorf("Open of the index: %v", err)
	}
	if _, err := Sign(tag, key, "", opts...); !errors.Is(err, ErrIndex) {
		t.Errorf("Sign of the index: %v", err)
	}
	mustOpenExtension(t, host+"/slate/gpu@"+d13.String(), opts...)

	// The same release again, rebuilt: replaced, the other kept.
	in := makeExt(t, "gpu", debian12, 12)
	in.cfg.Created = in.cfg.Created.Add(time.Hour)
	rebuilt := filepath.Join(t.TempDir(), "rebuilt")
	d12b := in.write(t, rebuilt)
	if _, err := Push(rebuilt, tag, opts...); err != nil {
		t.Fatal(err)
	}
	idx = remoteIndex(t, tag, opts)
	if len(idx.Manifests) != 2 || idx.Manifests[0].Digest != d12b || idx.Manifests[1].Digest != d13 {
		t.Errorf("after the rebuild: %+v", idx.Manifests)
	}
	if a, err := ResolveExtension(tag, debian12, "amd64", opts...); err != nil || a.Digest != d12b {
		t.Errorf("after the rebuild: %v", err)
	} else if _, err := a.VerifySignature(&key.PublicKey); !errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("the unsigned rebuild verified: %v", err)
	}

	// Another extension, or an update artifact's tag: refused.
	other := filepath.Join(t.TempDir(), "tools")
	makeExt(t, "tools", debian12, 3).write(t, other)
	if _, err := Push(other, tag, opts...); err == nil || !strings.Contains(err.Error(), "holds the extension gpu") {
		t.Errorf("another extension to the tag: %v", err)
	}
	upd := filepath.Join(t.TempDir(), "upd")
	makeInputs(t, 2, false).write(t, upd)
	if _, err := Push(upd, host+"/slate/node:1.0", opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := Push(dir12, host+"/slate/node:1.0", opts...); !errors.Is(err, ErrIsUpdate) {
		t.Errorf("an extension over an update artifact: %v", err)
	}
}

func remoteDesc(t *testing.T, ref string, opts []Option) *remote.Descriptor {
	t.Helper()
	o := makeOptions(opts)
	r, err := name.ParseReference(ref, o.nameOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Get(r, o.remoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func remoteIndex(t *testing.T, ref string, opts []Option) *v1.IndexManifest {
	t.Helper()
	d := remoteDesc(t, ref, opts)
	if !d.MediaType.IsIndex() {
		t.Fatalf("%s is a %s", ref, d.MediaType)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(d.Manifest))
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// A layout may hold an index of extensions too (as copied from a registry
// by other tools): resolved the same way.
func TestResolveLayoutIndex(t *testing.T) {
	var adds []mutate.IndexAddendum
	var digests []v1.Hash
	for i, host := range []sysext.Release{debian12, debian13} {
		dir := filepath.Join(t.TempDir(), "gpu")
		digests = append(digests, makeExt(t, "gpu", host, int64(i)).write(t, dir))
		a := mustOpenExtension(t, "oci:"+dir)
		adds = append(adds, mutate.IndexAddendum{Add: a.Image})
	}
	dir := filepath.Join(t.TempDir(), "index")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{AnnotationRefName: "1.0"})); err != nil {
		t.Fatal(err)
	}
	for i, host := range []sysext.Release{debian12, debian13} {
		a, err := ResolveExtension("oci:"+dir+":1.0", host, "amd64")
		if err != nil || a.Digest != digests[i] {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := ResolveExtension("oci:"+dir, sysext.Release{ID: "fedora", VersionID: "41"}, "amd64"); err == nil ||
		!strings.Contains(err.Error(), "it is for ID=debian, this image is ID=fedora") {
		t.Errorf("fedora: %v", err)
	}
	// Two extensions in one layout: no release chooses between them.
	two := filepath.Join(t.TempDir(), "two")
	copyDir(t, dir, two)
	tools := filepath.Join(t.TempDir(), "tools")
	makeExt(t, "tools", debian12, 7).write(t, tools)
	a := mustOpenExtension(t, "oci:"+tools)
	if err := mustLayout(t, two).AppendImage(a.Image, layout.WithAnnotations(map[string]string{AnnotationRefName: "tools"})); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveExtension("oci:"+two, debian12, "amd64"); err == nil || !strings.Contains(err.Error(), "offers several extensions (gpu, tools)") {
		t.Errorf("two extensions: %v", err)
	}
	if got, err := ResolveExtension("oci:"+two+":tools", debian12, "amd64"); err != nil || got.Digest != a.Digest {
		t.Errorf("by tag: %v", err)
	}

	// An index entry whose manifest blob was altered is refused.
	b, _ := os.ReadFile(filepath.Join(dir, "blobs", "sha256", digests[0].Hex))
	writeFile(t, filepath.Join(dir, "blobs", "sha256", digests[0].Hex), append(b, ' '))
	if _, err := ResolveExtension("oci:"+dir, debian13, "amd64"); err == nil || !strings.Contains(err.Error(), "manifest: blob "+digests[0].String()) {
		t.Errorf("altered manifest: %v", err)
	}
}

// The update artifact's config carries the image's os-release and its
// extensions, validated; configs without them keep their bytes.
func TestConfigReleaseAndExtensions(t *testing.T) {
	in := makeInputs(t, 2, false)
	dir := filepath.Join(t.TempDir(), "plain")
	in.write(t, dir)
	raw, err := mustOpen(t, "oci:"+dir).Image.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("osRelease")) || bytes.Contains(raw, []byte("extensions")) {
		t.Errorf("an empty release or list is written: %s", raw)
	}

	ext := CarriedExtension{Name: "gpu", Version: "1.0", Release: sysext.ForHost(debian12), Digest: "sha256:" + strings.Repeat("ab", 32)}
	in.cfg.OSRelease = debian12
	in.cfg.Extensions = []CarriedExtension{ext}
	in.write(t, dir)
	a := mustOpen(t, "oci:"+dir)
	if a.Config.OSRelease != debian12 || !reflect.DeepEqual(a.Config.Extensions, in.cfg.Extensions) {
		t.Errorf("read back %+v %+v", a.Config.OSRelease, a.Config.Extensions)
	}
	raw, _ = a.Image.RawConfigFile()
	var generic map[string]any
	json.Unmarshal(raw, &generic)
	if generic["osRelease"].(map[string]any)["versionID"] != "12" {
		t.Errorf("config %s", raw)
	}

	for _, c := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"release value", func(c *Config) { c.OSRelease.VersionID = "12 beta" }, `config.osRelease.versionID: "12 beta" is not a plain os-release value`},
		{"extension name", func(c *Config) { c.Extensions[0].Name = "" }, `config.extensions[0].name: "" is not an extension name`},
		{"twice", func(c *Config) { c.Extensions = append(c.Extensions, ext) }, `config.extensions[1].name: "gpu" again`},
		{"digest", func(c *Config) { c.Extensions[0].Digest = "latest" }, `config.extensions[0].digest: "latest" is not a manifest digest`},
		{"release id", func(c *Config) { c.Extensions[0].Release.ID = "" }, "config.extensions[0].release.id: missing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := in.cfg
			cfg.Extensions = []CarriedExtension{ext}
			c.edit(&cfg)
			if _, err := Write(filepath.Join(t.TempDir(), "out"), cfg, in.blobs()); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v\nwant %q", err, c.want)
			}
		})
	}
}

func mustLayout(t *testing.T, dir string) layout.Path {
	t.Helper()
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	return lp
}
