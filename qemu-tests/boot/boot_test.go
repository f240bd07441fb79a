// Package boot_test proves the built disk boots: UEFI firmware, systemd-boot,
// slate's init, a read-only slot, persistent /var, ephemeral /etc, the state
// partition's first boot, and the init's failures.
package boot_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/builder"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/vm"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnode.Cleanup()
	os.Exit(code)
}

var bootTimeout = vm.Scale(4 * time.Minute)

const probe = testnode.PrintRecord + `
echo "MULTIUSER=$(systemctl is-active multi-user.target)"
echo "FAILED=$(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
if touch /usr/slate-test 2>/dev/null; then echo USRWRITE=yes; else echo USRWRITE=no; fi
if touch /slate-test 2>/dev/null; then echo ROOTWRITE=yes; else echo ROOTWRITE=no; fi
echo "ETC=$(cat /etc/slate-test 2>/dev/null || echo none)"
echo "VAR=$(cat /var/lib/slate-test/kept 2>/dev/null || echo none)"
echo "MACHINEID=$(cat /etc/machine-id)"
echo "ROOTFS=$(findmnt -n -o FSTYPE,OPTIONS /)"
echo "ROOTSRC=$(findmnt -n -o SOURCE /)"
echo "TMPFS=$(findmnt -n -o FSTYPE /tmp)"
echo "JOURNAL=$(ls /var/log/journal/$(cat /etc/machine-id)/ 2>/dev/null | grep -c journal)"
mkdir -p /var/lib/slate-test && echo "kept $(date +%s%N)" > /var/lib/slate-test/kept
echo changed > /etc/slate-test
sync
`

// TestBootReadOnlyAndPersistent boots slot A twice: the root is read-only,
// /etc changes die at reboot, /var and the machine-id persist.
func TestBootReadOnlyAndPersistent(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	start := time.Now()
	m := testnode.Boot(t, d.Disk, probe+testnode.ThenReboot, nil)
	first := testnode.Run(t, m, bootTimeout)
	t.Logf("first boot to the test script: %.1fs", time.Since(start).Seconds())
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	rec := testnode.Record(t, first)
	if rec.Slot != "a" || rec.Version != "test" || rec.RootHash != d.RootHash || !rec.FirstBoot {
		t.Errorf("boot record: %+v", rec)
	}
	for k, want := range map[string]string{"MULTIUSER": "active", "USRWRITE": "no", "ROOTWRITE": "no", "ETC": "none", "VAR": "none", "TMPFS": "tmpfs"} {
		if got := first.Get(k); got != want {
			t.Errorf("first boot: %s=%q, want %q", k, got, want)
		}
	}
	if fs := first.Get("ROOTFS"); !strings.HasPrefix(fs, "squashfs ro") {
		t.Errorf("root is %q, want a read-only squashfs", fs)
	}
	if !rec.Verity {
		t.Error("the boot record says the root is not mounted through dm-verity")
	}
	if src := first.Get("ROOTSRC"); src != "/dev/mapper/slate-root" && src != "/dev/dm-0" {
		t.Errorf("root is mounted from %q, want the dm-verity device /dev/mapper/slate-root", src)
	}
	if f := first.Get("FAILED"); strings.TrimSpace(f) != "" {
		t.Errorf("failed units on first boot: %s", f)
	}
	if first.Get("JOURNAL") == "0" {
		t.Error("the journal is not stored on /var")
	}

	start = time.Now()
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	second := testnode.Run(t, m, bootTimeout)
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("second boot to the test script: %.1fs", time.Since(start).Seconds())
	rec2 := testnode.Record(t, second)
	if rec2.FirstBoot {
		t.Error("second boot is recorded as a first boot")
	}
	if got := second.Get("ETC"); got != "none" {
		t.Errorf("a change to /etc survived the reboot: %q", got)
	}
	if got := second.Get("VAR"); !strings.HasPrefix(got, "kept ") {
		t.Errorf("/var lost a file across the reboot: %q", got)
	}
	if a, b := first.Get("MACHINEID"), second.Get("MACHINEID"); len(a) != 32 || a != b {
		t.Errorf("machine-id %q then %q, want one stable id", a, b)
	}
	for _, s := range rec2.Steps {
		t.Logf("init step %-12s %4d ms", s.Name, s.DurationMS)
	}
}

