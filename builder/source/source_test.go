package source

import (
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slate-os/slate/internal/testimage"
)

func image(t *testing.T, arch, marker string) v1.Image {
	t.Helper()
	img, err := testimage.Image([]testimage.Entry{testimage.File("marker", marker)})
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digest(t *testing.T, img v1.Image) string {
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestLayoutSelection(t *testing.T) {
	amd, arm := image(t, "amd64", "amd"), image(t, "arm64", "arm")
	// An index of two platforms, plus a tagged single image.
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	dir := filepath.Join(t.TempDir(), "lay:out") // a colon in the path must not confuse the parser
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "multi"})); err != nil {
		t.Fatal(err)
	}
	single := image(t, "amd64", "single")
	if err := p.AppendImage(single, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "one"})); err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{
		"oci:" + dir + ":multi":                digest(t, amd),
		"oci:" + dir + ":one":                  digest(t, single),
		"oci:" + dir + "@" + digest(t, single): digest(t, single),
	} {
		img, err := Open(ref, Options{})
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if got := digest(t, img); got != want {
			t.Errorf("%s picked %s, want %s", ref, got, want)
		}
	}
	for ref, want := range map[string]string{
		"oci:" + dir:                  "holds several images",
		"oci:" + dir + ":nope":        `has no image "nope"`,
		"oci:" + t.TempDir():          "is not an OCI layout",
		"docker-archive:/nonexistent": "reading docker-save tarball",
		"not a ref!":                  "no such file or directory: not a ref!",
	} {
		if _, err := Open(ref, Options{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", ref, err, want)
		}
	}
}

func TestDockerArchiveAndRegistry(t *testing.T) {
	img := image(t, "amd64", "x")
	tag, _ := name.NewTag("example.com/node:1")
	tar := filepath.Join(t.TempDir(), "node.tar")
	if err := tarball.WriteToFile(tar, tag, img); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"docker-archive:" + tar, tar} {
		got, err := Open(ref, Options{})
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if digest(t, got) != digest(t, img) {
			t.Errorf("%s: wrong image", ref)
		}
	}

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	ref := u.Host + "/org/node:1"
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	got, err := Open(ref, Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, got) != digest(t, img) {
		t.Error("registry: wrong image")
	}
	if _, err := Open(u.Host+"/org/missing:1", Options{Insecure: true}); err == nil || !strings.Contains(err.Error(), "org/missing:1") {
		t.Errorf("missing repository: %v", err)
	}
}

func TestSplitLayoutRef(t *testing.T) {
	for in, want := range map[string][2]string{
		"dir":            {"dir", ""},
		"dir:tag":        {"dir", "tag"},
		"/a:b/dir":       {"/a:b/dir", ""},
		"dir@sha256:abc": {"dir", "sha256:abc"},
		"./x:y/z:latest": {"./x:y/z", "latest"},
	} {
		d, s := SplitLayoutRef(in)
		if d != want[0] || s != want[1] {
			t.Errorf("SplitLayoutRef(%q) = %q, %q; want %q, %q", in, d, s, want[0], want[1])
		}
	}
}

// A path that does not exist is a typo to report, never a registry lookup.
func TestLocalPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("here.tar", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for ref, local := range map[string]bool{
		"/nonexistent": true, "./x": true, "../x": true, "~/node.oci": true, ".": true,
		"node.raw": true, "build/node.oci": true, "here.tar": true, "Not/A/Ref!": true,
		"debian:bookworm": false, "org/node:1.4": false, "registry.example/org/node": false,
		"localhost/node": false, "10.0.2.2:5000/slate/node": false, "docker.io/library/debian": false,
		"org/node@sha256:" + strings.Repeat("ab", 32): false,
	} {
		if got := LocalPath(ref); got != local {
			t.Errorf("LocalPath(%q) = %v, want %v", ref, got, local)
		}
	}
	for ref, want := range map[string]string{
		"/nonexistent": "source: no such file or directory: /nonexistent",
		"node.raw":     "source: no such file or directory: node.raw (an image on Docker Hub needs its tag or registry: node.raw:latest, docker.io/node.raw)",
		"oci:/nope":    "source: no such file or directory: /nope",
	} {
		_, err := Open(ref, Options{})
		if err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%q): %v, want %q", ref, err, want)
		}
	}
	if err := os.Mkdir("node.oci", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"here.tar", "oci:node.oci", "oci:node.oci:v2", "oci:node.oci@sha256:" + strings.Repeat("ab", 32), "docker-archive:here.tar"} {
		if err := CheckLocal(ref); err != nil {
			t.Errorf("CheckLocal(%q), which exists: %v", ref, err)
		}
	}
	for ref, want := range map[string]string{
		"oci:nope.oci": "no such file or directory: nope.oci", "oci:nope.oci:v2": "no such file or directory: nope.oci",
		"docker-archive:nope.tar": "no such file or directory: nope.tar",
	} {
		if err := CheckLocal(ref); err == nil || err.Error() != want {
			t.Errorf("CheckLocal(%q) = %v, want %q", ref, err, want)
		}
	}
}
