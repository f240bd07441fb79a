// Package matrix_test proves that slate boots the images users bring, not
// only the curated reference: each image of the reference matrix (Debian
// bookworm with the generic kernel, bookworm with the cloud kernel, trixie
// with its own kernel, systemd and systemd-boot; all as debootstrap leaves
// them, /var full of apt's downloads) is built into a disk and boots through
// OVMF and systemd-boot to multi-user with no failed unit and a good health
// check; and the generic kernel's image boots from each disk controller QEMU
// has: virtio-blk, virtio-scsi, NVMe and SATA (AHCI). The upgrade across
// the matrix (bookworm → trixie → rollback) is in qemu-tests/upgrade, which
// has the registry.
package matrix_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/vm"
	"github.com/slate-os/slate/vm/vmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnode.Cleanup()
	os.Exit(code)
}

var bootTimeout = vm.Scale(6 * time.Minute)

// probe waits for the boot's assessment (slate-health, after multi-user),
// then prints what the test judges. It cannot wait for the whole boot
// (is-system-running --wait): the runner is itself one of the boot's jobs.
const probe = `dmesg -n 1
i=0
while [ $i -lt 600 ]; do
	h=$(systemctl is-active slate-health.service)
	if [ "$h" != activating ] && [ "$h" != inactive ]; then break; fi
	sleep 1; i=$((i+1))
done
echo "HEALTH=$h"
echo "MULTIUSER=$(systemctl is-active multi-user.target)"
echo "FAILED=$(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
echo "ROOTFS=$(findmnt -n -o FSTYPE,OPTIONS /)"
echo "STATEDEV=$(findmnt -n -o SOURCE /var)"
echo "DEBS=$(ls /var/cache/apt/archives/ 2>/dev/null | grep -c '\.deb$')"
echo "VARMB=$(du -smx /var | cut -f1)"
echo "KERNEL=$(uname -r)"
echo "SYSTEMD=$(systemctl --version | head -n1)"
echo "UPTIME=$(cut -d' ' -f1 /proc/uptime)"
echo "MULTIUSER_US=$(systemctl show --value -p ActiveEnterTimestampMonotonic multi-user.target)"
` + testnode.PrintRecord + testnode.ThenPoweroff

// bootImage builds (once) a disk from the matrix image base, boots it on
// bus and checks the boot; it returns the probe's output.
func bootImage(t *testing.T, base string, bus vm.Bus) *testnode.Result {
	t.Helper()
	res := testnode.BuildVariant(t, testnode.Variant{Name: "matrix-" + base, Base: base, Version: "matrix-" + base, Disk: true})
	start := time.Now()
	m := vmtest.Start(t, vm.Config{Name: base + "-" + string(bus), Disk: res.Disk, DiskFormat: "raw", DiskBus: bus,
		FwCfgStrings: map[string]string{testnode.FwCfgTest: probe}})
	r := testnode.Run(t, m, bootTimeout)
	took := time.Since(start)
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Error(err)
	}
	rec := testnode.Record(t, r)
	us, _ := strconv.ParseInt(r.Get("MULTIUSER_US"), 10, 64)
	t.Logf("%s on %s: kernel %s, %s; initramfs %d KiB (%d modules); /var %s MB (%s .debs); multi-user %.1fs after the kernel started; power-on to the probe %.0fs",
		base, bus, r.Get("KERNEL"), r.Get("SYSTEMD"), res.InitramfsSize>>10, len(res.Initramfs),
		r.Get("VARMB"), r.Get("DEBS"), float64(us)/1e6, took.Seconds())
	if got := r.Get("HEALTH"); got != "active" {
		t.Errorf("%s on %s: slate-health is %q, want active (a good boot)", base, bus, got)
	}
	if got := r.Get("MULTIUSER"); got != "active" {
		t.Errorf("%s on %s: multi-user.target is %q", base, bus, got)
	}
	if f := strings.TrimSpace(r.Get("FAILED")); f != "" {
		t.Errorf("%s on %s: failed units: %s", base, bus, f)
	}
	if fs := r.Get("ROOTFS"); !strings.HasPrefix(fs, "squashfs ro") {
		t.Errorf("%s on %s: root is %q, want a read-only squashfs", base, bus, fs)
	}
	if !rec.FirstBoot || !rec.StatePopulated || !rec.Verity {
		t.Errorf("%s on %s: boot record: first boot %v, /var copied %v, verity %v; want all", base, bus, rec.FirstBoot, rec.StatePopulated, rec.Verity)
	}
	return r
}

// TestMatrixBoots boots each image of the matrix on virtio-blk.
func TestMatrixBoots(t *testing.T) {
	for _, base := range testnode.MatrixImages {
		t.Run(base, func(t *testing.T) {
			testnode.Matrix(t, base)
			t.Parallel()
			r := bootImage(t, base, vm.BusVirtio)
			// As debootstrap leaves it: apt's downloads are in /var, and
			// they reached the node's /var.
			if r.Get("DEBS") == "0" {
				t.Errorf("%s: no .deb in /var/cache/apt/archives: the image's /var did not reach the node (or the image was cleaned)", base)
			}
		})
	}
}

// TestControllers boots the generic kernel's image from the other disk
// controllers (virtio-blk is TestMatrixBoots'): the init must find its
// slot and state partitions on each, with the drivers it packed.
func TestControllers(t *testing.T) {
	const base = "bookworm-generic"
	for _, bus := range []vm.Bus{vm.BusSCSI, vm.BusNVMe, vm.BusSATA} {
		t.Run(string(bus), func(t *testing.T) {
			testnode.Matrix(t, base)
			t.Parallel()
			r := bootImage(t, base, bus)
			want := map[vm.Bus]string{vm.BusSCSI: "/dev/sd", vm.BusNVMe: "/dev/nvme", vm.BusSATA: "/dev/sd"}[bus]
			if dev := r.Get("STATEDEV"); !strings.HasPrefix(dev, want) {
				t.Errorf("on %s, /var is mounted from %q, want a %s* device", bus, dev, want)
			}
		})
	}
}
