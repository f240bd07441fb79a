// Package signature signs and verifies update artifacts in cosign's two
// formats, so a node accepts what `cosign sign --key` signs and cosign can
// check what `slate sign` signs. The .sig format (sigstore/cosign
// specs/SIGNATURE_SPEC.md; cosign's only one before v2.5, `slate sign`'s):
//
//   - the signed payload is a "simple signing" JSON document that names the
//     artifact's manifest digest;
//   - it is a layer (media type PayloadMediaType) of an OCI image stored
//     beside the artifact under the tag Tag(digest), sha256-<hex>.sig, and
//     the signature is the layer's annotation AnnotationSignature (base64);
//   - one such image holds any number of signatures, one layer each.
//
// The Sigstore bundle format (cosign v3's default; `slate sign --bundle`):
// a DSSE-signed in-toto statement naming the digest, in a bundle stored as
// a referrer of the artifact. bundle.go says exactly what cosign writes and
// what VerifyBundle does and does not check; VerifyAttached takes both.
//
// Keys are ECDSA P-256 (cosign's default: an ASN.1 signature over the
// payload's SHA-256) or Ed25519 (slate signs the payload itself; cosign
// signs with Ed25519ph, over its SHA-512: both verify). Public keys are
// PKIX, as PEM ("PUBLIC KEY") or its base64; private keys are PKCS #8 PEM
// (`openssl genpkey`) or SEC 1 "EC PRIVATE KEY". cosign's own password-
// encrypted private keys are cosign's to use: sign with cosign, or export.
//
// Written here rather than taken from sigstore: the cosign modules bring
// hundreds of packages (Rekor, Fulcio, TUF clients) to check one signature
// with a key the node already holds.
package signature

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// cosign's names.
const (
	PayloadMediaType    = types.MediaType("application/vnd.dev.cosign.simplesigning.v1+json")
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	PayloadType         = "cosign container image signature"
)

// maxPayload bounds what is read of a payload layer: a real one is ~250 bytes.
const maxPayload = 64 << 10

// ErrNoSignature is returned, wrapped, when an artifact has no signature
// image at all.
var ErrNoSignature = errors.New("not signed")

// Tag is where the signatures of the manifest digest are stored, beside it:
// sha256:abc... → sha256-abc....sig.
func Tag(digest v1.Hash) string { return digest.Algorithm + "-" + digest.Hex + ".sig" }

// IsTag says whether tag is a signature tag (of any digest).
func IsTag(tag string) bool {
	alg, rest, ok := strings.Cut(tag, "-")
	hex, isSig := strings.CutSuffix(rest, ".sig")
	if !ok || !isSig || alg != "sha256" {
		return false
	}
	_, err := v1.NewHash(alg + ":" + hex)
	return err == nil
}

