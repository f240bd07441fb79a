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
	"log"
	"math/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// inputs are the files and config of a small, consistent artifact.
type inputs struct {
	cfg                     Config
	root, kernel, initramfs string
	systemdBoot             string // "": an artifact without the layer
}

// testLoaderVersion is the version in makeInputs' fake systemd-boot.
const testLoaderVersion = "257.9-1~deb13u1"

// fakeLoader is a systemd-boot as far as its version goes: bytes around
// the LoaderInfo marker of its .sdmagic section.
func fakeLoader(version string) []byte {
	b := append([]byte("MZ\x90\x00 fake systemd-boot "), bytes.Repeat([]byte{0, 1, 2}, 700)...)
	return append(b, "#### LoaderInfo: systemd-boot "+version+" ####\x00"...)
}

func (in inputs) blobs() Blobs {
	b := Blobs{Root: Blob{Path: in.root}, Kernel: Blob{Path: in.kernel}, Initramfs: Blob{Path: in.initramfs}}
	if in.systemdBoot != "" {
		b.SystemdBoot = Blob{Path: in.systemdBoot}
	}
	return b
}

// makeInputs writes a root blob of dataBlocks 4 KiB data blocks plus a
// verity superblock and tree of the right size, a kernel and an initramfs
// (gzip magic first: it must come back byte for byte, not gunzipped).
func makeInputs(t testing.TB, dataBlocks int64, sparse bool) inputs {
	t.Helper()
	dir := t.TempDir()
	ri := RootInfo{
		DataSize:      dataBlocks * 4096,
		HashOffset:    dataBlocks * 4096,
		RootHash:      strings.Repeat("ab", 32),
		Salt:          strings.Repeat("5a", 32),
		Algorithm:     "sha256",
		DataBlockSize: 4096,
		HashBlockSize: 4096,
	}
	size := ri.MinSize()
	in := inputs{
		cfg: Config{
			Version:       "1.4.0",
			Architecture:  "amd64",
			OS:            "linux",
			Source:        "sha256:" + strings.Repeat("0123456789abcdef", 4),
			KernelRelease: "6.1.0-18-cloud-amd64",
			Cmdline:       "console=ttyS0 quiet",
			Root:          ri,
			Created:       time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC),
		},
		root:        filepath.Join(dir, "root.img"),
		kernel:      filepath.Join(dir, "vmlinuz"),
		initramfs:   filepath.Join(dir, "initramfs"),
		systemdBoot: filepath.Join(dir, "systemd-bootx64.efi"),
	}
	if sparse {
		f, err := os.Create(in.root)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
	} else {
		b := make([]byte, size)
		rand.New(rand.NewSource(1)).Read(b)
		writeFile(t, in.root, b)
	}
	writeFile(t, in.kernel, append([]byte("MZ kernel "), bytes.Repeat([]byte{1, 2, 3}, 1000)...))
	writeFile(t, in.initramfs, append([]byte{0x1f, 0x8b, 8, 0}, bytes.Repeat([]byte("cpio"), 500)...))
	writeFile(t, in.systemdBoot, fakeLoader(testLoaderVersion))
	return in
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (in inputs) write(t testing.TB, dir string) v1.Hash {
	t.Helper()
	d, err := Write(dir, in.cfg, in.blobs())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func fileDigest(t testing.TB, path string) (v1.Hash, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, n, err := v1.SHA256(f)
	if err != nil {
		t.Fatal(err)
	}
	return h, n
}

func readAll(t testing.TB, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkArtifact compares a read artifact with the inputs it was written from.
func checkArtifact(t *testing.T, a *Artifact, in inputs, digest v1.Hash) {
	t.Helper()
	if a.Digest != digest {
		t.Errorf("digest %s, want %s", a.Digest, digest)
	}
	want := in.cfg
	_, want.Root.Size = fileDigest(t, in.root)
	if in.systemdBoot != "" && want.SystemdBootVersion == "" {
		want.SystemdBootVersion = testLoaderVersion // Write reads it from the blob
	}
	if !reflect.DeepEqual(a.Config, want) {
		t.Errorf("config\n got %+v\nwant %+v", a.Config, want)
	}
	m, err := a.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != ArtifactType || m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != ConfigMediaType {
		t.Errorf("manifest types: %q %q %q", m.MediaType, m.ArtifactType, m.Config.MediaType)
	}
	layers := []struct {
		l     v1.Layer
		path  string
		mt    types.MediaType
		title string
	}{
		{a.Root, in.root, RootMediaType, "rootfs.img"},
		{a.Kernel, in.kernel, KernelMediaType, "vmlinuz"},
		{a.Initramfs, in.initramfs, InitramfsMediaType, "initramfs"},
	}
	if in.systemdBoot != "" {
		layers = append(layers, struct {
			l     v1.Layer
			path  string
			mt    types.MediaType
			title string
		}{a.SystemdBoot, in.systemdBoot, SystemdBootMediaType, "systemd-bootx64.efi"})
	} else if a.SystemdBoot != nil {
		t.Error("an artifact written without systemd-boot has a systemd-boot layer")
	}
	if len(m.Layers) != len(layers) {
		t.Fatalf("manifest has %d layers, want %d", len(m.Layers), len(layers))
	}
	for i, c := range layers {
		wantDigest, wantSize := fileDigest(t, c.path)
		if d, _ := c.l.Digest(); d != wantDigest {
			t.Errorf("layer %d digest %s, want %s", i, d, wantDigest)
		}
		if d, _ := c.l.DiffID(); d != wantDigest {
			t.Errorf("layer %d diffID %s, want %s", i, d, wantDigest)
		}
		if s, _ := c.l.Size(); s != wantSize {
			t.Errorf("layer %d size %d, want %d", i, s, wantSize)
		}
		if mt, _ := c.l.MediaType(); mt != c.mt {
			t.Errorf("layer %d media type %q, want %q", i, mt, c.mt)
		}
		if got := m.Layers[i].Annotations[AnnotationTitle]; got != c.title {
			t.Errorf("layer %d title %q, want %q", i, got, c.title)
		}
		wantBytes, _ := os.ReadFile(c.path)
		if got := readAll(t, c.l); !bytes.Equal(got, wantBytes) {
			t.Errorf("layer %d: %d bytes differ from the input's %d", i, len(got), len(wantBytes))
		}
		rc, err := c.l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, wantBytes) {
			t.Errorf("layer %d: Uncompressed is not the stored bytes (err %v)", i, err)
		}
	}
}

func TestWriteOpen(t *testing.T) {
	in := makeInputs(t, 3, false)
	dir := filepath.Join(t.TempDir(), "out")
	digest := in.write(t, dir)

	for _, ref := range []string{
		"oci:" + dir,
		"oci:" + dir + ":1.4.0",
		"oci:" + dir + "@" + digest.String(),
	} {
		t.Run(ref[len(ref)-10:], func(t *testing.T) {
			a, err := Open(ref, WithPlatform("linux", "amd64"))
			if err != nil {
				t.Fatal(err)
			}
			checkArtifact(t, a, in, digest)
		})
	}

	// index.json: one manifest, tagged with the version, with artifactType.
	idx := readIndex(t, dir)
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json lists %d manifests", len(idx.Manifests))
	}
	d := idx.Manifests[0]
	if d.Digest != digest || d.ArtifactType != ArtifactType || d.Annotations[AnnotationRefName] != "1.4.0" || d.MediaType != types.OCIManifestSchema1 {
		t.Errorf("index.json descriptor: %+v", d)
	}
	// The config blob is our JSON, in field order.
	a, err := Open("oci:" + dir)
	if err != nil {
		t.Fatal(err)
	}
	rawCfg, err := a.Image.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(rawCfg, []byte(`{"version":"1.4.0","architecture":"amd64","os":"linux","source":"sha256:`)) ||
		!bytes.HasSuffix(rawCfg, []byte(`"created":"2024-06-01T12:00:00Z"}`)) {
		t.Errorf("config blob: %s", rawCfg)
	}
	// Nothing left beside the output.
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Errorf("parent dir holds %v, want only out", entries)
	}

	if _, err := Open("oci:"+dir+":2.0", WithPlatform("linux", "amd64")); err == nil || !strings.Contains(err.Error(), `no manifest tagged "2.0" (tags: 1.4.0)`) {
		t.Errorf("wrong tag: %v", err)
	}
	if _, err := Open("oci:"+dir, WithPlatform("linux", "arm64")); err == nil || !strings.Contains(err.Error(), "for linux/amd64, not linux/arm64") {
		t.Errorf("platform: %v", err)
	}
}

