// Package node finds what the agent works on in a booted slate node: the
// init's boot record, the disk it booted from, that disk's slate partitions
// as block devices, the ESP (mounted on demand) and systemd-boot's EFI
// variables.
//
// Everything is found from the boot record the init left in /run/slate, not
// from names like /dev/vda: the disk is the parent of the device the running
// root came from, so a node with other disks attached upgrades the right one.
package node

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/gpt"
	"github.com/slate-os/slate/boot/record"
)

// ESPDir is where the agent mounts the ESP; systemd-bless-boot is pointed
// there too (SYSTEMD_ESP_PATH in the image's drop-in).
const ESPDir = boot.RunDir + "/esp"

// Partition is one of the disk's slate partitions.
type Partition struct {
	Name     string `json:"name"`
	Number   int    `json:"number"`
	Device   string `json:"device"`
	PartUUID string `json:"partuuid"` // lowercase, as the kernel command line has it
	Size     int64  `json:"size"`
}

// Node is the running node.
type Node struct {
	Record  *record.Record
	Running boot.Slot
	// Disk is the whole disk the node booted from, e.g. /dev/vda.
	Disk  string
	Parts map[string]Partition
	// Paths, replaceable in tests.
	paths Paths
}

// Paths are the system locations Discover reads; tests point them at a
// temporary tree.
type Paths struct {
	Record  string // /run/slate/boot.json
	Sys     string // /sys
	Dev     string // /dev
	EFIVars string // /sys/firmware/efi/efivars
}

// System is the real node.
var System = Paths{Record: boot.BootRecord, Sys: "/sys", Dev: "/dev", EFIVars: "/sys/firmware/efi/efivars"}

// Discover reads the boot record and the boot disk's partition table.
func Discover(p Paths) (*Node, error) {
	rec, err := record.Read(p.Record)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: this is not a booted slate node (the agent runs on the node)", p.Record)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Record, err)
	}
	slot, err := boot.ParseSlot(rec.Slot)
	if err != nil {
		return nil, fmt.Errorf("%s: slot: %w", p.Record, err)
	}
	if rec.RootDevice == "" {
		return nil, fmt.Errorf("%s names no root device", p.Record)
	}
	n := &Node{Record: rec, Running: slot, Parts: map[string]Partition{}, paths: p}
	part := filepath.Base(rec.RootDevice)
	// /sys/class/block/vda2 links to .../block/vda/vda2: the parent is the disk.
	link, err := filepath.EvalSymlinks(filepath.Join(p.Sys, "class/block", part))
	if err != nil {
		return nil, fmt.Errorf("root device %s: %w", rec.RootDevice, err)
	}
	disk := filepath.Base(filepath.Dir(link))
	n.Disk = filepath.Join(p.Dev, disk)
	sector := 512
	if b, err := os.ReadFile(filepath.Join(p.Sys, "class/block", disk, "queue/logical_block_size")); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			sector = v
		}
	}
	f, err := os.Open(n.Disk)
	if err != nil {
		return nil, fmt.Errorf("boot disk: %w", err)
	}
	defer f.Close()
	t, err := gpt.Read(f, sector)
	if err != nil {
		return nil, fmt.Errorf("boot disk %s: %w", n.Disk, err)
	}
	devs, err := partitionDevices(filepath.Join(p.Sys, "class/block", disk), p.Dev)
	if err != nil {
		return nil, fmt.Errorf("boot disk %s: %w", n.Disk, err)
	}
	for _, tp := range t.Partitions {
		n.Parts[tp.Name] = Partition{
			Name: tp.Name, Number: tp.Number, Device: devs[tp.Number],
			PartUUID: strings.ToLower(tp.ID.String()),
			Size:     int64(tp.LastLBA-tp.FirstLBA+1) * int64(sector),
		}
	}
	for _, name := range []string{boot.PartESP, boot.SlotA.PartitionName(), boot.SlotB.PartitionName(), boot.PartState} {
		pt, ok := n.Parts[name]
		if !ok {
			return nil, fmt.Errorf("boot disk %s has no partition named %s: not a slate disk", n.Disk, name)
		}
		if pt.Device == "" {
			return nil, fmt.Errorf("boot disk %s: partition %d (%s) has no block device", n.Disk, pt.Number, name)
		}
	}
	if got := n.Parts[slot.PartitionName()].PartUUID; !strings.EqualFold(got, rec.RootPartUUID) {
		return nil, fmt.Errorf("boot record says slot %s is PARTUUID %s, but %s on %s is %s", slot, rec.RootPartUUID, slot.PartitionName(), n.Disk, got)
	}
	return n, nil
}

