package boot

import (
	"strconv"
	"strings"
)

// SlotArgs are what a slot's boot entry tells the init about the slot.
type SlotArgs struct {
	Slot          Slot
	RootPartUUID  string // the slot's root partition
	RootHash      string // dm-verity root hash of the slot's image, hex
	StatePartUUID string
	Version       string // the image's version label
}

// SlotCmdline is the kernel command line of a slot's boot entry: base (the
// image's own arguments) then the init's. The builder writes slot A's, the
// agent an upgraded slot's and the init parses it (initramfs/init/cmdline,
// whose tests parse this back). PARTUUIDs go in lower case, as the kernel
// and blkid show them; the init accepts either case.
func SlotCmdline(base string, a SlotArgs) string {
	args := []string{
		ArgSlot + "=" + string(a.Slot),
		ArgRoot + "=" + strings.ToLower(a.RootPartUUID),
		ArgRootHash + "=" + a.RootHash,
		ArgState + "=" + strings.ToLower(a.StatePartUUID),
		ArgVersion + "=" + a.Version,
	}
	if base = strings.TrimSpace(base); base != "" {
		args = append([]string{base}, args...)
	}
	return strings.Join(args, " ")
}

// UKICmdline is the command line signed into a Unified Kernel Image: base,
// the root hash, the version and the image's SBAT generation (which the
// init checks against the node's revocation level), and nothing that names
// a node's slot or
// partitions, so that one signed image fits either slot of any node. Under
// Secure Boot systemd-stub ignores the entry's options, and the init finds
// the slot and partitions from systemd-boot's EFI variables instead
// (initramfs/init/run).
func UKICmdline(base, rootHash, version string, sbat int) string {
	args := []string{ArgRootHash + "=" + rootHash, ArgVersion + "=" + version, ArgSBAT + "=" + strconv.Itoa(sbat)}
	if base = strings.TrimSpace(base); base != "" {
		args = append([]string{base}, args...)
	}
	return strings.Join(args, " ")
}