func TestWriteStreamBlob(t *testing.T) {
	in := makeInputs(t, 2, false)
	dir := filepath.Join(t.TempDir(), "out")
	kernel, _ := os.ReadFile(in.kernel)
	streamed := in.blobs()
	streamed.Kernel = Blob{Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(kernel)), nil }}
	d1, err := Write(dir, in.cfg, streamed)
	if err != nil {
		t.Fatal(err)
	}
	if d2 := in.write(t, filepath.Join(t.TempDir(), "out")); d1 != d2 {
		t.Errorf("stream and file give different digests %s, %s", d1, d2)
	}
	if _, err := Write(dir, in.cfg, Blobs{Root: Blob{Path: in.root}, Initramfs: Blob{Path: in.initramfs}}); err == nil || !strings.Contains(err.Error(), "kernel layer: neither Path nor Open") {
		t.Errorf("empty Blob: %v", err)
	}
}

// tree maps each path under dir to its mode and content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if !d.IsDir() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			v += " " + hex.EncodeToString(sum[:])
		}
		m[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReproducible(t *testing.T) {
	in := makeInputs(t, 5, false)
	dir1 := filepath.Join(t.TempDir(), "a")
	dir2 := filepath.Join(t.TempDir(), "b")
	d1 := in.write(t, dir1)
	// Same instant in another zone, and Root.Size given: same bytes.
	in2 := in
	in2.cfg.Created = in.cfg.Created.In(time.FixedZone("CEST", 2*3600))
	_, in2.cfg.Root.Size = fileDigest(t, in.root)
	time.Sleep(10 * time.Millisecond)
	d2 := in2.write(t, dir2)
	if d1 != d2 {
		t.Fatalf("digests differ: %s, %s", d1, d2)
	}
	t1, t2 := tree(t, dir1), tree(t, dir2)
	if !reflect.DeepEqual(t1, t2) {
		t.Errorf("layouts differ:\n%v\n%v", t1, t2)
	}
	// ., oci-layout, index.json, blobs, blobs/sha256, 4 layers + config + manifest.
	if len(t1) != 11 {
		t.Errorf("layout has %d entries: %v", len(t1), t1)
	}
	for p, v := range t1 {
		if !strings.HasPrefix(v, "drwxr-xr-x") && !strings.HasPrefix(v, "-rw-r--r--") {
			t.Errorf("%s: mode %s", p, v)
		}
	}
}

func TestWriteReplace(t *testing.T) {
	in := makeInputs(t, 2, false)
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	in.write(t, dir)

	// A previous artifact is replaced.
	in2 := in
	in2.cfg.Version = "1.5.0"
	d2 := in2.write(t, dir)
	a, err := Open("oci:" + dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != d2 || a.Config.Version != "1.5.0" {
		t.Errorf("got %s %s after replacing", a.Digest, a.Config.Version)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 {
		t.Errorf("parent holds %v after replacing", entries)
	}

	// An empty directory is filled.
	emptyDir := filepath.Join(parent, "empty")
	os.Mkdir(emptyDir, 0o755)
	in.write(t, emptyDir)

	// Anything else is left alone.
	other := filepath.Join(parent, "other")
	os.Mkdir(other, 0o755)
	writeFile(t, filepath.Join(other, "precious.txt"), []byte("keep me"))
	_, err = Write(other, in.cfg, in.blobs())
	if err == nil || !strings.Contains(err.Error(), `not a slate update artifact (it holds "precious.txt"); refusing to replace it`) {
		t.Errorf("non-artifact dir: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(other, "precious.txt")); string(b) != "keep me" {
		t.Error("precious.txt was touched")
	}
	// Another OCI layout (an ordinary image) is not ours either.
	img, _ := random.Image(100, 1)
	ociDir := filepath.Join(parent, "image")
	lp, _ := layout.Write(ociDir, empty.Index)
	lp.AppendImage(img)
	_, err = Write(ociDir, in.cfg, in.blobs())
	if err == nil || !strings.Contains(err.Error(), "refusing to replace") {
		t.Errorf("image layout: %v", err)
	}
	file := filepath.Join(parent, "file")
	writeFile(t, file, nil)
	if _, err = Write(file, in.cfg, in.blobs()); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("file: %v", err)
	}
	for _, e := range mustReadDir(t, parent) {
		if strings.Contains(e, ".tmp-") || strings.Contains(e, ".old-") {
			t.Errorf("left behind: %s", e)
		}
	}
}

func mustReadDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteBadConfig(t *testing.T) {
	in := makeInputs(t, 2, false)
	for _, c := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"missing source", func(c *Config) { c.Source = "" }, []string{"config.source: missing"}},
		{"several", func(c *Config) {
			c.Version = "1.4 beta"
			c.Architecture = "x86_64"
			c.Root.RootHash = "abcd"
			c.Cmdline = "quiet slate.slot=a"
		}, []string{
			`config.version: "1.4 beta" is not a valid OCI tag`,
			`config.architecture: "x86_64": use the OCI name "amd64"`,
			`config.root.rootHash: "abcd" is not a sha256 hash`,
			`config.cmdline: has "slate.slot=a"`,
		}},
		{"size mismatch", func(c *Config) { c.Root.Size = 4096 * 100 }, []string{"config.root.size: 409600, but the root blob is 16384 bytes"}},
		{"tree too small", func(c *Config) { c.Root.DataSize, c.Root.HashOffset = 1<<20, 1<<20 }, []string{"config.root.size:", "need at least"}},
		{"block size", func(c *Config) { c.Root.DataBlockSize = 1000 }, []string{"config.root.dataBlockSize: 1000, want a power of two"}},
		{"hash offset", func(c *Config) { c.Root.HashOffset = 0 }, []string{"config.root.hashOffset: 0 is inside the data"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := in.cfg
			c.edit(&cfg)
			dir := filepath.Join(t.TempDir(), "out")
			_, err := Write(dir, cfg, in.blobs())
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("error is not a *ValidationError: %T", err)
			}
			if names := mustReadDir(t, filepath.Dir(dir)); len(names) != 0 {
				t.Errorf("left behind: %v", names)
			}
		})
	}
}

