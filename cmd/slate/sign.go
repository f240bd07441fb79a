package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/secureboot"
	"github.com/slate-os/slate/signature"
)

func signCmd() *cobra.Command {
	var (
		keyFile, identity string
		insecure, bundle  bool
	)
	c := &cobra.Command{
		Use:   "sign --key KEY (LAYOUT | oci:DIR | REF)",
		Short: "Sign an update artifact or a system extension, so nodes with update.publicKey accept it",
		Long: `sign signs the artifact's manifest digest with KEY and stores the signature
beside it, in cosign's format: in the layout (push sends it along) or in
the registry, under the tag sha256-<hex>.sig. A system extension is signed
the same way; a tag that holds extensions for several OS releases (an
index) has each of them signed. Nodes whose config sets
update.publicKey install only artifacts signed by that key; cosign verifies
these signatures too (cosign verify --key PUB --insecure-ignore-tlog).

KEY is a PEM private key, ECDSA P-256 or Ed25519: from slate keygen, or
openssl genpkey -algorithm ed25519. Signing again with the same key
replaces its signature; other keys' signatures are kept. slate build
replaces a layout whole, signatures included: sign after the last build.

--bundle signs in the Sigstore bundle format instead, as cosign v3 does by
default: a DSSE-signed in-toto statement naming the manifest digest, in a
manifest that refers to the artifact (OCI 1.1 referrers API, or the tag
sha256-<hex> where the registry lacks it). Nodes accept both formats.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return errors.New("--key is required")
			}
			b, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			key, err := signature.ParsePrivateKey(b)
			if err != nil {
				return fmt.Errorf("%s: %w", keyFile, err)
			}
			opts := []artifact.Option{artifact.WithContext(cmd.Context())}
			if insecure {
				opts = append(opts, artifact.Insecure())
			}
			ref := args[0]
			if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
				ref = artifact.LayoutPrefix + ref // as push and inspect take a layout
			} else if err := source.CheckLocal(ref); err != nil {
				return err // a typo, not an image on Docker Hub
			}
			sign := func(ref string) error {
				if bundle {
					d, err := artifact.SignBundle(ref, key, opts...)
					if err != nil {
						return err
					}
					fmt.Printf("signed %s (%s) with key %s: a Sigstore bundle referring to it\n", ref, d, signature.KeyID(key.Public()))
					return nil
				}
				d, err := artifact.Sign(ref, key, identity, opts...)
				if err != nil {
					return err
				}
				fmt.Printf("signed %s (%s) with key %s: signatures under the tag %s\n", ref, d, signature.KeyID(key.Public()), signature.Tag(d))
				return nil
			}
			err = sign(ref)
			if !errors.Is(err, artifact.ErrIndex) {
				return err
			}
			// A tag of extensions for several OS releases: sign each.
			exts, err := artifact.Extensions(ref, opts...)
			if err != nil {
				return err
			}
			for _, a := range exts {
				if err := sign(a.Where()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "PEM private key (PKCS #8 or EC), ECDSA P-256 or Ed25519")
	c.Flags().StringVar(&identity, "identity", "", "repository the signature names (cosign's docker-reference; default: REF's)")
	c.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP to the registry")
	c.Flags().BoolVar(&bundle, "bundle", false, "sign in the Sigstore bundle format (cosign v3's default) instead of the .sig image")
	return c
}

func keygenCmd() *cobra.Command {
	var (
		useEd25519, secureBoot bool
		commonName             string
		extraDB                []string
	)
	c := &cobra.Command{
		Use:   "keygen (KEY | --secure-boot DIR)",
		Short: "Make a signing key: KEY (private, mode 0600) and KEY.pub (for update.publicKey), or Secure Boot keys in DIR",
		Long: `keygen writes a new private key to KEY (PKCS #8 PEM, mode 0600) and its public
key to KEY.pub (PKIX PEM): give KEY to slate sign and the contents of
KEY.pub to the nodes as update.publicKey. ECDSA P-256, cosign's default,
unless --ed25519. It never overwrites a file.

With --secure-boot it makes UEFI Secure Boot keys in DIR instead: an RSA
key and a self-signed certificate for each of PK, KEK and db (PK.key,
PK.crt...), and PK.auth, KEK.auth and db.auth, which systemd-boot enrolls
into firmware in Setup Mode. The image spec's secureBoot.key and
secureBoot.certificate name db.key and db.crt (slate build signs the boot
files with them), and secureBoot.enrollKeys names DIR. --extra-db-cert
adds certificates to db.auth, such as Microsoft's UEFI CA 2011, which
signs the option ROMs of many graphics and network cards: without it they
do not run under Secure Boot.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if secureBoot {
				if useEd25519 {
					return errors.New("--ed25519 makes an update-signing key; Secure Boot keys are RSA")
				}
				return secureBootKeygen(args[0], commonName, extraDB)
			}
			if commonName != "" || len(extraDB) > 0 {
				return errors.New("--common-name and --extra-db-cert go with --secure-boot")
			}
			var key crypto.Signer
			var err error
			if useEd25519 {
				_, key, err = ed25519.GenerateKey(rand.Reader)
			} else {
				key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			}
			if err != nil {
				return err
			}
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return err
			}
			pub, err := signature.MarshalPublicKey(key.Public())
			if err != nil {
				return err
			}
			priv := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			if err := writeNew(args[0], priv, 0o600); err != nil {
				return err
			}
			if err := writeNew(args[0]+".pub", pub, 0o644); err != nil {
				os.Remove(args[0])
				return err
			}
			fmt.Printf("wrote %s and %s (key %s)\n", args[0], args[0]+".pub", signature.KeyID(key.Public()))
			return nil
		},
	}
	c.Flags().BoolVar(&useEd25519, "ed25519", false, "an Ed25519 key instead of ECDSA P-256")
	c.Flags().BoolVar(&secureBoot, "secure-boot", false, "make UEFI Secure Boot keys (PK, KEK, db and their .auth files) in the directory DIR")
	c.Flags().StringVar(&commonName, "common-name", "", "with --secure-boot: the certificates' common name, followed by PK, KEK or db (default \"slate\")")
	c.Flags().StringArrayVar(&extraDB, "extra-db-cert", nil, "with --secure-boot: a certificate file (PEM or DER) whose certificates db.auth holds as well (repeatable)")
	return c
}

// secureBootKeygen makes a Secure Boot key set in dir.
func secureBootKeygen(dir, commonName string, extraFiles []string) error {
	var extra []*x509.Certificate
	for _, f := range extraFiles {
		certs, err := secureboot.LoadCertificates(f)
		if err != nil {
			return err
		}
		extra = append(extra, certs...)
	}
	if err := secureboot.GenerateKeySet(dir, commonName, extra); err != nil {
		return err
	}
	fmt.Printf("wrote in %s: %s\n", dir, strings.Join(secureboot.KeySetFiles, " "))
	if db, err := secureboot.LoadCertificates(filepath.Join(dir, "db.crt")); err == nil {
		fmt.Printf("db certificate %s (%s)", db[0].Subject, secureboot.Fingerprint(db[0]))
		if len(extra) > 0 {
			fmt.Printf("; db.auth also holds %d certificate(s) from --extra-db-cert", len(extra))
		}
		fmt.Println()
	}
	fmt.Printf("in the image spec: secureBoot.key: %s, secureBoot.certificate: %s, secureBoot.enrollKeys: %s\n",
		filepath.Join(dir, "db.key"), filepath.Join(dir, "db.crt"), dir)
	return nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, b []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}
