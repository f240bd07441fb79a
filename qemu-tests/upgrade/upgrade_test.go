// Package upgrade_test proves upgrades, boot assessment and rollback on real
// disks under QEMU, in the detail slate test's scenarios do not go into: a
// node upgrades itself from a registry by writing its inactive slot and
// rebooting into it (what its status and release record say, the write
// rate); an image whose kernel panics is rolled back by systemd-boot's
// counting, with its console kept; an image without systemd-bless-boot is
// blessed by the agent; broken or unfit artifacts are refused with nothing
// bootable changed; extensions follow upgrades. A rollback on a failed
// health check, `slate rollback` both ways and power cuts during an upgrade
// are slate test's own scenarios, which qemu-tests/slatetest runs.
//
// The test images (v1, v2, v3-panic, v3-nobless) are the reference image
// plus a version marker and a demo app unit the node config requires; their
// update artifacts are served by an in-process registry on 127.0.0.1, which
// the guest reaches at 10.0.2.2 through QEMU's user network.
package upgrade_test

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/vm"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnode.Cleanup()
	os.Exit(code)
}

// v2Node is scenario 1's outcome, which scenarios 2–4 start from: a node
// that was built as v1, upgraded itself to v2 in slot B and blessed it.
type v2Node struct {
	First, Second *bootRun // the v1 boot that upgraded; the v2 boot
	Before, After *status  // slate status on each
	RootBytes     int64    // the root layer written into slot B
	RootWrite     time.Duration
	DD            string // dd's summary of a plain write of as many MB to slot B
	Snap          snapshot
	Took          time.Duration
	By            string // the test that ran it
}

var fixture struct {
	once sync.Once
	node *v2Node
	err  string
}

// nodeOnV2 runs the v1 → v2 upgrade once per process, in whichever test
// asks first; the others wait for it and start from its snapshot.
func nodeOnV2(t *testing.T) *v2Node {
	t.Helper()
	fixture.once.Do(func() {
		fixture.err = "it did not finish (in " + t.Name() + ")"
		fixture.node = upgradeV1ToV2(t)
		fixture.err = ""
	})
	if fixture.err != "" {
		t.Fatalf("the v1 → v2 upgrade this test starts from failed: %s", fixture.err)
	}
	return fixture.node
}

// upgradeV1ToV2 boots a new v1 node that writes a file on /var, measures a
// plain write to slot B, then runs `slate upgrade` to v2; the agent reboots
// into slot B, whose health check passes and which systemd-bless-boot
// blesses. Only what later scenarios cannot do without is fatal here; the
// rest is TestUpgrade's to judge.
func upgradeV1ToV2(t *testing.T) *v2Node {
	t.Helper()
	start := time.Now()
	v2 := image(t, "v2")
	image(t, "v1")
	reg := testRegistry(t)
	mb := (v2.RootSize + 1<<20 - 1) >> 20
	first := probe + fmt.Sprintf(`
waitnet
echo "REGISTRY=$(bash -c 'exec 3<>/dev/tcp/%s/%d && printf "GET /v2/ HTTP/1.0\r\n\r\n" >&3 && head -n1 <&3' 2>&1 | tr -d '\r')"
mkdir -p /var/lib/slate-test && head -c 1048576 /dev/urandom > /var/lib/slate-test/kept && sync
varsum
dev=$(partdev slate-root-b)
echo "SLOTB=$dev"
echo "DD=$(dd if=/dev/zero of="$dev" bs=1M count=%d oflag=direct conv=fsync 2>&1 | tail -n1)"
status
agent UPGRADE slate upgrade %s
`, GuestHost, reg.Port, mb, v2.Ref)
	m := freshV1(t, "v1-to-v2", first)
	t0 := expectStep(t, m, "upgrade: writing root of slot b", upgradeTimeout)
	t1 := expectStep(t, m, "upgrade: verifying slot b", upgradeTimeout)
	expectStep(t, m, "upgrade: slot b holds", upgradeTimeout)
	n := &v2Node{RootBytes: v2.RootSize, RootWrite: t1.Sub(t0), By: t.Name()}
	n.First = waitBoot(t, m, exitTimeout)
	if n.First.Script == nil {
		t.Fatalf("the v1 boot's script did not run; console:\n%s", tail(n.First.Lines, 60))
	}
	n.Before = getStatus(t, n.First.Script)
	n.DD = n.First.Script.Get("DD")
	if n.First.Exit.Reason != "guest-reset" {
		t.Fatalf("after the upgrade the v1 boot ended with %s, want the agent's reboot; script output:\n%s",
			n.First.Exit, strings.Join(n.First.Script.Lines, "\n"))
	}

	nextBoot(t, m, probe+"varsum\nstatus\n"+testnode.ThenPoweroff)
	n.Second = waitBoot(t, m, exitTimeout)
	if n.Second.Script == nil || !n.Second.Ended {
		t.Fatalf("the boot after the upgrade (%s) did not run its script; console:\n%s", n.Second, tail(n.Second.Lines, 60))
	}
	n.After = getStatus(t, n.Second.Script)
	if n.Second.Slot != "b" || n.After.Slot("b").State != "good" {
		t.Fatalf("after the upgrade: %s, %v; want slot b (v2) blessed", n.Second, n.After.Slot("b"))
	}
	n.Snap = takeSnapshot(t, m, "v2")
	n.Took = time.Since(start)
	return n
}