// rewrite hand-edits the layout's manifest and config (as generic JSON)
// and points index.json at the new manifest.
func rewrite(t *testing.T, dir string, edit func(m map[string]any, cfg map[string]any)) {
	t.Helper()
	blob := func(d string) string { return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")) }
	put := func(v any) (string, int) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		writeFile(t, blob(d), b)
		return d, len(b)
	}
	get := func(path string) map[string]any {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	idx := get(filepath.Join(dir, "index.json"))
	desc := idx["manifests"].([]any)[0].(map[string]any)
	m := get(blob(desc["digest"].(string)))
	mc := m["config"].(map[string]any)
	cfg := get(blob(mc["digest"].(string)))
	edit(m, cfg)
	mc["digest"], mc["size"] = put(cfg)
	desc["digest"], desc["size"] = put(m)
	b, _ := json.Marshal(idx)
	writeFile(t, filepath.Join(dir, "index.json"), b)
}

func TestOpenBroken(t *testing.T) {
	in := makeInputs(t, 2, false)
	good := filepath.Join(t.TempDir(), "good")
	in.write(t, good)

	for _, c := range []struct {
		name string
		edit func(m, cfg map[string]any)
		want []string
	}{
		{"config media type", func(m, cfg map[string]any) {
			m["config"].(map[string]any)["mediaType"] = "application/vnd.oci.image.config.v1+json"
		}, []string{`manifest.config.mediaType: "application/vnd.oci.image.config.v1+json", want "application/vnd.slate.update.config.v1+json"`}},
		{"missing layer", func(m, cfg map[string]any) {
			m["layers"] = m["layers"].([]any)[:2]
		}, []string{"manifest.layers: 2 layers, want 3 (root, kernel, initramfs)"}},
		{"swapped layers", func(m, cfg map[string]any) {
			l := m["layers"].([]any)
			l[1], l[2] = l[2], l[1]
		}, []string{`manifest.layers[1].mediaType: "application/vnd.slate.initramfs.v1", want "application/vnd.slate.kernel.v1" (kernel)`,
			`manifest.layers[2].mediaType`}},
		{"no artifactType", func(m, cfg map[string]any) { delete(m, "artifactType") }, []string{`manifest.artifactType: "", want`}},
		{"missing root hash", func(m, cfg map[string]any) {
			delete(cfg["root"].(map[string]any), "rootHash")
		}, []string{"config.root.rootHash: missing"}},
		{"root size", func(m, cfg map[string]any) {
			cfg["root"].(map[string]any)["size"] = 1 << 30
		}, []string{"config.root.size: 1073741824, but the root layer (manifest.layers[0]) is 16384 bytes"}},
		{"missing version and os", func(m, cfg map[string]any) {
			delete(cfg, "version")
			cfg["os"] = "windows"
		}, []string{"config.version: missing", `config.os: "windows", want "linux"`}},
		{"systemd-boot media type", func(m, cfg map[string]any) {
			m["layers"].([]any)[3].(map[string]any)["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
		}, []string{`manifest.layers[3].mediaType: "application/vnd.oci.image.layer.v1.tar", want "application/vnd.slate.systemd-boot.efi.v1" (systemd-boot)`}},
		{"a kernel as the fifth layer", func(m, cfg map[string]any) {
			m["layers"] = append(m["layers"].([]any), m["layers"].([]any)[1])
		}, []string{`manifest.layers[4].mediaType: "application/vnd.slate.kernel.v1", want "application/vnd.slate.uki.efi.v1" (unified kernel image)`}},
		{"six layers", func(m, cfg map[string]any) {
			m["layers"] = append(m["layers"].([]any), m["layers"].([]any)[1], m["layers"].([]any)[1])
		}, []string{"manifest.layers: 6 layers, want 3 (root, kernel, initramfs), 4 (and systemd-boot) or 5 (and a unified kernel image)"}},
		{"systemd-boot too big", func(m, cfg map[string]any) {
			m["layers"].([]any)[3].(map[string]any)["size"] = 9 << 20
		}, []string{"manifest.layers[3].size: 9437184 bytes, more than a systemd-boot layer may be (8388608)"}},
		{"systemd-boot version without the layer", func(m, cfg map[string]any) {
			m["layers"] = m["layers"].([]any)[:3]
		}, []string{`config.systemdBootVersion: "257.9-1~deb13u1", but the artifact has no systemd-boot layer`}},
		{"systemd-boot version", func(m, cfg map[string]any) {
			cfg["systemdBootVersion"] = "257 9"
		}, []string{`config.systemdBootVersion: "257 9" is not a systemd-boot version`}},
		{"config not json", func(m, cfg map[string]any) {
			cfg["root"] = "nope"
		}, []string{"config sha256:", "cannot unmarshal"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "broken")
			copyDir(t, good, dir)
			rewrite(t, dir, c.edit)
			_, err := Open("oci:" + dir)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "oci:"+dir) {
				t.Errorf("error does not say where: %q", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}

	t.Run("validate in memory", func(t *testing.T) {
		a, err := Open("oci:" + good)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		a.Config.Architecture = "aarch64"
		a.Config.Root.Salt = "xyz"
		a.Config.Root.Size++
		a.Kernel = nil
		err = a.Validate()
		for _, w := range []string{`config.architecture: "aarch64": use the OCI name "arm64"`, `config.root.salt: "xyz"`,
			"config.root.size: 16385, but the root layer", "kernel layer: missing"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("error %v\nlacks %q", err, w)
			}
		}
	})

	t.Run("ordinary image", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "image")
		img, _ := random.Image(100, 2)
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		lp, err := layout.Write(dir, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.AppendImage(img); err != nil {
			t.Fatal(err)
		}
		_, err = Open("oci:" + dir)
		for _, w := range []string{"oci:" + dir, "not a valid slate update artifact", "manifest.artifactType", "manifest.config.mediaType", "manifest.layers: 2 layers"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("error %v\nlacks %q", err, w)
			}
		}
	})

	t.Run("docker image", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "image")
		img, _ := random.Image(100, 1)
		lp, _ := layout.Write(dir, empty.Index)
		lp.AppendImage(img)
		_, err := Open("oci:" + dir)
		if err == nil || !strings.Contains(err.Error(), `as "application/vnd.docker.distribution.manifest.v2+json", not an OCI image manifest; not a slate update artifact`) {
			t.Errorf("error %v", err)
		}
	})

	t.Run("not a layout", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Open("oci:" + dir); err == nil || !strings.Contains(err.Error(), "not an OCI layout (no oci-layout file)") {
			t.Errorf("error %v", err)
		}
	})

	t.Run("without systemd-boot", func(t *testing.T) {
		// An artifact from before the layer: valid, SystemdBoot nil.
		dir := filepath.Join(t.TempDir(), "old")
		copyDir(t, good, dir)
		rewrite(t, dir, func(m, cfg map[string]any) {
			m["layers"] = m["layers"].([]any)[:3]
			delete(cfg, "systemdBootVersion")
		})
		a, err := Open("oci:" + dir)
		if err != nil {
			t.Fatal(err)
		}
		if a.SystemdBoot != nil || a.Config.SystemdBootVersion != "" || a.Initramfs == nil {
			t.Errorf("systemd-boot layer %v, version %q", a.SystemdBoot, a.Config.SystemdBootVersion)
		}
	})

	t.Run("tampered systemd-boot blob", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "tampered")
		copyDir(t, good, dir)
		a, err := Open("oci:" + dir)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := a.SystemdBoot.Digest()
		path := filepath.Join(dir, "blobs", "sha256", d.Hex)
		b, _ := os.ReadFile(path)
		b[10] ^= 1
		writeFile(t, path, b)
		rc, _ := a.SystemdBoot.Compressed()
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("blob %s has digest sha256:", d)) {
			t.Errorf("tampered systemd-boot streamed with error %v", err)
		}
	})

	t.Run("tampered root blob", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "tampered")
		copyDir(t, good, dir)
		a, err := Open("oci:" + dir)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := a.Root.Digest()
		path := filepath.Join(dir, "blobs", "sha256", d.Hex)
		b, _ := os.ReadFile(path)
		b[100] ^= 1
		writeFile(t, path, b)
		rc, _ := a.Root.Compressed()
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("blob %s has digest sha256:", d)) {
			t.Errorf("tampered root streamed with error %v", err)
		}
		writeFile(t, path, b[:len(b)-1])
		rc, _ = a.Root.Compressed()
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err == nil || !strings.Contains(err.Error(), "is 16383 bytes, want 16384") {
			t.Errorf("truncated root streamed with error %v", err)
		}
	})
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPushOpenRegistry(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	if !strings.HasPrefix(host, "127.0.0.1:") {
		t.Fatalf("registry at %s", srv.URL)
	}
	opts := []Option{Insecure(), WithKeychain(authn.NewMultiKeychain())}

	in := makeInputs(t, 4, false)
	dir := filepath.Join(t.TempDir(), "out")
	digest := in.write(t, dir)

	// No tag: the version tags it. The upload reports its progress.
	var done, total, calls int64
	got, err := Push(dir, host+"/slate/node-update", append(opts, WithProgress(func(d, t int64) { done, total, calls = d, t, calls+1 }))...)
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 || total == 0 || done != total {
		t.Errorf("progress: %d calls, last %d of %d bytes", calls, done, total)
	}
	if got.Digest != digest || got.Ref.String() != host+"/slate/node-update:1.4.0" || got.Signed {
		t.Errorf("pushed %+v, layout has %s (unsigned)", got, digest)
	}
	for _, ref := range []string{
		host + "/slate/node-update:1.4.0",
		host + "/slate/node-update@" + digest.String(),
	} {
		a, err := Open(ref, append(opts, WithPlatform("linux", "amd64"))...)
		if err != nil {
			t.Fatal(err)
		}
		checkArtifact(t, a, in, digest)
		if want := host + "/slate/node-update@" + digest.String(); a.Where() != want {
			t.Errorf("Where %q, want %q", a.Where(), want)
		}
	}

	if _, err := Push(dir, host+"/slate/node-update:stable", opts...); err != nil {
		t.Fatal(err)
	}
	if a, err := Open(host+"/slate/node-update:stable", opts...); err != nil || a.Digest != digest {
		t.Errorf("stable: %v", err)
	}
	other := "sha256:" + strings.Repeat("0", 64)
	if _, err := Push(dir, host+"/slate/node-update@"+other, opts...); err == nil || !strings.Contains(err.Error(), "names another manifest") {
		t.Errorf("push by wrong digest: %v", err)
	}
	if _, err := Open(host+"/slate/node-update:missing", opts...); err == nil {
		t.Error("opened a missing tag")
	}

	// An ordinary image in the registry is refused with the reason.
	img, _ := random.Image(100, 1)
	lp, _ := layout.Write(filepath.Join(t.TempDir(), "img"), empty.Index)
	lp.AppendImage(img)
	if _, err := Push(string(lp), host+"/x/y", opts...); err == nil || !strings.Contains(err.Error(), "push: oci:"+string(lp)+": index.json lists") {
		t.Errorf("pushed an ordinary image: %v", err)
	}
}

