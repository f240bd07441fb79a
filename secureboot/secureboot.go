// Package secureboot signs what UEFI firmware boots and makes the keys it
// trusts. Under Secure Boot the firmware runs only an EFI binary whose
// Authenticode signature chains to a certificate in its db variable, so a
// slate image signs its unified kernel image and systemd-boot with a db key,
// ships PK, KEK and db as authenticated-variable payloads that systemd-boot
// enrolls on a machine in Setup Mode, and lets a node check an update against
// its enrolled db before installing it: a slot, or a loader, the firmware
// would refuse must be refused while the running system still can.
//
// Signing is reproducible (the same binary and key give the same bytes), so a
// rebuild of an image gives the same artifact.
//
// It builds on github.com/foxboron/go-uefi (sbctl's library) for the
// Authenticode hash and signature format, EFI signature lists and
// authenticated variables; where that library falls short (it does not check
// a signature's message digest, panics on some malformed input, and rejects
// a whole signature database for one list type it does not know) the code
// here says so and does the part itself.
package secureboot

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Signer is a db key and its certificate, which the firmware's db (or a
// certificate that issued it) must hold for what it signs to boot.
type Signer struct {
	Key  crypto.Signer
	Cert *x509.Certificate
}

// LoadSigner reads an RSA private key (PEM, PKCS #1 or PKCS #8) and its
// certificate (PEM or DER). UEFI firmware verifies RSA signatures, hence RSA
// only.
func LoadSigner(keyPath, certPath string) (*Signer, error) {
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseRSAKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	certs, err := LoadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s: holds %d certificates, want the signing certificate alone", certPath, len(certs))
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("%s: the certificate (%s) is not for the key in %s", certPath, certs[0].Subject, keyPath)
	}
	return &Signer{Key: key, Cert: certs[0]}, nil
}

func parseRSAKey(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not a PEM private key")
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, errors.New("the key is encrypted: give an unencrypted PEM key")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS #1 or PKCS #8 private key (%s block): %w", block.Type, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, but UEFI Secure Boot needs an RSA key", k)
	}
	return rk, nil
}

// LoadCertificates reads X.509 certificates from a file: PEM with one or more
// CERTIFICATE blocks (other blocks are skipped), or DER.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

func parseCertificates(b []byte) ([]*x509.Certificate, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		certs, err := x509.ParseCertificates(b)
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor a DER certificate: %w", err)
		}
		if len(certs) == 0 {
			return nil, errors.New("no certificate")
		}
		return certs, nil
	}
	var certs []*x509.Certificate
	for ; block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE block")
	}
	return certs, nil
}

// Fingerprint is a short form of the certificate's SHA-256 fingerprint for
// display: the first 16 hex digits of what openssl x509 -fingerprint -sha256
// prints.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:8])
}
