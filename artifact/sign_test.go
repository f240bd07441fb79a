package artifact

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/signature"
)

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func edKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustOpen(t testing.TB, ref string, opts ...Option) *Artifact {
	t.Helper()
	a, err := Open(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustSignRef(t testing.TB, ref string, key crypto.Signer, identity string, opts ...Option) v1.Hash {
	t.Helper()
	d, err := Sign(ref, key, identity, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readIndex(t testing.TB, dir string) v1.IndexManifest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// reachable lists the blobs index.json reaches (manifests, configs, layers),
// read from the files by hand rather than through ggcr's GC.
func reachable(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	for _, d := range readIndex(t, dir).Manifests {
		raw, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", d.Digest.Hex))
		if err != nil {
			t.Fatal(err)
		}
		var m v1.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, d.Digest.Hex, m.Config.Digest.Hex)
		for _, l := range m.Layers {
			out = append(out, l.Digest.Hex)
		}
	}
	sort.Strings(out)
	return out
}

func TestUnsignedLayout(t *testing.T) {
	in := makeInputs(t, 2, false)
	dir := filepath.Join(t.TempDir(), "out")
	in.write(t, dir)
	a := mustOpen(t, "oci:"+dir)

	if _, err := a.Signatures(); !errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("Signatures of an unsigned layout: %v, want ErrNoSignature", err)
	}
	if _, err := a.VerifySignature(&ecKey(t).PublicKey); !errors.Is(err, signature.ErrNoSignature) || !strings.Contains(err.Error(), "oci:"+dir) {
		t.Errorf("VerifySignature of an unsigned layout: %v", err)
	}
	// An Artifact not read by Open has no signatures either (no panic).
	if _, err := (&Artifact{}).VerifySignature(&ecKey(t).PublicKey); !errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("zero Artifact: %v", err)
	}
}

func TestSignLayout(t *testing.T) {
	in := makeInputs(t, 2, false)
	dir := filepath.Join(t.TempDir(), "out")
	digest := in.write(t, dir)
	k1, k2 := ecKey(t), edKey(t)

	if got := mustSignRef(t, "oci:"+dir, k1, "registry.example/org/node"); got != digest {
		t.Errorf("Sign returned %s, want %s", got, digest)
	}

	// The signature manifest does not make "the only manifest" ambiguous,
	// and the artifact is still reachable by tag and digest.
	for _, ref := range []string{"oci:" + dir, "oci:" + dir + ":1.4.0", "oci:" + dir + "@" + digest.String()} {
		a := mustOpen(t, ref)
		checkArtifact(t, a, in, digest)
		p, err := a.VerifySignature(&k1.PublicKey)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if p.Payload.Critical.Identity.DockerReference != "registry.example/org/node" || p.Payload.Critical.Image.DockerManifestDigest != digest.String() {
			t.Errorf("%s: payload %+v", ref, p)
		}
		if _, err := a.VerifySignature(k2.Public()); err == nil || !strings.Contains(err.Error(), "not made by key "+signature.KeyID(k2.Public())) {
			t.Errorf("%s: another key: %v", ref, err)
		}
	}

	idx := readIndex(t, dir)
	if len(idx.Manifests) != 2 {
		t.Fatalf("index.json lists %d manifests, want artifact + signatures", len(idx.Manifests))
	}
	var tags []string
	for _, d := range idx.Manifests {
		tags = append(tags, d.Annotations[AnnotationRefName])
	}
	sort.Strings(tags)
	if want := []string{"1.4.0", signature.Tag(digest)}; !reflect.DeepEqual(tags, want) {
		t.Errorf("index.json tags %v, want %v", tags, want)
	}

	// Re-signing with the same key replaces its signature; another key
	// adds one. Replaced blobs are removed: the layout holds exactly what
	// index.json reaches.
	mustSignRef(t, "oci:"+dir, k1, "registry.example/org/node")
	mustSignRef(t, "oci:"+dir+":1.4.0", k2, "registry.example/org/node")
	if n := len(readIndex(t, dir).Manifests); n != 2 {
		t.Errorf("after signing again index.json lists %d manifests, want 2", n)
	}
	a := mustOpen(t, "oci:"+dir)
	sigs, err := a.Signatures()
	if err != nil {
		t.Fatal(err)
	}
	if m, err := sigs.Manifest(); err != nil || len(m.Layers) != 2 {
		t.Errorf("signature image: %v, want 2 layers (one per key)", err)
	}
	for i, k := range []crypto.PublicKey{&k1.PublicKey, k2.Public()} {
		if _, err := a.VerifySignature(k); err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}
	want := reachable(t, dir)
	got := mustReadDir(t, filepath.Join(dir, "blobs", "sha256"))
	sort.Strings(got)
	// reachable may name a blob twice (the empty config of two images).
	want = dedup(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("blobs/sha256 holds\n%v\nindex.json reaches\n%v", got, want)
	}
	if names := mustReadDir(t, dir); !reflect.DeepEqual(names, []string{"blobs", "index.json", "oci-layout"}) {
		t.Errorf("layout holds %v", names)
	}
	// Readable by all, as Write leaves a layout (ggcr writes blobs 0600).
	for _, b := range got {
		if fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256", b)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("blob %s: %v, mode %v; want 0644", b, err, fi.Mode())
		}
	}
	// A file that is no blob is neither garbage nor an error.
	stray := filepath.Join(dir, "blobs", "sha256", ".DS_Store")
	os.WriteFile(stray, []byte("x"), 0o644)
	mustSignRef(t, "oci:"+dir, k1, "registry.example/org/node")
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("the stray file: %v", err)
	}
	os.Remove(stray)

	// A key slate does not verify is refused before the layout is touched.
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	before := tree(t, dir)
	if _, err := Sign("oci:"+dir, p384, ""); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("signing with P-384: %v", err)
	}
	if !reflect.DeepEqual(tree(t, dir), before) {
		t.Error("a refused signing changed the layout")
	}

	// A signed slate layout is still a slate layout: a rebuild (Write into
	// the same directory) replaces it instead of refusing.
	if d := in.write(t, dir); d != digest {
		t.Errorf("rebuild: digest %s, want %s", d, digest)
	}
	mustOpen(t, "oci:"+dir)
}

