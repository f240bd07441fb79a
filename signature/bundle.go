package signature

// Sigstore bundles: the format cosign v3 writes by default (v2.5+ with
// --new-bundle-format). `cosign sign --key KEY --tlog-upload=false REF`
// (cosign v3.1.3, checked) stores, for the artifact's manifest digest D:
//
//   - a "referrer" manifest beside the artifact (OCI image manifest with
//     subject = the artifact's descriptor, artifactType and config
//     artifactType BundleMediaType, config the empty descriptor
//     application/vnd.oci.empty.v1+json, annotations
//     dev.sigstore.bundle.content=dsse-envelope and
//     dev.sigstore.bundle.predicateType=SignPredicateType), found through
//     the OCI 1.1 referrers API or, where the registry lacks it, the
//     referrers tag sha256-<hex of D> (an image index listing referrers);
//   - as its one layer (media type BundleMediaType) the bundle, JSON:
//     {"mediaType": BundleMediaType,
//      "verificationMaterial": {"publicKey": {"hint": base64(sha256(PKIX))}, ...},
//      "dsseEnvelope": {"payload": base64(statement),
//                       "payloadType": "application/vnd.in-toto+json",
//                       "signatures": [{"sig": base64(signature)}]}}
//   - the statement is in-toto v1: {"_type": StatementType, "subject":
//     [{"digest": {"sha256": hex of D}}], "predicateType":
//     SignPredicateType, "predicate": {}}; the signature is over DSSE's
//     pre-authentication encoding PAE(payloadType, statement), with the
//     same schemes as the legacy format (ECDSA P-256 over its SHA-256,
//     Ed25519 over the bytes).
//
// What VerifyBundle checks: the bundle's media type (v0.3); that it holds a
// DSSE envelope of an in-toto statement; that one of the envelope's
// signatures verifies over the PAE with the key the caller trusts; then,
// in the signed statement, its type, the predicate type (cosign's image
// signature, not some other attestation) and that a subject's sha256 is
// the artifact's manifest digest.
//
// What it does not check: anything in verificationMaterial. The public key
// hint is not authenticated (it only names, in a refusal, the key the
// bundle claims); a Fulcio certificate or chain, transparency log entries
// (Rekor inclusion proofs and promises) and RFC 3161 timestamps need
// Sigstore's trust root and, for the log, the network: they are ignored,
// as `cosign verify --key KEY --insecure-ignore-tlog` ignores the log. A
// bundle therefore counts only when its signature verifies with the
// node's key: a keyless (Fulcio) bundle signs with a short-lived key of
// its own and never does, and a bundle with a log entry counts exactly
// as the same bundle without it. A messageSignature bundle (what
// `cosign sign-blob` writes) signs a blob, not an image: refused.

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Sigstore's and in-toto's names, as cosign writes them.
const (
	BundleMediaType    = types.MediaType("application/vnd.dev.sigstore.bundle.v0.3+json")
	InTotoPayloadType  = "application/vnd.in-toto+json"
	StatementType      = "https://in-toto.io/Statement/v1"
	SignPredicateType  = "https://sigstore.dev/cosign/sign/v1"
	bundleMediaTypeAll = "application/vnd.dev.sigstore.bundle" // any version, to name what is refused
)

// maxBundle bounds what is read of a bundle layer: a key-signed one is
// about 1 KiB, one with a certificate chain and log entries some 10 KiB.
const maxBundle = 256 << 10

// ReferrersTag is the referrers tag schema's tag for digest (OCI
// distribution spec 1.1): sha256:abc... → sha256-abc..., an image index of
// the manifests whose subject is digest, for registries without the
// referrers API.
func ReferrersTag(digest v1.Hash) string { return digest.Algorithm + "-" + digest.Hex }

// IsBundleType says whether an artifact type or media type is a Sigstore
// bundle's, of any version (VerifyBundle accepts v0.3).
func IsBundleType(t string) bool { return strings.HasPrefix(t, bundleMediaTypeAll) }

// IsBundleReferrer says whether a referrer manifest holds Sigstore bundles:
// its artifact type or a layer's media type is a bundle's.
func IsBundleReferrer(m *v1.Manifest) bool {
	if IsBundleType(m.ArtifactType) {
		return true
	}
	for _, l := range m.Layers {
		if IsBundleType(string(l.MediaType)) {
			return true
		}
	}
	return false
}

// Bundle is the part of a Sigstore bundle slate reads.
type Bundle struct {
	MediaType            string               `json:"mediaType"`
	VerificationMaterial VerificationMaterial `json:"verificationMaterial"`
	DSSEEnvelope         *Envelope            `json:"dsseEnvelope,omitempty"`
	MessageSignature     json.RawMessage      `json:"messageSignature,omitempty"`
}

// VerificationMaterial is what the bundle says about its signer. None of
// it is trusted: see the comment at the top of this file.
type VerificationMaterial struct {
	PublicKey *struct {
		Hint string `json:"hint"`
	} `json:"publicKey,omitempty"`
	Certificate               json.RawMessage   `json:"certificate,omitempty"`
	X509CertificateChain      json.RawMessage   `json:"x509CertificateChain,omitempty"`
	TlogEntries               []json.RawMessage `json:"tlogEntries,omitempty"`
	TimestampVerificationData json.RawMessage   `json:"timestampVerificationData,omitempty"`
}

