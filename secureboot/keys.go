package secureboot

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efi/util"
	"github.com/foxboron/go-uefi/efivar"
)

// OwnerGUID is the owner (SignatureOwner) slate writes in the signature lists
// it makes, so that its entries in a db can be told from the vendor's.
const OwnerGUID = "0687cef7-8433-44b0-9b74-d2096b0a4bed"

// KeySetFiles are the files GenerateKeySet writes: a key and certificate
// per Secure Boot role, and the authenticated variable payloads that
// systemd-boot enrolls from loader/keys/NAME/ (secure-boot-enroll).
var KeySetFiles = []string{"PK.key", "PK.crt", "KEK.key", "KEK.crt", "db.key", "db.crt", "PK.auth", "KEK.auth", "db.auth"}

// GenerateKeySet makes a Secure Boot key hierarchy in dir (created if need
// be; an existing file is never overwritten): an RSA 2048 key (mode 0600)
// and a self-signed certificate valid for 20 years for each of PK, KEK and
// db, named "<commonName> PK" and so on, and PK.auth (signed by PK), KEK.auth
// (signed by PK) and db.auth (signed by KEK): time-based authenticated
// variable payloads, as efi-updatevar or sbvarsign write them. db.auth holds
// the db certificate and extraDB, such as the Microsoft UEFI CA that signs
// the option ROMs of graphics and network cards: a db without it leaves
// those unable to run under Secure Boot.
func GenerateKeySet(dir, commonName string, extraDB []*x509.Certificate) (err error) {
	if commonName == "" {
		commonName = "slate"
	}
	for _, n := range KeySetFiles {
		p := filepath.Join(dir, n)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: keys are never overwritten", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	type role struct {
		key  *rsa.PrivateKey
		cert *x509.Certificate
	}
	roles := map[string]*role{}
	for _, name := range []string{"PK", "KEK", "db"} {
		key, cert, err := selfSigned(commonName + " " + name)
		if err != nil {
			return fmt.Errorf("%s key: %w", name, err)
		}
		roles[name] = &role{key, cert}
	}
	pk, kek, db := roles["PK"], roles["KEK"], roles["db"]
	pkAuth, err := signedVariable(efivar.PK, []*x509.Certificate{pk.cert}, pk.key, pk.cert)
	if err != nil {
		return fmt.Errorf("PK.auth: %w", err)
	}
	kekAuth, err := signedVariable(efivar.KEK, []*x509.Certificate{kek.cert}, pk.key, pk.cert)
	if err != nil {
		return fmt.Errorf("KEK.auth: %w", err)
	}
	dbAuth, err := signedVariable(efivar.Db, append([]*x509.Certificate{db.cert}, extraDB...), kek.key, kek.cert)
	if err != nil {
		return fmt.Errorf("db.auth: %w", err)
	}
	files := map[string][]byte{"PK.auth": pkAuth, "KEK.auth": kekAuth, "db.auth": dbAuth}
	for name, r := range roles {
		files[name+".key"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: mustPKCS8(r.key)})
		files[name+".crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.cert.Raw})
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var written []string
	defer func() {
		if err != nil {
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	for _, n := range KeySetFiles {
		mode := fs.FileMode(0o644)
		if filepath.Ext(n) == ".key" {
			mode = 0o600
		}
		p := filepath.Join(dir, n)
		if err := writeNew(p, files[n], mode); err != nil {
			return err
		}
		written = append(written, p)
	}
	return nil
}

func selfSigned(cn string) (*rsa.PrivateKey, *x509.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		// A day early: a machine's clock may lag, and tools that check
		// validity (sbverify) should not call a new key not yet valid.
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		SignatureAlgorithm:    x509.SHA256WithRSA,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return key, cert, nil
}

func mustPKCS8(k *rsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // an RSA key always marshals
	}
	return b
}

// signatureDatabase is an EFI signature database (the data of db, KEK or
// PK) holding certs as EFI_CERT_X509 entries owned by OwnerGUID, without
// duplicates.
func signatureDatabase(certs []*x509.Certificate) (*signature.SignatureDatabase, error) {
	owner := util.StringToGUID(OwnerGUID)
	sdb := signature.NewSignatureDatabase()
	for _, c := range certs {
		if sdb.BytesExists(signature.CERT_X509_GUID, *owner, c.Raw) {
			continue
		}
		if err := sdb.Append(signature.CERT_X509_GUID, *owner, c.Raw); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Subject, err)
		}
	}
	return sdb, nil
}

// signedVariable is the payload that sets variable v to a signature
// database of certs, signed by key and cert: EFI_VARIABLE_AUTHENTICATION_2
// (timestamp and PKCS #7 signature) followed by the data.
func signedVariable(v efivar.Efivar, certs []*x509.Certificate, key *rsa.PrivateKey, cert *x509.Certificate) ([]byte, error) {
	sdb, err := signatureDatabase(certs)
	if err != nil {
		return nil, err
	}
	_, payload, err := signature.SignEFIVariable(v, sdb, key, cert)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	payload.Marshal(&b)
	return b.Bytes(), nil
}

// writeNew writes a file that must not exist yet, and syncs it.
func writeNew(path string, b []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
