package upgrade_test

import (
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/qemu-tests/testnode"
)

// TestUpgradeAcrossReleases upgrades a node built from Debian bookworm (the
// generic kernel 6.1, systemd 252, systemd-boot 252, as debootstrap leaves
// it) to Debian trixie (kernel 6.12, systemd 257 and its systemd-boot)
// through the registry: the trixie slot boots, passes its health check and
// is blessed; then `slate rollback` takes the node back to bookworm, which
// boots as good as before. /var (the node's own file and the images' apt
// downloads) is kept throughout.
//
// The node config names one extension reference whose tag holds a build for
// each release (an index): bookworm runs bookworm's, the upgrade fetches
// trixie's before it writes the slot, trixie boots with it merged, and the
// rollback finds bookworm's again.
func TestUpgradeAcrossReleases(t *testing.T) {
	testnode.Matrix(t, "bookworm-generic")
	testnode.Matrix(t, "trixie")
	begin(t)
	from, to := image(t, "bookworm"), image(t, "trixie")
	reg := testRegistry(t)
	reg.push(t, extLayout(t, "hello", "hello-12", bookwormRelease), "ext/hello")
	trixieExt := extLayout(t, "hello", "hello-13", trixieRelease)
	reg.push(t, trixieExt, "ext/hello")
	te, err := artifact.OpenExtension(artifact.LayoutPrefix + trixieExt)
	if err != nil {
		t.Fatal(err)
	}
	trixieLayer, err := te.ExtensionImage.Digest()
	if err != nil {
		t.Fatal(err)
	}
	const facts = `
echo "KERNEL=$(uname -r)"
echo "SYSTEMD=$(systemctl --version | head -n1)"
echo "LOADER=$(tr -d '\000' < /sys/firmware/efi/efivars/LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f 2>/dev/null | cut -c2-)"
echo "FAILED=$(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
echo "HELLO=$(hello-hello 2>&1)"
`
	first := probe + `
waitnet
systemctl start slate-sysext-fetch.service
` + facts + `
mkdir -p /var/lib/slate-test && head -c 1048576 /dev/urandom > /var/lib/slate-test/kept && sync
varsum
status
agent UPGRADE slate upgrade ` + to.Ref + "\n"
	start := time.Now()
	// An image as debootstrap leaves it enables no network service: the
	// config does, as a user's would.
	networkd := "systemd:\n  units:\n    - name: systemd-networkd.service\n      enabled: true\n" +
		"extensions:\n  - " + reg.GuestRef("ext/hello:1") + "\n"
	m := startNodeConfig(t, "bookworm-to-trixie", from.Disk, "raw", "", first, nodeConfigFor(reg.Source(), networkd))
	expectStep(t, m, "upgrade: slot b holds", upgradeTimeout)
	b1 := waitBoot(t, m, exitTimeout)
	if b1.Script == nil {
		t.Fatalf("the bookworm boot's script did not run; console:\n%s", tail(b1.Lines, 60))
	}
	sum := b1.Script.Get("VARSUM")
	t.Logf("bookworm: kernel %s, %s, %s", b1.Script.Get("KERNEL"), b1.Script.Get("SYSTEMD"), b1.Script.Get("LOADER"))
	if b1.Exit.Reason != "guest-reset" {
		t.Fatalf("the bookworm boot ended with %s, want the upgrade's reboot; script output:\n%s", b1.Exit, strings.Join(b1.Script.Lines, "\n"))
	}
	if got := b1.Script.Get("HELLO"); got != "hello-12" {
		t.Errorf("bookworm: hello-hello printed %q, want hello-12 (bookworm's build of the extension)", got)
	}
	if n := reg.Gets("ext/hello", trixieLayer); n != 1 {
		t.Errorf("the upgrade asked for trixie's extension image %d times before it rebooted, want once", n)
	}

	// trixie on trial in slot B: judged, blessed, then rolled back by hand.
	nextBoot(t, m, probe+facts+"varsum\nstatus\nagent ROLLBACK slate rollback\n")
	b2 := waitBoot(t, m, exitTimeout)
	if b2.Script == nil {
		t.Fatalf("the boot after the upgrade (%s) did not run its script; console:\n%s", b2, tail(b2.Lines, 80))
	}
	t.Logf("trixie: kernel %s, %s, %s; bookworm → trixie in %s", b2.Script.Get("KERNEL"), b2.Script.Get("SYSTEMD"),
		b2.Script.Get("LOADER"), time.Since(start).Round(time.Second))
	st := getStatus(t, b2.Script)
	logStatus(t, "on trixie", b2.Script)
	if b2.Slot != "b" || b2.Script.Get("VERSION") != "trixie" {
		t.Fatalf("after the upgrade: %s, marker %q; want slot b, trixie", b2, b2.Script.Get("VERSION"))
	}
	if got := b2.Script.Get("HELLO"); got != "hello-13" {
		t.Errorf("trixie: hello-hello printed %q, want hello-13 (trixie's build, fetched by the upgrade)", got)
	}
	if h := b2.Script.Get("HEALTH"); h != "active" {
		t.Errorf("trixie: slate-health is %q, want active; failed units: %s", h, b2.Script.Get("FAILED"))
	}
	if f := strings.TrimSpace(b2.Script.Get("FAILED")); f != "" {
		t.Errorf("trixie: failed units: %s", f)
	}
	checkSlot(t, "on trixie", st, "b", "good", "trixie")
	checkSlot(t, "on trixie", st, "a", "good", "bookworm")
	if k1, k2 := b1.Script.Get("KERNEL"), b2.Script.Get("KERNEL"); k1 == k2 || !strings.HasPrefix(k2, "6.12") {
		t.Errorf("kernel %q on bookworm, %q on trixie: want trixie's 6.12", k1, k2)
	}
	if s1, s2 := b1.Script.Get("SYSTEMD"), b2.Script.Get("SYSTEMD"); s1 == s2 {
		t.Errorf("systemd is %q on both", s1)
	}
	if l1, l2 := b1.Script.Get("LOADER"), b2.Script.Get("LOADER"); l1 == l2 {
		t.Errorf("the boot loader is %q on both: the upgrade did not install trixie's systemd-boot", l1)
	}
	if got := b2.Script.Get("VARSUM"); got != sum {
		t.Errorf("trixie: /var/lib/slate-test/kept has sha256 %q, want %q as written under bookworm", got, sum)
	}
	if b2.Exit.Reason != "guest-reset" {
		t.Fatalf("the trixie boot ended with %s (%s), want the rollback's reboot", b2.Exit, b2.Script.Get("ROLLBACK-EXIT"))
	}

	// Back on bookworm, under trixie's systemd-boot.
	nextBoot(t, m, probe+facts+"varsum\nstatus\n"+testnode.ThenPoweroff)
	b3 := waitBoot(t, m, exitTimeout)
	if b3.Script == nil || !b3.Ended {
		t.Fatalf("the boot after the rollback (%s) did not run its script; console:\n%s", b3, tail(b3.Lines, 80))
	}
	st = getStatus(t, b3.Script)
	logStatus(t, "after the rollback", b3.Script)
	if b3.Slot != "a" || b3.Script.Get("VERSION") != "bookworm" {
		t.Errorf("after the rollback: %s, marker %q; want slot a, bookworm", b3, b3.Script.Get("VERSION"))
	}
	if h := b3.Script.Get("HEALTH"); h != "active" {
		t.Errorf("bookworm after the rollback: slate-health is %q; failed units: %s", h, b3.Script.Get("FAILED"))
	}
	checkSlot(t, "after the rollback", st, "a", "good", "bookworm")
	if got := b3.Script.Get("HELLO"); got != "hello-12" {
		t.Errorf("bookworm after the rollback: hello-hello printed %q, want hello-12", got)
	}
	if got := b3.Script.Get("VARSUM"); got != sum {
		t.Errorf("after the rollback: /var/lib/slate-test/kept has sha256 %q, want %q", got, sum)
	}
	t.Logf("bookworm → trixie → bookworm: %s; loader after the rollback: %s", time.Since(start).Round(time.Second), b3.Script.Get("LOADER"))
}
