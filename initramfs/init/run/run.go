// Package run is slate's init: PID 1 in the initramfs. It mounts the API
// filesystems, loads the modules the packer put in the initramfs, refuses an
// image whose SBAT generation the node has revoked (sbat.go), finds the
// slot's root and the state partition by PARTUUID (or, when the command
// line names none, as a Unified Kernel Image's, by name on the disk of the
// ESP systemd-boot booted from: discover.go), mounts the root read-only
// through dm-verity (package dm), sets up the state partition on /var
// (formatting and growing it on first boot), makes /etc a tmpfs overlay and
// /tmp a tmpfs, applies the node config (see config.go and package
// configsrc), writes the boot record and switches root to the image's init.
//
// Every step is timed and logged. Any failure (or panic) prints one line
// naming the step and the cause ("FATAL: state: ..."), then reboots or
// stops, by the policy of package failpolicy, so that a failure no reboot
// can cure never reboots forever:
//
//   - a counted boot (systemd-boot's entry had tries left:
//     LoaderBootCountPath is set) reboots after slate.reboot_delay,
//     spending a try; when they are spent systemd-boot boots the other
//     slot, which is how a bad upgrade rolls back;
//   - an uncounted boot (a blessed entry, slate-a.conf) keeps the failure
//     in the EFI variable SlateInitFailure-b3297508-91e8-4c73-a7e1-81d6f47d4769
//     and reboots once; when the boot before it failed at the same step of
//     the same slot (or it is the third failed boot of the slot in a row)
//     it stops instead: "...; not rebooting: <why>", repeated every minute
//     on the console, and waits;
//   - an uncounted boot with nowhere to keep the failure (no UEFI) stops at
//     the first failure; a UEFI boot whose variables cannot be read at all
//     reboots as a counted one would.
//
// To know all that the init mounts efivarfs itself (step "efivars", right
// after the modules, or from fatal for an earlier failure). A later boot
// that gets the state partition mounted moves the kept failure to
// /var/lib/slate/init-failures/ (the newest 10), deletes the variable and
// names it in the boot record (previous_failure); `slate status` shows it.
// See failure.go.
package run

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/initramfs/init/blockdev"
	"github.com/slate-os/slate/initramfs/init/cmdline"
	"github.com/slate-os/slate/initramfs/init/dm"
	"github.com/slate-os/slate/initramfs/init/efivar"
	"github.com/slate-os/slate/initramfs/init/failpolicy"
	"github.com/slate-os/slate/initramfs/init/klog"
	"github.com/slate-os/slate/initramfs/layout"
)

// Timeouts.
const (
	// PartitionTimeout bounds the wait for the root and state partitions.
	PartitionTimeout = 10 * time.Second
	partitionPoll    = 50 * time.Millisecond
)

// Paths in the initramfs.
const (
	sysroot = layout.SysRoot
	// stateMount is where the state filesystem is mounted first (to copy
	// the image's /var into it, which it would hide on /sysroot/var), then
	// moved to /sysroot/var.
	stateMount = "/state"
	// etcOverlay holds the /etc overlay's upper and work directories, on
	// the /run tmpfs: every change to /etc dies at reboot.
	etcOverlay = boot.RunDir + "/etc-overlay"
	// ImageInit is the program the init hands over to.
	ImageInit = "/sbin/init"
)

type initProc struct {
	start       time.Time
	log         *klog.Logger
	rec         record.Record
	rebootDelay time.Duration
	current     string // the step running
	dying       bool
	// efiStore is where efivarfs is mounted; efi what was read from it.
	efiStore efivar.Store
	efi      efiState
	// verdict is the failure policy's, once fatal asked it.
	verdict *failpolicy.Verdict

	cmdline   string
	params    *cmdline.Params
	root      blockdev.Partition
	state     blockdev.Partition
	finder    blockdev.Finder
	machineID string
	// devicesSince is when the block drivers were loaded: the config
	// drive's wait for late disks counts from there.
	devicesSince time.Time
	// panicSet is true when the init set kernel.panic (it was 0) and must
	// put it back before handing over.
	panicSet bool
	// net is the network a metadata source brought up (network.go).
	net netState
}

