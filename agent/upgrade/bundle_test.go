package upgrade

import (
	"strings"
	"testing"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/signature"
)

// The upgrade's signature check takes cosign v3's Sigstore bundles as it
// takes .sig signatures (signature has the format's own tests).
func TestPolicyBundle(t *testing.T) {
	key, other := newKey(t), newKey(t)
	b := makeArtifact(t, art{version: "2.4", unsigned: true})
	if _, err := artifact.SignBundle(b.ref, key); err != nil {
		t.Fatal(err)
	}
	a, err := artifact.Open(b.ref)
	if err != nil {
		t.Fatal(err)
	}
	p := imagePolicy(other.Public(), key.Public())
	v, err := p.check(a)
	if err != nil || v.signedBy == nil || v.signedBy.ID != signature.KeyID(key.Public()) {
		t.Errorf("bundle by a trusted key: %+v, %v", v, err)
	}
	p = imagePolicy(other.Public())
	if _, err := p.check(a); err == nil || !strings.Contains(err.Error(), "not made by key "+signature.KeyID(other.Public())) {
		t.Errorf("bundle by another key: %v", err)
	}
}
