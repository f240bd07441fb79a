// Package blockdev finds partitions by PARTUUID (or by GPT name on the disk
// of one found by PARTUUID) and tells the kernel about a grown partition.
//
// The kernel does not put a partition's PARTUUID in sysfs or its uevent, so
// the finder reads the GPT of every whole disk in /sys/class/block (with
// boot/gpt) and maps the matching entry's number to the partition's device
// through sysfs (<disk>/<part>/partition). That works for any disk naming
// (vda4, sda4, nvme0n1p4) and needs no udev.
package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/boot/gpt"
)

// Partition is a GPT partition found on a disk.
type Partition struct {
	// Dev is the partition's device node, e.g. /dev/vda4; Name its sysfs name.
	Dev, Name string
	// Disk is the whole disk's device node, e.g. /dev/vda; DiskName its sysfs name.
	Disk, DiskName string
	// Number is the partition number (1-based).
	Number int
	// PartUUID is canonical (upper case); Label the GPT partition name; Type the GPT type GUID.
	PartUUID, Label, Type string
	// FirstLBA, LastLBA are in the disk's logical sectors of SectorSize bytes.
	FirstLBA, LastLBA uint64
	SectorSize        int
}

// Finder looks partitions up. Its zero value uses /sys/class/block and /dev.
type Finder struct {
	// SysBlock is /sys/class/block; Dev is /dev (tests point them at fakes).
	SysBlock, Dev string
	// Disks, when set, are the only whole disks scanned (by sysfs name);
	// otherwise every disk but RAM, zram, loop, device-mapper, md, CD and
	// floppy devices is.
	Disks []string
}

func (f Finder) sysBlock() string {
	if f.SysBlock == "" {
		return "/sys/class/block"
	}
	return f.SysBlock
}

func (f Finder) dev() string {
	if f.Dev == "" {
		return "/dev"
	}
	return f.Dev
}