// Main runs the init. It does not return: it execs the image's init or
// reboots.
func Main() {
	in := &initProc{
		start:       time.Now(),
		log:         &klog.Logger{},
		rebootDelay: cmdline.DefaultRebootDelay,
		efiStore:    efivar.System,
	}
	in.rec.FormatVersion = record.FormatVersion
	in.rec.StateFsck = -1
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "slate-init: this is slate's initramfs init; it runs only as PID 1")
		os.Exit(2)
	}
	defer func() {
		if r := recover(); r != nil {
			in.log.Debugf("panic stack:\n%s", debug.Stack())
			in.fatal(fmt.Errorf("panic: %v", r))
		}
	}()
	in.run()
}

func (in *initProc) run() {
	in.step("mount-api", in.mountAPI)
	in.step("cmdline", in.readCmdline)
	in.step("modules", in.loadModules)
	in.devicesSince = time.Now()
	in.step("efivars", in.setupEFIVars) // never fails
	in.step("sbat", in.checkSBAT)
	in.step("find-partitions", in.findPartitions)
	in.step("mount-root", in.mountRoot)
	in.step("state", in.setupState)
	in.keepPreviousFailure() // never fails
	in.step("etc", in.setupEtc)
	in.step("config", in.applyConfig) // never fails: a bad config applies nothing
	in.step("record", in.writeRecord)
	in.step("switch-root", in.switchRoot) // returns only on failure
}

// step runs one step, times it and logs it; a failure is fatal.
func (in *initProc) step(name string, fn func() error) {
	in.current = name
	t := time.Now()
	err := fn()
	d := time.Since(t)
	in.rec.AddStep(name, d, err)
	if err != nil {
		in.fatal(err)
	}
	in.log.Infof("%s: done in %d ms", name, d.Milliseconds())
}

func (in *initProc) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	in.rec.Warnings = append(in.rec.Warnings, msg)
	in.log.Warnf("%s", msg)
}

// fatal reports err as the current step's failure, then reboots after the
// delay or stops, as the failure policy says (see failure.go). It never
// returns.
func (in *initProc) fatal(err error) {
	if in.dying { // a failure while failing: follow the verdict, else reboot now
		if in.verdict != nil && !in.verdict.Reboot {
			in.hold(fmt.Sprintf("FATAL: %s: %v; not rebooting: %s", in.current, err, in.verdict.Why))
		}
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		os.Exit(1)
	}
	in.dying = true
	step := in.current
	if step == "" {
		step = "start"
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	in.rec.Error = step + ": " + msg
	in.rec.TotalMS = time.Since(in.start).Milliseconds()
	v := in.failureVerdict(step, msg)
	in.verdict = &v
	if !v.Reboot {
		line := fmt.Sprintf("FATAL: %s: %s; not rebooting: %s", step, msg, v.Why)
		// The network is the init's only while a config source needs it.
		in.networkDown()
		in.rec.Write(boot.BootRecord) // best effort: /run may not be mounted yet
		unix.Sync()
		hint := "fix the cause, then reset the machine"
		if in.efi.kept {
			hint += "; slate status shows this failure at the next good boot"
		}
		in.hold(line, hint)
	}
	in.log.Critf("FATAL: %s: %s; rebooting in %s", step, msg, in.rebootDelay)
	in.log.Infof("%s", v.Why)
	in.networkDown()
	in.rec.Write(boot.BootRecord) // best effort: /run may not be mounted yet
	unix.Sync()
	time.Sleep(in.rebootDelay)
	if e := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); e != nil {
		in.log.Critf("reboot: %v", e)
	}
	// Exiting PID 1 panics the kernel, which reboots when panic= is set.
	os.Exit(1)
}

// --- steps ---

type apiMount struct {
	src, dst, fstype, data string
	flags                  uintptr
}

