package builder

import (
	"bytes"
	"crypto/x509"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/uki"
	"github.com/slate-os/slate/builder/esp"
	"github.com/slate-os/slate/builder/inspect"
	"github.com/slate-os/slate/builder/rootfs"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/internal/testtool"
	"github.com/slate-os/slate/secureboot"
)

// sbTestSBAT is the generation the tests ask for: not the default 1, so
// that a build ignoring secureBoot.sbat shows.
const sbTestSBAT = 3

// sbImage is testimage's base OS with the host's systemd-boot and
// systemd-stub (Debian's systemd-boot-efi), which a Secure Boot build
// signs and assembles a UKI from; the fake kernel is enough for that.
func sbImage(t *testing.T) v1.Image {
	t.Helper()
	stub := readFile(t, testtool.File(t, testtool.StubPath))
	loader := readFile(t, testtool.File(t, testtool.SystemdBootPath))
	es := append(testimage.Base(testimage.Options{NoSystemdBoot: true}),
		testimage.Dir("usr/lib/systemd"), testimage.Dir("usr/lib/systemd/boot"), testimage.Dir("usr/lib/systemd/boot/efi"),
		testimage.File(rootfs.SystemdBootPath, loader),
		testimage.File(rootfs.StubPath, stub))
	img, err := testimage.Image(es)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// sbKeys makes a Secure Boot key set (slate keygen --secure-boot) and
// returns its directory and the db certificate.
func sbKeys(t *testing.T) (string, *x509.Certificate) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := secureboot.GenerateKeySet(dir, "slate test", nil); err != nil {
		t.Fatal(err)
	}
	certs, err := secureboot.LoadCertificates(filepath.Join(dir, "db.crt"))
	if err != nil || len(certs) != 1 {
		t.Fatalf("db.crt: %v (%d certificates)", err, len(certs))
	}
	return dir, certs[0]
}

// sbSpec is a Secure Boot build into dir with the keys in keys, small
// slots so that the raw disk is quick to hash.
func sbSpec(dir, keys string) spec.Spec {
	s := testSpec(dir)
	s.Disk.SlotSize, s.Disk.ESPSize = 32<<20, 64<<20
	s.SecureBoot = spec.SecureBoot{
		Key: filepath.Join(keys, "db.key"), Certificate: filepath.Join(keys, "db.crt"),
		EnrollKeys: keys, SBAT: sbTestSBAT,
	}
	return s
}

