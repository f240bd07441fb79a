// Package secureboot proves Secure Boot under QEMU: OVMF's Secure Boot
// build, starting in Setup Mode with no keys; a slate disk that carries
// its own keys for systemd-boot to enroll on first boot; a signed Unified
// Kernel Image per slot. One machine runs the whole story, so its
// variable store (the enrolled keys, the boot counters) carries from boot
// to boot:
//
//  1. systemd-boot enrolls the keys and resets; from then on the firmware
//     boots only what the test's db key signed, and the kernel says
//     "Secure boot enabled".
//  2. The agent refuses an artifact whose UKI is unsigned before it writes
//     anything, installs the signed v2, and init=/bin/sh is added to v2's
//     entry.
//  3. v2 boots its signed command line (the entry's init=/bin/sh has no
//     effect); being SBAT generation 2, it raises the node's level once
//     good, and slate rollback refuses v1. Slot A's UKI gets one byte of
//     its root hash changed and is made the next boot, counted.
//  4. The firmware refuses it, boot counting falls back to slot B.
//  5. Slot A's own UKI, counted again: v1's init refuses to run below the
//     node's SBAT level, and boot counting falls back to v2 again.
package secureboot

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/uki"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/secureboot"
	"github.com/slate-os/slate/vm"
	"github.com/slate-os/slate/vm/vmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnode.Cleanup()
	os.Exit(code)
}

// prelude is shell every boot's script starts with.
const prelude = `
waithealth() { i=0; while [ $i -lt 120 ]; do
  s=$(systemctl show -p ActiveState --value slate-health.service); [ "$s" = active ] || [ "$s" = failed ] && break
  sleep 1; i=$((i+1)); done; }
echo "SB=$(od -An -t u1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | tr -d ' ')"
echo "KMSG=$(dmesg | grep -o 'Secure boot enabled' | head -1)"
echo "CMDLINE=$(cat /proc/cmdline)"
` + testnode.PrintRecord + `mkdir -p /run/art && mount -o ro LABEL=slatesb /run/art
`

