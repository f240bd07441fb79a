package signature

import (
	"crypto"
	"errors"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Attached is what is stored beside an artifact that may sign it, in
// either of cosign's formats.
type Attached struct {
	// Legacy is the signature image tagged Tag(digest); nil if none.
	Legacy v1.Image
	// Referrers are the manifests whose subject is the artifact and whose
	// artifact type is a Sigstore bundle's.
	Referrers []Referrer
}

// Referrer is one referrer manifest, by digest: its Image, or why it could
// not be read (a reason it does not count, not a failure of the rest).
type Referrer struct {
	Digest v1.Hash
	Image  v1.Image
	Err    error
}

// Formats of a verified signature.
const (
	FormatLegacy = "cosign .sig"
	FormatBundle = "sigstore bundle"
)

// Verified says which signature verified an artifact.
type Verified struct {
	Format string // FormatLegacy or FormatBundle
	// Payload is the simple signing payload of a legacy signature.
	Payload *Payload
	// Statement is the in-toto statement of a bundle, and Referrer the
	// digest of the manifest that holds it.
	Statement *Statement
	Referrer  v1.Hash
}

// Empty says whether nothing at all is attached.
func (at Attached) Empty() bool { return at.Legacy == nil && len(at.Referrers) == 0 }

// Count returns how many signatures are attached: the legacy image's
// layers and the referrers' bundle layers. Which keys made them only a key
// can tell.
func (at Attached) Count() (legacy, bundles int, err error) {
	if at.Legacy != nil {
		m, err := at.Legacy.Manifest()
		if err != nil {
			return 0, 0, fmt.Errorf("signature manifest: %w", err)
		}
		legacy = len(m.Layers)
	}
	for _, r := range at.Referrers {
		if r.Err != nil {
			continue
		}
		m, err := r.Image.Manifest()
		if err != nil {
			return 0, 0, fmt.Errorf("referrer %s: %w", r.Digest, err)
		}
		for _, l := range m.Layers {
			if IsBundleType(string(l.MediaType)) {
				bundles++
			}
		}
	}
	return legacy, bundles, nil
}

// VerifyAttached checks that at holds a signature of digest by key, in
// either format (see Verify and VerifyBundle). Its error gives, for each
// signature, why it did not count, and wraps ErrNoSignature only when
// nothing at all is attached.
func VerifyAttached(at Attached, key crypto.PublicKey, digest v1.Hash) (*Verified, error) {
	if err := checkPublic(key); err != nil {
		return nil, err
	}
	if at.Empty() {
		return nil, fmt.Errorf("%w: neither a signature image (tag %s) nor a Sigstore bundle referrer", ErrNoSignature, Tag(digest))
	}
	var why []string
	if at.Legacy != nil {
		p, w, err := verifyLegacy(at.Legacy, key, digest)
		switch {
		case p != nil:
			return &Verified{Format: FormatLegacy, Payload: p}, nil
		case errors.Is(err, ErrNoSignature) && len(at.Referrers) == 0:
			return nil, err
		case errors.Is(err, ErrNoSignature):
			why = append(why, "the signature image holds no signature")
		case err != nil:
			return nil, err
		}
		why = append(why, w...)
	}
	for _, r := range at.Referrers {
		name := "bundle " + short(r.Digest)
		if r.Err != nil {
			why = append(why, name+": "+r.Err.Error())
			continue
		}
		raws, err := bundlesOf(r.Image, digest)
		if err != nil {
			why = append(why, name+": "+err.Error())
			continue
		}
		for i, raw := range raws {
			if len(raws) > 1 {
				name = fmt.Sprintf("bundle %s layer %d", short(r.Digest), i)
			}
			st, err := VerifyBundle(raw, key, digest)
			if err != nil {
				why = append(why, name+": "+err.Error())
				continue
			}
			return &Verified{Format: FormatBundle, Statement: st, Referrer: r.Digest}, nil
		}
	}
	return nil, fmt.Errorf("no valid signature of %s by key %s: %s", digest, KeyID(key), strings.Join(why, "; "))
}

// short names a referrer in messages: sha256: and 12 hex digits.
func short(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Algorithm + ":" + h.Hex[:12]
	}
	return h.String()
}
