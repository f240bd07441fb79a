package artifact

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slate-os/slate/signature"
)

// TestCosignInterop signs an artifact in a registry with the real cosign,
// in both of its formats, with an ECDSA P-256 and an Ed25519 key, against
// a registry with and without the OCI 1.1 referrers API, and checks that
// VerifySignature accepts them (and cosign slate's). It runs only when
// SLATE_COSIGN names a cosign binary (see README, "Signed artifacts"):
//
//	SLATE_COSIGN=/path/to/cosign go test -run CosignInterop -v ./artifact
//
// With SLATE_COSIGN_FIXTURE=DIR it also writes what cosign stored for the
// ECDSA key (bundle, referrer manifest, public key, the artifact's
// manifest) to DIR, the fixture of signature's unit tests.
func TestCosignInterop(t *testing.T) {
	bin := os.Getenv("SLATE_COSIGN")
	if bin == "" {
		t.Skip("SLATE_COSIGN (a cosign binary) is not set")
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("cosign version: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "GitVersion:") {
			t.Log("cosign", strings.TrimSpace(strings.TrimPrefix(l, "GitVersion:")))
		}
	}
	for _, api := range []bool{true, false} {
		for _, alg := range []string{"ecdsa-p256", "ed25519"} {
			name := alg + "/referrers-tag"
			if api {
				name = alg + "/referrers-api"
			}
			t.Run(name, func(t *testing.T) { cosignInterop(t, bin, alg, api) })
		}
	}
}

