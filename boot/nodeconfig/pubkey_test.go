package nodeconfig

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
)

// The init checks keys by their fixed PKIX prefixes; x509's encoding of
// fresh keys pins those bytes, and keys slate cannot verify are refused.
func TestCheckPublicKey(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, c := range []struct {
		name string
		pub  any
		ok   bool
	}{
		{"ed25519", ed.Public(), true},
		{"p256", p256.Public(), true},
		{"p384", p384.Public(), false},
		{"rsa", rk.Public(), false},
	} {
		for i := 0; i < 20; i++ { // several keys: the prefix must not depend on the key
			der, err := x509.MarshalPKIXPublicKey(c.pub)
			if err != nil {
				t.Fatal(err)
			}
			p := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
			for form, k := range map[string]string{"pem": p, "base64": base64.StdEncoding.EncodeToString(der)} {
				err := checkPublicKey(k)
				if (err == nil) != c.ok {
					t.Fatalf("%s (%s): %v, want ok=%v", c.name, form, err, c.ok)
				}
				if err != nil && !strings.Contains(err.Error(), "P-256 or Ed25519") {
					t.Errorf("%s: %v does not say what is accepted", c.name, err)
				}
			}
			if c.name == "ed25519" {
				_, k, _ := ed25519.GenerateKey(rand.Reader)
				c.pub = k.Public()
			} else if c.name == "p256" {
				k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				c.pub = k.Public()
			} else {
				break
			}
		}
	}
	if err := checkPublicKey("-----BEGIN CERTIFICATE-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END CERTIFICATE-----\n"); err == nil || !strings.Contains(err.Error(), `"CERTIFICATE"`) {
		t.Errorf("a certificate block: %v", err)
	}
}
