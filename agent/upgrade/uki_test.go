package upgrade

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/uki"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/secureboot"
)

// efivarfs names of the variables planUKI reads (EFI_GLOBAL_VARIABLE and
// EFI_IMAGE_SECURITY_DATABASE_GUID).
const (
	secureBootVar = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
	dbVar         = "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"
)

// Fake systemd-stub and systemd-boot (trixie's version, newer than the test
// node's bookworm loader) as PE binaries, which can be signed.
var (
	fakeStub = testimage.EFI([2]string{".text", strings.Repeat("\xcc", 0x345)},
		[2]string{".sbat", "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n" +
			"systemd,1,The systemd Developers,systemd,252,https://systemd.io/\n"},
		[2]string{".sdmagic", "#### LoaderInfo: systemd-stub 252 ####"})
	peLoader = testimage.EFI([2]string{".text", strings.Repeat("\xcc", 0x345)},
		[2]string{".sdmagic", "#### LoaderInfo: systemd-boot 257.9-1~deb13u1 ####"})
)

// signatureList is an EFI_SIGNATURE_LIST of X.509 certificates: the data
// of a db variable, as firmware keeps it.
func signatureList(certs ...*x509.Certificate) []byte {
	// EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072, mixed-endian.
	x509GUID := []byte{0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72}
	owner := bytes.Repeat([]byte{0x42}, 16)
	var out []byte
	for _, c := range certs { // one list per certificate: sizes differ
		le := binary.LittleEndian
		sigSize := 16 + len(c.Raw)
		l := append([]byte(nil), x509GUID...)
		l = le.AppendUint32(l, uint32(28+sigSize)) // SignatureListSize
		l = le.AppendUint32(l, 0)                  // SignatureHeaderSize
		l = le.AppendUint32(l, uint32(sigSize))    // SignatureSize
		l = append(append(l, owner...), c.Raw...)
		out = append(out, l...)
	}
	return out
}