// Envelope is a DSSE envelope; Payload is base64, as are the signatures.
type Envelope struct {
	Payload     string `json:"payload"`
	PayloadType string `json:"payloadType"`
	Signatures  []struct {
		Sig   string `json:"sig"`
		KeyID string `json:"keyid,omitempty"`
	} `json:"signatures"`
}

// Statement is an in-toto statement.
type Statement struct {
	Type          string          `json:"_type"`
	Subject       []Subject       `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate,omitempty"`
}

// Subject is what a statement is about; cosign names only the digest.
type Subject struct {
	Name        string            `json:"name,omitempty"`
	Digest      map[string]string `json:"digest"`
	Annotations map[string]any    `json:"annotations,omitempty"`
}

// PAE is DSSE's pre-authentication encoding, what a DSSE signature signs.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "DSSEv1 %d %s %d ", len(payloadType), payloadType, len(payload))
	b.Write(payload)
	return b.Bytes()
}

// KeyHint is the hint cosign puts in a key-signed bundle: base64 of the
// SHA-256 of the public key's PKIX encoding.
func KeyHint(k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// decodeB64 reads DSSE's base64: the standard alphabet (what protobuf's
// JSON writes) or the URL-safe one, padded or not.
func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// bundleError is a refusal of one bundle, sorted by kind so that a caller
// can tell "not this key" from "malformed".
type bundleError struct {
	notKey bool // well-formed, but no signature verifies with the key
	msg    string
}

func (e *bundleError) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &bundleError{msg: fmt.Sprintf(format, args...)}
}

// VerifyBundle checks that raw, a Sigstore bundle (JSON), holds a DSSE
// signature by key of cosign's signing statement for digest, and returns
// the statement. See the comment at the top of this file for what is and is
// not verified.
func VerifyBundle(raw []byte, key crypto.PublicKey, digest v1.Hash) (*Statement, error) {
	if err := checkPublic(key); err != nil {
		return nil, err
	}
	var b Bundle
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, malformed("not a Sigstore bundle: %v", err)
	}
	switch {
	case b.MediaType != string(BundleMediaType):
		return nil, malformed("bundle media type %q, not %q", b.MediaType, BundleMediaType)
	case b.DSSEEnvelope == nil && b.MessageSignature != nil:
		return nil, malformed("a message signature (cosign sign-blob's form) signs a blob, not an image: want a DSSE envelope")
	case b.DSSEEnvelope == nil:
		return nil, malformed("no DSSE envelope")
	}
	env := b.DSSEEnvelope
	if env.PayloadType != InTotoPayloadType {
		return nil, malformed("DSSE payload type %q, not %q", env.PayloadType, InTotoPayloadType)
	}
	payload, err := decodeB64(env.Payload)
	if err != nil {
		return nil, malformed("DSSE payload: %v", err)
	}
	if len(env.Signatures) == 0 {
		return nil, malformed("a DSSE envelope without signatures")
	}
	pae := PAE(env.PayloadType, payload)
	signed := false
	for _, s := range env.Signatures {
		sig, err := decodeB64(s.Sig)
		if err == nil && verify(key, pae, sig) {
			signed = true
			break
		}
	}
	if !signed {
		msg := "not made by key " + KeyID(key)
		switch pk := b.VerificationMaterial.PublicKey; {
		case pk != nil && pk.Hint != "" && pk.Hint != KeyHint(key):
			msg += fmt.Sprintf(" (the bundle names key hint %s)", pk.Hint)
		case b.VerificationMaterial.Certificate != nil || b.VerificationMaterial.X509CertificateChain != nil:
			msg += " (a certificate's key, as keyless signing uses: slate trusts only update.publicKey)"
		}
		return nil, &bundleError{notKey: true, msg: msg}
	}

	// Signed by the key: now what it signed.
	var st Statement
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, malformed("in-toto statement: %v", err)
	}
	if st.Type != StatementType {
		return nil, malformed("statement type %q, not %q", st.Type, StatementType)
	}
	if st.PredicateType != SignPredicateType {
		return nil, malformed("predicate type %q, not cosign's signature %q", st.PredicateType, SignPredicateType)
	}
	var names []string
	for _, s := range st.Subject {
		if s.Digest[digest.Algorithm] == digest.Hex {
			return &st, nil
		}
		for alg, hex := range s.Digest {
			names = append(names, alg+":"+hex)
		}
	}
	if len(names) == 0 {
		return nil, malformed("a statement without a subject digest")
	}
	return nil, fmt.Errorf("signs %s, not this artifact", strings.Join(names, ", "))
}