// Payload is the simple signing document.
type Payload struct {
	Critical Critical       `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// Critical is what a verifier must check: Type and Image. cosign ignores
// Identity; so does slate (the digest pins the artifact).
type Critical struct {
	Identity Identity `json:"identity"`
	Image    Image    `json:"image"`
	Type     string   `json:"type"`
}

// Identity names the repository the signer meant.
type Identity struct {
	DockerReference string `json:"docker-reference"`
}

// Image names the signed manifest.
type Image struct {
	DockerManifestDigest string `json:"docker-manifest-digest"`
}

// NewPayload returns the payload signing digest, as cosign writes it.
func NewPayload(digest v1.Hash, identity string) []byte {
	b, err := json.Marshal(Payload{Critical: Critical{
		Identity: Identity{DockerReference: identity},
		Image:    Image{DockerManifestDigest: digest.String()},
		Type:     PayloadType,
	}})
	if err != nil {
		panic(err) // only strings: cannot fail
	}
	return b
}

// ParsePublicKey reads a PKIX public key, PEM or base64, and accepts ECDSA
// P-256 and Ed25519.
func ParsePublicKey(s string) (crypto.PublicKey, error) {
	t := strings.TrimSpace(s)
	var der []byte
	if strings.HasPrefix(t, "-----BEGIN ") {
		b, rest := pem.Decode([]byte(t))
		switch {
		case b == nil:
			return nil, errors.New("not a valid PEM block")
		case strings.TrimSpace(string(rest)) != "":
			return nil, errors.New("more than one PEM block, or text after it")
		case b.Type != "PUBLIC KEY":
			return nil, fmt.Errorf("a PEM %q block, not \"PUBLIC KEY\"", b.Type)
		}
		der = b.Bytes
	} else {
		// As the node config's check reads it: line breaks allowed.
		var err error
		if der, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(t), "")); err != nil {
			return nil, fmt.Errorf("neither a PEM block nor base64: %v", err)
		}
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %v", err)
	}
	if err := checkPublic(k); err != nil {
		return nil, err
	}
	return k, nil
}

func checkPublic(k crypto.PublicKey) error {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("an ECDSA key on %s: slate verifies P-256 (cosign's default) and Ed25519", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("a %T: slate verifies ECDSA P-256 (cosign's default) and Ed25519 keys", k)
}

// ParsePrivateKey reads a PEM private key: PKCS #8 ("PRIVATE KEY") or
// SEC 1 ("EC PRIVATE KEY"), ECDSA P-256 or Ed25519.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
		return nil, errors.New("a cosign key, encrypted with its password: sign with `cosign sign --key`, or give an unencrypted PKCS #8 key (openssl genpkey)")
	case "PUBLIC KEY":
		return nil, errors.New("a public key: signing needs the private key")
	default:
		return nil, fmt.Errorf("a PEM %q block: want \"PRIVATE KEY\" (PKCS #8) or \"EC PRIVATE KEY\"", b.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", k)
	}
	if err := checkPublic(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// KeyID names a public key in messages and release files: sha256 of its
// PKIX encoding, the first 16 hex digits (what `openssl pkey -pubin
// -outform DER | sha256sum` starts with).
func KeyID(k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "unknown key"
	}
	sum := sha256.Sum256(der)
	return fmt.Sprintf("sha256:%x", sum[:8])
}

// MarshalPublicKey renders k as PKIX PEM, the form update.publicKey takes.
func MarshalPublicKey(k crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

func sign(key crypto.Signer, payload []byte) ([]byte, error) {
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		return key.Sign(rand.Reader, payload, crypto.Hash(0))
	}
	sum := sha256.Sum256(payload)
	return key.Sign(rand.Reader, sum[:], crypto.SHA256)
}

func verify(k crypto.PublicKey, payload, sig []byte) bool {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(payload)
		return ecdsa.VerifyASN1(k, sum[:], sig)
	case ed25519.PublicKey:
		if ed25519.Verify(k, payload, sig) {
			return true
		}
		// cosign signs with Ed25519ph (over the payload's SHA-512) by
		// default. RFC 8032 separates the two schemes' domains: neither's
		// signature verifies as the other's.
		sum := sha512.Sum512(payload)
		return ed25519.VerifyWithOptions(k, sum[:], sig, &ed25519.Options{Hash: crypto.SHA512}) == nil
	}
	return false
}

// Sign returns sigs with a signature of digest by key added (sigs nil: a
// new signature image). A signature of digest by the same key already in
// sigs is replaced, so signing again does not pile up layers.
func Sign(sigs v1.Image, key crypto.Signer, digest v1.Hash, identity string) (v1.Image, error) {
	if err := checkPublic(key.Public()); err != nil {
		return nil, err
	}
	payload := NewPayload(digest, identity)
	sig, err := sign(key, payload)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var keep []mutate.Addendum
	if sigs != nil {
		entries, err := read(sigs)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.err == nil && verify(key.Public(), e.payload, e.sig) && e.digest == digest.String() {
				continue // the same key's old signature of this digest
			}
			keep = append(keep, e.addendum)
		}
	}
	keep = append(keep, mutate.Addendum{
		Layer:       static.NewLayer(payload, PayloadMediaType),
		Annotations: map[string]string{AnnotationSignature: base64.StdEncoding.EncodeToString(sig)},
		MediaType:   PayloadMediaType,
	})
	return mutate.Append(base, keep...)
}

// entry is one layer of a signature image.
type entry struct {
	addendum mutate.Addendum
	payload  []byte
	sig      []byte
	digest   string // the manifest digest the payload names
	err      error  // why the layer is no signature
}