var ddRe = regexp.MustCompile(`copied, ([0-9.]+) s, ([0-9.]+ [kMG]?B/s)`)

// TestUpgrade is scenario 1 (and 7's first half): v1 upgrades itself to v2
// from the registry, boots slot B, the health check passes and the boot is
// blessed; status shows both slots; a file on /var is unchanged.
func TestUpgrade(t *testing.T) {
	begin(t)
	n := nodeOnV2(t)
	v1, v2 := image(t, "v1"), image(t, "v2")
	if n.By != t.Name() {
		t.Logf("the upgrade ran in %s", n.By)
	}
	t.Logf("v1 → v2 (two boots, the upgrade and the blessing): %s", n.Took.Round(time.Second))

	first, second := n.First, n.Second
	if first.Slot != "a" || first.Version != "v1" || first.Script.Get("VERSION") != "v1" {
		t.Errorf("first boot: %s, marker %q; want slot a, v1", first, first.Script.Get("VERSION"))
	}
	if got := first.Script.Get("NET"); got != "up" {
		t.Errorf("the guest has no 10.0.2.15 address: NET=%q", got)
	}
	if got := first.Script.Get("REGISTRY"); !strings.Contains(got, " 200") {
		t.Errorf("GET /v2/ from the guest to the test registry: %q, want a 200 response", got)
	}
	logStatus(t, "before the upgrade", first.Script)
	checkSlot(t, "before the upgrade", n.Before, "a", "good", "v1")
	if b := n.Before.Slot("b"); b.State != "empty" {
		t.Errorf("before the upgrade: %v; want slot b empty", b)
	}

	if second.Slot != "b" || second.Version != "v2" || second.Script.Get("VERSION") != "v2" {
		t.Errorf("after the upgrade: %s, marker %q; want slot b, v2", second, second.Script.Get("VERSION"))
	}
	if h, b := second.Script.Get("HEALTH"), second.Script.Get("BLESS"); h != "active" || b != "active" {
		t.Errorf("after the upgrade: slate-health %s, systemd-bless-boot %s; want both active", h, b)
	}
	logStatus(t, "after the upgrade", second.Script)
	st := n.After
	if st.Running.Slot != "b" || st.Running.Version != "v2" {
		t.Errorf("status: running %+v, want slot b, v2", st.Running)
	}
	checkSlot(t, "after the upgrade", st, "a", "good", "v1")
	checkSlot(t, "after the upgrade", st, "b", "good", "v2")
	a, b := st.Slot("a"), st.Slot("b")
	if b.Generation <= a.Generation || b.Counting || !b.Running || a.Running {
		t.Errorf("after the upgrade: %v, %v; want b running, blessed (not counting), of a later generation", a, b)
	}
	if r := b.Release; r != nil {
		if r.Artifact != v2.Digest.String() || r.RootHash != v2.RootHash || r.RootSize != v2.RootSize || r.Written.IsZero() {
			t.Errorf("slot b's release: %+v; want artifact %s, root hash %s, %d bytes, a write time", r, v2.Digest, v2.RootHash, v2.RootSize)
		}
		// The key v1 was built with made the agent check v2's signature.
		if want := signature.KeyID(testKey().Public()); r.SignedBy != want {
			t.Errorf("slot b's release is signed by %q, want the test key %s", r.SignedBy, want)
		}
	}
	if r := a.Release; r != nil && (r.RootHash != v1.RootHash || r.Artifact != "") {
		t.Errorf("slot a's release: %+v; want the builder's (root hash %s, no artifact)", r, v1.RootHash)
	}
	if st.Health == nil || st.Health.Result != "good" {
		t.Errorf("status: this boot's health %+v, want good", st.Health)
	}
	if st.Config == nil || !st.Config.Applied || st.Config.Source != "fw_cfg" {
		t.Errorf("status: config %+v, want the fw_cfg config, applied", st.Config)
	}
	if u, key := st.Update, signature.KeyID(testKey().Public()); u == nil || u.Policy != "signed" || len(u.Keys) != 1 || u.Keys[0].ID != key ||
		u.Keys[0].From != "image" || u.Source != testRegistry(t).Source() {
		t.Errorf("status: update %+v, want source %s and the image's key %s only", u, testRegistry(t).Source(), key)
	}

	// Scenario 7: /var is the state partition, which no upgrade touches.
	sum := first.Script.Get("VARSUM")
	if len(sum) != 64 || second.Script.Get("VARSUM") != sum {
		t.Errorf("/var/lib/slate-test/kept: sha256 %q under v1, %q under v2", sum, second.Script.Get("VARSUM"))
	}

	// The root write against a plain sequential write of as many MB to the
	// same partition; logged, not judged: TCG and a shared host make both
	// noisy, and the upgrade's figure includes the download.
	mbps := float64(n.RootBytes) / 1e6 / n.RootWrite.Seconds()
	t.Logf("upgrade root write: %d MB in %.1fs = %.1f MB/s (download from the registry, write, hash; console timestamps)",
		n.RootBytes/1e6, n.RootWrite.Seconds(), mbps)
	for _, l := range first.Script.Lines {
		if strings.HasPrefix(l, "upgrade: root ") {
			t.Logf("the agent's own account: %s", l)
		}
	}
	if g := ddRe.FindStringSubmatch(n.DD); g != nil {
		t.Logf("plain dd of zeros to slot B (oflag=direct conv=fsync): %s in %s s", g[2], g[1])
	} else {
		t.Logf("dd to slot B: %q", n.DD)
	}
}

