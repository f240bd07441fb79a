package boot_test

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/vm"
)

// bigVar is 150 MB that squashfs cannot shrink (each of its 128 KiB
// blocks is pseudo-random) yet costs little to make: 1 MiB repeated.
func bigVar() (string, string) {
	block := make([]byte, 1<<20)
	x := uint32(88172645)
	for i := range block {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		block[i] = byte(x)
	}
	var b strings.Builder
	b.Grow(150 << 20)
	h := sha256.New()
	for i := 0; i < 150; i++ {
		b.Write(block)
		h.Write(block)
	}
	return b.String(), hex.EncodeToString(h.Sum(nil))
}

const stateProbe = testnode.PrintRecord + `
echo "MULTIUSER=$(systemctl is-active multi-user.target)"
echo "MULTIUSER_US=$(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)"
echo "FAILED=$(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
echo "SUM=$(sha256sum /var/cache/slate-test/big | cut -d' ' -f1)"
echo "PART=$(cat /sys/class/block/vda4/size)"
echo "DISK=$(cat /sys/class/block/vda/size)"
echo "VARSIZE=$(df -B1 --output=size /var | tail -n1 | tr -d ' ')"
echo "VARAVAIL=$(df -B1 --output=avail /var | tail -n1 | tr -d ' ')"
`

// TestStateHoldsBigVarAndGrowsWithDisk: an image whose /var is 150 MB
// boots on its disk at the built size (the builder sized the state
// partition for the first boot's copy of /var); then the disk grows, as a
// cloud volume is resized, and the next boot grows the partition and its
// filesystem. Two boots.
func TestStateHoldsBigVarAndGrowsWithDisk(t *testing.T) {
	body, sum := bigVar()
	d := testnode.BuildVariant(t, testnode.Variant{Name: "bigvar", Version: "test", Disk: true, Entries: []testimage.Entry{
		testimage.Dir("var/cache/slate-test"),
		testimage.File("var/cache/slate-test/big", body),
	}})
	body = ""
	state := d.Plan.Part(boot.NumState)
	t.Logf("state partition as built: %d MiB: %s (/var needs %d MiB)", state.Size>>20, d.State.Reason, d.State.Needs>>20)
	if state.Size != d.State.Size || state.Size <= 150<<20 || !strings.Contains(d.State.Reason, "holds the image's /var") {
		t.Errorf("state partition %d bytes, sizing %+v: not sized for a 150 MB /var", state.Size, d.State)
	}

	// 1. The first boot, at the built size (no DiskSize).
	start := time.Now()
	m := testnode.Boot(t, d.Disk, stateProbe+testnode.ThenPoweroff, nil)
	first := testnode.Run(t, m, vm.Scale(8*time.Minute))
	wall := time.Since(start)
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	rec := testnode.Record(t, first)
	us, _ := strconv.ParseInt(first.Get("MULTIUSER_US"), 10, 64)
	var copyMS int64
	for _, s := range rec.Steps {
		if s.Name == "state" {
			copyMS = s.DurationMS
		}
	}
	t.Logf("first boot: multi-user after %.1fs (kernel clock), test script after %.1fs (host); the init's state step (grow, mkfs, copy of /var) %d ms",
		float64(us)/1e6, wall.Seconds(), copyMS)
	t.Logf("first boot: state partition %d MiB, /var %d MiB (df), %d MiB available",
		rec.StateSize>>20, atoi(first.Get("VARSIZE"))>>20, atoi(first.Get("VARAVAIL"))>>20)
	if !rec.FirstBoot || !rec.StatePopulated || rec.Error != "" {
		t.Errorf("first boot record: first_boot %v, state_populated %v, error %q", rec.FirstBoot, rec.StatePopulated, rec.Error)
	}
	if got := first.Get("MULTIUSER"); got != "active" {
		t.Errorf("multi-user.target is %q", got)
	}
	if f := strings.TrimSpace(first.Get("FAILED")); f != "" {
		t.Errorf("failed units on the first boot: %s", f)
	}
	if got := first.Get("SUM"); got != sum {
		t.Errorf("/var/cache/slate-test/big has sha256 %q, want %s", got, sum)
	}
	for _, w := range rec.Warnings {
		t.Logf("warning: %s", w)
	}

	// 2. The disk grows by 1 GiB between boots.
	testnode.Cmd(t, "qemu-img", "resize", "-q", "-f", "qcow2", m.Disk(), "+1G")
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	second := testnode.Run(t, m, vm.Scale(6*time.Minute))
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	rec2 := testnode.Record(t, second)
	partBefore, partAfter := atoi(first.Get("PART"))*512, atoi(second.Get("PART"))*512
	varBefore, varAfter := atoi(first.Get("VARSIZE")), atoi(second.Get("VARSIZE"))
	t.Logf("after the disk grew by 1 GiB: state partition %d -> %d MiB, /var (df) %d -> %d MiB; record: state_grown %v state_fs_grown %v state_size %d state_fs_size %d",
		partBefore>>20, partAfter>>20, varBefore>>20, varAfter>>20, rec2.StateGrown, rec2.StateFSGrown, rec2.StateSize, rec2.StateFSSize)
	if rec2.FirstBoot || !rec2.StateGrown || !rec2.StateFSGrown {
		t.Errorf("second boot record: first_boot %v, state_grown %v, state_fs_grown %v; want a grown partition and filesystem", rec2.FirstBoot, rec2.StateGrown, rec2.StateFSGrown)
	}
	if partAfter < partBefore+1<<30-(1<<20) {
		t.Errorf("the state partition went from %d to %d bytes, want 1 GiB more", partBefore, partAfter)
	}
	if varAfter < varBefore+900<<20 || rec2.StateFSSize != varAfter {
		t.Errorf("/var went from %d to %d bytes (record: %d), want about 1 GiB more", varBefore, varAfter, rec2.StateFSSize)
	}
	if diskSectors := atoi(second.Get("DISK")); diskSectors*512 != d.Plan.Size+1<<30 {
		t.Errorf("the guest sees %d sectors, want %d", diskSectors, (d.Plan.Size+1<<30)/512)
	}
	if got := second.Get("SUM"); got != sum {
		t.Errorf("after the growth /var/cache/slate-test/big has sha256 %q, want %s", got, sum)
	}
	if f := strings.TrimSpace(second.Get("FAILED")); f != "" {
		t.Errorf("failed units on the second boot: %s", f)
	}
	for _, w := range rec2.Warnings {
		t.Errorf("second boot warning: %s", w)
	}
}

func atoi(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