func (in *initProc) mountAPI() error {
	for _, m := range []apiMount{
		{"proc", "/proc", "proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "sysfs", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		// The Debian kernels do not mount devtmpfs on an initramfs by themselves.
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755", unix.MS_NOSUID},
		// As systemd mounts /run; it carries over to the real root.
		{"tmpfs", "/run", "tmpfs", "mode=0755,size=20%,nr_inodes=800k", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_STRICTATIME},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if mounted, _ := isMountPoint(m.dst); mounted {
			continue
		}
		if _, err := mount.Mount(m.src, m.dst, m.fstype, m.data, m.flags); err != nil {
			return err
		}
	}
	in.log.Setup()
	in.armPanicReboot()
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		in.rec.KernelRelease = unix.ByteSliceToString(u.Release[:])
	}
	in.log.Infof("slate init starting on kernel %s", in.rec.KernelRelease)
	return os.MkdirAll(boot.RunDir, 0o755)
}

const panicSysctl = "/proc/sys/kernel/panic"

// armPanicReboot makes a kernel panic reboot after the reboot delay while
// the init runs, when the kernel would otherwise hang on it (kernel.panic
// = 0, Debian's default). It covers what fatal cannot: the init's own death
// (a Go runtime crash) panics the kernel. switchRoot restores the setting.
func (in *initProc) armPanicReboot() {
	if !in.panicSet {
		b, err := os.ReadFile(panicSysctl)
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			return // unreadable, or the command line set panic=
		}
	}
	secs := int((in.rebootDelay + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	if os.WriteFile(panicSysctl, []byte(fmt.Sprintf("%d\n", secs)), 0) == nil {
		in.panicSet = true
	}
}

// disarmPanicReboot gives the image's init the kernel's own setting.
func (in *initProc) disarmPanicReboot() {
	if in.panicSet {
		os.WriteFile(panicSysctl, []byte("0\n"), 0)
		in.panicSet = false
	}
}

// isMountPoint is true when p is on another filesystem than its parent.
func isMountPoint(p string) (bool, error) {
	same, err := mount.SameFilesystem(p, filepath.Dir(p))
	return !same, err
}

func (in *initProc) readCmdline() error {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	in.cmdline = strings.TrimSpace(string(b))
	in.rec.Cmdline = in.cmdline
	// The delay first, so that a bad command line reboots after it too.
	in.rebootDelay, _ = cmdline.RebootDelay(in.cmdline)
	p, warns, err := cmdline.Parse(in.cmdline)
	for _, w := range warns {
		in.warn("%s", w)
	}
	if err != nil {
		return fmt.Errorf("kernel command line: %w", err)
	}
	in.params = p
	in.rebootDelay = p.RebootDelay
	in.armPanicReboot()
	in.rec.Slot = string(p.Slot)
	in.rec.Version = p.Version
	in.rec.SBAT = p.SBAT
	in.rec.RootHash = p.RootHash
	in.rec.RootPartUUID = p.RootPartUUID
	in.rec.StatePartUUID = p.StatePartUUID
	if p.Discover {
		in.log.Infof("image version %q; the command line names no slot or partition (a UKI's): finding them from systemd-boot's EFI variables", p.Version)
		return nil
	}
	in.log.Infof("slot %s, image version %q, root PARTUUID %s, state PARTUUID %s", p.Slot, p.Version, p.RootPartUUID, p.StatePartUUID)
	return nil
}

func (in *initProc) findPartitions() error {
	if in.params.Discover {
		return in.discoverPartitions()
	}
	slot := "slot " + string(in.params.Slot)
	got, err := in.finder.Wait([]blockdev.Want{
		{PartUUID: in.params.RootPartUUID, What: slot},
		{PartUUID: in.params.StatePartUUID, What: "state"},
	}, PartitionTimeout, partitionPoll)
	if err != nil {
		return err
	}
	in.root, in.state = got[in.params.RootPartUUID], got[in.params.StatePartUUID]
	in.rec.RootDevice, in.rec.StateDevice = in.root.Dev, in.state.Dev
	in.log.Infof("%s root: %s (%q); state: %s (%q)", slot, in.root.Dev, in.root.Label, in.state.Dev, in.state.Label)
	if want := in.params.Slot.PartitionName(); in.root.Label != want {
		in.warn("%s root partition %s is named %q, not %q", slot, in.root.Dev, in.root.Label, want)
	}
	if in.state.Label != boot.PartState {
		in.warn("state partition %s is named %q, not %q", in.state.Dev, in.state.Label, boot.PartState)
	}
	return nil
}

// RootDMName is the device-mapper name of the verified root:
// /dev/mapper/slate-root.
const RootDMName = "slate-root"

// squashfsHeader is the squashfs superblock's length; bytes_used (the
// filesystem's length) is the little-endian u64 at squashfsBytesUsed.
const (
	squashfsHeader    = 96
	squashfsBytesUsed = 40
)

// rootVerity works out the slot's dm-verity table from the partition: the
// squashfs superblock gives the data's end, the verity superblock at the
// next 4 KiB boundary gives the block count and the salt. None of it is
// trusted: a wrong size or salt makes the tree miss the root hash from the
// command line, and the kernel then refuses every block.
func rootVerity(f *os.File, dev, rootHash string) (dataBlocks uint64, table string, err error) {
	sq := make([]byte, squashfsHeader)
	if _, err := f.ReadAt(sq, 0); err != nil {
		return 0, "", fmt.Errorf("reading %s: %w", dev, err)
	}
	if string(sq[:4]) != "hsqs" {
		return 0, "", fmt.Errorf("%s holds no squashfs (it starts with %q): was the slot written?", dev, sq[:4])
	}
	used := binary.LittleEndian.Uint64(sq[squashfsBytesUsed:])
	hashOff := (used + verity.BlockSize - 1) / verity.BlockSize * verity.BlockSize
	if used == 0 || hashOff > 1<<50 {
		return 0, "", fmt.Errorf("%s: squashfs says it is %d bytes long", dev, used)
	}
	sb, err := verity.ReadSuperblock(f, int64(hashOff))
	if err != nil {
		return 0, "", fmt.Errorf("%s: no dm-verity tree after the %d-byte squashfs: %w", dev, used, err)
	}
	if sb.DataBlocks*verity.BlockSize != hashOff {
		return 0, "", fmt.Errorf("%s: the verity superblock covers %d blocks, the squashfs takes %d", dev, sb.DataBlocks, hashOff/verity.BlockSize)
	}
	// restart_on_corruption: a block that fails its hash reboots the
	// machine instead of returning EIO to the reader. An I/O error could
	// leave a half-working system that still reaches the point where the
	// boot is counted good; a reboot spends one of systemd-boot's tries, so
	// a damaged slot ends in the fallback to the other slot.
	table = verity.Table(dev, dev, sb.DataBlocks, hashOff/verity.BlockSize+1, rootHash, sb.SaltHex()) + " 1 restart_on_corruption"
	return sb.DataBlocks, table, nil
}

func (in *initProc) mountRoot() error {
	dev := in.root.Dev
	slot := "slot " + string(in.params.Slot)
	if in.params.RootHash == "" {
		return fmt.Errorf("%s: no %s= on the kernel command line: the root cannot be verified, so it is not mounted", slot, boot.ArgRootHash)
	}
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("%s: %w", slot, err)
	}
	dataBlocks, table, err := rootVerity(f, dev, in.params.RootHash)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s (PARTUUID %s): %w", slot, in.root.PartUUID, err)
	}
	in.log.Debugf("dm-verity table: 0 %d verity %s", dataBlocks*8, table)
	d, err := dm.CreateReadOnly(RootDMName, []dm.Target{{Start: 0, Length: dataBlocks * 8, Type: "verity", Params: table}})
	if err != nil {
		return fmt.Errorf("%s: dm-verity over %s: %w", slot, dev, err)
	}
	if err := os.MkdirAll(sysroot, 0o755); err != nil {
		return err
	}
	if _, err := mount.Mount(d.Path, sysroot, "squashfs", "", unix.MS_RDONLY); err != nil {
		return fmt.Errorf("%s: mounting %s (dm-verity over %s): %w", slot, d.Path, dev, err)
	}
	in.rec.Verity = true
	in.log.Infof("root %s (%s, dm-verity over %s, %d blocks, root hash %s) mounted read-only on %s", d.Path, dm.DevName(d.Dev), dev, dataBlocks, in.params.RootHash, sysroot)
	return nil
}

func (in *initProc) writeRecord() error {
	in.rec.TotalMS = time.Since(in.start).Milliseconds()
	return in.rec.Write(boot.BootRecord)
}