func dedup(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// A layout's signature blobs are files anyone could edit: they are checked.
func TestSignLayoutTampered(t *testing.T) {
	in := makeInputs(t, 2, false)
	good := filepath.Join(t.TempDir(), "good")
	digest := in.write(t, good)
	key := ecKey(t)
	mustSignRef(t, "oci:"+good, key, "")

	var sigDesc v1.Descriptor
	for _, d := range readIndex(t, good).Manifests {
		if d.Annotations[AnnotationRefName] == signature.Tag(digest) {
			sigDesc = d
		}
	}
	raw, err := os.ReadFile(filepath.Join(good, "blobs", "sha256", sigDesc.Digest.Hex))
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		blob string // hex name of the blob to corrupt
		want string
	}{
		{"payload", m.Layers[0].Digest.Hex, "payload " + m.Layers[0].Digest.String()},
		{"signature manifest", sigDesc.Digest.Hex, "signatures " + signature.Tag(digest)},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "tampered")
			copyDir(t, good, dir)
			path := filepath.Join(dir, "blobs", "sha256", c.blob)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Same length, one byte changed inside a JSON string.
			i := strings.Index(string(b), "sha256:") + 10
			b[i] ^= 1
			writeFile(t, path, b)
			a := mustOpen(t, "oci:"+dir)
			_, err = a.VerifySignature(&key.PublicKey)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("tampered %s: %v, want an error with %q", c.name, err, c.want)
			}
			if errors.Is(err, signature.ErrNoSignature) {
				t.Errorf("tampered is not unsigned: %v", err)
			}
		})
	}
}

// startRegistry serves an in-memory registry; wrap, if set, sees each
// request first.
func startRegistry(t testing.TB, wrap func(http.ResponseWriter, *http.Request) bool) (string, []Option) {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wrap != nil && wrap(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), []Option{Insecure(), WithKeychain(authn.NewMultiKeychain())}
}

func TestPushSigned(t *testing.T) {
	host, opts := startRegistry(t, nil)
	in := makeInputs(t, 2, false)
	k1, k2 := ecKey(t), edKey(t)

	signed := filepath.Join(t.TempDir(), "signed")
	digest := in.write(t, signed)
	mustSignRef(t, "oci:"+signed, k1, "registry.example/org/node")
	got, err := Push(signed, host+"/slate/signed", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Signed || got.Digest != digest || got.Ref.String() != host+"/slate/signed:1.4.0" {
		t.Errorf("pushed %+v, want signed %s", got, digest)
	}
	a := mustOpen(t, host+"/slate/signed:1.4.0", opts...)
	if p, err := a.VerifySignature(&k1.PublicKey); err != nil {
		t.Error(err)
	} else if p.Payload.Critical.Identity.DockerReference != "registry.example/org/node" {
		t.Errorf("payload %+v", p)
	}
	if _, err := a.VerifySignature(k2.Public()); err == nil || errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("another key: %v", err)
	}

	unsigned := filepath.Join(t.TempDir(), "unsigned")
	in.write(t, unsigned)
	got, err = Push(unsigned, host+"/slate/unsigned", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if got.Signed {
		t.Errorf("pushed %+v: an unsigned layout pushed as signed", got)
	}
	a = mustOpen(t, host+"/slate/unsigned:1.4.0", opts...)
	// The registry answers 404 for the signature tag: not signed, which
	// is not a transport error.
	if _, err := a.VerifySignature(&k1.PublicKey); !errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("unsigned in the registry: %v, want ErrNoSignature", err)
	}
}