// partitionDevices maps partition numbers to device nodes from sysfs: each
// partition's directory under the disk's has a "partition" file.
func partitionDevices(diskSys, dev string) (map[int]string, error) {
	ents, err := os.ReadDir(diskSys)
	if err != nil {
		return nil, err
	}
	m := map[int]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(diskSys, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if num, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			m[num] = filepath.Join(dev, e.Name())
		}
	}
	return m, nil
}

// Slot is the partition of a slot.
func (n *Node) Slot(s boot.Slot) Partition { return n.Parts[s.PartitionName()] }

// ESP is the ESP partition.
func (n *Node) ESP() Partition { return n.Parts[boot.PartESP] }

// State is the state partition.
func (n *Node) State() Partition { return n.Parts[boot.PartState] }

// MountESP mounts the ESP at dir unless something is mounted there already,
// and returns dir. It stays mounted: systemd-bless-boot and later agent
// commands use it.
func (n *Node) MountESP(dir string) (string, error) {
	mounted, err := IsMountPoint(dir)
	if err != nil {
		return "", err
	}
	if mounted {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dev := n.ESP().Device
	if err := unix.Mount(dev, dir, "vfat", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "umask=0077"); err != nil {
		// Another agent (slate status beside slate-health) mounted it between
		// the check and the mount: the kernel refuses the same mount twice.
		if errors.Is(err, unix.EBUSY) {
			if again, _ := IsMountPoint(dir); again {
				return dir, nil
			}
		}
		return "", fmt.Errorf("mounting the ESP (%s) on %s: %w", dev, dir, err)
	}
	return dir, nil
}

// IsMountPoint says whether dir is a mount point, from /proc/self/mountinfo.
func IsMountPoint(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	clean := filepath.Clean(dir)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == clean {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// loaderGUID is systemd-boot's vendor GUID for its EFI variables.
const loaderGUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// LoaderVar reads one of systemd-boot's EFI variables (LoaderEntrySelected,
// LoaderBootCountPath, ...) as a string; "" when it is not set.
func (n *Node) LoaderVar(name string) (string, error) { return n.paths.LoaderVar(name) }

// CountPath is Paths.CountPath for this node.
func (n *Node) CountPath() (string, error) { return n.paths.CountPath() }

// EFIVars is where the node's efivarfs is mounted.
func (n *Node) EFIVars() string { return n.paths.EFIVars }

// LoaderVar reads a systemd-boot variable without the rest of the node:
// the health check needs to know whether this boot is on trial even when
// it cannot find the node.
func (p Paths) LoaderVar(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(p.EFIVars, name+"-"+loaderGUID))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return decodeEFIString(b), nil
}

// decodeEFIString skips efivarfs's 4 attribute bytes and decodes the
// NUL-terminated UTF-16LE string systemd-boot stores.
func decodeEFIString(b []byte) string {
	if len(b) < 4 {
		return ""
	}
	b = b[4:]
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := uint16(b[i]) | uint16(b[i+1])<<8
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// BootCounted says whether systemd-boot counted this boot: it sets
// LoaderBootCountPath only when the entry it booted had tries.
func (n *Node) BootCounted() (bool, error) { return n.paths.BootCounted() }

// BootCounted is Node.BootCounted without the node.
func (p Paths) BootCounted() (bool, error) {
	v, err := p.CountPath()
	return v != "", err
}

// CountPath is systemd-boot's LoaderBootCountPath, the counted entry this
// boot started, or "" when this boot is not counted. A path naming another
// slot's entry than LoaderEntrySelected is left from an image that failed
// to load (the firmware refused it and ran systemd-boot again, which booted
// the other slot uncounted): "", as the init has it.
func (p Paths) CountPath() (string, error) {
	v, err := p.LoaderVar("LoaderBootCountPath")
	if v == "" || err != nil {
		return v, err
	}
	if sel, _ := p.LoaderVar("LoaderEntrySelected"); boot.StaleCountPath(v, sel) {
		return "", nil
	}
	return v, nil
}

// BootID is the kernel's random ID of this boot, as journald knows it.
func BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""), nil
}