// rollbackTo boots m (which just rebooted into a bad image) until it runs
// want again, at most max boots, and returns every boot.
func rollbackTo(t *testing.T, m *vm.Machine, want string, max int) []*bootRun {
	t.Helper()
	script := probe + `
status
echo "KEPT=$(cat /var/lib/slate/rollbacks/*/console.txt 2>/dev/null | grep -c 'Attempted to kill init')"
if [ "$(cat ` + VersionFile + `)" = ` + want + ` ]; then
	# slate-logship marks a rollback's logs shipped once the collector has them.
	i=0; while [ -z "$(ls /var/lib/slate/rollbacks/*/shipped 2>/dev/null)" ] && [ $i -lt 90 ]; do sleep 1; i=$((i+1)); done
	echo "SHIPPED=$(ls /var/lib/slate/rollbacks/*/shipped 2>/dev/null | wc -l)"
	echo poweroff > /run/slate-test.after
fi
`
	var boots []*bootRun
	for i := range max {
		if i == 0 {
			nextBoot(t, m, script)
		} else {
			nextBoot(t, m, "")
		}
		b := waitBoot(t, m, exitTimeout)
		boots = append(boots, b)
		t.Logf("boot %d after the upgrade: %s", i+1, b)
		if b.Version == want && b.Ended {
			return boots
		}
	}
	t.Fatalf("%d boots after the upgrade and none ran %s again", max, want)
	return nil
}

// upgradeFromV2 starts a node from scenario 1's snapshot and upgrades it
// to the named image (slot A); the agent reboots.
func upgradeFromV2(t *testing.T, name string, extraConfig ...string) (*vm.Machine, *published) {
	t.Helper()
	n := nodeOnV2(t)
	p := image(t, name)
	m := n.Snap.startConfig(t, name, probe+"status\nagent UPGRADE slate upgrade "+p.Ref+"\n",
		nodeConfigFor(testRegistry(t).Source(), strings.Join(extraConfig, "")))
	expectStep(t, m, "upgrade: slot a holds", upgradeTimeout)
	b := waitBoot(t, m, exitTimeout)
	if b.Slot != "b" || b.Version != "v2" || b.Exit.Reason != "guest-reset" {
		t.Fatalf("the upgrading boot: %s; want slot b (v2), rebooted by the agent", b)
	}
	return m, p
}

