package signature

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fixture is what cosign v3.1.3 stored in a registry for one artifact
// (artifact's TestCosignInterop wrote it, SLATE_COSIGN_FIXTURE):
//
//	cosign sign --key cosign.key --tlog-upload=false --use-signing-config=false [--new-bundle-format=false] REF@DIGEST
//
// with an ECDSA P-256 key (cosign generate-key-pair) and an Ed25519 one
// (cosign import-key-pair): for each, the bundle's referrer manifest
// (<alg>-bundle-*) and the .sig image (<alg>-sig-*), every byte as
// stored, and the public key. artifact-manifest.json is the signed
// manifest.
const fixture = "testdata/cosign-v3.1.3"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixture, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixtureDigest(t testing.TB) v1.Hash {
	t.Helper()
	h, _, err := v1.SHA256(bytes.NewReader(readFixture(t, "artifact-manifest.json")))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func fixtureKey(t testing.TB, alg string) crypto.PublicKey {
	t.Helper()
	k, err := ParsePublicKey(string(readFixture(t, alg+".pub")))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// blobImage is an image made of raw bytes: a manifest and its blobs.
type blobImage struct {
	manifest []byte
	blobs    map[v1.Hash][]byte
	types    map[v1.Hash]types.MediaType
	config   v1.Hash
}

func (b *blobImage) RawManifest() ([]byte, error)   { return b.manifest, nil }
func (b *blobImage) RawConfigFile() ([]byte, error) { return b.blobs[b.config], nil }
func (b *blobImage) MediaType() (types.MediaType, error) {
	return types.OCIManifestSchema1, nil
}

func (b *blobImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	blob, ok := b.blobs[h]
	if !ok {
		return nil, fmt.Errorf("no blob %s", h)
	}
	// static.NewLayer computes the digest of what it holds: a blob
	// tampered with after the manifest was made keeps its name here.
	return &namedLayer{Layer: static.NewLayer(blob, b.types[h]), digest: h}, nil
}

type namedLayer struct {
	v1.Layer
	digest v1.Hash
}

func (l *namedLayer) Digest() (v1.Hash, error) { return l.digest, nil }

// newBlobImage builds an image from a manifest and its blobs (config
// first, then the layers, in order); edit, if set, changes a blob after
// the manifest names it (tampering).
func newBlobImage(t testing.TB, manifest []byte, blobs ...[]byte) v1.Image {
	t.Helper()
	m, err := v1.ParseManifest(bytes.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	descs := append([]v1.Descriptor{m.Config}, m.Layers...)
	if len(descs) != len(blobs) {
		t.Fatalf("%d blobs for %d descriptors", len(blobs), len(descs))
	}
	bi := &blobImage{manifest: manifest, blobs: map[v1.Hash][]byte{}, types: map[v1.Hash]types.MediaType{}, config: m.Config.Digest}
	for i, d := range descs {
		bi.blobs[d.Digest] = blobs[i]
		bi.types[d.Digest] = d.MediaType
	}
	img, err := partial.CompressedToImage(bi)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func fixtureImage(t testing.TB, prefix string) (v1.Image, v1.Hash) {
	t.Helper()
	raw := readFixture(t, prefix+"-manifest.json")
	h, _, _ := v1.SHA256(bytes.NewReader(raw))
	return newBlobImage(t, raw, readFixture(t, prefix+"-config.json"), readFixture(t, prefix+"-layer0.json")), h
}

var fixtureAlgs = []string{"ecdsa-p256", "ed25519"}

// The bundles and .sig images cosign wrote verify, and are laid out as
// signature's doc says.
func TestCosignFixture(t *testing.T) {
	d := fixtureDigest(t)
	for _, alg := range fixtureAlgs {
		t.Run(alg, func(t *testing.T) {
			key := fixtureKey(t, alg)

			ref, refDigest := fixtureImage(t, alg+"-bundle")
			m, err := ref.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != types.OCIManifestSchema1 || m.ArtifactType != string(BundleMediaType) ||
				m.Config.MediaType != EmptyMediaType || m.Config.ArtifactType != string(BundleMediaType) ||
				len(m.Layers) != 1 || m.Layers[0].MediaType != BundleMediaType ||
				m.Subject == nil || m.Subject.Digest != d || m.Subject.MediaType != types.OCIManifestSchema1 ||
				m.Annotations[AnnotationBundleContent] != "dsse-envelope" || m.Annotations[AnnotationBundlePredicate] != SignPredicateType {
				t.Errorf("referrer manifest %+v", m)
			}
			if !IsBundleReferrer(m) {
				t.Error("IsBundleReferrer: false")
			}

			v, err := VerifyAttached(Attached{Referrers: []Referrer{{Digest: refDigest, Image: ref}}}, key, d)
			if err != nil {
				t.Fatal(err)
			}
			if v.Format != FormatBundle || v.Referrer != refDigest || v.Statement == nil ||
				v.Statement.PredicateType != SignPredicateType || v.Statement.Type != StatementType ||
				len(v.Statement.Subject) != 1 || v.Statement.Subject[0].Digest["sha256"] != d.Hex {
				t.Errorf("verified %+v, statement %+v", v, v.Statement)
			}

			raw := readFixture(t, alg+"-bundle-layer0.json")
			var b Bundle
			if err := json.Unmarshal(raw, &b); err != nil {
				t.Fatal(err)
			}
			if b.MediaType != string(BundleMediaType) || b.VerificationMaterial.PublicKey == nil ||
				b.VerificationMaterial.PublicKey.Hint != KeyHint(key) || b.VerificationMaterial.TlogEntries != nil ||
				b.VerificationMaterial.Certificate != nil || b.DSSEEnvelope == nil || b.DSSEEnvelope.PayloadType != InTotoPayloadType {
				t.Errorf("bundle %s", raw)
			}

			sigs, _ := fixtureImage(t, alg+"-sig")
			p, err := Verify(sigs, key, d)
			if err != nil {
				t.Fatal(err)
			}
			if p.Critical.Image.DockerManifestDigest != d.String() {
				t.Errorf("payload %+v", p)
			}
			v, err = VerifyAttached(Attached{Legacy: sigs}, key, d)
			if err != nil || v.Format != FormatLegacy {
				t.Errorf("VerifyAttached .sig: %+v, %v", v, err)
			}
			if l, n, err := (Attached{Legacy: sigs, Referrers: []Referrer{{Digest: refDigest, Image: ref}}}).Count(); l != 1 || n != 1 || err != nil {
				t.Errorf("Count: %d, %d, %v", l, n, err)
			}
		})
	}
}

// cosign signs with Ed25519ph, not pure Ed25519: slate must take it (and
// still takes pure Ed25519, what slate signs with).
func TestCosignEd25519ph(t *testing.T) {
	key := fixtureKey(t, "ed25519").(ed25519.PublicKey)
	var b Bundle
	if err := json.Unmarshal(readFixture(t, "ed25519-bundle-layer0.json"), &b); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(b.DSSEEnvelope.Payload)
	sig, _ := base64.StdEncoding.DecodeString(b.DSSEEnvelope.Signatures[0].Sig)
	pae := PAE(b.DSSEEnvelope.PayloadType, payload)
	if ed25519.Verify(key, pae, sig) {
		t.Error("cosign's bundle verifies as pure Ed25519: the Ed25519ph fallback is not what makes it pass")
	}
	sum := sha512.Sum512(pae)
	if err := ed25519.VerifyWithOptions(key, sum[:], sig, &ed25519.Options{Hash: crypto.SHA512}); err != nil {
		t.Errorf("not Ed25519ph either: %v", err)
	}
	if !verify(key, pae, sig) {
		t.Error("verify refuses Ed25519ph")
	}
	// A pure signature of the SHA-512 is neither scheme's signature of the PAE.
	priv := newEd25519(t)
	if verify(priv.Public(), pae, ed25519.Sign(priv, sum[:])) {
		t.Error("a pure signature of the hash passes as Ed25519ph")
	}
}

// editBundle decodes a bundle, lets edit change it and payload change the
// DSSE payload's bytes (nil: untouched), and encodes it again. The
// signature is kept: it covers the payload type and the payload only.
func editBundle(t testing.TB, raw []byte, edit func(b map[string]any), payload func([]byte) []byte) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if payload != nil {
		env := b["dsseEnvelope"].(map[string]any)
		p, err := base64.StdEncoding.DecodeString(env["payload"].(string))
		if err != nil {
			t.Fatal(err)
		}
		env["payload"] = base64.StdEncoding.EncodeToString(payload(p))
	}
	if edit != nil {
		edit(b)
	}
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// replace returns a payload edit replacing old by new, once, or failing.
func replace(t testing.TB, old, new string) func([]byte) []byte {
	return func(p []byte) []byte {
		if !bytes.Contains(p, []byte(old)) {
			t.Fatalf("payload %s lacks %q", p, old)
		}
		return bytes.Replace(p, []byte(old), []byte(new), 1)
	}
}

// signedBundle is a bundle as cosign writes it, statement and all, signed
// by key over the PAE: to make refusals that pass the signature check.
func signedBundle(t testing.TB, key crypto.Signer, payloadType string, st any) []byte {
	t.Helper()
	payload, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := sign(key, PAE(payloadType, payload))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]any{
		"mediaType":            BundleMediaType,
		"verificationMaterial": map[string]any{"publicKey": map[string]string{"hint": KeyHint(key.Public())}},
		"dsseEnvelope": map[string]any{
			"payload":     base64.StdEncoding.EncodeToString(payload),
			"payloadType": payloadType,
			"signatures":  []map[string]string{{"sig": base64.StdEncoding.EncodeToString(sig)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func statement(typ, predicate string, digests ...v1.Hash) map[string]any {
	var subject []map[string]any
	for _, d := range digests {
		subject = append(subject, map[string]any{"digest": map[string]string{d.Algorithm: d.Hex}})
	}
	return map[string]any{"_type": typ, "subject": subject, "predicateType": predicate, "predicate": map[string]any{}}
}

func TestVerifyBundleRefuses(t *testing.T) {
	d := fixtureDigest(t)
	cosignKey := fixtureKey(t, "ecdsa-p256")
	cosignRaw := readFixture(t, "ecdsa-p256-bundle-layer0.json")
	other := digestOf("another artifact")
	key := newECDSA(t, elliptic.P256())

	for _, c := range []struct {
		name string
		raw  []byte
		key  crypto.PublicKey // nil: cosign's
		want string
	}{
		{name: "wrong key", raw: cosignRaw, key: key.Public(),
			want: "not made by key " + KeyID(key.Public()) + " (the bundle names key hint " + KeyHint(cosignKey) + ")"},
		{name: "another digest", raw: cosignRaw, want: "signs " + d.String() + ", not this artifact"},
		{name: "tampered subject", raw: editBundle(t, cosignRaw, nil, replace(t, d.Hex, other.Hex)),
			want: "not made by key " + KeyID(cosignKey)},
		{name: "tampered predicate type", raw: editBundle(t, cosignRaw, nil, replace(t, SignPredicateType, "https://slsa.dev/provenance/v1")),
			want: "not made by key"},
		{name: "tampered payload type", raw: editBundle(t, cosignRaw, func(b map[string]any) {
			b["dsseEnvelope"].(map[string]any)["payloadType"] = "application/json"
		}, nil), want: `DSSE payload type "application/json"`},
		{name: "signature of another envelope", raw: editBundle(t, cosignRaw, func(b map[string]any) {
			b["dsseEnvelope"].(map[string]any)["signatures"] = []map[string]string{{"sig": base64.StdEncoding.EncodeToString([]byte("junk"))}}
		}, nil), want: "not made by key"},
		{name: "no signatures", raw: editBundle(t, cosignRaw, func(b map[string]any) {
			b["dsseEnvelope"].(map[string]any)["signatures"] = []any{}
		}, nil), want: "a DSSE envelope without signatures"},
		{name: "other bundle version", raw: editBundle(t, cosignRaw, func(b map[string]any) {
			b["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2"
		}, nil), want: `bundle media type "application/vnd.dev.sigstore.bundle+json;version=0.2"`},
		{name: "message signature", raw: []byte(`{"mediaType":"` + string(BundleMediaType) + `","verificationMaterial":{},"messageSignature":{"messageDigest":{"algorithm":"SHA2_256","digest":"` +
			base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"},"signature":"AAAA"}}`),
			want: "a message signature (cosign sign-blob's form)"},
		{name: "not json", raw: []byte("{"), want: "not a Sigstore bundle"},
		{name: "bad payload base64", raw: editBundle(t, cosignRaw, func(b map[string]any) {
			b["dsseEnvelope"].(map[string]any)["payload"] = "not base64!"
		}, nil), want: "DSSE payload: not base64"},
		// Signed by the key, but not cosign's signature of an image.
		{name: "wrong predicate type", key: key.Public(), want: `predicate type "https://slsa.dev/provenance/v1", not cosign's signature`,
			raw: signedBundle(t, key, InTotoPayloadType, statement(StatementType, "https://slsa.dev/provenance/v1", d))},
		{name: "wrong statement type", key: key.Public(), want: `statement type "https://in-toto.io/Statement/v0.1"`,
			raw: signedBundle(t, key, InTotoPayloadType, statement("https://in-toto.io/Statement/v0.1", SignPredicateType, d))},
		{name: "signed other digest", key: key.Public(), want: "signs " + other.String() + ", not this artifact",
			raw: signedBundle(t, key, InTotoPayloadType, statement(StatementType, SignPredicateType, other))},
		{name: "no subject", key: key.Public(), want: "a statement without a subject digest",
			raw: signedBundle(t, key, InTotoPayloadType, statement(StatementType, SignPredicateType))},
		{name: "statement not json", key: key.Public(), want: "in-toto statement:",
			raw: signedBundle(t, key, InTotoPayloadType, "a string")},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := c.key
			if k == nil {
				k = cosignKey
			}
			want := d
			if c.name == "another digest" {
				want = other
			}
			st, err := VerifyBundle(c.raw, k, want)
			if err == nil {
				t.Fatalf("verified: %+v", st)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\nlacks %q", err, c.want)
			}
		})
	}

	// editBundle's decoding and encoding changes nothing that counts: the
	// refusals above are the edits'.
	if _, err := VerifyBundle(editBundle(t, cosignRaw, func(map[string]any) {}, replace(t, d.Hex, d.Hex)), cosignKey, d); err != nil {
		t.Errorf("unchanged: %v", err)
	}
	// Several subjects: one of them is enough (in-toto's meaning).
	if _, err := VerifyBundle(signedBundle(t, key, InTotoPayloadType, statement(StatementType, SignPredicateType, other, d)), key.Public(), d); err != nil {
		t.Errorf("two subjects: %v", err)
	}
	if _, err := VerifyBundle(cosignRaw, newECDSA(t, elliptic.P384()).Public(), d); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("P-384 key: %v", err)
	}
}

// What needs Sigstore's trust root (a certificate, log entries) is not
// verified and not needed: the node's key decides, alone.
func TestVerifyBundleIgnoresTrustRootMaterial(t *testing.T) {
	d := digestOf("artifact")
	key := newECDSA(t, elliptic.P256())
	good := signedBundle(t, key, InTotoPayloadType, statement(StatementType, SignPredicateType, d))

	withLog := editBundle(t, good, func(b map[string]any) {
		b["verificationMaterial"].(map[string]any)["tlogEntries"] = []any{map[string]any{"logIndex": "1", "kindVersion": map[string]string{"kind": "dsse", "version": "0.0.1"}}}
	}, nil)
	if _, err := VerifyBundle(withLog, key.Public(), d); err != nil {
		t.Errorf("a log entry beside a good signature: %v", err)
	}

	// A keyless bundle: a certificate's (short-lived) key signed it.
	ephemeral := newECDSA(t, elliptic.P256())
	keyless := editBundle(t, signedBundle(t, ephemeral, InTotoPayloadType, statement(StatementType, SignPredicateType, d)), func(b map[string]any) {
		b["verificationMaterial"] = map[string]any{"certificate": map[string]string{"rawBytes": "MIIB"}, "tlogEntries": []any{}}
	}, nil)
	_, err := VerifyBundle(keyless, key.Public(), d)
	if err == nil || !strings.Contains(err.Error(), "not made by key "+KeyID(key.Public())+" (a certificate's key") {
		t.Errorf("keyless bundle: %v", err)
	}
	// The hint is no authority: a bundle naming the node's key but signed
	// by another is refused.
	lying := editBundle(t, signedBundle(t, ephemeral, InTotoPayloadType, statement(StatementType, SignPredicateType, d)), func(b map[string]any) {
		b["verificationMaterial"] = map[string]any{"publicKey": map[string]string{"hint": KeyHint(key.Public())}}
	}, nil)
	if _, err := VerifyBundle(lying, key.Public(), d); err == nil || !strings.Contains(err.Error(), "not made by key") {
		t.Errorf("a bundle naming the key, signed by another: %v", err)
	}
}

func TestNewBundle(t *testing.T) {
	d := fixtureDigest(t)
	for _, c := range []struct {
		name string
		key  crypto.Signer
	}{
		{"ecdsa-p256", newECDSA(t, elliptic.P256())},
		{"ed25519", newEd25519(t)},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, err := NewBundle(c.key, d)
			if err != nil {
				t.Fatal(err)
			}
			st, err := VerifyBundle(raw, c.key.Public(), d)
			if err != nil {
				t.Fatal(err)
			}
			if st.PredicateType != SignPredicateType {
				t.Errorf("statement %+v", st)
			}
			if _, err := VerifyBundle(raw, newECDSA(t, elliptic.P256()).Public(), d); err == nil {
				t.Error("verified with another key")
			}
			// The same JSON fields, at every level, as the bundle cosign
			// wrote (but the subject's empty annotations).
			if got, want := jsonPaths(t, raw), jsonPaths(t, readFixture(t, c.name+"-bundle-layer0.json")); !reflect.DeepEqual(got, want) {
				t.Errorf("bundle fields\n%v\ncosign's\n%v", got, want)
			}

			// The referrer manifest, as cosign's but for the times.
			img, err := NewReferrer(raw, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: d, Size: int64(len(readFixture(t, "artifact-manifest.json")))}, "2026-12-06T22:10:27Z")
			if err != nil {
				t.Fatal(err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			cm, err := v1.ParseManifest(bytes.NewReader(readFixture(t, c.name+"-bundle-manifest.json")))
			if err != nil {
				t.Fatal(err)
			}
			cm.Layers[0].Digest, cm.Layers[0].Size = m.Layers[0].Digest, m.Layers[0].Size
			cm.Annotations["org.opencontainers.image.created"] = m.Annotations["org.opencontainers.image.created"]
			if !reflect.DeepEqual(m, cm) {
				t.Errorf("referrer manifest\n%+v\ncosign's\n%+v", m, cm)
			}
			rd, _ := img.Digest()
			v, err := VerifyAttached(Attached{Referrers: []Referrer{{Digest: rd, Image: img}}}, c.key.Public(), d)
			if err != nil || v.Format != FormatBundle {
				t.Errorf("VerifyAttached: %+v, %v", v, err)
			}
			cfg, err := img.RawConfigFile()
			if err != nil || string(cfg) != "{}" {
				t.Errorf("config %q, %v", cfg, err)
			}
		})
	}
	if _, err := NewBundle(newECDSA(t, elliptic.P384()), d); err == nil {
		t.Error("signed with P-384")
	}
}

// jsonPaths lists the object keys of a JSON document, as paths, with the
// contents of base64 strings that hold JSON (the DSSE payload) followed.
func jsonPaths(t testing.TB, raw []byte) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(string, any)
	walk = func(p string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if k == "annotations" && len(e.(map[string]any)) == 0 {
					continue
				}
				out = append(out, p+"."+k)
				walk(p+"."+k, e)
			}
		case []any:
			for _, e := range v {
				walk(p+"[]", e)
			}
		case string:
			if b, err := base64.StdEncoding.DecodeString(v); err == nil && json.Valid(b) && len(b) > 0 && b[0] == '{' {
				var inner any
				json.Unmarshal(b, &inner)
				walk(p+"(json)", inner)
			}
		}
	}
	walk("", v)
	sort.Strings(out)
	return out
}

func TestVerifyAttached(t *testing.T) {
	d := fixtureDigest(t)
	key := fixtureKey(t, "ecdsa-p256")
	ref, refDigest := fixtureImage(t, "ecdsa-p256-bundle")
	sigs, _ := fixtureImage(t, "ecdsa-p256-sig")
	good := Referrer{Digest: refDigest, Image: ref}
	other := newECDSA(t, elliptic.P256())
	otherSigs := mustSign(t, nil, other, d, "")

	if _, err := VerifyAttached(Attached{}, key, d); !errors.Is(err, ErrNoSignature) {
		t.Errorf("nothing attached: %v", err)
	}
	if _, err := VerifyAttached(Attached{Legacy: handImage(t)}, key, d); !errors.Is(err, ErrNoSignature) {
		t.Errorf("an empty .sig image: %v", err)
	}

	// One good signature in either place is enough, whatever the other holds.
	for _, at := range []Attached{
		{Legacy: otherSigs, Referrers: []Referrer{good}},
		{Legacy: handImage(t), Referrers: []Referrer{{Digest: digestOf("gone"), Err: errors.New("404")}, good}},
		{Legacy: sigs, Referrers: []Referrer{{Digest: digestOf("gone"), Err: errors.New("404")}}},
	} {
		if _, err := VerifyAttached(at, key, d); err != nil {
			t.Errorf("%+v: %v", at, err)
		}
	}

	// A bundle in a referrer of another artifact, a tampered bundle blob,
	// a manifest with no bundle: each refusal names its referrer.
	otherRef, err := NewReferrer(readFixture(t, "ecdsa-p256-bundle-layer0.json"), v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: digestOf("x"), Size: 1}, "")
	if err != nil {
		t.Fatal(err)
	}
	raw := readFixture(t, "ecdsa-p256-bundle-manifest.json")
	tampered := bytes.Replace(readFixture(t, "ecdsa-p256-bundle-layer0.json"), []byte(`"payloadType"`), []byte(`"payloadtype"`), 1)
	tamperedRef := newBlobImage(t, raw, readFixture(t, "ecdsa-p256-bundle-config.json"), tampered)
	noBundle := newBlobImage(t, bytes.Replace(raw, []byte(`"layers":[{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"`), []byte(`"layers":[{"mediaType":"application/json"`), 1),
		readFixture(t, "ecdsa-p256-bundle-config.json"), readFixture(t, "ecdsa-p256-bundle-layer0.json"))

	_, err = VerifyAttached(Attached{Legacy: otherSigs, Referrers: []Referrer{
		{Digest: digestOf("r1"), Image: otherRef},
		{Digest: digestOf("r2"), Image: tamperedRef},
		{Digest: digestOf("r3"), Image: noBundle},
		{Digest: digestOf("r4"), Err: errors.New("MANIFEST_UNKNOWN")},
	}}, key, d)
	for _, want := range []string{
		"no valid signature of " + d.String() + " by key " + KeyID(key) + ": signature 0: not made by key",
		"; bundle " + short(digestOf("r1")) + ": refers to " + digestOf("x").String() + ", not this artifact",
		"; bundle " + short(digestOf("r2")) + ": bundle sha256:",
		"bytes with digest",
		"; bundle " + short(digestOf("r3")) + ": no layer holds a Sigstore bundle",
		"; bundle " + short(digestOf("r4")) + ": MANIFEST_UNKNOWN",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nlacks %q", err, want)
		}
	}
	if errors.Is(err, ErrNoSignature) {
		t.Errorf("refused signatures are not ErrNoSignature: %v", err)
	}
}