func layerBytes(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	if l == nil {
		t.Fatal("no such layer")
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildSecureBoot(t *testing.T) {
	need(t, "tar2sqfs", "unsquashfs", "sbverify")
	img := sbImage(t)
	keys, dbCert := sbKeys(t)
	dir := t.TempDir()
	s := sbSpec(dir, keys)
	res, err := buildImage(t, img, s)
	if err != nil {
		t.Fatal(err)
	}
	if sb := res.SecureBoot; sb == nil || sb.SignedBy != dbCert.Subject.String() || sb.Fingerprint != secureboot.Fingerprint(dbCert) ||
		sb.SBAT != sbTestSBAT || !sb.Enroll {
		t.Errorf("result's secure boot %+v, want signed by %s, sbat %d, enroll", sb, dbCert.Subject, sbTestSBAT)
	}

	// The ESP, read back as slate inspect reads it.
	f, err := os.Open(res.Disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	espPart := res.Plan.Part(boot.NumESP)
	fs, err := esp.Open(f, espPart.Start, espPart.Size)
	if err != nil {
		t.Fatal(err)
	}
	espFile := func(p string) []byte {
		t.Helper()
		b, err := fs.ReadFile(p)
		if err != nil {
			t.Fatalf("ESP: %v", err)
		}
		return b
	}
	ukiPath := boot.SlotA.ESPDir() + "/" + boot.UKIName
	ukiImg, loader := espFile(ukiPath), espFile(boot.FallbackEFI)
	if res.SecureBoot != nil && res.SecureBoot.UKISize != int64(len(ukiImg)) {
		t.Errorf("result's UKI size %d, the ESP's %d", res.SecureBoot.UKISize, len(ukiImg))
	}
	// No separate kernel and initramfs: the UKI carries them.
	if names, err := fs.ReadDir(boot.SlotA.ESPDir()); err != nil || !slices.Equal(names, []string{boot.ReleaseName, boot.UKIName}) {
		t.Errorf("%s on the ESP: %v (%v), want %s and %s alone", boot.SlotA.ESPDir(), names, err, boot.ReleaseName, boot.UKIName)
	}
	entry := string(espFile(boot.EntriesDir + "/slate-a.conf"))
	if !slices.Contains(strings.Split(entry, "\n"), "efi "+boot.SlotA.UKIPath()) {
		t.Errorf("slate-a.conf lacks the line efi %s:\n%s", boot.SlotA.UKIPath(), entry)
	}
	for _, l := range strings.Split(entry, "\n") {
		if strings.HasPrefix(l, "linux ") || strings.HasPrefix(l, "initrd ") {
			t.Errorf("slate-a.conf names a kernel or initramfs beside the UKI: %q", l)
		}
	}
	if conf := string(espFile(boot.LoaderConf)); !slices.Contains(strings.Split(conf, "\n"), "secure-boot-enroll force") {
		t.Errorf("loader.conf lacks secure-boot-enroll force:\n%s", conf)
	}
	for _, n := range []string{"PK.auth", "KEK.auth", "db.auth"} {
		if got := espFile(EnrollDir + "/" + n); !bytes.Equal(got, []byte(readFile(t, filepath.Join(keys, n)))) {
			t.Errorf("%s/%s on the ESP is not the key set's %s", EnrollDir, n, n)
		}
	}

	// Both boot files verify against the db certificate: ours and sbverify.
	for name, pe := range map[string][]byte{ukiPath: ukiImg, boot.FallbackEFI: loader} {
		if c, err := secureboot.Verify(pe, []*x509.Certificate{dbCert}); err != nil || !c.Equal(dbCert) {
			t.Errorf("%s: secureboot.Verify: %v", name, err)
		}
		p := filepath.Join(t.TempDir(), "pe.efi")
		if err := os.WriteFile(p, pe, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("sbverify", "--cert", filepath.Join(keys, "db.crt"), p).CombinedOutput(); err != nil || !strings.Contains(string(out), "Signature verification OK") {
			t.Errorf("%s: sbverify: %v\n%s", name, err, out)
		}
	}
	// Nor against another key's.
	_, other := sbKeys(t)
	if _, err := secureboot.Verify(ukiImg, []*x509.Certificate{other}); err == nil {
		t.Error("the UKI verifies against an unrelated certificate")
	}

	// The UKI's sections: the slot-independent command line, signed.
	sec, err := uki.Read(ukiImg)
	if err != nil {
		t.Fatal(err)
	}
	cmdline := string(sec.Cmdline)
	if want := boot.UKICmdline(s.Cmdline(), res.RootHash, "1.0.0", sbTestSBAT); cmdline != want {
		t.Errorf("UKI command line %q, want %q", cmdline, want)
	}
	args := strings.Fields(cmdline)
	for _, want := range []string{boot.ArgRootHash + "=" + res.RootHash, boot.ArgVersion + "=1.0.0", boot.ArgSBAT + "=" + strconv.Itoa(sbTestSBAT)} {
		if !slices.Contains(args, want) {
			t.Errorf("UKI command line lacks %s: %s", want, cmdline)
		}
	}
	for _, a := range args {
		for _, bad := range []string{boot.ArgSlot, boot.ArgRoot, boot.ArgState} {
			if strings.HasPrefix(a, bad+"=") {
				t.Errorf("UKI command line names a slot or partition (%s): %s", a, cmdline)
			}
		}
	}
	if string(sec.Linux) != "fake kernel "+testimage.KernelRelease+"\n" || string(sec.Uname) != testimage.KernelRelease ||
		!strings.Contains(string(sec.OSRel), "ID=testos") || int64(len(sec.Initrd)) != res.InitramfsSize {
		t.Errorf("UKI sections: .linux %q .uname %q .osrel %q, .initrd %d bytes (initramfs %d)", sec.Linux, sec.Uname, sec.OSRel, len(sec.Initrd), res.InitramfsSize)
	}
	if sbat := string(sec.SBAT); !strings.Contains(sbat, strings.TrimSpace(SBATLine(sbTestSBAT, "1.0.0"))) || !strings.HasPrefix(sbat, "sbat,1,") {
		t.Errorf("UKI .sbat lacks slate's entry:\n%s", sbat)
	}

	// slate inspect's view: the UKI signed by the db certificate, the keys to enroll.
	rep, err := inspect.Disk(res.Disk)
	if err != nil {
		t.Fatal(err)
	}
	a := rep.Slots[0]
	if a.UKI == nil || !slices.Equal(a.UKI.SignedBy, []string{dbCert.Subject.String()}) || a.UKI.Cmdline != cmdline || len(a.Problems) != 0 {
		t.Errorf("slot A: UKI %+v, problems %v", a.UKI, a.Problems)
	}
	if a.Initramfs == nil || !reflect.DeepEqual(a.Initramfs.Modules, res.Initramfs) {
		t.Errorf("slot A's initramfs (inside the UKI) %+v, want modules %v", a.Initramfs, res.Initramfs)
	}
	if want := []string{EnrollDir + "/KEK.auth", EnrollDir + "/PK.auth", EnrollDir + "/db.auth"}; !slices.Equal(rep.Enroll, want) {
		t.Errorf("inspect's enroll %v, want %v", rep.Enroll, want)
	}

	// The root carries the signed payload that sets the node's SBAT level.
	slotImg := region(t, res.Disk, res.Plan.Part(boot.NumRootA).Start, res.RootSize)
	payload := run(t, "unsquashfs", "-cat", slotImg, boot.SBATLevelFile)
	if gen, err := secureboot.PayloadGeneration([]byte(payload)); err != nil || gen != sbTestSBAT {
		t.Errorf("/%s: generation %d (%v), want %d", boot.SBATLevelFile, gen, err, sbTestSBAT)
	}

	// The artifact carries the same UKI and signed systemd-boot.
	art, err := artifact.Open("oci:" + res.Artifact)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(layerBytes(t, art.UKI), ukiImg) {
		t.Error("the artifact's UKI layer differs from the ESP's uki.efi")
	}
	if !bytes.Equal(layerBytes(t, art.SystemdBoot), loader) {
		t.Error("the artifact's systemd-boot layer differs from the ESP's BOOTX64.EFI")
	}
	// The signature keeps systemd-boot's version readable.
	if rel := a.Release; rel == nil || rel.SystemdBootVersion == "" || art.Config.SystemdBootVersion != rel.SystemdBootVersion {
		t.Errorf("systemd-boot version: artifact %q, release %+v", art.Config.SystemdBootVersion, rel)
	}
}

// Signing is deterministic: the same image, spec and keys give the same
// disk and artifact, byte for byte.
func TestBuildSecureBootIsReproducible(t *testing.T) {
	need(t, "tar2sqfs")
	img := sbImage(t)
	keys, _ := sbKeys(t)
	var disks [2][]byte
	var arts [2]map[string]string
	for i := range disks {
		res, err := buildImage(t, img, sbSpec(t.TempDir(), keys))
		if err != nil {
			t.Fatal(err)
		}
		disks[i], arts[i] = sum(t, res.Disk), treeSums(t, res.Artifact)
	}
	if !bytes.Equal(disks[0], disks[1]) {
		t.Error("two Secure Boot builds gave different disks")
	}
	if len(arts[0]) == 0 || !reflect.DeepEqual(arts[0], arts[1]) {
		t.Error("two Secure Boot builds gave different artifacts")
	}
}

func TestBuildSecureBootErrors(t *testing.T) {
	need(t, "tar2sqfs")
	keys, _ := sbKeys(t)
	otherKeys, _ := sbKeys(t)
	partial := filepath.Join(t.TempDir(), "enroll")
	os.MkdirAll(partial, 0o755)
	for _, n := range []string{"PK.auth", "KEK.auth"} {
		os.WriteFile(filepath.Join(partial, n), []byte(readFile(t, filepath.Join(keys, n))), 0o644)
	}
	// testimage's node image has a (fake) systemd-boot and no systemd-stub.
	noStub, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	withStub := sbImage(t)
	for _, tc := range []struct {
		name  string
		img   v1.Image
		tweak func(*spec.SecureBoot)
		want  string
	}{
		{"no stub", noStub, nil, "the image has no systemd-stub: looked for /" + rootfs.StubPath},
		{"certificate of another key", withStub, func(sb *spec.SecureBoot) { sb.Certificate = filepath.Join(otherKeys, "db.crt") }, "is not for the key"},
		{"enroll keys incomplete", withStub, func(sb *spec.SecureBoot) { sb.EnrollKeys = partial }, "secureBoot.enrollKeys: open " + filepath.Join(partial, "db.auth")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := sbSpec(dir, keys)
			if tc.tweak != nil {
				tc.tweak(&s.SecureBoot)
			}
			_, err := buildImage(t, tc.img, s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("a failed build left %v in the output directory", left)
			}
		})
	}
}
