package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/secureboot"
)

func TestKeygenSecureBoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sb")
	out, err := run(t, keygenCmd(), "--secure-boot", "--common-name", "Acme", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PK.auth", "db certificate CN=Acme db", "secureBoot.key: " + filepath.Join(dir, "db.key"), "secureBoot.enrollKeys: " + dir} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	s, err := secureboot.LoadSigner(filepath.Join(dir, "db.key"), filepath.Join(dir, "db.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Cert.Subject.CommonName != "Acme db" {
		t.Errorf("db certificate: %s", s.Cert.Subject)
	}

	// --extra-db-cert goes into db.auth.
	dir2 := filepath.Join(t.TempDir(), "sb2")
	out, err = run(t, keygenCmd(), "--secure-boot", "--extra-db-cert", filepath.Join(dir, "KEK.crt"), dir2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "db.auth also holds 1 certificate") {
		t.Errorf("output: %s", out)
	}
	b, err := os.ReadFile(filepath.Join(dir2, "db.auth"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := secureboot.LoadCertificates(filepath.Join(dir, "KEK.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, certs[0].Raw) {
		t.Error("db.auth lacks the --extra-db-cert certificate")
	}

	if _, err := run(t, keygenCmd(), "--secure-boot", dir); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("again into %s: %v", dir, err)
	}
	if _, err := run(t, keygenCmd(), "--common-name", "x", filepath.Join(t.TempDir(), "k")); err == nil {
		t.Error("--common-name without --secure-boot: no error")
	}
	if _, err := run(t, keygenCmd(), "--secure-boot", "--extra-db-cert", filepath.Join(dir, "nope.crt"), filepath.Join(t.TempDir(), "sb3")); err == nil || !strings.Contains(err.Error(), "nope.crt") {
		t.Errorf("a missing --extra-db-cert: %v", err)
	}
}
