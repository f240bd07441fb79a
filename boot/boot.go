// Package boot holds what the builder, the init and the agent must agree on:
// the disk layout (partition names and types), the nodes' architecture, the
// kernel command line that tells the init which slot to boot (SlotCmdline),
// and the Boot Loader Specification entries that systemd-boot counts down.
package boot

import "fmt"

// Slot names one of the two read-only root slots.
type Slot string

const (
	SlotA Slot = "a"
	SlotB Slot = "b"
)

// Slots lists every slot in disk order.
var Slots = []Slot{SlotA, SlotB}

// ParseSlot accepts "a" or "b" (either case).
func ParseSlot(s string) (Slot, error) {
	switch s {
	case "a", "A":
		return SlotA, nil
	case "b", "B":
		return SlotB, nil
	}
	return "", fmt.Errorf("unknown slot %q (want a or b)", s)
}

// Other is the slot an upgrade writes to while s is running.
func (s Slot) Other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

// PartitionName is the GPT partition name of the slot's root partition.
func (s Slot) PartitionName() string { return "slate-root-" + string(s) }

// ESPDir is the directory on the ESP, without leading slash, that holds the
// slot's kernel and initramfs.
func (s Slot) ESPDir() string { return "slate/" + string(s) }

// GPT partition names and their order on the disk.
const (
	PartESP   = "esp"
	PartState = "slate-state"

	// 1-based partition numbers.
	NumESP   = 1
	NumRootA = 2
	NumRootB = 3
	NumState = 4
)

// Partition type GUIDs, from the UEFI spec (ESP) and the Discoverable
// Partitions Specification (root x86-64, var).
const (
	TypeESP       = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	TypeRootX8664 = "4F68BCE3-E8CD-4C33-A9FB-67E5F3E7B3E8"
	TypeVar       = "4D21B016-B534-45C2-A9FB-5C16E091FD2D"
)

// GPT attribute bits from the Discoverable Partitions Specification.
const (
	// AttrReadOnly marks a partition to be mounted read-only.
	AttrReadOnly uint64 = 1 << 60
	// AttrNoAuto keeps systemd-gpt-auto-generator away: slate's init owns
	// every mount of its partitions.
	AttrNoAuto uint64 = 1 << 63
)

// Kernel command line keys read by the init.
const (
	// ArgSlot is the slot being booted: a or b.
	ArgSlot = "slate.slot"
	// ArgRoot is the root partition's PARTUUID.
	ArgRoot = "slate.root"
	// ArgRootHash is the dm-verity root hash of the slot's image (hex).
	ArgRootHash = "slate.roothash"
	// ArgState is the state partition's PARTUUID.
	ArgState = "slate.state"
	// ArgVersion is the image's version label, for the record.
	ArgVersion = "slate.version"
	// ArgSBAT is the image's SBAT generation (component "slate") in a unified kernel image's signed command line.
	ArgSBAT = "slate.sbat"
	// ArgRebootDelay is how long a fatal init error waits before rebooting (a Go duration).
	ArgRebootDelay = "slate.reboot_delay"
	// ArgPlatform names the cloud the node runs on (ec2, gce, azure,
	// openstack, nocloud, none), overriding what the init reads from DMI.
	ArgPlatform = "slate.platform"
	// ArgConfig is a node config given inline (issue: node config).
	ArgConfig = "slate.config"
)

// ESP paths, without leading slash.
const (
	LoaderConf   = "loader/loader.conf"
	EntriesDir   = "loader/entries"
	FallbackEFI  = "EFI/BOOT/BOOTX64.EFI"
	KernelName   = "vmlinuz"
	InitrdName   = "initramfs"
	UKIName      = "uki.efi" // a slot's signed Unified Kernel Image, under Secure Boot in place of the two above
	EntrySortKey = "slate"
)

// KernelPath is the slot's kernel on the ESP, with a leading slash as BLS entries want.
func (s Slot) KernelPath() string { return "/" + s.ESPDir() + "/" + KernelName }

// InitrdPath is the slot's initramfs on the ESP, with a leading slash.
func (s Slot) InitrdPath() string { return "/" + s.ESPDir() + "/" + InitrdName }

// UKIPath is the slot's Unified Kernel Image on the ESP, with a leading slash.
func (s Slot) UKIPath() string { return "/" + s.ESPDir() + "/" + UKIName }

// StateUnformatted is written by the builder at offset 0 of the state
// partition. The init formats the partition only when it finds this marker:
// a partition that holds neither the marker nor a filesystem is damaged, and
// its data must never be reformatted away silently.
const StateUnformatted = "SLATE-STATE-UNFORMATTED v1\n"

// Paths the init leaves for the agent and the tests.
const (
	RunDir     = "/run/slate"
	BootRecord = "/run/slate/boot.json"
)

// Nodes are x86-64 and nothing else. The builder, the init and the agent
// name that one platform through these, so that a second one starts here
// (with TypeRootX8664, FallbackEFI and SystemdBootEFI).
const (
	// OS and Arch are the nodes' platform in OCI and GOOS/GOARCH naming: the
	// image the builder takes, the artifact's config, what the agent accepts,
	// what the init and the agent are compiled for.
	OS   = "linux"
	Arch = "amd64"
	// ArchName is the architecture as the ELF and UEFI specifications and
	// Linux tools spell it, for messages.
	ArchName = "x86-64"
)