func TestSignRegistry(t *testing.T) {
	host, opts := startRegistry(t, nil)
	in := makeInputs(t, 2, false)
	dir := filepath.Join(t.TempDir(), "out")
	digest := in.write(t, dir)
	if _, err := Push(dir, host+"/slate/node", opts...); err != nil {
		t.Fatal(err)
	}
	k1, k2 := ecKey(t), edKey(t)
	ref := host + "/slate/node:1.4.0"

	if got := mustSignRef(t, ref, k1, "", opts...); got != digest {
		t.Errorf("Sign returned %s, want %s", got, digest)
	}
	a := mustOpen(t, ref, opts...)
	p, err := a.VerifySignature(&k1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	// No identity given: the repository's own name.
	if p.Payload.Critical.Identity.DockerReference != host+"/slate/node" {
		t.Errorf("identity %q", p.Payload.Critical.Identity.DockerReference)
	}

	// A second key, by digest, adds to the registry's signatures.
	mustSignRef(t, host+"/slate/node@"+digest.String(), k2, "registry.example/org/node", opts...)
	a = mustOpen(t, ref, opts...)
	for i, k := range []crypto.PublicKey{&k1.PublicKey, k2.Public()} {
		if _, err := a.VerifySignature(k); err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}
	// The local layout was not touched.
	if _, err := mustOpen(t, "oci:"+dir).Signatures(); !errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("layout after signing the registry: %v", err)
	}
}

// Only a 404 means "not signed": a registry refusing the signature tag is
// an error to report, not an unsigned artifact.
func TestRemoteSignaturesError(t *testing.T) {
	host, opts := startRegistry(t, func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, ".sig") && r.Method != http.MethodPut {
			http.Error(w, `{"errors":[{"code":"DENIED","message":"no"}]}`, http.StatusForbidden)
			return true
		}
		return false
	})
	in := makeInputs(t, 2, false)
	dir := filepath.Join(t.TempDir(), "out")
	in.write(t, dir)
	if _, err := Push(dir, host+"/slate/node", opts...); err != nil {
		t.Fatal(err)
	}
	a := mustOpen(t, host+"/slate/node:1.4.0", opts...)
	_, err := a.VerifySignature(&ecKey(t).PublicKey)
	if err == nil || errors.Is(err, signature.ErrNoSignature) || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("403 on the signature tag: %v, want a transport error", err)
	}
	// Sign must not take the error for "no signatures yet" and overwrite
	// what it could not read.
	if _, err := Sign(host+"/slate/node:1.4.0", ecKey(t), "", opts...); err == nil {
		t.Error("signed over signatures it could not read")
	}
}