// read decodes every layer of a signature image. A layer that is not a
// well-formed signature gets err; only a failure to read the image fails.
func read(sigs v1.Image) ([]entry, error) {
	m, err := sigs.Manifest()
	if err != nil {
		return nil, fmt.Errorf("signature manifest: %w", err)
	}
	var out []entry
	for i, d := range m.Layers {
		e := entry{addendum: mutate.Addendum{Annotations: d.Annotations, MediaType: d.MediaType}}
		l, err := sigs.LayerByDigest(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("signature layer %d (%s): %w", i, d.Digest, err)
		}
		e.addendum.Layer = l
		e.payload, e.sig, e.digest, e.err = decode(d, l)
		if e.err != nil {
			e.err = fmt.Errorf("signature %d: %w", i, e.err)
		}
		out = append(out, e)
	}
	return out, nil
}

func decode(d v1.Descriptor, l v1.Layer) (payload, sig []byte, digest string, err error) {
	if d.MediaType != PayloadMediaType {
		return nil, nil, "", fmt.Errorf("media type %q, not a simple signing payload", d.MediaType)
	}
	s, ok := d.Annotations[AnnotationSignature]
	if !ok {
		return nil, nil, "", fmt.Errorf("no %s annotation", AnnotationSignature)
	}
	if sig, err = base64.StdEncoding.DecodeString(s); err != nil {
		return nil, nil, "", fmt.Errorf("%s annotation: %v", AnnotationSignature, err)
	}
	if d.Size > maxPayload {
		return nil, nil, "", fmt.Errorf("a %d-byte payload: a signature's is under %d", d.Size, maxPayload)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, nil, "", err
	}
	defer rc.Close()
	payload, err = io.ReadAll(io.LimitReader(rc, maxPayload+1))
	if err != nil {
		return nil, nil, "", fmt.Errorf("payload: %w", err)
	}
	// Check the bytes against the descriptor here: the signature is over
	// these bytes, whatever the transport did or did not check.
	if got, _, _ := v1.SHA256(bytes.NewReader(payload)); got != d.Digest || int64(len(payload)) != d.Size {
		return nil, nil, "", fmt.Errorf("payload %s: %d bytes with digest %s", d.Digest, len(payload), got)
	}
	var p Payload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, nil, "", fmt.Errorf("payload: %v", err)
	}
	if p.Critical.Type != PayloadType {
		return nil, nil, "", fmt.Errorf("payload of type %q, not %q", p.Critical.Type, PayloadType)
	}
	return payload, sig, p.Critical.Image.DockerManifestDigest, nil
}

// Verify checks that sigs holds a signature of digest by key and returns
// its payload. The error says, for each signature, why it did not count.
func Verify(sigs v1.Image, key crypto.PublicKey, digest v1.Hash) (*Payload, error) {
	if err := checkPublic(key); err != nil {
		return nil, err
	}
	p, why, err := verifyLegacy(sigs, key, digest)
	if p != nil || err != nil {
		return p, err
	}
	return nil, fmt.Errorf("no valid signature of %s by key %s: %s", digest, KeyID(key), strings.Join(why, "; "))
}

// verifyLegacy is Verify without its key check and final error: a
// payload, or why each signature did not count. An image with no layer
// fails wrapping ErrNoSignature.
func verifyLegacy(sigs v1.Image, key crypto.PublicKey, digest v1.Hash) (*Payload, []string, error) {
	entries, err := read(sigs)
	if err != nil {
		return nil, nil, err
	}
	if len(entries) == 0 {
		return nil, nil, fmt.Errorf("%w: the signature image holds no signature", ErrNoSignature)
	}
	var why []string
	for i, e := range entries {
		switch {
		case e.err != nil:
			why = append(why, e.err.Error())
		case !verify(key, e.payload, e.sig):
			why = append(why, fmt.Sprintf("signature %d: not made by key %s", i, KeyID(key)))
		case e.digest != digest.String():
			why = append(why, fmt.Sprintf("signature %d: signs %s, not this artifact", i, e.digest))
		default:
			var p Payload
			if err := json.Unmarshal(e.payload, &p); err != nil {
				return nil, nil, err // decode parsed it already
			}
			return &p, nil, nil
		}
	}
	return nil, why, nil
}
