package run

// Discovery of the slot and its partitions when the command line names
// none: a Unified Kernel Image's signed command line must fit either slot
// of any node, and under Secure Boot systemd-stub ignores the entry's
// options, which do name them. systemd-boot says what it booted in its EFI
// variables: the entry (whose name carries the slot) and the ESP it loaded
// it from, whose disk holds the slot's root and the state partition.

import (
	"fmt"
	"regexp"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/gpt"
	"github.com/slate-os/slate/initramfs/init/blockdev"
	"github.com/slate-os/slate/initramfs/init/efivar"
)

// systemd-boot's variables (vendor efivar.LoaderGUID), UTF-16 strings.
const (
	// VarEntrySelected is the id of the entry booted: its file name,
	// slate-b.conf or slate-b+2-1.conf.
	VarEntrySelected = "LoaderEntrySelected"
	// VarDevicePartUUID is the PARTUUID of the ESP systemd-boot ran from.
	VarDevicePartUUID = "LoaderDevicePartUUID"
)

// entryID is a slate entry's id, with or without the boot counter and the
// .conf (systemd-boot versions differ in what the id keeps).
var entryID = regexp.MustCompile(`^slate-([abAB])(?:\+\d+(?:-\d+)?)?(?:\.conf)?$`)

// discovery is what discover found.
type discovery struct {
	slot boot.Slot
	// entry is LoaderEntrySelected, espPartUUID LoaderDevicePartUUID (canonical).
	entry, espPartUUID string
	esp, root, state   blockdev.Partition
}

// String is the init's log line for it.
func (d *discovery) String() string {
	return fmt.Sprintf("slot %s (from %s %s), root %s %s, state %s (disk %s, the ESP's: %s, PARTUUID %s)",
		d.slot, VarEntrySelected, d.entry, d.root.Name, d.root.Label, d.state.Name, d.esp.DiskName, d.esp.Name, d.espPartUUID)
}

// selectedSlot is the slot of the entry systemd-boot booted.
func selectedSlot(store efivar.Store) (slot boot.Slot, entry string, err error) {
	entry, err = store.String(VarEntrySelected, efivar.LoaderGUID)
	if err != nil {
		return "", "", fmt.Errorf("discover: reading EFI variable %s: %w", VarEntrySelected, err)
	}
	if entry == "" {
		return "", "", fmt.Errorf("discover: EFI variable %s is not set: boot this UKI through systemd-boot", VarEntrySelected)
	}
	m := entryID.FindStringSubmatch(entry)
	if m == nil {
		return "", entry, fmt.Errorf("discover: systemd-boot booted entry %q (EFI variable %s), which is no slate slot's (slate-a.conf, slate-b+3.conf, ...)", entry, VarEntrySelected)
	}
	slot, err = boot.ParseSlot(m[1])
	return slot, entry, err
}

// discover finds the slot systemd-boot booted and, on the disk of the ESP
// it booted from, the slot's root and the state partition by their GPT
// names, waiting up to timeout for them to appear. d.slot is set as soon
// as it is known, error or not.
func discover(store efivar.Store, f blockdev.Finder, timeout, poll time.Duration) (d discovery, err error) {
	if d.slot, d.entry, err = selectedSlot(store); err != nil {
		return d, err
	}
	id, err := store.String(VarDevicePartUUID, efivar.LoaderGUID)
	if err != nil {
		return d, fmt.Errorf("discover: reading EFI variable %s: %w", VarDevicePartUUID, err)
	}
	if id == "" {
		return d, fmt.Errorf("discover: EFI variable %s is not set: boot this UKI through systemd-boot", VarDevicePartUUID)
	}
	g, err := gpt.ParseGUID(id)
	if err != nil {
		return d, fmt.Errorf("discover: EFI variable %s is %q, not a partition UUID", VarDevicePartUUID, id)
	}
	d.espPartUUID = g.String()
	rootName := d.slot.PartitionName()
	esp, got, err := f.WaitOnDiskOf(blockdev.Want{PartUUID: d.espPartUUID, What: "the ESP"},
		[]string{rootName, boot.PartState}, timeout, poll)
	if err != nil {
		return d, fmt.Errorf("discover: slot %s (from %s %s): %w", d.slot, VarEntrySelected, d.entry, err)
	}
	d.esp, d.root, d.state = esp, got[rootName], got[boot.PartState]
	return d, nil
}

// discoverPartitions is find-partitions for a command line that names no
// slot or partition. It fills the parameters as the command line would
// have, so the rest of the boot and its record are the same.
func (in *initProc) discoverPartitions() error {
	if !in.efi.mounted {
		return fmt.Errorf("discover: the command line names no slot or partition (%s, %s, %s), as a UKI's, and there are no EFI variables to find them from (no UEFI, or efivarfs did not mount)",
			boot.ArgSlot, boot.ArgRoot, boot.ArgState)
	}
	d, err := discover(in.efiStore, in.finder, PartitionTimeout, partitionPoll)
	if d.slot != "" { // a failure is the slot's, for the failure policy
		in.params.Slot, in.rec.Slot = d.slot, string(d.slot)
	}
	if err != nil {
		return err
	}
	in.params.RootPartUUID, in.params.StatePartUUID = d.root.PartUUID, d.state.PartUUID
	in.rec.RootPartUUID, in.rec.StatePartUUID = d.root.PartUUID, d.state.PartUUID
	in.root, in.state = d.root, d.state
	in.rec.RootDevice, in.rec.StateDevice = in.root.Dev, in.state.Dev
	in.log.Infof("discovered %s", d.String())
	return nil
}