func readTrim(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

// skipDisk is true for block devices that never hold slate's GPT.
func skipDisk(name string) bool {
	for _, p := range []string{"ram", "zram", "loop", "dm-", "md", "sr", "fd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Scan returns every partition that the GPTs of the present disks hold and
// whose device already exists, keyed by canonical PARTUUID. A PARTUUID
// found twice maps to all its partitions.
func (f Finder) Scan() (map[string][]Partition, error) {
	ents, err := os.ReadDir(f.sysBlock())
	if err != nil {
		return nil, err
	}
	found := map[string][]Partition{}
	for _, e := range ents {
		name := e.Name()
		sys := filepath.Join(f.sysBlock(), name)
		if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
			continue // a partition
		}
		if f.Disks != nil && !contains(f.Disks, name) || f.Disks == nil && skipDisk(name) {
			continue
		}
		if s, err := readTrim(filepath.Join(sys, "size")); err != nil || s == "0" {
			continue
		}
		ss := 512
		if s, err := readTrim(filepath.Join(sys, "queue", "logical_block_size")); err == nil {
			if n, err := strconv.Atoi(s); err == nil && n >= 512 {
				ss = n
			}
		}
		disk := filepath.Join(f.dev(), name)
		tab, err := readGPT(disk, ss)
		if err != nil {
			continue // not a GPT disk (or not readable yet)
		}
		parts := partitionNames(sys)
		for _, p := range tab.Partitions {
			pname, ok := parts[p.Number]
			if !ok {
				continue // the kernel has not created it (yet)
			}
			id := p.ID.String()
			found[id] = append(found[id], Partition{
				Dev: filepath.Join(f.dev(), pname), Name: pname,
				Disk: disk, DiskName: name,
				Number: p.Number, PartUUID: id, Label: p.Name, Type: p.Type.String(),
				FirstLBA: p.FirstLBA, LastLBA: p.LastLBA, SectorSize: ss,
			})
		}
	}
	return found, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func readGPT(disk string, sectorSize int) (*gpt.Table, error) {
	fd, err := os.Open(disk)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	return gpt.Read(fd, sectorSize)
}

// partitionNames maps partition numbers to sysfs names under a disk's directory.
func partitionNames(sysDisk string) map[int]string {
	m := map[int]string{}
	ents, err := os.ReadDir(sysDisk)
	if err != nil {
		return m
	}
	for _, e := range ents {
		s, err := readTrim(filepath.Join(sysDisk, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(s); err == nil {
			m[n] = e.Name()
		}
	}
	return m
}

// NotFoundError says which PARTUUIDs did not show up in time.
type NotFoundError struct {
	Missing []string // descriptions, e.g. "slot a: no partition with PARTUUID …"
	After   time.Duration
}

func (e *NotFoundError) Error() string {
	var b strings.Builder
	for i, m := range e.Missing {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s after %s", m, e.After)
	}
	return b.String()
}

// Want is a partition to wait for.
type Want struct {
	PartUUID string // canonical
	// What names it in errors, e.g. "slot a" or "state".
	What string
}

// Wait polls until every wanted partition exists, or the timeout passes.
// Disks appear asynchronously after their drivers load, so the first scans
// may find nothing. A PARTUUID on two partitions is an error (which one
// would be the root?).
func (f Finder) Wait(want []Want, timeout, poll time.Duration) (map[string]Partition, error) {
	deadline := time.Now().Add(timeout)
	for {
		found, err := f.Scan()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		res := map[string]Partition{}
		var missing []string
		for _, w := range want {
			ps := found[w.PartUUID]
			switch len(ps) {
			case 0:
				missing = append(missing, fmt.Sprintf("%s: no partition with PARTUUID %s", w.What, w.PartUUID))
			case 1:
				res[w.PartUUID] = ps[0]
			default:
				return nil, fmt.Errorf("%s: PARTUUID %s is on %d partitions (%s): refusing to guess", w.What, w.PartUUID, len(ps), devs(ps))
			}
		}
		if len(missing) == 0 {
			return res, nil
		}
		if !time.Now().Before(deadline) {
			return nil, &NotFoundError{Missing: missing, After: timeout.Round(time.Millisecond)}
		}
		time.Sleep(poll)
	}
}

// WaitOnDiskOf polls until the partition anchor names exists and its disk
// holds one partition with each of the GPT names (the names the kernel
// shows as PARTNAME in uevent; read here from the GPT itself), or the
// timeout passes. It returns the anchor and the named partitions by name.
// Anchoring the search to one disk (the ESP's, under Secure Boot) keeps a
// second slate disk, or a copy of this one, from being taken; a name found
// twice on that disk is an error.
func (f Finder) WaitOnDiskOf(anchor Want, names []string, timeout, poll time.Duration) (Partition, map[string]Partition, error) {
	deadline := time.Now().Add(timeout)
	for {
		found, err := f.Scan()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return Partition{}, nil, err
		}
		var missing []string
		var at Partition
		switch ps := found[anchor.PartUUID]; len(ps) {
		case 0:
			missing = append(missing, fmt.Sprintf("%s: no partition with PARTUUID %s", anchor.What, anchor.PartUUID))
		case 1:
			at = ps[0]
		default:
			return Partition{}, nil, fmt.Errorf("%s: PARTUUID %s is on %d partitions (%s): refusing to guess", anchor.What, anchor.PartUUID, len(ps), devs(ps))
		}
		res := map[string]Partition{}
		if len(missing) == 0 {
			for _, name := range names {
				var on []Partition
				for _, ps := range found {
					for _, p := range ps {
						if p.DiskName == at.DiskName && p.Label == name {
							on = append(on, p)
						}
					}
				}
				switch len(on) {
				case 0:
					missing = append(missing, fmt.Sprintf("no partition named %s on disk %s (the disk of %s, PARTUUID %s)", name, at.DiskName, anchor.What, anchor.PartUUID))
				case 1:
					res[name] = on[0]
				default:
					sort.Slice(on, func(i, j int) bool { return on[i].Number < on[j].Number })
					return Partition{}, nil, fmt.Errorf("%d partitions are named %s on disk %s (%s): refusing to guess", len(on), name, at.DiskName, devs(on))
				}
			}
		}
		if len(missing) == 0 {
			return at, res, nil
		}
		if !time.Now().Before(deadline) {
			return Partition{}, nil, &NotFoundError{Missing: missing, After: timeout.Round(time.Millisecond)}
		}
		time.Sleep(poll)
	}
}

// devs lists partitions' device nodes for a message.
func devs(ps []Partition) string {
	var d []string
	for _, p := range ps {
		d = append(d, p.Dev)
	}
	return strings.Join(d, ", ")
}

// Size returns the size in bytes of a block device or regular file.
func Size(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode().IsRegular() {
		return st.Size(), nil
	}
	var n uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); e != 0 {
		return 0, fmt.Errorf("%s: BLKGETSIZE64: %w", f.Name(), e)
	}
	return int64(n), nil
}

// ResizePartition tells the kernel that partition number of disk (an open
// block device) now spans length bytes from start: BLKPG_RESIZE_PARTITION,
// which works while other partitions of the disk are mounted (BLKRRPART
// would fail with EBUSY once the root is mounted). BLKRRPART is the
// fallback for kernels without it.
func ResizePartition(disk *os.File, number int, start, length int64) error {
	p := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(number)}
	arg := unix.BlkpgIoctlArg{
		Op:      unix.BLKPG_RESIZE_PARTITION,
		Datalen: int32(unsafe.Sizeof(p)),
		Data:    (*byte)(unsafe.Pointer(&p)),
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, disk.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
	if e == 0 {
		return nil
	}
	if err := unix.IoctlSetInt(int(disk.Fd()), unix.BLKRRPART, 0); err != nil {
		return fmt.Errorf("%s: BLKPG resize of partition %d: %v; BLKRRPART: %v", disk.Name(), number, e, err)
	}
	return nil
}

// SysSize returns a block device's size in bytes as sysfs reports it
// (/sys/class/block/<name>/size counts 512-byte sectors whatever the disk's
// sector size).
func (f Finder) SysSize(name string) (int64, error) {
	s, err := readTrim(filepath.Join(f.sysBlock(), name, "size"))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s size %q: %w", name, s, err)
	}
	return n * 512, nil
}

// GrowResult says what Grow did.
type GrowResult struct {
	// TableChanged is true when the GPT was rewritten.
	TableChanged bool
	// KernelChanged is true when the kernel's idea of the partition's size was updated.
	KernelChanged bool
	// OldSize and NewSize are the partition's sizes in bytes.
	OldSize, NewSize int64
}

// Grow extends p to the end of its disk: it rewrites the GPT (primary and
// backup, see gpt.GrowLast) and then tells the kernel the new size, and
// checks that sysfs reports it. Safe to repeat.
func (f Finder) Grow(p Partition) (GrowResult, error) {
	var res GrowResult
	id, err := gpt.ParseGUID(p.PartUUID)
	if err != nil {
		return res, err
	}
	disk, err := os.OpenFile(p.Disk, os.O_RDWR, 0)
	if err != nil {
		return res, err
	}
	defer disk.Close()
	size, err := Size(disk)
	if err != nil {
		return res, err
	}
	g, err := gpt.GrowLast(disk, p.SectorSize, size, id)
	if err != nil {
		return res, fmt.Errorf("%s: %w", p.Disk, err)
	}
	ss := int64(p.SectorSize)
	res.TableChanged = g.Changed
	res.OldSize = int64(g.OldLastLBA-g.FirstLBA+1) * ss
	res.NewSize = int64(g.NewLastLBA-g.FirstLBA+1) * ss
	cur, err := f.SysSize(p.Name)
	if err != nil {
		return res, err
	}
	if cur != res.NewSize {
		if err := ResizePartition(disk, p.Number, int64(g.FirstLBA)*ss, res.NewSize); err != nil {
			return res, err
		}
		res.KernelChanged = true
		if cur, err = f.SysSize(p.Name); err != nil {
			return res, err
		}
		if cur != res.NewSize {
			return res, fmt.Errorf("%s: the kernel still sees %d bytes after the resize to %d", p.Dev, cur, res.NewSize)
		}
	}
	return res, nil
}