// checkRolledBack checks the status after a rollback from bad (slot A) to v2
// (slot B), and returns the last rollback.
func checkRolledBack(t *testing.T, final *bootRun, bad string) *rollback {
	t.Helper()
	if final.Slot != "b" || final.Script.Get("VERSION") != "v2" {
		t.Fatalf("the boot after the tries: %s; want slot b (v2)", final)
	}
	logStatus(t, "after the rollback", final.Script)
	st := getStatus(t, final.Script)
	if st.Running.Slot != "b" {
		t.Errorf("status: running %+v, want slot b", st.Running)
	}
	checkSlot(t, "after the rollback", st, "a", "bad", bad)
	checkSlot(t, "after the rollback", st, "b", "good", "v2")
	if a := st.Slot("a"); a.TriesLeft != 0 || !a.Counting {
		t.Errorf("after the rollback: %v; want a counting entry with no tries left", a)
	}
	rb := st.LastRollback
	if rb == nil {
		t.Fatal("status shows no last rollback")
	}
	t.Logf("last rollback: slot %s (%s, generation %d) → slot %s (%s): %s; kept %v",
		rb.FromSlot, rb.FromVersion, rb.FromGeneration, rb.ToSlot, rb.ToVersion, rb.Cause, rb.Files)
	if rb.FromSlot != "a" || rb.FromVersion != bad || rb.ToSlot != "b" || rb.ToVersion != "v2" {
		t.Errorf("last rollback %+v: want slot a (%s) → slot b (v2)", rb, bad)
	}
	return rb
}

// TestKernelPanicRollsBack is scenario 2: v2 upgrades to an image whose
// init exits, so its kernel panics; after three counted boots systemd-boot
// boots v2 again, and status names the panic and shows v3's console.
func TestKernelPanicRollsBack(t *testing.T) {
	begin(t)
	col := testnode.NewCollector(t)
	m, _ := upgradeFromV2(t, "v3-panic", fmt.Sprintf("logging:\n  collector: tcp://%s:%d\n", GuestHost, col.Port))
	boots := rollbackTo(t, m, "v2", 6)
	trials := boots[:len(boots)-1]
	if len(trials) != 3 {
		t.Errorf("%d boots before v2 ran again, want 3 (systemd-boot's tries)", len(trials))
	}
	for i, b := range trials {
		if b.Slot != "a" || b.Version != "v3-panic" || !b.Has("Kernel panic - not syncing: Attempted to kill init!") || b.Exit.Reason != "guest-reset" {
			t.Errorf("trial boot %d: %s; want slot a (v3-panic), a kernel panic and a reboot", i+1, b)
		}
	}
	rb := checkRolledBack(t, boots[len(boots)-1], "v3-panic")
	if c := strings.ToLower(rb.Cause); !strings.Contains(c, "kernel panic") || !strings.Contains(rb.Cause, "Attempted to kill init") {
		t.Errorf("rollback cause %q: want the kernel panic and its line", rb.Cause)
	}
	if strings.TrimSpace(rb.ConsoleTail) == "" {
		t.Error("status shows none of v3's console")
	} else {
		t.Logf("v3's kept console, as status shows it:\n\t%s", strings.ReplaceAll(strings.TrimRight(rb.ConsoleTail, "\n"), "\n", "\n\t"))
	}
	if k, _ := strconv.Atoi(boots[len(boots)-1].Script.Get("KEPT")); k == 0 {
		t.Error("no console.txt under /var/lib/slate/rollbacks holds the panic")
	}
	// The good boot after the rollback ships the kept console, marked as
	// a failed boot's.
	if msg, err := col.Await(vm.Scale(2*time.Minute), "slate-rollback", `file="console.txt"`, "Attempted to kill init"); err != nil {
		t.Error(err)
	} else {
		t.Logf("at the collector: %s", msg)
	}
}

// TestBlessedByAgent: an image without systemd-bless-boot still leaves its
// trial: slate health, having found the boot good, renames the entry itself.
func TestBlessedByAgent(t *testing.T) {
	begin(t)
	m, _ := upgradeFromV2(t, "v3-nobless")
	nextBoot(t, m, probe+`
echo "BLESSBOOT=$(ls /usr/lib/systemd/systemd-bless-boot 2>&1)"
status
echo poweroff > /run/slate-test.after
`)
	b := waitBoot(t, m, exitTimeout)
	if b.Slot != "a" || b.Version != "v3-nobless" {
		t.Fatalf("the boot after the upgrade: %s; want slot a (v3-nobless)", b)
	}
	if got := b.Script.Get("BLESSBOOT"); !strings.Contains(got, "No such file") {
		t.Errorf("the image still has systemd-bless-boot: %q", got)
	}
	if !b.Has("marked good (no systemd-bless-boot in this image)") {
		t.Errorf("slate health did not say it blessed the entry; console:\n%s", tail(b.Lines, 40))
	}
	logStatus(t, "after the agent's blessing", b.Script)
	st := getStatus(t, b.Script)
	checkSlot(t, "after the agent's blessing", st, "a", "good", "v3-nobless")
	checkSlot(t, "after the agent's blessing", st, "b", "good", "v2")
	if a := st.Slot("a"); a.Counting || a.Entry != "slate-a.conf" || !a.Running {
		t.Errorf("after the agent's blessing: %v; want slot a running from slate-a.conf", a)
	}
}
