package boot_test

// The init's failure policy on a real disk (see package
// initramfs/init/failpolicy): an uncounted boot that fails reboots once,
// and stops when the next boot of the slot fails at the same step; the
// failure is kept in an EFI variable and, at the next good boot, moved to
// the state partition, where `slate status` shows it.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/vm"
)

// initFailureProbe prints what the good boot after the failures knows of them.
// It waits for slate-health first: both mount the ESP, and one that finds
// the other mounting it fails (EBUSY).
const initFailureProbe = testnode.PrintRecord + `
i=0; while [ "$(systemctl is-active slate-health.service)" = activating ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done
echo "STATUS=$(slate status --json | base64 -w0)"
slate status | sed 's/^/status: /'
if ls /sys/firmware/efi/efivars/SlateInitFailure-* >/dev/null 2>&1; then echo EFIVAR=present; else echo EFIVAR=gone; fi
echo "KEPT=$(ls /var/lib/slate/init-failures/ | tr '\n' ' ')"
`

// TestInitFailureStopsLoop: slot A's entry is blessed (slate-a.conf, no
// boot counter) and its state partition is damaged (zeros: neither the
// builder's marker nor ext4). The first boot fails at the state step and
// reboots once; the second fails the same way and stops: it does not
// reboot and keeps saying why. With the partition repaired (the builder's
// marker written back), the next boot formats it and `slate status` shows
// the kept failure; the EFI variable is gone.
func TestInitFailureStopsLoop(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	st := d.Plan.Part(boot.NumState)
	raw := filepath.Join(t.TempDir(), "damaged.raw")
	testnode.Cmd(t, "cp", "--sparse=always", d.Disk, raw)
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 1<<20), st.Start); err != nil {
		t.Fatal(err)
	}
	f.Close()

	const delay = 5 * time.Second // slate.reboot_delay's default: the entry sets none
	damaged := `slate-init: FATAL: state: state partition /dev/vda4 \(PARTUUID [0-9a-fA-F-]+\) is damaged: will not format it: its first 4 KiB are zeros: neither the unformatted marker nor an ext4 superblock`

	// Boot 1: fails, reboots.
	start := time.Now()
	m := testnode.Boot(t, raw, initFailureProbe+testnode.ThenPoweroff, nil)
	if _, err := m.Expect("slate-init: boot counting: not counted", bootTimeout); err != nil {
		t.Fatal(err)
	}
	mt, err := m.Expect(regexp.MustCompile(damaged+`; rebooting in 5s`), bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot 1: %s", mt.Line)
	if _, err := m.Expect("this boot is not counted: rebooting once", vm.Scale(30*time.Second)); err != nil {
		t.Error(err)
	}
	exit, err := m.WaitExit(vm.ShutdownTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Reason != "guest-reset" {
		t.Fatalf("after the first failure the guest ended with %s, want a reboot (guest-reset)", exit)
	}
	t.Logf("boot 1 failed and rebooted after %.1fs", time.Since(start).Seconds())

	// Boot 2: fails the same way, stops.
	start = time.Now()
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect("slate-init: the previous boot failed: slot a, step state", bootTimeout); err != nil {
		t.Error(err)
	}
	stop := regexp.MustCompile(damaged + `; not rebooting: slot a failed at this step on the previous boot too \(2 boots in a row\) and this boot is not counted`)
	mt, err = m.Expect(stop, bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	t.Logf("boot 2 stopped after %.1fs: %s", stoppedAt.Sub(start).Seconds(), mt.Line)
	// The line comes again every minute for whoever attaches a console
	// later: waiting for it also proves the guest outlived the reboot delay.
	if _, err := m.Expect(stop, vm.Scale(90*time.Second)); err != nil {
		t.Fatalf("the stop line was not repeated: %v", err)
	}
	if wait := time.Since(stoppedAt); wait < delay+10*time.Second {
		t.Errorf("the stop line came again after %s", wait)
	}
	if _, err := m.Execute("query-status", nil); err != nil {
		t.Fatalf("%s after the failure: the guest is not running: %v", time.Since(stoppedAt).Round(time.Second), err)
	}
	t.Logf("boot 2 still waiting %.0fs after it stopped", time.Since(stoppedAt).Seconds())
	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}
	m.WaitExit(vm.ShutdownTimeout)

	// Repair: the builder's first-boot marker back at the partition's start.
	marker := filepath.Join(t.TempDir(), "marker")
	os.WriteFile(marker, append([]byte(boot.StateUnformatted), make([]byte, 512-len(boot.StateUnformatted))...), 0o644)
	testnode.Cmd(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -s %s %d 512", marker, st.Start), m.Disk())

	// Boot 3: good; the failure moves to the state partition.
	start = time.Now()
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := testnode.Run(t, m, bootTimeout)
	t.Logf("boot 3 (repaired) to the test script: %.1fs", time.Since(start).Seconds())
	for _, l := range r.Lines {
		if strings.HasPrefix(l, "status: ") {
			t.Log(l)
		}
	}
	rec := testnode.Record(t, r)
	if !rec.FirstBoot {
		t.Errorf("the repaired partition was not formatted: %+v", rec)
	}
	if p := rec.PreviousFailure; p == nil || p.Slot != "a" || p.Step != "state" || p.Count != 2 || p.Rebooted || p.Counted {
		t.Errorf("boot record's previous failure: %+v", p)
	}
	var status struct {
		LastInitFailure *struct {
			Slot, Step, Error string
			Count             int
			Counted, Rebooted bool
			Time              time.Time
			BeforeThisBoot    bool
		}
	}
	b, err := base64.StdEncoding.DecodeString(r.Get("STATUS"))
	if err == nil {
		err = json.Unmarshal(b, &status)
	}
	if err != nil {
		t.Fatalf("slate status --json: %v: %q", err, r.Get("STATUS"))
	}
	f2 := status.LastInitFailure
	if f2 == nil || f2.Slot != "a" || f2.Step != "state" || f2.Count != 2 || f2.Rebooted || !f2.BeforeThisBoot ||
		!strings.Contains(f2.Error, "is damaged: will not format it") || f2.Time.IsZero() {
		t.Errorf("slate status --json: lastInitFailure %+v\n%s", f2, b)
	}
	if !containsLine(r.Lines, "status: last init failure: ", "slot a, step state: state partition /dev/vda4") {
		t.Error("slate status does not show the init's failure")
	}
	if got := r.Get("EFIVAR"); got != "gone" {
		t.Errorf("EFI variable SlateInitFailure: %s after the good boot", got)
	}
	if got := strings.TrimSpace(r.Get("KEPT")); got != "000001.json" {
		t.Errorf("/var/lib/slate/init-failures holds %q", got)
	}
}

func containsLine(lines []string, prefix, sub string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