// Sigstore bundles (cosign v3's format): SignBundle writes them into a
// layout (push sends them along) or a registry, with and without the
// referrers API, and VerifySignature reads them there.
func TestSignBundleLayout(t *testing.T) {
	in := makeInputs(t, 2, false)
	dir := filepath.Join(t.TempDir(), "out")
	digest := in.write(t, dir)
	k1, k2 := ecKey(t), edKey(t)

	if got, err := SignBundle("oci:"+dir, k1); err != nil || got != digest {
		t.Fatalf("SignBundle: %s, %v", got, err)
	}
	// The referrer does not make "the only manifest" ambiguous.
	for _, ref := range []string{"oci:" + dir, "oci:" + dir + ":1.4.0", "oci:" + dir + "@" + digest.String()} {
		a := mustOpen(t, ref)
		v, err := a.VerifySignature(&k1.PublicKey)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if v.Format != signature.FormatBundle || v.Statement.Subject[0].Digest["sha256"] != digest.Hex {
			t.Errorf("%s: verified %+v", ref, v)
		}
		_, err = a.VerifySignature(k2.Public())
		if err == nil || errors.Is(err, signature.ErrNoSignature) || !strings.Contains(err.Error(), "not made by key "+signature.KeyID(k2.Public())) {
			t.Errorf("%s: another key: %v", ref, err)
		}
	}
	// No .sig image: Signatures says so, the bundle is elsewhere.
	if _, err := mustOpen(t, "oci:"+dir).Signatures(); !errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("Signatures: %v", err)
	}

	// Signing again with the same key replaces its bundle; another key
	// (and a .sig signature) add theirs. The layout holds what index.json
	// reaches, nothing more.
	if _, err := SignBundle("oci:"+dir, k1); err != nil {
		t.Fatal(err)
	}
	if _, err := SignBundle("oci:"+dir, k2); err != nil {
		t.Fatal(err)
	}
	mustSignRef(t, "oci:"+dir, k1, "")
	idx := readIndex(t, dir)
	var bundles int
	for _, d := range idx.Manifests {
		if signature.IsBundleType(d.ArtifactType) {
			bundles++
		}
	}
	if len(idx.Manifests) != 4 || bundles != 2 {
		t.Errorf("index.json lists %d manifests, %d bundles; want the artifact, 2 bundles and the .sig image", len(idx.Manifests), bundles)
	}
	a := mustOpen(t, "oci:"+dir)
	at, err := a.Attached()
	if err != nil {
		t.Fatal(err)
	}
	if l, b, err := at.Count(); l != 1 || b != 2 || err != nil {
		t.Errorf("Count: %d, %d, %v", l, b, err)
	}
	for i, k := range []crypto.PublicKey{&k1.PublicKey, k2.Public()} {
		if _, err := a.VerifySignature(k); err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}
	if got, want := mustReadDir(t, filepath.Join(dir, "blobs", "sha256")), dedup(reachable(t, dir)); !reflect.DeepEqual(sorted(got), want) {
		t.Errorf("blobs/sha256 holds\n%v\nindex.json reaches\n%v", got, want)
	}

	// Pushed along, and read back from the registry.
	host, opts := startRegistry(t, nil)
	p, err := Push(dir, host+"/slate/node", opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Signed || p.Bundles != 2 {
		t.Errorf("pushed %+v, want the .sig image and 2 bundles", p)
	}
	ra := mustOpen(t, host+"/slate/node:1.4.0", opts...)
	if v, err := ra.VerifySignature(k2.Public()); err != nil || v.Format != signature.FormatBundle {
		t.Errorf("pushed bundle: %+v, %v", v, err)
	}

	// A signed layout is still slate's: a rebuild replaces it.
	if d := in.write(t, dir); d != digest {
		t.Errorf("rebuild: digest %s", d)
	}
	if _, err := mustOpen(t, "oci:"+dir).VerifySignature(k2.Public()); !errors.Is(err, signature.ErrNoSignature) {
		t.Errorf("after a rebuild: %v, want unsigned", err)
	}
}

func sorted(s []string) []string {
	sort.Strings(s)
	return s
}

func TestSignBundleRegistry(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers-api=%v", api), func(t *testing.T) {
			reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(api))
			var tagged bool // whether the referrers tag was written
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/sha256-") {
					tagged = true
				}
				reg.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			host := strings.TrimPrefix(srv.URL, "http://")
			opts := []Option{Insecure(), WithKeychain(authn.NewMultiKeychain())}

			in := makeInputs(t, 2, false)
			dir := filepath.Join(t.TempDir(), "out")
			digest := in.write(t, dir)
			if _, err := Push(dir, host+"/slate/node", opts...); err != nil {
				t.Fatal(err)
			}
			ref := host + "/slate/node:1.4.0"
			k1, k2 := ecKey(t), edKey(t)
			if _, err := mustOpen(t, ref, opts...).VerifySignature(&k1.PublicKey); !errors.Is(err, signature.ErrNoSignature) {
				t.Errorf("unsigned: %v", err)
			}
			if got, err := SignBundle(ref, k1, opts...); err != nil || got != digest {
				t.Fatalf("SignBundle: %s, %v", got, err)
			}
			if tagged == api {
				t.Errorf("referrers tag written: %v, with the referrers API: %v", tagged, api)
			}
			a := mustOpen(t, ref, opts...)
			v, err := a.VerifySignature(&k1.PublicKey)
			if err != nil || v.Format != signature.FormatBundle {
				t.Fatalf("%+v, %v", v, err)
			}
			if _, err := a.VerifySignature(k2.Public()); err == nil || errors.Is(err, signature.ErrNoSignature) {
				t.Errorf("another key: %v", err)
			}
			// A .sig signature by k2 beside it: each key finds its own.
			mustSignRef(t, ref, k2, "", opts...)
			a = mustOpen(t, ref, opts...)
			if v, err := a.VerifySignature(k2.Public()); err != nil || v.Format != signature.FormatLegacy {
				t.Errorf("k2: %+v, %v", v, err)
			}
			if v, err := a.VerifySignature(&k1.PublicKey); err != nil || v.Format != signature.FormatBundle {
				t.Errorf("k1 beside a .sig image: %+v, %v", v, err)
			}
			// The bundle's own repository only: copied elsewhere, the
			// artifact is unsigned there.
			if _, err := Push(dir, host+"/slate/other", opts...); err != nil {
				t.Fatal(err)
			}
			if _, err := mustOpen(t, host+"/slate/other:1.4.0", opts...).VerifySignature(&k1.PublicKey); !errors.Is(err, signature.ErrNoSignature) {
				t.Errorf("another repository: %v", err)
			}
		})
	}
}