// TestStateGrowsToDiskEnd boots a disk enlarged to three times its built
// size: the first boot grows the state partition to the end of the disk.
func TestStateGrowsToDiskEnd(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	m := testnode.Boot(t, d.Disk, `
echo "PART=$(cat /sys/class/block/vda4/start) $(cat /sys/class/block/vda4/size)"
echo "DISK=$(cat /sys/class/block/vda/size)"
echo "VARSIZE=$(df -B1 --output=size /var | tail -n1 | tr -d ' ')"
`+testnode.PrintRecord+testnode.ThenPoweroff, func(c *vm.Config) { c.DiskSize = 3 * d.Plan.Size })
	r := testnode.Run(t, m, bootTimeout)
	var start, size, diskSectors int64
	fmt.Sscan(r.Get("PART"), &start, &size)
	fmt.Sscan(r.Get("DISK"), &diskSectors)
	if diskSectors != 3*d.Plan.Size/512 {
		t.Fatalf("the guest sees %d sectors, want %d", diskSectors, 3*d.Plan.Size/512)
	}
	// The backup GPT takes the last 33 sectors.
	if end := start + size; end < diskSectors-34-2048 || end > diskSectors-33 {
		t.Errorf("state partition ends at sector %d of %d: not grown to the end", end, diskSectors)
	}
	// ext4 keeps a few percent for itself.
	varSize, _ := strconv.ParseInt(r.Get("VARSIZE"), 10, 64)
	if want := (3*d.Plan.Size - d.Plan.Part(boot.NumState).Start) * 9 / 10; varSize < want {
		t.Errorf("/var is %d bytes, want more than %d", varSize, want)
	}
	if rec := testnode.Record(t, r); !rec.StateGrown {
		t.Errorf("record does not say the state partition grew: %+v", rec)
	}
}