// efiVars makes an efivarfs directory: SecureBoot on or off, and a db
// holding certs (none: no db variable).
func efiVars(t *testing.T, on bool, certs ...*x509.Certificate) string {
	t.Helper()
	dir := t.TempDir()
	v := byte(0)
	if on {
		v = 1
	}
	if err := os.WriteFile(filepath.Join(dir, secureBootVar), []byte{6, 0, 0, 0, v}, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(certs) > 0 {
		if err := os.WriteFile(filepath.Join(dir, dbVar), append([]byte{0x27, 0, 0, 0}, signatureList(certs...)...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// ukiArt is a test artifact with a unified kernel image.
type ukiArt struct {
	cmdline func(b built) string           // the UKI's .cmdline; nil: boot.UKICmdline of the config's
	signer  *secureboot.Signer             // signs the UKI; nil: unsigned
	loader  []byte                         // the systemd-boot layer; nil: peLoader
	edit    func(b built, u []byte) []byte // changes the signed UKI
}

// makeUKIArtifact is makeArtifact's artifact (version 2.0) with a UKI of
// its kernel and initramfs, signed by imageKey. It returns the artifact
// and the UKI blob.
func makeUKIArtifact(t *testing.T, u ukiArt) (built, []byte) {
	t.Helper()
	if u.loader == nil {
		u.loader = peLoader
	}
	b := makeArtifact(t, art{loader: u.loader, unsigned: true})
	cmd := boot.UKICmdline("console=ttyS0", b.cfg.Root.RootHash, b.cfg.Version, 1)
	if u.cmdline != nil {
		cmd = u.cmdline(b)
	}
	blob, err := uki.Assemble(fakeStub, uki.Sections{
		OSRel: []byte("ID=slate\nVERSION_ID=2.0\n"), Cmdline: []byte(cmd), Uname: []byte(b.cfg.KernelRelease),
		Initrd: b.initrd, Linux: b.kernel,
	})
	if err != nil {
		t.Fatal(err)
	}
	if u.signer != nil {
		if blob, err = secureboot.Sign(blob, u.signer); err != nil {
			t.Fatal(err)
		}
	}
	if u.edit != nil {
		blob = u.edit(b, blob)
	}
	tmp := t.TempDir()
	file := func(name string, data []byte) artifact.Blob {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return artifact.Blob{Path: p}
	}
	b.dir = filepath.Join(tmp, "layout")
	b.ref = artifact.LayoutPrefix + b.dir
	if _, err := artifact.Write(b.dir, b.cfg, artifact.Blobs{Root: file("root", b.root), Kernel: file("kernel", b.kernel),
		Initramfs: file("initrd", b.initrd), SystemdBoot: file("systemd-boot", b.loader), UKI: file("uki", blob)}); err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.Sign(b.ref, imageKey, ""); err != nil {
		t.Fatal(err)
	}
	return b, blob
}

// TestUKI: under Secure Boot an upgrade installs only what the node's db
// trusts, and an artifact's UKI replaces its kernel and initramfs.
func TestUKI(t *testing.T) {
	keys := t.TempDir()
	if err := secureboot.GenerateKeySet(keys, "test", nil); err != nil {
		t.Fatal(err)
	}
	db, err := secureboot.LoadSigner(filepath.Join(keys, "db.key"), filepath.Join(keys, "db.crt"))
	if err != nil {
		t.Fatal(err)
	}
	// Another certificate, which signed neither the UKI nor the db's.
	pk, err := secureboot.LoadSigner(filepath.Join(keys, "PK.key"), filepath.Join(keys, "PK.crt"))
	if err != nil {
		t.Fatal(err)
	}
	signedLoader, err := secureboot.Sign(peLoader, db)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := boot.SystemdBootVersion(signedLoader); err != nil || v != "257.9-1~deb13u1" {
		t.Fatalf("the signed fake systemd-boot: version %q, %v", v, err)
	}

	t.Run("installed", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			vars   func(t *testing.T) string
			u      ukiArt
			logUKI string
		}{
			{"Secure Boot on, signed by the db key", func(t *testing.T) string { return efiVars(t, true, pk.Cert, db.Cert) },
				ukiArt{signer: db, loader: signedLoader},
				"upgrade: writing unified kernel image of slot b (signed by " + db.Cert.Subject.String() + ", in this node's db)"},
			{"Secure Boot off, unsigned", func(t *testing.T) string { return efiVars(t, false) },
				ukiArt{}, "upgrade: writing unified kernel image of slot b (Secure Boot is off here: its signature was not checked)"},
		} {
			t.Run(c.name, func(t *testing.T) {
				b, blob := makeUKIArtifact(t, c.u)
				n := newNode(t, "slate-a.conf")
				o := n.options(b.ref)
				o.EFIVars = c.vars(t)
				res, err := Run(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				if res.Entry != "slate-b+3.conf" || res.SystemdBoot != "257.9-1~deb13u1" || res.RootHash != b.cfg.Root.RootHash {
					t.Errorf("result %+v", res)
				}
				if !slices.Contains(n.log, c.logUKI) {
					t.Errorf("log:\n%s\nwant the line %q", strings.Join(n.log, "\n"), c.logUKI)
				}
				if slices.Contains(n.log, "upgrade: writing kernel and initramfs of slot b") {
					t.Errorf("log says it writes the kernel and initramfs:\n%s", strings.Join(n.log, "\n"))
				}

				if got, err := os.ReadFile(filepath.Join(n.esp.Dir, "slate/b/uki.efi")); err != nil || !bytes.Equal(got, blob) {
					t.Errorf("slate/b/uki.efi: %d bytes (%v), want the UKI blob's %d", len(got), err, len(blob))
				}
				for _, rel := range []string{"slate/b/vmlinuz", "slate/b/initramfs"} {
					if _, err := os.Stat(filepath.Join(n.esp.Dir, rel)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s: %v, want it absent (slot b's old one removed, none written)", rel, err)
					}
				}
				if got, _ := os.ReadFile(filepath.Join(n.esp.Dir, boot.FallbackEFI)); !bytes.Equal(got, b.loader) {
					t.Errorf("%s: %d bytes, want the artifact's systemd-boot (%d)", boot.FallbackEFI, len(got), len(b.loader))
				}
				dev, _ := os.ReadFile(n.device)
				if !bytes.HasPrefix(dev, b.root) {
					t.Error("the device does not hold the root")
				}

				entry, err := os.ReadFile(filepath.Join(n.esp.Dir, boot.EntriesDir, "slate-b+3.conf"))
				if err != nil {
					t.Fatal(err)
				}
				lines := strings.Split(string(entry), "\n")
				if !slices.Contains(lines, "efi /slate/b/uki.efi") {
					t.Errorf("entry without efi /slate/b/uki.efi:\n%s", entry)
				}
				for _, l := range lines {
					if strings.HasPrefix(l, "linux") || strings.HasPrefix(l, "initrd") {
						t.Errorf("entry has %q:\n%s", l, entry)
					}
				}
				infos, err := n.esp.Read()
				if err != nil {
					t.Fatal(err)
				}
				if in := infos[boot.SlotB]; in.State != slots.Trying || in.TriesLeft != Tries || in.Entry == nil || in.Entry.EFI != "/slate/b/uki.efi" || len(in.Problems) > 0 {
					t.Errorf("slot b: %+v", in)
				}
			})
		}
	})

	// Refusals change nothing.
	noUKI := makeArtifact(t, art{loader: signedLoader})
	for _, c := range []struct {
		name string
		vars func(t *testing.T) string
		u    *ukiArt // nil: noUKI
		want string
	}{
		{"Secure Boot on, the db holds another certificate", func(t *testing.T) string { return efiVars(t, true, pk.Cert) },
			&ukiArt{signer: db, loader: signedLoader},
			"its unified kernel image would not boot here: signed by " + db.Cert.Subject.String()},
		{"Secure Boot on, unsigned", func(t *testing.T) string { return efiVars(t, true, db.Cert) },
			&ukiArt{loader: signedLoader}, "its unified kernel image would not boot here: not signed"},
		{"Secure Boot on, no db variable", func(t *testing.T) string { return efiVars(t, true) },
			&ukiArt{signer: db, loader: signedLoader}, "Secure Boot is on, but the enrolled db cannot be read"},
		{"Secure Boot on, no UKI", func(t *testing.T) string { return efiVars(t, true, db.Cert) },
			nil, "has no unified kernel image, and this node boots with Secure Boot on: it would not boot"},
		{"Secure Boot on, its systemd-boot unsigned", func(t *testing.T) string { return efiVars(t, true, db.Cert) },
			&ukiArt{signer: db, loader: peLoader}, "its systemd-boot would replace the ESP's but would not boot here: not signed"},
		{"Secure Boot on, the UKI changed after signing", func(t *testing.T) string { return efiVars(t, true, db.Cert) },
			&ukiArt{signer: db, loader: signedLoader, edit: func(b built, u []byte) []byte {
				i := bytes.Index(u, b.kernel)
				u = bytes.Clone(u)
				u[i+100] ^= 1
				return u
			}}, "its unified kernel image would not boot here: has a signature by " + db.Cert.Subject.String()},
		{"another root hash", func(t *testing.T) string { return efiVars(t, false) },
			&ukiArt{cmdline: func(b built) string {
				return boot.UKICmdline("console=ttyS0", strings.Repeat("ab", 32), b.cfg.Version, 1)
			}}, "its unified kernel image carries root hash \"" + strings.Repeat("ab", 32) + "\", but config.root.rootHash is"},
		{"another root hash, signed", func(t *testing.T) string { return efiVars(t, true, db.Cert) },
			&ukiArt{signer: db, loader: signedLoader, cmdline: func(b built) string {
				return boot.UKICmdline("console=ttyS0", strings.Repeat("ab", 32), b.cfg.Version, 1)
			}}, "its unified kernel image carries root hash \"" + strings.Repeat("ab", 32) + "\""},
		{"another version", func(t *testing.T) string { return efiVars(t, false) },
			&ukiArt{cmdline: func(b built) string { return boot.UKICmdline("", b.cfg.Root.RootHash, "1.9", 1) }},
			`carries version "1.9", but config.version is "2.0"`},
		{"slate.slot", func(t *testing.T) string { return efiVars(t, false) },
			&ukiArt{cmdline: func(b built) string {
				return boot.UKICmdline("console=ttyS0 slate.slot=b", b.cfg.Root.RootHash, b.cfg.Version, 1)
			}},
			"its unified kernel image carries slate.slot=b: a unified kernel image must fit either slot of any node"},
		{"slate.config", func(t *testing.T) string { return efiVars(t, true, db.Cert) },
			&ukiArt{signer: db, loader: signedLoader, cmdline: func(b built) string {
				return boot.UKICmdline("slate.config=data:,{}", b.cfg.Root.RootHash, b.cfg.Version, 1)
			}}, "carries slate.config=data:,{}"},
		// The init reads the command line as the kernel does (quotes
		// removed, spaces inside them kept): so must the check.
		{"slate.config quoted", func(t *testing.T) string { return efiVars(t, false) },
			&ukiArt{cmdline: func(b built) string {
				return boot.UKICmdline(`"slate.config=data:,{ }"`, b.cfg.Root.RootHash, b.cfg.Version, 1)
			}}, "carries slate.config=data:,{ }"},
		{"slate.state half quoted", func(t *testing.T) string { return efiVars(t, false) },
			&ukiArt{cmdline: func(b built) string {
				return boot.UKICmdline(`slate."state=`+stateUUID+`"`, b.cfg.Root.RootHash, b.cfg.Version, 1)
			}}, "carries slate.state=" + stateUUID},
		{"root hash the init reads differs", func(t *testing.T) string { return efiVars(t, false) },
			&ukiArt{cmdline: func(b built) string {
				// An unterminated quote: the init's last slate.roothash is
				// the first one here, the words' last the config's.
				return "console=ttyS0 slate.version=2.0 slate.roothash=" + strings.Repeat("ab", 32) + ` "x slate.roothash=` + b.cfg.Root.RootHash
			}}, "its unified kernel image carries root hash \"" + strings.Repeat("ab", 32) + "\""},
		{"no .linux", func(t *testing.T) string { return efiVars(t, false) },
			&ukiArt{edit: func(b built, u []byte) []byte {
				u = bytes.Clone(u)
				copy(u[bytes.Index(u, []byte(".linux\x00")):], ".linu2")
				return u
			}}, "its unified kernel image has no .linux section"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := noUKI.ref
			if c.u != nil {
				b, _ := makeUKIArtifact(t, *c.u)
				ref = b.ref
			}
			n := newNode(t, "slate-a.conf")
			o := n.options(ref)
			o.EFIVars = c.vars(t)
			before := n.snapshot(t)
			_, err := Run(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant %q", err, c.want)
			}
			if !errors.Is(err, ErrRefused) {
				t.Errorf("%v: not a refusal", err)
			}
			if len(n.log) > 0 {
				t.Errorf("logged steps: %q", n.log)
			}
			after := n.snapshot(t)
			unchanged(t, before, after)
		})
	}
}
