package secureboot

import (
	"bytes"
	gocrypto "crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/foxboron/go-uefi/authenticode"
	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efi/util"
	"github.com/foxboron/go-uefi/efivar"
	"github.com/foxboron/go-uefi/pkcs7"

	"github.com/slate-os/slate/internal/testtool"
)

var (
	keysOnce sync.Once
	keysDir  string
	keysErr  error
	// extraCert is the certificate GenerateKeySet is given for db.auth.
	extraCert *x509.Certificate
)

func TestMain(m *testing.M) {
	code := m.Run()
	if keysDir != "" {
		os.RemoveAll(keysDir)
	}
	os.Exit(code)
}

// testKeys is a key set made once for the package's tests.
func testKeys(t *testing.T) string {
	t.Helper()
	keysOnce.Do(func() {
		if keysDir, keysErr = os.MkdirTemp("", "secureboot-test"); keysErr != nil {
			return
		}
		_, extraCert, keysErr = selfSigned("Extra CA")
		if keysErr != nil {
			return
		}
		keysErr = GenerateKeySet(filepath.Join(keysDir, "keys"), "test", []*x509.Certificate{extraCert})
	})
	if keysErr != nil {
		t.Fatal(keysErr)
	}
	return filepath.Join(keysDir, "keys")
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	certs, err := LoadCertificates(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 {
		t.Fatalf("%s: %d certificates", path, len(certs))
	}
	return certs[0]
}

func TestGenerateKeySet(t *testing.T) {
	dir := testKeys(t)
	for _, n := range KeySetFiles {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if want := os.FileMode(0o644); strings.HasSuffix(n, ".key") {
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v, want 0600", n, fi.Mode())
			}
		} else if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", n, fi.Mode(), want)
		}
	}
	for _, r := range []string{"PK", "KEK", "db"} {
		s, err := LoadSigner(filepath.Join(dir, r+".key"), filepath.Join(dir, r+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		if cn := s.Cert.Subject.CommonName; cn != "test "+r {
			t.Errorf("%s: CN %q", r, cn)
		}
		if k := s.Key.(*rsa.PrivateKey); k.N.BitLen() != 2048 {
			t.Errorf("%s: %d bits", r, k.N.BitLen())
		}
		if y := s.Cert.NotAfter.Sub(time.Now()).Hours() / 24 / 365; y < 19.9 || y > 20.1 {
			t.Errorf("%s: valid for %.1f more years", r, y)
		}
		if c := s.Cert; !bytes.Equal(c.RawIssuer, c.RawSubject) || c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) != nil {
			t.Errorf("%s: not self-signed", r)
		}
	}

	// It never overwrites: a second run fails and changes nothing.
	before, _ := os.ReadFile(filepath.Join(dir, "db.key"))
	if err := GenerateKeySet(dir, "again", nil); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second run: %v, want an error saying a file exists", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "db.key")); !bytes.Equal(before, after) {
		t.Error("db.key was overwritten")
	}
	partial := t.TempDir()
	os.WriteFile(filepath.Join(partial, "KEK.auth"), nil, 0o644)
	if err := GenerateKeySet(partial, "", nil); err == nil {
		t.Error("a directory with KEK.auth: no error")
	}
	if ents, _ := os.ReadDir(partial); len(ents) != 1 {
		t.Errorf("a failed run left %d files", len(ents))
	}
}

