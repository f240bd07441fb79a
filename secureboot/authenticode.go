package secureboot

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/foxboron/go-uefi/authenticode"
	"github.com/foxboron/go-uefi/pkcs7"
)

// Sign adds an Authenticode signature (SHA-256, RSA) by s to a PE/COFF EFI
// binary and returns the signed binary. Signatures it already has are kept:
// the firmware boots it when any of them is trusted.
//
// The output depends only on the input and the key: the signature carries
// no authenticated attributes, as go-uefi's would include the signing time.
// Without them the RSA signature (PKCS #1 v1.5, deterministic) covers the
// digest of the SpcIndirectDataContent directly, which is valid PKCS #7 and
// what OpenSSL (EDK2, shim, sbverify) and the Linux kernel verify.
func Sign(pe []byte, s *Signer) (out []byte, err error) {
	if s == nil || s.Key == nil || s.Cert == nil {
		return nil, errors.New("no signing key and certificate")
	}
	if _, ok := s.Key.Public().(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("a %T key: UEFI Secure Boot needs RSA", s.Key.Public())
	}
	defer recoverMalformed(&err)
	if _, err := certificateTable(pe); err != nil {
		return nil, err
	}
	bin, err := authenticode.Parse(bytes.NewReader(pe))
	if err != nil {
		return nil, fmt.Errorf("not a PE/COFF binary: %w", err)
	}
	if _, err := bin.Sign(s.Key, s.Cert, pkcs7.NoAttr()); err != nil {
		return nil, err
	}
	return bin.Bytes(), nil
}

// Verify returns the certificate in trusted that the binary's Authenticode
// signature verifies against: one that signed it, or issued (directly or
// through certificates the signature carries) one that did, as the firmware
// checks it against its db. Validity periods are not checked; firmware has
// no trusted clock and does not check them either.
func Verify(pe []byte, trusted []*x509.Certificate) (*x509.Certificate, error) {
	img, err := readSignatures(pe)
	if err != nil {
		return nil, err
	}
	if len(img.sigs) == 0 {
		return nil, errors.New("not signed")
	}
	var untrusted, invalid []string
	for _, a := range img.sigs {
		for _, si := range signerInfos(a.Pkcs) {
			c := signerCert(si, a.Pkcs.Certs, trusted)
			if c == nil {
				invalid = append(invalid, "a signature by a certificate it does not carry")
				continue
			}
			if err := checkSignature(a, si, c, img.digest); err != nil {
				invalid = append(invalid, fmt.Sprintf("a signature by %s (%s) that does not verify: %v", c.Subject, Fingerprint(c), err))
				continue
			}
			if t := trustedBy(c, a.Pkcs.Certs, trusted); t != nil {
				return t, nil
			}
			untrusted = append(untrusted, fmt.Sprintf("%s (%s)", c.Subject, Fingerprint(c)))
		}
	}
	var why []string
	if len(untrusted) > 0 {
		why = append(why, fmt.Sprintf("signed by %s, which none of the %d trusted certificates is or issued", strings.Join(untrusted, ", "), len(trusted)))
	}
	if len(invalid) > 0 {
		why = append(why, "has "+strings.Join(invalid, ", "))
	}
	return nil, errors.New(strings.Join(why, "; "))
}

// Signers returns the certificates the binary's signatures name as their
// signers, for display: nil when it is unsigned. It does not check the
// signatures (Verify does).
func Signers(pe []byte) ([]*x509.Certificate, error) {
	img, err := readSignatures(pe)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for _, a := range img.sigs {
		for _, si := range signerInfos(a.Pkcs) {
			if c := signerCert(si, a.Pkcs.Certs, nil); c != nil {
				certs = append(certs, c)
			}
		}
	}
	return certs, nil
}

// signedImage is a PE binary's Authenticode digest and signatures.
type signedImage struct {
	digest []byte // SHA-256
	sigs   []*authenticode.Authenticode
}

func readSignatures(pe []byte) (img *signedImage, err error) {
	defer recoverMalformed(&err)
	entries, err := certificateTable(pe)
	if err != nil {
		return nil, err
	}
	bin, err := authenticode.Parse(bytes.NewReader(pe))
	if err != nil {
		return nil, fmt.Errorf("not a PE/COFF binary: %w", err)
	}
	img = &signedImage{digest: bin.Hash(crypto.SHA256)}
	for i, e := range entries {
		if e.certType != winCertTypePKCSSignedData {
			continue // not Authenticode; the firmware ignores it too
		}
		a, err := authenticode.ParseAuthenticode(e.data)
		if err != nil {
			return nil, fmt.Errorf("signature %d: %w", i+1, err)
		}
		img.sigs = append(img.sigs, a)
	}
	return img, nil
}