// bundlesOf reads the Sigstore bundles of a referrer manifest: its layers
// of a bundle media type (cosign writes one), each checked against its
// descriptor. A layer of another type is no error: it is not a bundle.
func bundlesOf(ref v1.Image, digest v1.Hash) ([][]byte, error) {
	m, err := ref.Manifest()
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Subject == nil || m.Subject.Digest != digest {
		subject := "none"
		if m.Subject != nil {
			subject = m.Subject.Digest.String()
		}
		return nil, fmt.Errorf("refers to %s, not this artifact", subject)
	}
	var out [][]byte
	for _, d := range m.Layers {
		if !IsBundleType(string(d.MediaType)) {
			continue
		}
		if d.Size > maxBundle {
			return nil, fmt.Errorf("a %d-byte bundle: slate reads up to %d", d.Size, maxBundle)
		}
		l, err := ref.LayerByDigest(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", d.Digest, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", d.Digest, err)
		}
		raw, err := io.ReadAll(io.LimitReader(rc, maxBundle+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", d.Digest, err)
		}
		if got, _, _ := v1.SHA256(bytes.NewReader(raw)); got != d.Digest || int64(len(raw)) != d.Size {
			return nil, fmt.Errorf("bundle %s: %d bytes with digest %s", d.Digest, len(raw), got)
		}
		out = append(out, raw)
	}
	if len(out) == 0 {
		return nil, errors.New("no layer holds a Sigstore bundle")
	}
	return out, nil
}

// NewBundle signs digest in the Sigstore bundle format, as `cosign sign
// --key KEY --tlog-upload=false` (v3) does: cosign's signing statement for
// digest in a DSSE envelope, the key's hint as verification material, no
// log entry, no timestamp. ECDSA signs the PAE's SHA-256, Ed25519 the PAE.
func NewBundle(key crypto.Signer, digest v1.Hash) ([]byte, error) {
	if err := checkPublic(key.Public()); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(Statement{
		Type:          StatementType,
		Subject:       []Subject{{Digest: map[string]string{digest.Algorithm: digest.Hex}}},
		PredicateType: SignPredicateType,
		Predicate:     json.RawMessage("{}"),
	})
	if err != nil {
		return nil, err
	}
	sig, err := sign(key, PAE(InTotoPayloadType, payload))
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	b := Bundle{MediaType: string(BundleMediaType), DSSEEnvelope: &Envelope{
		Payload:     base64.StdEncoding.EncodeToString(payload),
		PayloadType: InTotoPayloadType,
	}}
	b.VerificationMaterial.PublicKey = &struct {
		Hint string `json:"hint"`
	}{KeyHint(key.Public())}
	b.DSSEEnvelope.Signatures = append(b.DSSEEnvelope.Signatures, struct {
		Sig   string `json:"sig"`
		KeyID string `json:"keyid,omitempty"`
	}{Sig: base64.StdEncoding.EncodeToString(sig)})
	return json.Marshal(b)
}

// Referrer manifests, as cosign writes them.
const (
	EmptyMediaType            = types.MediaType("application/vnd.oci.empty.v1+json")
	AnnotationBundleContent   = "dev.sigstore.bundle.content"
	AnnotationBundlePredicate = "dev.sigstore.bundle.predicateType"
	annotationCreated         = "org.opencontainers.image.created"
	emptyJSON                 = "{}"
)

// NewReferrer returns the manifest cosign stores a bundle in: an OCI image
// manifest whose subject is the artifact's descriptor, artifactType (and
// config artifactType) BundleMediaType, config the empty descriptor, and
// the bundle as its one layer. created is its creation time annotation
// (RFC 3339).
func NewReferrer(bundle []byte, subject v1.Descriptor, created string) (v1.Image, error) {
	bd, _, err := v1.SHA256(bytes.NewReader(bundle))
	if err != nil {
		return nil, err
	}
	cd, _, err := v1.SHA256(strings.NewReader(emptyJSON))
	if err != nil {
		return nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  string(BundleMediaType),
		Config: v1.Descriptor{MediaType: EmptyMediaType, ArtifactType: string(BundleMediaType),
			Digest: cd, Size: int64(len(emptyJSON))},
		Layers:  []v1.Descriptor{{MediaType: BundleMediaType, Digest: bd, Size: int64(len(bundle))}},
		Subject: &v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations: map[string]string{
			annotationCreated:         created,
			AnnotationBundleContent:   "dsse-envelope",
			AnnotationBundlePredicate: SignPredicateType,
		},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&referrerImage{manifest: raw, bundle: bundle, bundleDigest: bd})
}

// referrerImage is a referrer manifest with its blobs, for ggcr to write.
type referrerImage struct {
	manifest, bundle []byte
	bundleDigest     v1.Hash
}

func (r *referrerImage) RawManifest() ([]byte, error)        { return r.manifest, nil }
func (r *referrerImage) RawConfigFile() ([]byte, error)      { return []byte(emptyJSON), nil }
func (r *referrerImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

func (r *referrerImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == r.bundleDigest {
		return static.NewLayer(r.bundle, BundleMediaType), nil
	}
	if cd, _, _ := v1.SHA256(strings.NewReader(emptyJSON)); h == cd {
		return static.NewLayer([]byte(emptyJSON), EmptyMediaType), nil
	}
	return nil, fmt.Errorf("no blob %s in the referrer manifest", h)
}