// TestDamagedStateIsNotFormatted: once the state partition holds data, a
// broken filesystem there stops the boot instead of being formatted away.
// The first such failure of an uncounted boot reboots once (what a second
// one does is TestInitFailureStopsLoop's).
func TestDamagedStateIsNotFormatted(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	m := testnode.Boot(t, d.Disk, "mkdir -p /var/lib/precious && echo data > /var/lib/precious/x && sync"+testnode.ThenPoweroff, nil)
	testnode.Run(t, m, bootTimeout)
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	st := d.Plan.Part(boot.NumState)
	// Overwrite the first MiB: the ext4 superblock and group descriptors.
	qemuIO(t, m.Disk(), fmt.Sprintf("write -P 0x5a %d 1M", st.Start))
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect(regexp.MustCompile(`slate-init: FATAL: .*is damaged: will not format it`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	exit, err := m.WaitExit(vm.ShutdownTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Reason != "guest-reset" {
		t.Errorf("after the error the guest ended with %s, want a reboot (guest-reset)", exit)
	}
	// The damaged bytes are still there: nothing was formatted.
	qemuIO(t, m.Disk(), fmt.Sprintf("read -P 0x5a %d 1M", st.Start))
}

// TestMissingSlotPartition: an entry naming a partition that is not there
// gives a plain console message and a reboot, not a hang.
func TestMissingSlotPartition(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	raw := filepath.Join(t.TempDir(), "bad.raw")
	testnode.Cmd(t, "cp", "--sparse=always", d.Disk, raw)
	esp := d.Plan.Part(boot.NumESP)
	img := fmt.Sprintf("%s@@%d", raw, esp.Start)
	entry := testnode.Cmd(t, "mtype", "-i", img, "::/loader/entries/slate-a.conf")
	root := d.Plan.Part(boot.NumRootA).GUID
	bogus := "00000000-1111-4222-8333-444444444444"
	entry = strings.Replace(entry, boot.ArgRoot+"="+root, boot.ArgRoot+"="+bogus+" "+boot.ArgRebootDelay+"=1s", 1)
	local := filepath.Join(t.TempDir(), "slate-a.conf")
	os.WriteFile(local, []byte(entry), 0o644)
	testnode.Cmd(t, "mcopy", "-o", "-i", img, local, "::/loader/entries/slate-a.conf")

	m := testnode.Boot(t, raw, "echo should not run\n", nil)
	mt, err := m.Expect(regexp.MustCompile(`slate-init: FATAL: .*no partition with PARTUUID `+bogus+`.*rebooting in 1s`), bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("console: %s", mt.Line)
	exit, err := m.WaitExit(vm.ShutdownTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Reason != "guest-reset" {
		t.Errorf("the guest ended with %s, want a reboot (guest-reset)", exit)
	}
}

// TestVerityRefusesModifiedRoot: one byte changed in slot A's squashfs and
// the slot cannot be read: the kernel's dm-verity refuses the block and,
// as the init asks it to (restart_on_corruption), reboots, which spends one
// of systemd-boot's tries.
//
// The byte is one the boot is sure to read: in the inode table's metadata
// block that holds the root directory's inode, which the squashfs mount
// reads. (A byte in some file's data would be refused only when that file
// is read, which a boot may never do.) Without dm-verity the change would
// still stop the boot, as squashfs fails to decompress the block, so the
// test waits for dm-verity's own message.
func TestVerityRefusesModifiedRoot(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	raw := filepath.Join(t.TempDir(), "modified.raw")
	testnode.Cmd(t, "cp", "--sparse=always", d.Disk, raw)
	slot := d.Plan.Part(boot.NumRootA).Start
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	sb := make([]byte, 96)
	if _, err := f.ReadAt(sb, slot); err != nil || string(sb[:4]) != "hsqs" {
		t.Fatalf("slot A at byte %d: %v %q", slot, err, sb[:4])
	}
	le := binary.LittleEndian
	rootInode, inodeTable, used := le.Uint64(sb[32:]), le.Uint64(sb[64:]), le.Uint64(sb[40:])
	// The root inode's metadata block starts at inode_table_start plus the
	// upper bits of the inode reference; its 2-byte length header is
	// followed by the (compressed) block.
	off := int64(inodeTable + rootInode>>16 + 2)
	if off >= int64(used) {
		t.Fatalf("root inode block at byte %d, past the squashfs's %d bytes", off, used)
	}
	b := make([]byte, 1)
	f.ReadAt(b, slot+off)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, slot+off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Logf("changed the byte at %d of slot A's %d-byte squashfs (data block %d)", off, used, off/4096)

	m := testnode.Boot(t, raw, "echo SHOULD-NOT-RUN\n", nil)
	mt, err := m.Expect(regexp.MustCompile(`device-mapper: verity: .*data block (\d+) is corrupted`), bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("console: %s", mt.Line)
	if want := fmt.Sprintf("data block %d is corrupted", off/4096); !strings.Contains(mt.Line, want) {
		t.Errorf("dm-verity refused another block than the changed one: %q, want %q", mt.Line, want)
	}
	exit, err := m.WaitExit(vm.ShutdownTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Reason != "guest-reset" {
		t.Errorf("the guest ended with %s, want a reboot (guest-reset)", exit)
	}
	for _, l := range m.ConsoleTail(200) {
		if strings.Contains(l, "SHOULD-NOT-RUN") || strings.Contains(l, testnode.Begin) {
			t.Errorf("the modified root booted: %s", l)
		}
	}
}

func qemuIO(t *testing.T, disk, cmd string) {
	t.Helper()
	out := testnode.Cmd(t, "qemu-io", "-f", "qcow2", "-c", cmd, disk)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io %s: %s", cmd, out)
	}
}

var _ = builder.Build