// signerInfo is what is checked of a PKCS #7 SignerInfo (go-uefi's type
// for it is unexported).
type signerInfo struct {
	issuer    []byte
	serial    *big.Int
	digestAlg asn1.ObjectIdentifier
	attrs     *pkcs7.Attributes
	sig       []byte
}

func signerInfos(p *pkcs7.PKCS7) []signerInfo {
	var out []signerInfo
	for _, si := range p.SignerInfo {
		out = append(out, signerInfo{
			issuer: si.IssuerAndSerialnumber.RawIssuer, serial: si.IssuerAndSerialnumber.SerialNumber,
			digestAlg: si.DigestAlgorithm.Algorithm, attrs: si.AuthenticatedAttributes, sig: si.EncryptedDigest,
		})
	}
	return out
}

// signerCert finds the certificate of a SignerInfo by issuer and serial
// number among those the signature carries, then among candidates.
func signerCert(si signerInfo, carried, candidates []*x509.Certificate) *x509.Certificate {
	for _, set := range [][]*x509.Certificate{carried, candidates} {
		for _, c := range set {
			if bytes.Equal(c.RawIssuer, si.issuer) && c.SerialNumber.Cmp(si.serial) == 0 {
				return c
			}
		}
	}
	return nil
}

// checkSignature checks one signer's signature over the binary's digest.
// Written here because go-uefi's pkcs7 Verify checks only the signature
// over the authenticated attributes, not that their message digest is the
// signed content's (so a signature could be moved onto another binary's
// digest), and dereferences nil on a signature without attributes, which
// Sign makes.
func checkSignature(a *authenticode.Authenticode, si signerInfo, c *x509.Certificate, digest []byte) error {
	if !a.Algid.Algorithm.Equal(pkcs7.OIDDigestAlgorithmSHA256) || !si.digestAlg.Equal(pkcs7.OIDDigestAlgorithmSHA256) {
		return errors.New("not SHA-256, the only digest checked here")
	}
	if !bytes.Equal(a.Digest, digest) {
		return errors.New("the binary was changed after it was signed")
	}
	// The signed content is the SpcIndirectDataContent's value, without its
	// SEQUENCE tag and length (PKCS #7 section 9.3).
	var content asn1.RawValue
	if rest, err := asn1.Unmarshal(a.Pkcs.ContentInfo, &content); err != nil || len(rest) > 0 {
		return errors.New("malformed SpcIndirectDataContent")
	}
	sum := sha256.Sum256(content.Bytes)
	signed := sum[:]
	if attrs := si.attrs; attrs != nil {
		if !bytes.Equal(attrs.MessageDigest, signed) {
			return errors.New("its signed attributes are for other content")
		}
		if attrs.ContentType != nil && !attrs.ContentType.Equal(authenticode.OIDSpcIndirectDataContent) {
			return fmt.Errorf("its signed attributes name content type %v", attrs.ContentType)
		}
		s := sha256.Sum256(attrs.RawBytes)
		signed = s[:]
	}
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("a %T key, not RSA", c.PublicKey)
	}
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, signed, si.sig)
}

// trustedBy returns the trusted certificate that is c or issued it, or
// issued a certificate among carried that issued it, and so on.
func trustedBy(c *x509.Certificate, carried, trusted []*x509.Certificate) *x509.Certificate {
	for depth := 0; c != nil && depth < 8; depth++ {
		for _, t := range trusted {
			if c.Equal(t) {
				return t
			}
		}
		for _, t := range trusted {
			if c.CheckSignatureFrom(t) == nil {
				return t
			}
		}
		var issuer *x509.Certificate
		for _, p := range carried {
			if !p.Equal(c) && bytes.Equal(p.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(p) == nil {
				issuer = p
				break
			}
		}
		c = issuer
	}
	return nil
}

// recoverMalformed turns a panic in go-uefi's PE parsing (it trusts the
// sizes a binary states) into an error.
func recoverMalformed(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("malformed PE/COFF binary: %v", r)
	}
}
