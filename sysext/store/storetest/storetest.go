// Package storetest makes small system extension artifacts for tests: an
// image of random blocks with a real dm-verity tree (verity.Append), so
// that everything short of mounting it can be checked, written as an OCI
// layout by artifact.WriteExtension and optionally signed.
package storetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/sysext"
)

// Created is every test extension's creation time.
var Created = time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)

// Ext describes a test extension.
type Ext struct {
	Name, Version string
	// Release is the extension-release it carries (sysext.ForHost(host)
	// for an extension built for host).
	Release sysext.Release
	// Seed makes the image's bytes (and so its digests) differ.
	Seed int64
	// Blocks is the image's data size in 4 KiB blocks; 0 is 8.
	Blocks int
	// RootHash, when set, replaces the real root hash in the config: an
	// extension whose layer is intact but not what its config describes.
	RootHash string
}

// Config is the extension's config for an image with layout l.
func (e Ext) Config(l verity.Layout) sysext.Config {
	return sysext.Config{
		Name: e.Name, Version: e.Version, Release: e.Release, Architecture: "amd64", OS: "linux",
		Image: l, Created: Created,
	}
}

// Image writes the extension image (random data, then its verity tree)
// under a temporary directory and returns its path and layout.
func (e Ext) Image(tb testing.TB) (string, verity.Layout) {
	tb.Helper()
	n := e.Blocks
	if n == 0 {
		n = 8
	}
	b := make([]byte, n*verity.BlockSize)
	rand.New(rand.NewSource(e.Seed)).Read(b)
	p := filepath.Join(tb.TempDir(), e.Name+".raw")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	l, _, err := verity.Append(p, []byte(e.Name))
	if err != nil {
		tb.Fatal(err)
	}
	if e.RootHash != "" {
		l.RootHash = e.RootHash
	}
	return p, l
}

// Write writes the extension as an OCI layout at dir (created) and returns
// its manifest digest.
func (e Ext) Write(tb testing.TB, dir string) v1.Hash {
	tb.Helper()
	img, l := e.Image(tb)
	d, err := artifact.WriteExtension(dir, e.Config(l), artifact.Blob{Path: img})
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// Layout writes the extension into a new temporary directory and returns
// the layout's reference (oci:DIR) and the digest.
func (e Ext) Layout(tb testing.TB) (string, v1.Hash) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), e.Name+".oci")
	d := e.Write(tb, dir)
	return artifact.LayoutPrefix + dir, d
}

// Sign signs the extension at ref with key: a cosign .sig signature, or a
// Sigstore bundle.
func Sign(tb testing.TB, ref string, key crypto.Signer, bundle bool, opts ...artifact.Option) {
	tb.Helper()
	var err error
	if bundle {
		_, err = artifact.SignBundle(ref, key, opts...)
	} else {
		_, err = artifact.Sign(ref, key, "", opts...)
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// Key is a new signing key (ECDSA P-256, cosign's default).
func Key(tb testing.TB) crypto.Signer {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}