func cosignInterop(t *testing.T, bin, alg string, referrersAPI bool) {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(referrersAPI))
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	_, opts := startRegistry(t, nil) // for its options
	work := t.TempDir()

	try := func(args ...string) error {
		t.Helper()
		c := exec.Command(bin, args...)
		c.Dir = work
		c.Env = append(os.Environ(), "COSIGN_PASSWORD=interop", "TUF_ROOT="+filepath.Join(work, "tuf"))
		out, err := c.CombinedOutput()
		t.Logf("cosign %s\n%s", strings.Join(args, " "), out)
		return err
	}
	cosign := func(args ...string) {
		t.Helper()
		if err := try(args...); err != nil {
			t.Fatalf("cosign %s: %v", args[0], err)
		}
	}
	switch alg {
	case "ecdsa-p256":
		cosign("generate-key-pair", "--output-key-prefix", "cosign")
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		writeFile(t, filepath.Join(work, "ed25519.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		cosign("import-key-pair", "--key", "ed25519.pem", "--output-key-prefix", "cosign", "-y")
	}
	pubPEM, err := os.ReadFile(filepath.Join(work, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signature.ParsePublicKey(string(pubPEM))
	if err != nil {
		t.Fatal(err)
	}
	other := ecKey(t)

	in := makeInputs(t, 2, false)
	dir := filepath.Join(t.TempDir(), "out")
	digest := in.write(t, dir)
	push := func(repo string) string {
		t.Helper()
		if _, err := Push(dir, host+"/"+repo, opts...); err != nil {
			t.Fatal(err)
		}
		return host + "/" + repo + "@" + digest.String()
	}
	// Offline, with the key only: no Rekor, no TUF-provided signing config.
	signArgs := []string{"sign", "--key", "cosign.key", "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry", "-y"}

	legacy := push("slate/legacy")
	cosign(append(signArgs, "--new-bundle-format=false", legacy)...)
	bundled := push("slate/bundle")
	cosign(append(signArgs, bundled)...)
	both := push("slate/both")
	cosign(append(signArgs, "--new-bundle-format=false", both)...)
	cosign(append(signArgs, both)...)
	// slate's own bundle, with a key of the same kind, for cosign to verify.
	slateKey := crypto.Signer(ecKey(t))
	if alg == "ed25519" {
		slateKey = edKey(t)
	}
	slatePub, err := signature.MarshalPublicKey(slateKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(work, "slate.pub"), slatePub)
	slateBundled := push("slate/slate-bundle")
	if _, err := SignBundle(slateBundled, slateKey, opts...); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		ref            string
		key            crypto.PublicKey
		pubFile        string
		format         string
		legacy, bundle int
	}{
		{legacy, pub, "cosign.pub", signature.FormatLegacy, 1, 0},
		{bundled, pub, "cosign.pub", signature.FormatBundle, 0, 1},
		{both, pub, "cosign.pub", signature.FormatLegacy, 1, 1},
		{slateBundled, slateKey.Public(), "slate.pub", signature.FormatBundle, 0, 1},
	} {
		a := mustOpen(t, c.ref, opts...)
		v, err := a.VerifySignature(c.key)
		if err != nil {
			t.Fatalf("%s: %v", c.ref, err)
		}
		if v.Format != c.format {
			t.Errorf("%s: verified as %q, want %q", c.ref, v.Format, c.format)
		}
		if v.Format == signature.FormatBundle && v.Statement.PredicateType != signature.SignPredicateType {
			t.Errorf("%s: statement %+v", c.ref, v.Statement)
		}
		at, err := a.Attached()
		if err != nil {
			t.Fatal(err)
		}
		if l, b, err := at.Count(); err != nil || l != c.legacy || b != c.bundle {
			t.Errorf("%s: %d legacy and %d bundle signatures (%v), want %d and %d", c.ref, l, b, err, c.legacy, c.bundle)
		}
		_, err = a.VerifySignature(&other.PublicKey)
		if err == nil || errors.Is(err, signature.ErrNoSignature) || !strings.Contains(err.Error(), "not made by key "+signature.KeyID(&other.PublicKey)) {
			t.Errorf("%s, another key: %v", c.ref, err)
		}
		// cosign accepts what slate and cosign wrote, by key, ignoring the
		// log; but cosign v3.1.3 signs images with Ed25519ph (over the
		// SHA-512) and checks them as pure Ed25519: it refuses its own
		// Ed25519 signatures, in both formats (slate takes both schemes).
		args := []string{"verify", "--key", c.pubFile, "--insecure-ignore-tlog", "--allow-http-registry", c.ref}
		if alg == "ed25519" && c.pubFile == "cosign.pub" {
			if err := try(args...); err == nil {
				t.Logf("cosign now verifies its own Ed25519 signatures")
			}
			continue
		}
		cosign(args...)
	}

	if fix := os.Getenv("SLATE_COSIGN_FIXTURE"); fix != "" && referrersAPI {
		// Every byte as cosign stored it: manifests and blobs, named
		// <alg>-bundle-*.json (the referrer) and <alg>-sig-*.json (the
		// .sig image), with the public key and the artifact's manifest.
		if err := os.MkdirAll(fix, 0o755); err != nil {
			t.Fatal(err)
		}
		save := func(name string, b []byte) { writeFile(t, filepath.Join(fix, name), b) }
		saveImage := func(prefix string, img v1.Image) {
			raw, err := img.RawManifest()
			if err != nil {
				t.Fatal(err)
			}
			save(prefix+"-manifest.json", raw)
			cfg, err := img.RawConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			save(prefix+"-config.json", cfg)
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range m.Layers {
				l, err := img.LayerByDigest(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				rc, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				save(fmt.Sprintf("%s-layer%d.json", prefix, i), b)
			}
		}
		a := mustOpen(t, bundled, opts...)
		refs, err := a.Referrers()
		if err != nil || len(refs) != 1 || refs[0].Err != nil {
			t.Fatalf("referrers %+v: %v", refs, err)
		}
		saveImage(alg+"-bundle", refs[0].Image)
		sigs, err := mustOpen(t, legacy, opts...).Signatures()
		if err != nil {
			t.Fatal(err)
		}
		saveImage(alg+"-sig", sigs)
		save(alg+".pub", pubPEM)
		raw, err := a.Image.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		save("artifact-manifest.json", raw)

		// What the registry lists: the referrers API's index.
		d, err := name.NewDigest(bundled, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Referrers(d)
		if err != nil {
			t.Fatal(err)
		}
		im, _ := idx.IndexManifest()
		b, _ := json.MarshalIndent(im, "", "  ")
		t.Logf("referrers of %s:\n%s", digest, b)
	}
}
