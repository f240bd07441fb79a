package vm

import (
	"io"
)

// Paths in Debian's ovmf package. The 4 MiB build has the larger variable
// store, and it is what the reference image was booted with.
const (
	DefaultFirmware     = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	DefaultVarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	// SecureBootFirmware is OVMF built with Secure Boot, which needs SMM
	// (the variable store is then writable only from SMM, so an OS cannot
	// rewrite the keys behind the firmware's back). Its variable store
	// starts from DefaultVarsTemplate: no keys, Setup Mode, so the first
	// boot can enroll the node's own (systemd-boot's secure-boot-enroll).
	SecureBootFirmware = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
)

// Config describes a machine. The zero Config is a diskless UEFI machine
// with 1 GiB, 2 CPUs and no network, whose OVMF ends up in its shell.
type Config struct {
	// Name labels the machine in errors and in the names of saved logs,
	// for tests that run more than one machine. Optional.
	Name string

	// Disk is the base image, attached first (vda). It is never written
	// unless Persist: the machine runs on a qcow2 overlay of it in its work
	// dir, see [Machine.Disk]. Empty means no disk.
	Disk string
	// DiskFormat is QEMU's name for Disk's format ("raw", "qcow2", "vpc"
	// for a VHD, "vmdk"); empty means ask `qemu-img info`.
	DiskFormat string
	// DiskSize, if not 0, is the overlay's size in bytes, for a guest that
	// grows its last partition to the end of the disk. 0 keeps the base's.
	// It needs the overlay, so not with Persist.
	DiskSize int64
	// Persist attaches Disk itself, as Disk.InPlace does an extra disk:
	// the guest's writes land in it and outlive the machine (slate run
	// --persist). The guest's flushes then reach the host's disk.
	Persist bool
	// DiskBus is the controller Disk is attached to: BusVirtio (the
	// default), BusSCSI, BusNVMe or BusSATA.
	DiskBus Bus
	// Disks are further disks, attached after Disk in order, each on its
	// own Bus; their QEMU drive ids are disk0, disk1... in that order (for
	// QMP commands that name a drive).
	Disks []Disk

	// Firmware is the OVMF code image; empty means DefaultFirmware, or
	// SecureBootFirmware with SecureBoot.
	Firmware string
	// SecureBoot runs OVMF's Secure Boot build: a q35 machine with SMM and
	// its variable store behind secure flash. Secure Boot is on once keys
	// are enrolled in the variable store.
	SecureBoot bool
	// Vars is an OVMF variable store to use in place: QEMU writes to it,
	// and it outlives the machine, for tests that carry EFI variables
	// across machines. Empty means a fresh copy of VarsTemplate in the work
	// dir, which lasts as long as the Machine (across Boot calls), so
	// systemd-boot's counting starts clean for each test.
	Vars string
	// VarsTemplate is what a fresh variable store is copied from; empty
	// means DefaultVarsTemplate.
	VarsTemplate string

	// FwCfg adds fw_cfg entries from host files: name (such as
	// "opt/slate/config") → path. A Linux guest with the qemu_fw_cfg
	// module reads them at /sys/firmware/qemu_fw_cfg/by_name/NAME/raw.
	FwCfg map[string]string
	// FwCfgStrings adds fw_cfg entries with the given contents. They are
	// written to files in the work dir, so any bytes (commas, newlines,
	// YAML) pass unharmed.
	FwCfgStrings map[string]string

	// Network gives the guest QEMU user networking (a virtio NIC; DHCP;
	// the host's 127.0.0.1 is 10.0.2.2 from the guest). Forwards imply it.
	// Without it the machine has no NIC at all.
	Network bool
	// Forwards expose guest ports on the host's 127.0.0.1.
	Forwards []Forward
	// GuestNet is the user network's address range ("169.254.169.0/24",
	// where the clouds' metadata services live); empty is QEMU's
	// 10.0.2.0/24. It implies Network.
	GuestNet string
	// GuestForwards send the guest's TCP connections to an address on its
	// network (a cloud's 169.254.169.254:80) to a server on the host.
	// They imply Network; the test binary must call ServeGuestForward
	// first thing in TestMain (QEMU runs it for each connection).
	GuestForwards []GuestForward
	// SMBIOS are -smbios values ("type=1,manufacturer=Amazon EC2"): what
	// the guest's DMI tables say it runs on.
	SMBIOS []string

	// MemoryMiB defaults to 1024, CPUs to 2.
	MemoryMiB int
	CPUs      int

	// Accel is the accelerator: AccelKVM, AccelTCG, or "" for KVM when
	// this host's KVM can run the guest and TCG otherwise (see
	// [Machine.Accel]). AccelKVM is used as asked, unprobed: if it does not
	// work, QEMU says why.
	Accel string

	// AllowReboot, when false (the default), passes -no-reboot: a reset by
	// the guest (or SystemReset) makes QEMU exit with Exit.Reason
	// "guest-reset", so a test sees each boot as one QEMU run and boots the
	// next with [Machine.Boot], possibly after looking at the disk. When
	// true, a reset reboots within the same QEMU process.
	AllowReboot bool

	// Interactive puts the console on this process's stdin and stdout with
	// QEMU's monitor multiplexed in (`-serial mon:stdio`: Ctrl-A X quits,
	// Ctrl-A C toggles the monitor), for `slate run`. The console log and
	// Expect still work; Send does not.
	Interactive bool
	// Console, if set, receives a copy of the console output as it arrives
	// (os.Stdout for `make demo`). Ignored when Interactive.
	Console io.Writer

	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string

	// Dir is the work dir for StartContext; empty means a new temporary
	// directory, removed by Close. Start always uses t.TempDir.
	Dir string
}

// GuestForward is a TCP address on the guest's network (Addr,
// "169.254.169.254:80") whose connections go to To on the host
// ("127.0.0.1:PORT").
type GuestForward struct {
	Addr, To string
}

// Disk is an extra disk.
type Disk struct {
	Path   string
	Format string // "raw" or "qcow2"; empty means ask qemu-img
	// InPlace attaches Path itself, so the guest's writes land in it (a
	// scratch disk the test inspects afterwards). By default the disk gets
	// an overlay and Path is never written, like Config.Disk.
	InPlace bool
	// Bus is the controller; empty means BusVirtio.
	Bus Bus
}

// Bus is a disk controller, as the guest sees it. Firmware (OVMF) boots
// from each; the guest's kernel needs its driver (virtio_blk,
// virtio_scsi + sd_mod, nvme, ahci + sd_mod).
type Bus string

const (
	BusVirtio Bus = "virtio" // virtio-blk-pci: /dev/vda
	BusSCSI   Bus = "scsi"   // scsi-hd on a virtio-scsi-pci controller: /dev/sda
	BusNVMe   Bus = "nvme"   // an NVMe controller per disk: /dev/nvme0n1
	BusSATA   Bus = "sata"   // ide-hd on q35's built-in AHCI controller: /dev/sda
)

// The accelerators Config.Accel names.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Forward exposes a guest port on the host.
type Forward struct {
	GuestPort int
	// HostPort on 127.0.0.1; 0 picks a free one, see [Machine.HostAddr].
	HostPort int
	UDP      bool
}