func TestSecureBoot(t *testing.T) {
	testnode.Reference(t) // skips without QEMU or the reference image
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := secureboot.GenerateKeySet(keys, "slate test", nil); err != nil {
		t.Fatal(err)
	}
	sign := func(s *spec.Spec) {
		s.SecureBoot = spec.SecureBoot{Key: filepath.Join(keys, "db.key"), Certificate: filepath.Join(keys, "db.crt"), EnrollKeys: keys}
		s.Update.AllowUnsigned = true // the update signature is not what this test is about
	}
	t0 := time.Now()
	v1 := testnode.BuildVariant(t, testnode.Variant{Name: "sb-v1", Version: "sb-1", Disk: true, Tweak: sign,
		Entries: []testimage.Entry{testimage.Dir("etc"), testimage.File("etc/sb-marker", "1\n")}})
	v1Build := time.Since(t0)
	v2 := testnode.BuildVariant(t, testnode.Variant{Name: "sb-v2", Version: "sb-2", Tweak: func(s *spec.Spec) { sign(s); s.SecureBoot.SBAT = 2 },
		Entries: []testimage.Entry{testimage.Dir("etc"), testimage.File("etc/sb-marker", "2\n")}})
	if v1.SecureBoot == nil || v2.SecureBoot == nil {
		t.Fatal("the builds say nothing of Secure Boot")
	}
	t.Logf("UKI %d bytes, signed by %s; v1 built in %s (disk and artifact)", v1.SecureBoot.UKISize, v1.SecureBoot.SignedBy, v1Build.Round(time.Second))
	checkSbverify(t, v1.Artifact, keys)

	// The artifacts reach the guest on a second disk: v2 as built, and v2
	// with its UKI's signature stripped.
	arts := filepath.Join(dir, "arts")
	if err := os.Mkdir(arts, 0o755); err != nil {
		t.Fatal(err)
	}
	copyLayout(t, v2.Artifact, filepath.Join(arts, "v2"))
	unsigned(t, v2.Artifact, filepath.Join(arts, "v2-unsigned"))
	artDisk := filepath.Join(dir, "arts.img")
	testnode.Cmd(t, "mkfs.ext4", "-q", "-L", "slatesb", "-d", arts, artDisk, "1G")

	m := vmtest.Start(t, vm.Config{
		Disk: v1.Disk, DiskFormat: "raw", SecureBoot: true, MemoryMiB: 1536,
		Disks:        []vm.Disk{{Path: artDisk, Format: "raw"}},
		FwCfgStrings: map[string]string{testnode.FwCfgTest: "echo none"},
	})
	// next waits for the guest to reboot (QEMU exits), then powers the
	// same machine on again, its variable store kept, with script.
	next := func(script string) {
		t.Helper()
		if _, err := m.WaitExit(vm.Scale(3 * time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := m.SetFwCfgString(testnode.FwCfgTest, script, false); err != nil {
			t.Fatal(err)
		}
		if err := m.Boot(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	// 1. systemd-boot enrolls the disk's keys and resets the machine.
	tBoot := time.Now()
	if _, err := m.Expect("Enrolling secure boot keys", vm.Scale(3*time.Minute)); err != nil {
		t.Fatalf("systemd-boot did not enroll the disk's keys: %v", err)
	}
	// 2. Slot A boots v1 under Secure Boot. The agent refuses v2 with an
	// unsigned UKI and installs the signed one; init=/bin/sh is added to
	// its entry.
	next(prelude + `waithealth
slate status
slate upgrade --no-reboot oci:/run/art/v2-unsigned; echo "UNSIGNED_RC=$?"
slate upgrade --no-reboot oci:/run/art/v2; echo "SIGNED_RC=$?"
slate esp mount >/dev/null
e=$(ls /run/slate/esp/loader/entries/ | grep '^slate-b+')
sed -i 's/^options .*/& init=\/bin\/sh/' /run/slate/esp/loader/entries/$e
grep ^options /run/slate/esp/loader/entries/$e | sed 's/^/ENTRY=/'
sync
` + testnode.ThenReboot)
	r := testnode.Run(t, m, vm.Scale(6*time.Minute))
	t.Logf("boot 2 (slot A, v1), %s after power-on:\n%s", time.Since(tBoot).Round(time.Second), strings.Join(r.Lines, "\n"))
	want(t, r, "SB", "1")
	want(t, r, "KMSG", "Secure boot enabled")
	want(t, r, "SLOT", "a")
	if rc := r.Get("UNSIGNED_RC"); rc == "0" || rc == "" {
		t.Errorf("the agent installed v2 with an unsigned UKI (rc %q)", rc)
	}
	if !has(r, "would not boot here: not signed") {
		t.Errorf("the agent's refusal of the unsigned UKI is not in the output")
	}
	want(t, r, "SIGNED_RC", "0")
	if !strings.Contains(r.Get("ENTRY"), "init=/bin/sh") {
		t.Fatalf("the test did not get init=/bin/sh into slot b's entry: %q", r.Get("ENTRY"))
	}
	if !has(r, "secure boot: on") {
		t.Errorf("slate status does not say Secure Boot is on")
	}

	// 3. v2 on slot B, its entry's init=/bin/sh ignored: the signed
	// command line is what the kernel gets. v2 is SBAT generation 2: once
	// it is good the node revokes generation 1, and slot A's v1 may no
	// longer be rolled back to. Then, as someone who can write the ESP
	// could: one byte of the root hash in slot A's UKI changed, and slot A
	// made the next boot, with one try.
	next(prelude + `waithealth
slate status
echo "MARKER=$(cat /etc/sb-marker)"
slate rollback --no-reboot; echo "ROLLBACK_RC=$?"
slate esp mount >/dev/null
f=/run/slate/esp/slate/a/uki.efi
cp $f /var/lib/uki-a.efi
off=$(grep -abo 'slate.roothash=' $f | head -1 | cut -d: -f1)
off=$((off+15))
c=$(dd if=$f bs=1 skip=$off count=1 2>/dev/null)
n=0; [ "$c" = 0 ] && n=1
printf "$n" | dd of=$f bs=1 seek=$off conv=notrunc 2>/dev/null && echo "TAMPERED=1"
cd /run/slate/esp/loader/entries && a=$(ls | grep '^slate-a') && sed -i 's/^version .*/version 99/' $a && mv $a slate-a+1.conf
sync
` + testnode.ThenReboot)
	r = testnode.Run(t, m, vm.Scale(5*time.Minute))
	t.Logf("boot 3 (slot B, v2):\n%s", strings.Join(r.Lines, "\n"))
	want(t, r, "SB", "1")
	want(t, r, "SLOT", "b")
	want(t, r, "VERSION", "sb-2")
	want(t, r, "MARKER", "2")
	if c := r.Get("CMDLINE"); strings.Contains(c, "init=/bin/sh") || !strings.Contains(c, "slate.roothash=") {
		t.Errorf("the kernel's command line is not the signed one: %s", c)
	}
	if !has(r, "signed by") {
		t.Errorf("slate status does not say who signed the running UKI")
	}
	if !consoleHas(m, "SBAT level raised from 1 to 2") || !has(r, "SBAT level 2") {
		t.Errorf("the node's SBAT level was not raised to v2's generation")
	}
	if rc := r.Get("ROLLBACK_RC"); rc == "0" || !has(r, "revoked every generation below 2") {
		t.Errorf("slate rollback to the revoked v1 was not refused (rc %q)", rc)
	}
	want(t, r, "TAMPERED", "1")

	// 4. The firmware refuses slot A's UKI; its try spent, systemd-boot
	// boots slot B, and nothing marks the refused entry good. Then slot A
	// gets its own UKI back, with one try again.
	next(prelude + `slate esp mount >/dev/null; ls /run/slate/esp/loader/entries/ | sed 's/^/ENTRYFILE=/'
cp /var/lib/uki-a.efi /run/slate/esp/slate/a/uki.efi
cd /run/slate/esp/loader/entries && a=$(ls | grep '^slate-a') && mv $a slate-a+1.conf
sync
` + testnode.ThenReboot)
	refused, resets := waitRunner(t, m)
	r = testnode.Started(t, m)
	t.Logf("boot 4 (after %d refusals, %d resets):\n%s", refused, resets, strings.Join(r.Lines, "\n"))
	if refused == 0 {
		t.Errorf("the firmware never refused the tampered UKI")
	}
	want(t, r, "SLOT", "b")
	if !has(r, "ENTRYFILE=slate-a+0-1.conf") {
		t.Errorf("slot a's entry is not marked bad")
	}
	if !consoleHas(m, "sbat: generation 2, the node's level 2") {
		t.Errorf("v2's init did not check its generation against the node's level")
	}

	// 5. v1's own UKI boots, but its init refuses to run below the node's
	// SBAT level; its try spent, systemd-boot boots slot B again (seen on
	// the console: the next kernel is v2's, with no need to wait for it).
	if _, err := m.WaitExit(vm.Scale(3 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	fatal, err := m.Expect(regexp.MustCompile(`FATAL: sbat: .*`), vm.Scale(3*time.Minute))
	if err != nil {
		t.Fatalf("v1's init did not refuse its revoked generation: %v", err)
	}
	t.Logf("v1: %s", strings.TrimSpace(fatal.Line))
	if !strings.Contains(fatal.Line, "SBAT generation 1 of slate, but the node has revoked every generation below 2") {
		t.Errorf("the init's refusal: %s", fatal.Line)
	}
	// The init reboots (a counted boot); QEMU exits on it.
	if _, err := m.WaitExit(vm.Scale(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect(regexp.MustCompile(`Command line: .*slate\.version=sb-2`), vm.Scale(2*time.Minute)); err != nil {
		t.Errorf("after v1's refused boot, v2 did not boot: %v", err)
	}
	t.Logf("the whole story took %s", time.Since(tBoot).Round(time.Second))
}

// waitRunner waits for the test runner to start after boots the firmware
// refuses: it counts systemd-boot's "Error loading" lines, and resets the
// machine when nothing moves (after a refusal systemd-boot returns to the
// firmware, which tries its other boot options and then waits in its menu:
// a reset is what a watchdog or an operator would do).
func waitRunner(t *testing.T, m *vm.Machine) (refused, resets int) {
	t.Helper()
	progress := regexp.MustCompile(testnode.Begin + `|Linux version|Error loading`)
	kernel, reboots := false, 0
	for {
		wait := 30 * time.Second
		if kernel {
			wait = 4 * time.Minute // a kernel runs: on its way to the runner
		}
		mt, err := m.Expect(progress, vm.Scale(wait))
		switch {
		case err != nil && !m.Running():
			// The guest rebooted (QEMU exits on a reboot here): power on again.
			if reboots++; reboots > 8 {
				t.Fatalf("the node never came back: %v", err)
			}
			if _, err := m.WaitExit(time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := m.Boot(t.Context()); err != nil {
				t.Fatal(err)
			}
			kernel = false
		case err != nil && kernel:
			t.Fatalf("a kernel started but the runner did not: %v", err)
		case err != nil:
			if resets++; resets > 8 {
				t.Fatalf("the node never came back: %v", err)
			}
			if err := m.SystemReset(); err != nil {
				t.Fatal(err)
			}
			if _, err := m.WaitExit(time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := m.Boot(t.Context()); err != nil {
				t.Fatal(err)
			}
			kernel = false
		case strings.Contains(mt.Line, testnode.Begin):
			return refused, resets
		case strings.Contains(mt.Line, "Linux version"):
			kernel = true
		default:
			refused++
			t.Logf("refused: %s", strings.TrimSpace(mt.Line))
		}
	}
}

// consoleHas says whether the console log holds s.
func consoleHas(m *vm.Machine, s string) bool {
	b, err := os.ReadFile(m.ConsoleLog())
	return err == nil && bytes.Contains(b, []byte(s))
}

func has(r *testnode.Result, s string) bool {
	for _, l := range r.Lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func want(t *testing.T, r *testnode.Result, key, v string) {
	t.Helper()
	got := r.Get(key)
	switch key {
	case "SLOT":
		got = testnode.Record(t, r).Slot
	case "VERSION":
		got = testnode.Record(t, r).Version
	}
	if got != v {
		t.Errorf("%s = %q, want %q", key, got, v)
	}
}

// checkSbverify checks the artifact's UKI and systemd-boot with sbsigntool.
func checkSbverify(t *testing.T, layout, keys string) {
	t.Helper()
	a, err := artifact.Open("oci:" + layout)
	if err != nil {
		t.Fatal(err)
	}
	if a.UKI == nil {
		t.Fatalf("%s has no unified kernel image", layout)
	}
	for _, l := range []v1.Layer{a.UKI, a.SystemdBoot} {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		testnode.Cmd(t, "sbverify", "--cert", filepath.Join(keys, "db.crt"), filepath.Join(layout, "blobs", d.Algorithm, d.Hex))
	}
}

// copyLayout copies an OCI layout directory.
func copyLayout(t *testing.T, from, to string) {
	t.Helper()
	testnode.Cmd(t, "cp", "-a", from, to)
}

// unsigned writes the artifact at from, its UKI's Authenticode signature
// removed, to the layout to: what an attacker or a careless pipeline would
// publish.
func unsigned(t *testing.T, from, to string) {
	t.Helper()
	a, err := artifact.Open("oci:" + from)
	if err != nil {
		t.Fatal(err)
	}
	blob := func(l v1.Layer) string {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(from, "blobs", d.Algorithm, d.Hex)
	}
	data, err := os.ReadFile(blob(a.UKI))
	if err != nil {
		t.Fatal(err)
	}
	stripped := filepath.Join(t.TempDir(), "uki.efi")
	if err := os.WriteFile(stripped, stripSignature(t, data), 0o644); err != nil {
		t.Fatal(err)
	}
	c := a.Config
	c.SystemdBootVersion = ""
	_, err = artifact.Write(to, c, artifact.Blobs{
		Root: artifact.Blob{Path: blob(a.Root)}, Kernel: artifact.Blob{Path: blob(a.Kernel)}, Initramfs: artifact.Blob{Path: blob(a.Initramfs)},
		SystemdBoot: artifact.Blob{Path: blob(a.SystemdBoot)}, UKI: artifact.Blob{Path: stripped},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// stripSignature drops a PE image's certificate table (data directory 4),
// which holds its Authenticode signatures, at the end of the file.
func stripSignature(t *testing.T, pe []byte) []byte {
	t.Helper()
	peOff := int(binary.LittleEndian.Uint32(pe[0x3c:]))
	opt := peOff + 24
	if binary.LittleEndian.Uint16(pe[opt:]) != 0x20b {
		t.Fatal("not a PE32+ image")
	}
	dir := opt + 112 + 4*8 // PE32+ data directories start at 112; entry 4
	off := binary.LittleEndian.Uint32(pe[dir:])
	if off == 0 {
		t.Fatal("the UKI has no signature to strip")
	}
	out := bytes.Clone(pe[:off])
	binary.LittleEndian.PutUint64(out[dir:], 0)
	if _, err := uki.Read(out); err != nil {
		t.Fatalf("the stripped UKI: %v", err)
	}
	return out
}
