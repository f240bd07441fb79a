package builder

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/uki"
	"github.com/slate-os/slate/builder/rootfs"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/secureboot"
)

// SecureBootResult says what a Secure Boot build signed.
type SecureBootResult struct {
	// UKISize is the signed Unified Kernel Image's size in bytes.
	UKISize int64 `json:"ukiSize"`
	// SignedBy is the db certificate's subject, Fingerprint its SHA-256.
	SignedBy    string `json:"signedBy"`
	Fingerprint string `json:"fingerprint"`
	// SBAT is the image's generation for the SBAT component "slate".
	SBAT int `json:"sbat"`
	// Enroll says whether the disk carries keys for systemd-boot to enroll.
	Enroll bool `json:"enroll,omitempty"`
}

// sbFiles are a Secure Boot build's key and files: read first, then the
// signed boot files in the work directory.
type sbFiles struct {
	spec   spec.SecureBoot
	signer *secureboot.Signer
	// sbatLevel is the payload that raises a node's SBAT level to the
	// image's generation (boot.SBATLevelFile in the root).
	sbatLevel []byte
	// enroll maps ESP paths (loader/keys/auto/PK.auth...) to contents.
	enroll map[string][]byte

	uki, systemdBoot string
}

// prepareSecureBoot reads the db key and the files to enroll, and signs the
// SBAT level payload: every Secure Boot image carries its generation's,
// generation 1 too, so that the first good boot binds the node's level
// variable to the db key before anything else on the node could create it
// with a key of its own.
func prepareSecureBoot(sb spec.SecureBoot) (*sbFiles, error) {
	signer, err := secureboot.LoadSigner(sb.Key, sb.Certificate)
	if err != nil {
		return nil, fmt.Errorf("secureBoot: %w", err)
	}
	f := &sbFiles{spec: sb, signer: signer}
	if f.sbatLevel, err = secureboot.SBATLevelPayload(sb.SBATGeneration(), signer); err != nil {
		return nil, fmt.Errorf("secureBoot.sbat: %w", err)
	}
	if sb.EnrollKeys != "" {
		f.enroll = map[string][]byte{}
		for _, n := range enrollFiles {
			data, err := os.ReadFile(filepath.Join(sb.EnrollKeys, n))
			if err != nil {
				return nil, fmt.Errorf("secureBoot.enrollKeys: %w (slate keygen --secure-boot DIR writes %s)", err, strings.Join(enrollFiles, ", "))
			}
			f.enroll[EnrollDir+"/"+n] = data
		}
	}
	return f, nil
}

// sbatLevelPayload is nil for a build without Secure Boot.
func (f *sbFiles) sbatLevelPayload() []byte {
	if f == nil {
		return nil
	}
	return f.sbatLevel
}

// EnrollDir is where on the ESP systemd-boot finds the keys to enroll:
// loader/keys/<name>/{PK,KEK,db}.auth, each <name> a menu entry; with
// secure-boot-enroll force it enrolls the one named "auto" without asking.
const EnrollDir = "loader/keys/auto"

// enrollFiles are the files secureBoot.enrollKeys must hold.
var enrollFiles = []string{"PK.auth", "KEK.auth", "db.auth"}

// SBATLine is the SBAT entry of component "slate" at generation gen (CSV:
// component, generation, vendor, package, version, URL): a revocation of
// "slate" below a generation refuses every UKI that carries a lower one.
func SBATLine(gen int, version string) string {
	return fmt.Sprintf("slate,%d,slate,slate,%s,https://slate.dev/sbat\n", gen, version)
}

// secureBoot assembles the Unified Kernel Image (the image's systemd-stub,
// os-release, the slot-independent command line with the root hash, the
// initramfs and the kernel) and signs it and the image's systemd-boot with
// the db key. One UKI serves both slots and every node: the init finds the
// slot and partitions itself (initramfs/init/run), as a signed command
// line cannot name them.
func (b *build) secureBoot(f *sbFiles, bf *rootfs.Boot, initrd, cmdline, rootHash, version string) error {
	sb := f.spec
	if bf.Stub == "" {
		return fmt.Errorf("secureBoot: the image has no systemd-stub: looked for /%s (Debian: install systemd-boot-efi)", rootfs.StubPath)
	}
	var err error
	read := func(p string) []byte {
		if err != nil {
			return nil
		}
		var data []byte
		data, err = os.ReadFile(p)
		return data
	}
	stub, kernel, initramfs, loader := read(bf.Stub), read(bf.Kernel), read(initrd), read(bf.SystemdBoot)
	if err != nil {
		return err
	}
	img, err := uki.Assemble(stub, uki.Sections{
		OSRel:   bf.OSRelease,
		Cmdline: []byte(boot.UKICmdline(cmdline, rootHash, version, sb.SBATGeneration())),
		Uname:   []byte(bf.KernelRelease),
		SBAT:    []byte(SBATLine(sb.SBATGeneration(), version)),
		Initrd:  initramfs,
		Linux:   kernel,
	})
	if err != nil {
		return fmt.Errorf("secureBoot: the unified kernel image: %w", err)
	}
	if img, err = secureboot.Sign(img, f.signer); err != nil {
		return fmt.Errorf("secureBoot: signing the unified kernel image: %w", err)
	}
	if loader, err = secureboot.Sign(loader, f.signer); err != nil {
		return fmt.Errorf("secureBoot: signing systemd-boot: %w", err)
	}
	f.uki, f.systemdBoot = filepath.Join(b.work, boot.UKIName), filepath.Join(b.work, "systemd-bootx64.signed.efi")
	if err := os.WriteFile(f.uki, img, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(f.systemdBoot, loader, 0o644); err != nil {
		return err
	}
	b.res.SecureBoot = &SecureBootResult{
		UKISize: int64(len(img)), SignedBy: f.signer.Cert.Subject.String(), Fingerprint: secureboot.Fingerprint(f.signer.Cert),
		SBAT: sb.SBATGeneration(), Enroll: f.enroll != nil,
	}
	return nil
}