// The .auth files are what efi-updatevar -f writes: EFI_VARIABLE_AUTHENTICATION_2
// with a PKCS #7 signature, by the right key, over name, GUID, attributes,
// timestamp and data, then the signature lists.
func TestAuthFiles(t *testing.T) {
	dir := testKeys(t)
	pk, kek, db := loadCert(t, filepath.Join(dir, "PK.crt")), loadCert(t, filepath.Join(dir, "KEK.crt")), loadCert(t, filepath.Join(dir, "db.crt"))
	for _, c := range []struct {
		file    string
		v       efivar.Efivar
		signer  *x509.Certificate
		other   *x509.Certificate
		content []*x509.Certificate
	}{
		{"PK.auth", efivar.PK, pk, kek, []*x509.Certificate{pk}},
		{"KEK.auth", efivar.KEK, pk, kek, []*x509.Certificate{kek}},
		{"db.auth", efivar.Db, kek, pk, []*x509.Certificate{db, extraCert}},
	} {
		b, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		r := bytes.NewReader(b)
		auth, err := signature.ReadEFIVariableAuthencation2(r)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		data, _ := io.ReadAll(r)
		if !util.CmpEFIGUID(auth.AuthInfo.CertType, signature.EFI_CERT_TYPE_PKCS7_GUID) {
			t.Errorf("%s: cert type %s", c.file, auth.AuthInfo.CertType.Format())
		}
		if tm := auth.Time; tm.Year < 2024 || tm.Pad1 != 0 || tm.Nanosecond != 0 || tm.TimeZone != 0 || tm.Daylight != 0 || tm.Pad2 != 0 {
			t.Errorf("%s: timestamp %+v: firmware wants zero nanoseconds, time zone and padding", c.file, tm)
		}
		if ok, err := auth.Verify(c.signer); !ok || err != nil {
			t.Errorf("%s: does not verify against %s: %v", c.file, c.signer.Subject, err)
		}
		if ok, _ := auth.Verify(c.other); ok {
			t.Errorf("%s: verifies against %s too", c.file, c.other.Subject)
		}
		// go-uefi's Verify checks the signature over the attributes; check
		// that their digest is that of the variable update, too.
		p7, err := pkcs7.ParsePKCS7(auth.AuthInfo.CertData)
		if err != nil {
			t.Fatal(err)
		}
		var signed bytes.Buffer
		for _, r := range c.v.Name {
			signed.Write([]byte{byte(r), 0})
		}
		binary.Write(&signed, binary.LittleEndian, *c.v.GUID)
		binary.Write(&signed, binary.LittleEndian, uint32(0x27)) // NV, BS, RT, time-based authenticated
		binary.Write(&signed, binary.LittleEndian, auth.Time)
		signed.Write(data)
		if sum := sha256.Sum256(signed.Bytes()); !bytes.Equal(p7.SignerInfo[0].AuthenticatedAttributes.MessageDigest, sum[:]) {
			t.Errorf("%s: the signature is not over %s's update", c.file, c.v.Name)
		}

		certs, err := ParseSignatureDatabase(data)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if !sameSet(certs, c.content) {
			t.Errorf("%s holds %v, want %v", c.file, subjects(certs), subjects(c.content))
		}
		sdb, err := signature.ReadSignatureDatabase(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range sdb {
			for _, s := range l.Signatures {
				if s.Owner.Format() != OwnerGUID {
					t.Errorf("%s: owner %s", c.file, s.Owner.Format())
				}
			}
		}
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// sameSet is sameCerts in any order.
func sameSet(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, x.Equal) {
			return false
		}
	}
	return true
}

func subjects(certs []*x509.Certificate) []string {
	var s []string
	for _, c := range certs {
		s = append(s, c.Subject.String())
	}
	return s
}

// efiBinary is systemd-boot, a real EFI binary to sign.
func efiBinary(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(testtool.File(t, testtool.SystemdBootPath))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignVerify(t *testing.T) {
	testtool.Need(t, "sbverify", "sbsign")
	pe := efiBinary(t)
	dir := testKeys(t)
	s, err := LoadSigner(filepath.Join(dir, "db.key"), filepath.Join(dir, "db.crt"))
	if err != nil {
		t.Fatal(err)
	}
	kek := loadCert(t, filepath.Join(dir, "KEK.crt"))
	signed, err := Sign(pe, s)
	if err != nil {
		t.Fatal(err)
	}

	again, err := Sign(bytes.Clone(pe), s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signed, again) {
		t.Error("signing twice gave different bytes")
	}
	// Signing times have a resolution of seconds: check there is none.
	img, err := readSignatures(signed)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range img.sigs {
		for _, si := range a.Pkcs.SignerInfo {
			if si.AuthenticatedAttributes != nil || si.UnauthenticatedAttributes != nil {
				t.Errorf("the signature has attributes (%+v, %+v): a signing time makes it differ by the second", si.AuthenticatedAttributes, si.UnauthenticatedAttributes)
			}
		}
	}

	out := filepath.Join(t.TempDir(), "signed.efi")
	if err := os.WriteFile(out, signed, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("sbverify", "--cert", filepath.Join(dir, "db.crt"), out).CombinedOutput(); err != nil {
		t.Errorf("sbverify --cert db.crt: %v\n%s", err, b)
	}
	if b, err := exec.Command("sbverify", "--cert", filepath.Join(dir, "KEK.crt"), out).CombinedOutput(); err == nil {
		t.Errorf("sbverify --cert KEK.crt succeeds:\n%s", b)
	}

	if c, err := Verify(signed, []*x509.Certificate{kek, s.Cert}); err != nil || !c.Equal(s.Cert) {
		t.Errorf("Verify: %v, %v", c, err)
	}
	if _, err := Verify(signed, []*x509.Certificate{kek}); err == nil || !strings.Contains(err.Error(), "signed by CN=test db ("+Fingerprint(s.Cert)+")") {
		t.Errorf("Verify against KEK: %v, want signed by CN=test db, not trusted", err)
	}
	if _, err := Verify(pe, []*x509.Certificate{s.Cert}); err == nil || err.Error() != "not signed" {
		t.Errorf("Verify unsigned: %v", err)
	}
	if signers, err := Signers(signed); err != nil || !sameCerts(signers, []*x509.Certificate{s.Cert}) {
		t.Errorf("Signers: %v, %v", subjects(signers), err)
	}
	if signers, err := Signers(pe); err != nil || len(signers) != 0 {
		t.Errorf("Signers of the unsigned: %v, %v", subjects(signers), err)
	}

	// A changed binary no longer verifies.
	changed := bytes.Clone(signed)
	changed[len(pe)/2] ^= 1
	if _, err := Verify(changed, []*x509.Certificate{s.Cert}); err == nil || !strings.Contains(err.Error(), "changed after it was signed") {
		t.Errorf("Verify changed binary: %v", err)
	}

	// A second signature is added; either verifies.
	other := newSigner(t, "other", nil, nil)
	both, err := Sign(signed, other)
	if err != nil {
		t.Fatal(err)
	}
	if signers, _ := Signers(both); !sameCerts(signers, []*x509.Certificate{s.Cert, other.Cert}) {
		t.Errorf("Signers of a twice-signed binary: %v", subjects(signers))
	}
	for _, c := range []*x509.Certificate{s.Cert, other.Cert} {
		if got, err := Verify(both, []*x509.Certificate{c}); err != nil || !got.Equal(c) {
			t.Errorf("twice-signed, trusting %s: %v", c.Subject, err)
		}
	}
	if err := os.WriteFile(out, both, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("sbverify", "--cert", filepath.Join(dir, "db.crt"), out).CombinedOutput(); err != nil {
		t.Errorf("sbverify, twice-signed: %v\n%s", err, b)
	}

	// sbsign's signature (with authenticated attributes) verifies here.
	in := filepath.Join(t.TempDir(), "in.efi")
	os.WriteFile(in, pe, 0o644)
	sbsigned := filepath.Join(t.TempDir(), "sbsigned.efi")
	if b, err := exec.Command("sbsign", "--key", filepath.Join(dir, "db.key"), "--cert", filepath.Join(dir, "db.crt"), "--output", sbsigned, in).CombinedOutput(); err != nil {
		t.Fatalf("sbsign: %v\n%s", err, b)
	}
	sb, _ := os.ReadFile(sbsigned)
	if _, err := Verify(sb, []*x509.Certificate{s.Cert}); err != nil {
		t.Errorf("Verify sbsign's: %v", err)
	}
	if _, err := Verify(sb, []*x509.Certificate{kek}); err == nil {
		t.Error("Verify sbsign's against KEK: no error")
	}

	// sbsign's signature moved onto another binary, its SpcIndirectDataContent
	// given that binary's digest: the signed attributes' message digest no
	// longer matches (go-uefi's own Verify does not check it).
	other2 := bytes.Clone(pe)
	other2[len(pe)/2] ^= 1
	bin, err := authenticode.Parse(bytes.NewReader(other2))
	if err != nil {
		t.Fatal(err)
	}
	oldDigest, newDigest := authenticodeDigest(t, pe), bin.Hash(gocrypto.SHA256)
	table, err := certificateTable(sb)
	if err != nil || len(table) != 1 {
		t.Fatalf("sbsign's certificate table: %v, %v", table, err)
	}
	if bytes.Count(table[0].data, oldDigest) != 1 {
		t.Fatal("sbsign's signature does not hold the binary's digest once")
	}
	if err := bin.AppendSignature(bytes.ReplaceAll(table[0].data, oldDigest, newDigest)); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(bin.Bytes(), []*x509.Certificate{s.Cert}); err == nil || !strings.Contains(err.Error(), "signed attributes are for other content") {
		t.Errorf("a signature moved onto another binary: %v", err)
	}
}

// authenticodeDigest is the Authenticode digest of pe.
func authenticodeDigest(t *testing.T, pe []byte) []byte {
	t.Helper()
	bin, err := authenticode.Parse(bytes.NewReader(pe))
	if err != nil {
		t.Fatal(err)
	}
	return bin.Hash(gocrypto.SHA256)
}

// newSigner makes a key and certificate for name, issued by parent (nil:
// self-signed).
func newSigner(t *testing.T, name string, parent *Signer, ca *bool) *Signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	if ca != nil {
		tmpl.BasicConstraintsValid, tmpl.IsCA = true, *ca
		if *ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		}
	}
	issuer, signer := tmpl, any(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{Key: key, Cert: cert}
}

// signWithIntermediates signs as Sign does, the signature carrying certs
// as well.
func signWithIntermediates(pe []byte, s *Signer, certs ...*x509.Certificate) ([]byte, error) {
	bin, err := authenticode.Parse(bytes.NewReader(pe))
	if err != nil {
		return nil, err
	}
	if _, err := bin.Sign(s.Key, s.Cert, pkcs7.NoAttr(), pkcs7.WithAdditionalCerts(certs)); err != nil {
		return nil, err
	}
	return bin.Bytes(), nil
}

// A signature by a certificate that a trusted one issued, directly or through
// an intermediate, verifies against it.
func TestVerifyChain(t *testing.T) {
	pe := efiBinary(t)
	yes, no := true, false
	root := newSigner(t, "root", nil, &yes)
	leaf := newSigner(t, "leaf", root, &no)
	signed, err := Sign(pe, leaf)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Verify(signed, []*x509.Certificate{root.Cert}); err != nil || !c.Equal(root.Cert) {
		t.Errorf("leaf of root: %v", err)
	}
	if _, err := Verify(signed, []*x509.Certificate{newSigner(t, "stranger", nil, &yes).Cert}); err == nil {
		t.Error("trusting a stranger: no error")
	}

	// A certificate that is not a CA issues nothing.
	notCA := newSigner(t, "not a CA", nil, &no)
	fake := newSigner(t, "fake", notCA, &no)
	signed, err = Sign(pe, fake)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(signed, []*x509.Certificate{notCA.Cert}); err == nil {
		t.Error("a leaf of a non-CA verifies")
	}

	// Through an intermediate the signature carries.
	mid := newSigner(t, "intermediate", root, &yes)
	leaf2 := newSigner(t, "leaf2", mid, &no)
	bin, err := Sign(pe, leaf2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(bin, []*x509.Certificate{root.Cert}); err == nil {
		t.Error("without the intermediate in the signature: verifies")
	}
	bin2, err := signWithIntermediates(pe, leaf2, mid.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Verify(bin2, []*x509.Certificate{root.Cert}); err != nil || !c.Equal(root.Cert) {
		t.Errorf("through an intermediate: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	s := newSigner(t, "x", nil, nil)
	for _, b := range [][]byte{nil, []byte("MZ not really"), bytes.Repeat([]byte{0}, 4096)} {
		if _, err := Sign(b, s); err == nil {
			t.Errorf("Sign(%q): no error", b[:min(len(b), 8)])
		}
		if _, err := Verify(b, []*x509.Certificate{s.Cert}); err == nil {
			t.Errorf("Verify(%q): no error", b[:min(len(b), 8)])
		}
		if _, err := Signers(b); err == nil {
			t.Errorf("Signers(%q): no error", b[:min(len(b), 8)])
		}
	}
	pe := efiBinary(t)
	signed, err := Sign(pe, s)
	if err != nil {
		t.Fatal(err)
	}
	// The WIN_CERTIFICATE's length, at the table's start: too short, too long.
	start := len(pe) + (8-len(pe)%8)%8
	for _, n := range []uint32{4, 1 << 30} {
		bad := bytes.Clone(signed)
		binary.LittleEndian.PutUint32(bad[start:], n)
		if _, err := Verify(bad, []*x509.Certificate{s.Cert}); err == nil || !strings.Contains(err.Error(), "certificate table") {
			t.Errorf("WIN_CERTIFICATE of %d bytes: %v", n, err)
		}
	}
	// A certificate table that does not end the file.
	if _, err := Verify(append(bytes.Clone(signed), 0, 0, 0, 0, 0, 0, 0, 0), []*x509.Certificate{s.Cert}); err == nil {
		t.Error("data after the certificate table: no error")
	}
}

func TestParseSignatureDatabase(t *testing.T) {
	a, b, c := newSigner(t, "a", nil, nil).Cert, newSigner(t, "bb", nil, nil).Cert, newSigner(t, "c", nil, nil).Cert
	sdb, err := signatureDatabase([]*x509.Certificate{a, b, c, a})
	if err != nil {
		t.Fatal(err)
	}
	if len(*sdb) < 2 {
		t.Fatalf("%d lists: want certificates of different sizes in different lists", len(*sdb))
	}
	// A hash list first, and a list of a type go-uefi does not know.
	owner := *util.StringToGUID(OwnerGUID)
	hashes := signature.NewSignatureDatabase()
	if err := hashes.Append(signature.CERT_SHA256_GUID, owner, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	unknown := signature.SignatureList{SignatureType: signature.CERT_X509_SHA256_GUID, Size: 16 + 64, ListSize: signature.SizeofSignatureList + 16 + 64,
		Signatures: []signature.SignatureData{{Owner: owner, Data: make([]byte, 64)}}}
	data := append(append(hashes.Bytes(), sdb.Bytes()...), unknown.Bytes()...)
	got, err := ParseSignatureDatabase(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := []*x509.Certificate{a, b, c}; !sameSet(got, want) {
		t.Errorf("got %v, want %v", subjects(got), subjects(want))
	}
	if got, err := ParseSignatureDatabase(nil); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v", got, err)
	}
	for _, n := range []int{10, len(data) - 1} {
		if _, err := ParseSignatureDatabase(data[:n]); err == nil {
			t.Errorf("%d of %d bytes: no error", n, len(data))
		}
	}
	bad := bytes.Clone(sdb.Bytes())
	binary.LittleEndian.PutUint32(bad[24:], 3) // entries of 3 bytes
	if _, err := ParseSignatureDatabase(bad); err == nil {
		t.Error("a signature size of 3: no error")
	}

	// EnrolledDB and Enabled read efivarfs.
	vars := t.TempDir()
	if on, err := Enabled(vars); on || err != nil {
		t.Errorf("no SecureBoot variable: %v, %v", on, err)
	}
	if _, err := EnrolledDB(vars); err == nil {
		t.Error("no db variable: no error")
	}
	attrs := []byte{0x27, 0, 0, 0}
	os.WriteFile(filepath.Join(vars, dbVar), append(attrs, data...), 0o644)
	if got, err := EnrolledDB(vars); err != nil || !sameSet(got, []*x509.Certificate{a, b, c}) {
		t.Errorf("EnrolledDB: %v, %v", subjects(got), err)
	}
	for v, want := range map[byte]bool{0: false, 1: true} {
		os.WriteFile(filepath.Join(vars, secureBootVar), []byte{6, 0, 0, 0, v}, 0o644)
		if on, err := Enabled(vars); on != want || err != nil {
			t.Errorf("SecureBoot=%d: %v, %v", v, on, err)
		}
	}
	os.WriteFile(filepath.Join(vars, secureBootVar), []byte{6, 0}, 0o644)
	if _, err := Enabled(vars); err == nil || !strings.Contains(err.Error(), secureBootVar) {
		t.Errorf("a 2-byte SecureBoot: %v", err)
	}
}

func TestLoadSigner(t *testing.T) {
	dir := t.TempDir()
	s := newSigner(t, "pkcs1", nil, nil)
	key := filepath.Join(dir, "k.pem")
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(s.Key.(*rsa.PrivateKey))}), 0o600)
	der := filepath.Join(dir, "c.der")
	os.WriteFile(der, s.Cert.Raw, 0o644)
	got, err := LoadSigner(key, der)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(s.Cert) {
		t.Error("wrong certificate")
	}

	other := filepath.Join(dir, "other.pem")
	os.WriteFile(other, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: newSigner(t, "other", nil, nil).Cert.Raw}), 0o644)
	if _, err := LoadSigner(key, other); err == nil || !strings.Contains(err.Error(), other) {
		t.Errorf("mismatched certificate: %v", err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecKey := filepath.Join(dir, "ec.pem")
	os.WriteFile(ecKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), 0o600)
	if _, err := LoadSigner(ecKey, der); err == nil || !strings.Contains(err.Error(), ecKey) || !strings.Contains(err.Error(), "RSA") {
		t.Errorf("ECDSA key: %v", err)
	}
	if _, err := LoadSigner(der, der); err == nil || !strings.Contains(err.Error(), der) {
		t.Errorf("a certificate as key: %v", err)
	}

	both := filepath.Join(dir, "both.pem")
	b, _ := os.ReadFile(other)
	os.WriteFile(both, append(append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert.Raw}), b...), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")...), 0o644)
	if certs, err := LoadCertificates(both); err != nil || len(certs) != 2 {
		t.Errorf("two PEM certificates: %d, %v", len(certs), err)
	}
	if _, err := LoadSigner(key, both); err == nil {
		t.Error("a certificate file with two: no error")
	}
	if _, err := LoadCertificates(key); err == nil || !strings.Contains(err.Error(), key) {
		t.Errorf("a key as certificates: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	c := newSigner(t, "fp", nil, nil).Cert
	sum := sha256.Sum256(c.Raw)
	if fp, want := Fingerprint(c), hex.EncodeToString(sum[:])[:16]; fp != want {
		t.Errorf("Fingerprint %q, want %q", fp, want)
	}
}