// TestWriteMemoryFlat writes a 64 MiB root and checks that Write did not
// allocate anything like the root's size: it streams.
func TestWriteMemoryFlat(t *testing.T) {
	const rootData = 64 << 20
	in := makeInputs(t, rootData/4096, true)
	dir := filepath.Join(t.TempDir(), "out")

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	digest := in.write(t, dir)
	runtime.ReadMemStats(&after)

	allocated := after.TotalAlloc - before.TotalAlloc
	heapGrowth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("root %d MiB: allocated %.2f MiB in total, heap grew %.2f MiB",
		in.cfg.Root.DataSize>>20, float64(allocated)/(1<<20), float64(heapGrowth)/(1<<20))
	if allocated > 8<<20 {
		t.Errorf("Write allocated %d bytes for a 64 MiB root: it must stream", allocated)
	}
	if heapGrowth > 8<<20 {
		t.Errorf("heap grew by %d bytes", heapGrowth)
	}

	a, err := Open("oci:" + dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != digest {
		t.Fatal("digest")
	}
	runtime.GC()
	runtime.ReadMemStats(&before)
	rc, err := a.Root.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	runtime.ReadMemStats(&after)
	if err != nil || n != a.Config.Root.Size {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 8<<20 {
		t.Errorf("streaming the root allocated %d bytes", allocated)
	}
}

// TestWriteSystemdBoot: the systemd-boot layer is optional, its version in
// the config always agrees with the blob, and its size is bounded.
func TestWriteSystemdBoot(t *testing.T) {
	in := makeInputs(t, 2, false)

	t.Run("without", func(t *testing.T) {
		old := in
		old.systemdBoot = ""
		dir := filepath.Join(t.TempDir(), "out")
		d := old.write(t, dir)
		a, err := Open("oci:" + dir)
		if err != nil {
			t.Fatal(err)
		}
		checkArtifact(t, a, old, d)
		if a.SystemdBoot != nil || a.Config.SystemdBootVersion != "" {
			t.Errorf("systemd-boot %v %q", a.SystemdBoot, a.Config.SystemdBootVersion)
		}
	})

	t.Run("version given", func(t *testing.T) {
		cfg := in.cfg
		cfg.SystemdBootVersion = testLoaderVersion
		dir := filepath.Join(t.TempDir(), "out")
		if _, err := Write(dir, cfg, in.blobs()); err != nil {
			t.Fatal(err)
		}
		if a, err := Open("oci:" + dir); err != nil || a.Config.SystemdBootVersion != testLoaderVersion {
			t.Errorf("%v", err)
		}
	})

	unreadable := filepath.Join(t.TempDir(), "fake.efi")
	writeFile(t, unreadable, []byte("MZ fake systemd-boot\n"))
	t.Run("no readable version", func(t *testing.T) {
		// Written (the builder's test images have such fakes), without a
		// version: nodes will not install it.
		fake := in
		fake.systemdBoot = unreadable
		dir := filepath.Join(t.TempDir(), "out")
		fake.write(t, dir)
		a, err := Open("oci:" + dir)
		if err != nil {
			t.Fatal(err)
		}
		if a.SystemdBoot == nil || a.Config.SystemdBootVersion != "" {
			t.Errorf("systemd-boot %v %q", a.SystemdBoot, a.Config.SystemdBootVersion)
		}
	})

	big := filepath.Join(t.TempDir(), "big.efi")
	bigBlob := append(make([]byte, 8<<20), fakeLoader("257")...)
	writeFile(t, big, bigBlob)
	for _, c := range []struct {
		name    string
		version string
		loader  string
		want    string
	}{
		{"other version", "252.39-1~deb12u2", in.systemdBoot, `config.systemdBootVersion: "252.39-1~deb12u2", but the systemd-boot blob says "257.9-1~deb13u1"`},
		{"version of an unreadable blob", testLoaderVersion, unreadable, "but the systemd-boot blob has no readable version"},
		{"version without a blob", testLoaderVersion, "", `config.systemdBootVersion: "257.9-1~deb13u1", but no systemd-boot blob was given`},
		{"too big", "", big, fmt.Sprintf("systemd-boot layer: %d bytes, more than a systemd-boot may be (8388608)", len(bigBlob))},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := in.cfg
			cfg.SystemdBootVersion = c.version
			bad := in
			bad.systemdBoot = c.loader
			dir := filepath.Join(t.TempDir(), "out")
			_, err := Write(dir, cfg, bad.blobs())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant %q", err, c.want)
			}
			if names := mustReadDir(t, filepath.Dir(dir)); len(names) != 0 {
				t.Errorf("left behind: %v", names)
			}
		})
	}
}
