package signature

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func newECDSA(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newRSA uses the smallest size Go accepts: RSA is only ever refused here.
func newRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// digestOf is a stand-in manifest digest.
func digestOf(s string) v1.Hash {
	sum := sha256.Sum256([]byte(s))
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}

func mustSign(t testing.TB, sigs v1.Image, key crypto.Signer, d v1.Hash, identity string) v1.Image {
	t.Helper()
	img, err := Sign(sigs, key, d, identity)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func layers(t testing.TB, img v1.Image) []v1.Descriptor {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m.Layers
}

// sigLayer is one layer of a hand-built signature image.
type sigLayer struct {
	payload   []byte
	mediaType types.MediaType
	sig       string // the annotation's value; "-" leaves it out
}

// handImage builds a signature image the way cosign does, from raw parts,
// bypassing Sign so that malformed images can be made too.
func handImage(t testing.TB, ls ...sigLayer) v1.Image {
	t.Helper()
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var adds []mutate.Addendum
	for _, l := range ls {
		ann := map[string]string{AnnotationSignature: l.sig}
		if l.sig == "-" {
			ann = nil
		}
		adds = append(adds, mutate.Addendum{
			Layer:       static.NewLayer(l.payload, l.mediaType),
			Annotations: ann,
			MediaType:   l.mediaType,
		})
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// cosignSign signs payload exactly as cosign does with an ECDSA key.
func cosignSign(t testing.TB, k *ecdsa.PrivateKey, payload []byte) string {
	t.Helper()
	sum := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name       string
		key, other crypto.Signer
	}{
		{"ecdsa-p256", newECDSA(t, elliptic.P256()), newECDSA(t, elliptic.P256())},
		{"ed25519", newEd25519(t), newEd25519(t)},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := digestOf("artifact")
			sigs := mustSign(t, nil, c.key, d, "registry.example/org/node")
			ls := layers(t, sigs)
			if len(ls) != 1 || ls[0].MediaType != PayloadMediaType || ls[0].Annotations[AnnotationSignature] == "" {
				t.Fatalf("signature image layers: %+v", ls)
			}
			if mt, _ := sigs.MediaType(); mt != types.OCIManifestSchema1 {
				t.Errorf("manifest media type %q", mt)
			}

			p, err := Verify(sigs, c.key.Public(), d)
			if err != nil {
				t.Fatal(err)
			}
			if p.Critical.Image.DockerManifestDigest != d.String() || p.Critical.Identity.DockerReference != "registry.example/org/node" || p.Critical.Type != PayloadType {
				t.Errorf("payload %+v", p)
			}

			_, err = Verify(sigs, c.other.Public(), d)
			if err == nil || !strings.Contains(err.Error(), "not made by key "+KeyID(c.other.Public())) {
				t.Errorf("other key: %v", err)
			}
			if errors.Is(err, ErrNoSignature) {
				t.Errorf("a signature by another key is not ErrNoSignature: %v", err)
			}

			other := digestOf("another artifact")
			_, err = Verify(sigs, c.key.Public(), other)
			if err == nil || !strings.Contains(err.Error(), "signs "+d.String()+", not this artifact") {
				t.Errorf("other digest: %v", err)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	key := newECDSA(t, elliptic.P256())
	d := digestOf("artifact")
	good := NewPayload(d, "registry.example/org/node")
	goodSig := cosignSign(t, key, good)

	typed := func(typ string) []byte {
		b, _ := json.Marshal(Payload{Critical: Critical{Image: Image{DockerManifestDigest: d.String()}, Type: typ}})
		return b
	}
	// Same digest and key, other identity: different bytes under the
	// original signature.
	tampered := NewPayload(d, "evil.example/org/node")

	for _, c := range []struct {
		name   string
		img    v1.Image
		key    crypto.PublicKey
		want   string
		noSigs bool // the error must wrap ErrNoSignature
	}{
		{name: "tampered payload", img: handImage(t, sigLayer{tampered, PayloadMediaType, goodSig}),
			want: "signature 0: not made by key"},
		{name: "bad base64", img: handImage(t, sigLayer{good, PayloadMediaType, "not base64!"}),
			want: "signature 0: " + AnnotationSignature + " annotation"},
		{name: "no annotation", img: handImage(t, sigLayer{good, PayloadMediaType, "-"}),
			want: "no " + AnnotationSignature + " annotation"},
		{name: "other media type", img: handImage(t, sigLayer{good, "application/json", goodSig}),
			want: `media type "application/json", not a simple signing payload`},
		{name: "other payload type", img: handImage(t, sigLayer{typed("atomic container signature"), PayloadMediaType, cosignSign(t, key, typed("atomic container signature"))}),
			want: `payload of type "atomic container signature"`},
		{name: "payload not json", img: handImage(t, sigLayer{[]byte("{"), PayloadMediaType, cosignSign(t, key, []byte("{"))}),
			want: "signature 0: payload:"},
		{name: "empty image", img: handImage(t), noSigs: true,
			want: "holds no signature"},
		{name: "P-384 key", img: handImage(t, sigLayer{good, PayloadMediaType, goodSig}), key: newECDSA(t, elliptic.P384()).Public(),
			want: "P-256"},
		// Every signature's reason is given, not only the last.
		{name: "all reasons", img: handImage(t,
			sigLayer{good, "application/json", goodSig},
			sigLayer{tampered, PayloadMediaType, goodSig}),
			want: "signature 0: media type \"application/json\", not a simple signing payload; signature 1: not made by key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := c.key
			if k == nil {
				k = key.Public()
			}
			p, err := Verify(c.img, k, d)
			if err == nil {
				t.Fatalf("verified: %+v", p)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\nlacks %q", err, c.want)
			}
			if errors.Is(err, ErrNoSignature) != c.noSigs {
				t.Errorf("errors.Is(err, ErrNoSignature) = %v, want %v: %v", !c.noSigs, c.noSigs, err)
			}
		})
	}

	// The same good layer after a bad one still counts.
	img := handImage(t, sigLayer{[]byte("junk"), "application/json", "-"}, sigLayer{good, PayloadMediaType, goodSig})
	if _, err := Verify(img, key.Public(), d); err != nil {
		t.Errorf("a good signature after a bad layer: %v", err)
	}
}

func TestSignReplacesAndAdds(t *testing.T) {
	k1, k2 := newECDSA(t, elliptic.P256()), newEd25519(t)
	d := digestOf("artifact")

	s := mustSign(t, nil, k1, d, "registry.example/old")
	s = mustSign(t, s, k1, d, "registry.example/new")
	if n := len(layers(t, s)); n != 1 {
		t.Fatalf("signing twice with one key: %d layers, want 1", n)
	}
	// The new signature replaced the old, not the other way round.
	if p, err := Verify(s, k1.Public(), d); err != nil || p.Critical.Identity.DockerReference != "registry.example/new" {
		t.Errorf("after re-signing: %+v, %v", p, err)
	}

	s = mustSign(t, s, k2, d, "registry.example/new")
	if n := len(layers(t, s)); n != 2 {
		t.Fatalf("signing with a second key: %d layers, want 2", n)
	}
	for i, k := range []crypto.PublicKey{k1.Public(), k2.Public()} {
		if _, err := Verify(s, k, d); err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}

	// The same key's signature of another digest is not "the same": kept.
	other := digestOf("another")
	s = mustSign(t, s, k1, other, "registry.example/new")
	if n := len(layers(t, s)); n != 3 {
		t.Fatalf("signing another digest: %d layers, want 3", n)
	}
	for _, h := range []v1.Hash{d, other} {
		if _, err := Verify(s, k1.Public(), h); err != nil {
			t.Errorf("%s: %v", h, err)
		}
	}

	// Foreign layers (not signatures) are kept as they are.
	s = handImage(t, sigLayer{[]byte("junk"), "application/json", "-"})
	s = mustSign(t, s, k1, d, "")
	if ls := layers(t, s); len(ls) != 2 || ls[0].MediaType != "application/json" {
		t.Errorf("foreign layer: %+v", ls)
	}

	if _, err := Sign(nil, newECDSA(t, elliptic.P384()), d, ""); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("signing with P-384: %v", err)
	}
}

// TestCosignFormat checks that what cosign writes verifies and that what
// Sign writes is what cosign reads, by building and reading the format by
// hand (cosign's JSON field names, its ECDSA scheme).
func TestCosignFormat(t *testing.T) {
	key := newECDSA(t, elliptic.P256())
	d := digestOf("artifact")

	t.Run("cosign signs, slate verifies", func(t *testing.T) {
		payload := []byte(`{"critical":{"identity":{"docker-reference":"registry.example/org/node"},"image":{"docker-manifest-digest":"` +
			d.String() + `"},"type":"cosign container image signature"},"optional":null}`)
		img := handImage(t, sigLayer{payload, "application/vnd.dev.cosign.simplesigning.v1+json", cosignSign(t, key, payload)})
		p, err := Verify(img, key.Public(), d)
		if err != nil {
			t.Fatal(err)
		}
		if p.Critical.Identity.DockerReference != "registry.example/org/node" {
			t.Errorf("payload %+v", p)
		}
	})

	t.Run("slate signs, cosign verifies", func(t *testing.T) {
		img := mustSign(t, nil, key, d, "registry.example/org/node")
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || len(m.Layers) != 1 {
			t.Fatalf("manifest %+v", m)
		}
		l := m.Layers[0]
		if l.MediaType != "application/vnd.dev.cosign.simplesigning.v1+json" {
			t.Errorf("layer media type %q", l.MediaType)
		}
		sig, err := base64.StdEncoding.DecodeString(l.Annotations["dev.cosignproject.cosign/signature"])
		if err != nil {
			t.Fatal(err)
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		payload, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(payload)
		if !ecdsa.VerifyASN1(&key.PublicKey, sum[:], sig) {
			t.Error("the annotation is not an ASN.1 ECDSA signature of sha256(payload)")
		}
		if !strings.Contains(string(payload), `"optional":null`) {
			t.Errorf("payload %s", payload)
		}
	})

	t.Run("payload field names", func(t *testing.T) {
		var p struct {
			Critical struct {
				Identity struct {
					DockerReference string `json:"docker-reference"`
				} `json:"identity"`
				Image struct {
					DockerManifestDigest string `json:"docker-manifest-digest"`
				} `json:"image"`
				Type string `json:"type"`
			} `json:"critical"`
			Optional map[string]any `json:"optional"`
		}
		raw := NewPayload(d, "registry.example/org/node")
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if p.Critical.Identity.DockerReference != "registry.example/org/node" ||
			p.Critical.Image.DockerManifestDigest != d.String() ||
			p.Critical.Type != "cosign container image signature" {
			t.Errorf("payload %s", raw)
		}
	})
}

func pemEncode(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func pkix(t testing.TB, k crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pkcs8(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParsePublicKey(t *testing.T) {
	p256 := newECDSA(t, elliptic.P256())
	ed := newEd25519(t)
	for _, c := range []struct {
		name string
		in   string
		want crypto.PublicKey // nil: refused
		err  string
	}{
		{name: "pem p256", in: pemEncode("PUBLIC KEY", pkix(t, &p256.PublicKey)), want: &p256.PublicKey},
		{name: "pem p256 with space around", in: "\n  " + pemEncode("PUBLIC KEY", pkix(t, &p256.PublicKey)) + "\n\n", want: &p256.PublicKey},
		{name: "pem ed25519", in: pemEncode("PUBLIC KEY", pkix(t, ed.Public())), want: ed.Public()},
		{name: "base64 der", in: base64.StdEncoding.EncodeToString(pkix(t, &p256.PublicKey)), want: &p256.PublicKey},
		{name: "base64 der, folded", in: fold(base64.StdEncoding.EncodeToString(pkix(t, &p256.PublicKey)), 40), want: &p256.PublicKey},
		{name: "p384", in: pemEncode("PUBLIC KEY", pkix(t, &newECDSA(t, elliptic.P384()).PublicKey)), err: "P-256"},
		{name: "rsa", in: pemEncode("PUBLIC KEY", pkix(t, &newRSA(t).PublicKey)), err: "rsa"},
		{name: "private key pem", in: pemEncode("PRIVATE KEY", pkcs8(t, p256)), err: `"PRIVATE KEY" block`},
		{name: "garbage", in: "hello, world", err: "neither a PEM block nor base64"},
		{name: "base64 of garbage", in: base64.StdEncoding.EncodeToString([]byte("hello")), err: "not a PKIX public key"},
		{name: "broken pem", in: "-----BEGIN PUBLIC KEY-----\nAAAA\n", err: "not a valid PEM block"},
		{name: "two blocks", in: pemEncode("PUBLIC KEY", pkix(t, &p256.PublicKey)) + pemEncode("PUBLIC KEY", pkix(t, ed.Public())),
			err: "more than one PEM block"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParsePublicKey(c.in)
			if c.want == nil {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("got %T, error %v; want an error with %q", k, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if eq, ok := k.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(c.want) {
				t.Errorf("got %T, not the key encoded", k)
			}
		})
	}
}

func TestParsePrivateKey(t *testing.T) {
	p256 := newECDSA(t, elliptic.P256())
	ed := newEd25519(t)
	sec1, err := x509.MarshalECPrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		in   string
		want crypto.PublicKey // nil: refused
		err  string
	}{
		{name: "pkcs8 ecdsa", in: pemEncode("PRIVATE KEY", pkcs8(t, p256)), want: &p256.PublicKey},
		{name: "pkcs8 ed25519", in: pemEncode("PRIVATE KEY", pkcs8(t, ed)), want: ed.Public()},
		{name: "sec1", in: pemEncode("EC PRIVATE KEY", sec1), want: &p256.PublicKey},
		{name: "cosign encrypted", in: pemEncode("ENCRYPTED SIGSTORE PRIVATE KEY", []byte(`{"kdf":{}}`)), err: "cosign"},
		{name: "old cosign encrypted", in: pemEncode("ENCRYPTED COSIGN PRIVATE KEY", []byte(`{"kdf":{}}`)), err: "cosign"},
		{name: "rsa", in: pemEncode("PRIVATE KEY", pkcs8(t, newRSA(t))), err: "P-256"},
		{name: "p384", in: pemEncode("PRIVATE KEY", pkcs8(t, newECDSA(t, elliptic.P384()))), err: "P-384"},
		{name: "public key", in: pemEncode("PUBLIC KEY", pkix(t, &p256.PublicKey)), err: "a public key"},
		{name: "not pem", in: "hello", err: "no PEM block"},
		{name: "broken pkcs8", in: pemEncode("PRIVATE KEY", []byte("junk")), err: "asn1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParsePrivateKey([]byte(c.in))
			if c.want == nil {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("got %T, error %v; want an error with %q", k, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if eq, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(c.want) {
				t.Errorf("got %T, not the key encoded", k.Public())
			}
			// The parsed key signs what the public key verifies.
			d := digestOf(c.name)
			if _, err := Verify(mustSign(t, nil, k, d, ""), c.want, d); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestTag(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	h, err := v1.NewHash("sha256:" + hex)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Tag(h), "sha256-"+hex+".sig"; got != want {
		t.Errorf("Tag = %q, want %q", got, want)
	}
	for _, c := range []struct {
		tag  string
		want bool
	}{
		{Tag(h), true},
		{"v1", false},
		{"1.4.0", false},
		{"", false},
		{"sha256-zz.sig", false},
		{"sha256-" + hex, false},
		{"sha256-" + hex + ".att", false},
		{"sha256-" + hex[:63] + ".sig", false},
		{"sha256-" + hex + "0.sig", false},
		{"sha256-" + strings.Repeat("g", 64) + ".sig", false},
		{"sha512-" + strings.Repeat("ab", 64) + ".sig", false},
		{"sha256:" + hex + ".sig", false},
	} {
		if got := IsTag(c.tag); got != c.want {
			t.Errorf("IsTag(%q) = %v, want %v", c.tag, got, c.want)
		}
	}
}

func TestKeyID(t *testing.T) {
	k1, k2 := newECDSA(t, elliptic.P256()), newEd25519(t)
	form := regexp.MustCompile(`^sha256:[0-9a-f]{16}$`)
	id1, id2 := KeyID(k1.Public()), KeyID(k2.Public())
	for _, id := range []string{id1, id2} {
		if !form.MatchString(id) {
			t.Errorf("KeyID %q: want sha256:<16 hex>", id)
		}
	}
	if id1 == id2 || id1 == KeyID(newECDSA(t, elliptic.P256()).Public()) {
		t.Errorf("different keys, same id %s", id1)
	}
	// Stable: the same key, parsed back from its PEM, has the same id, and
	// it is the start of sha256 of the PKIX DER (what openssl | sha256sum
	// shows).
	pemKey, err := MarshalPublicKey(k1.Public())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParsePublicKey(string(pemKey))
	if err != nil {
		t.Fatal(err)
	}
	if KeyID(back) != id1 || KeyID(k1.Public()) != id1 {
		t.Errorf("KeyID not stable: %s, %s", KeyID(back), id1)
	}
	sum := sha256.Sum256(pkix(t, k1.Public()))
	if want := fmt.Sprintf("sha256:%x", sum[:8]); id1 != want {
		t.Errorf("KeyID %s, want %s", id1, want)
	}
}

// fold breaks s into lines of n characters, as YAML block text may hold a key.
func fold(s string, n int) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + "\n  ")
		s = s[n:]
	}
	return b.String() + s
}
