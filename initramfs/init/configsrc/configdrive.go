package configsrc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func init() { Register(OrderConfigDrive, ConfigDrive{}) }

// DriveFile is the config's file at the root of a config drive.
const DriveFile = "slate.yaml"

// DriveWait bounds the wait for a config drive to show up, counted from
// when the block drivers were loaded (Env.DevicesSince). It applies only
// when disks may still be appearing: SCSI hosts (virtio-scsi, USB
// storage), NVMe controllers and MMC hosts find their disks in the
// background, while virtio-blk adds its disks, partitions and device nodes
// before its module's loading returns. A machine with none of them has
// every disk it will have, and is scanned once.
const DriveWait = 2 * time.Second

// asyncClasses are the /sys/class directories of controllers whose disks
// appear asynchronously.
var asyncClasses = []string{"scsi_host", "nvme", "mmc_host"}

// drivePoll is how often the block devices are scanned while waiting.
const drivePoll = 100 * time.Millisecond

// Mount options. vfat names its code page and I/O character set (Debian's
// defaults, whose nls_cp437 and nls_ascii are in every initramfs) so that
// the mount does not depend on a kernel's FAT_DEFAULT_* settings, which
// may name an NLS module that is not there (Ubuntu: iso8859-1); utf8 shows
// long names as UTF-8. iso9660 needs none: it falls back to the built-in
// NLS table.
var driveMountOptions = map[string]string{
	FSVfat:    "codepage=437,iocharset=ascii,utf8",
	FSISO9660: "",
}

// ConfigDrive reads slate.yaml from a config drive: any disk or partition
// whose vfat or iso9660 filesystem is labelled SLATE-CONFIG (see
// DriveLabel). It finds the label by reading superblocks (Probe), mounts
// that one filesystem read-only, reads the file and unmounts it. Two
// different filesystems with the label are an error: which one was meant?
type ConfigDrive struct {
	// SysBlock is /sys/class/block and Dev is /dev (tests point them at fakes).
	SysBlock, Dev string
	// MountDir is where the drive is mounted while it is read.
	MountDir string
	// Wait overrides DriveWait.
	Wait time.Duration
	// Mount and Unmount override mount(2) and umount(2) (tests).
	Mount   func(dev, dir, fstype, data string) error
	Unmount func(dir string) error
}

// Name implements Source.
func (ConfigDrive) Name() string { return "config-drive" }

// Drive is a filesystem labelled as a config drive.
type Drive struct {
	// Dev is the device node, Name its sysfs name (vdb, sr0, sda1).
	Dev, Name string
	Probed
}

func (d Drive) String() string { return fmt.Sprintf("%s (%s, label %q)", d.Dev, d.Type, d.Label) }

func (c ConfigDrive) sysBlock() string {
	if c.SysBlock == "" {
		return "/sys/class/block"
	}
	return c.SysBlock
}

func (c ConfigDrive) dev() string {
	if c.Dev == "" {
		return "/dev"
	}
	return c.Dev
}

// skipDrive is true for block devices that never hold a config drive, or
// that are slow or unsafe to read blindly (floppies).
func skipDrive(name string) bool {
	for _, p := range []string{"ram", "zram", "loop", "dm-", "md", "fd", "nbd", "mtdblock"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Scan returns the config drives present now, disks and partitions alike,
// in sysfs name order. The same filesystem seen twice (a hybrid ISO seen
// as a disk and as its first partition) is listed once.
func (c ConfigDrive) Scan() ([]Drive, error) {
	ents, err := os.ReadDir(c.sysBlock())
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var found []Drive
	seen := map[Probed]bool{}
	for _, name := range names {
		if skipDrive(name) {
			continue
		}
		// Size 0: an empty CD drive, or a disk not ready yet.
		if s, err := os.ReadFile(filepath.Join(c.sysBlock(), name, "size")); err != nil || strings.TrimSpace(string(s)) == "0" {
			continue
		}
		dev := filepath.Join(c.dev(), name)
		f, err := os.Open(dev)
		if err != nil {
			continue // the node is not there yet, or no medium
		}
		p, ok := Probe(f)
		f.Close()
		if !ok || !IsDriveLabel(p.Type, p.Label) || seen[p] {
			continue
		}
		seen[p] = true
		found = append(found, Drive{Dev: dev, Name: name, Probed: p})
	}
	return found, nil
}

// disksMayAppear is true when a controller that finds its disks in the
// background exists (see DriveWait). SysBlock's siblings are the other
// /sys/class directories.
func (c ConfigDrive) disksMayAppear() bool {
	class := filepath.Dir(c.sysBlock())
	for _, d := range asyncClasses {
		if ents, _ := os.ReadDir(filepath.Join(class, d)); len(ents) > 0 {
			return true
		}
	}
	return false
}

// Find waits for a config drive until the deadline and returns it;
// ErrNotFound when there is none.
func (c ConfigDrive) Find(ctx context.Context, deadline time.Time) (Drive, error) {
	for {
		drives, err := c.Scan()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return Drive{}, err
		}
		switch len(drives) {
		case 0:
		case 1:
			return drives[0], nil
		default:
			var ds []string
			for _, d := range drives {
				ds = append(ds, d.String())
			}
			return Drive{}, fmt.Errorf("%d filesystems are labelled as config drives: %s: refusing to guess", len(drives), strings.Join(ds, ", "))
		}
		if !time.Now().Before(deadline) || !c.disksMayAppear() {
			return Drive{}, ErrNotFound
		}
		if err := sleep(ctx, drivePoll); err != nil {
			return Drive{}, err
		}
	}
}

// Fetch implements Source.
func (c ConfigDrive) Fetch(ctx context.Context) ([]byte, error) {
	env := EnvFrom(ctx)
	wait := c.Wait
	if wait == 0 {
		wait = DriveWait
	}
	since := env.DevicesSince
	if since.IsZero() {
		since = time.Now()
	}
	d, err := c.Find(ctx, since.Add(wait))
	if err != nil {
		return nil, err
	}
	env.Location = d.Dev
	logf(ctx, "config drive: %s", d)
	b, err := c.read(d)
	if err != nil {
		return nil, fmt.Errorf("config drive %s: %w", d, err)
	}
	return b, nil
}

// read mounts the drive read-only, reads DriveFile and unmounts it.
func (c ConfigDrive) read(d Drive) (data []byte, err error) {
	dir := c.MountDir
	if dir == "" {
		dir = "/slate-config-drive"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	mnt, umnt := c.Mount, c.Unmount
	if mnt == nil {
		mnt = func(dev, dir, fstype, data string) error {
			return unix.Mount(dev, dir, fstype, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, data)
		}
	}
	if umnt == nil {
		umnt = func(dir string) error {
			if err := unix.Unmount(dir, 0); err != nil {
				return unix.Unmount(dir, unix.MNT_DETACH)
			}
			return nil
		}
	}
	if err := mnt(d.Dev, dir, d.Type, driveMountOptions[d.Type]); err != nil {
		return nil, fmt.Errorf("mounting it read-only: %w", err)
	}
	defer func() {
		if uerr := umnt(dir); uerr != nil && err == nil {
			err = fmt.Errorf("unmounting it: %w", uerr)
			data = nil
		}
		os.Remove(dir)
	}()
	// No symlinks (Rock Ridge has them): the file itself, a regular one.
	fd, err := unix.Open(filepath.Join(dir, DriveFile), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		if _, serr := os.Lstat(filepath.Join(dir, "slate.yam")); serr == nil && d.Type == FSISO9660 {
			return nil, fmt.Errorf("no %s at its root (its names are 8.3: make the ISO with Rock Ridge or Joliet names, genisoimage -R -J)", DriveFile)
		}
		return nil, fmt.Errorf("no %s at its root", DriveFile)
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%s is a symbolic link", DriveFile)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DriveFile, err)
	}
	f := os.NewFile(uintptr(fd), DriveFile)
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("%s: %w", DriveFile, err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", DriveFile, st.Mode().Type())
	}
	b, err := readLimited(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DriveFile, err)
	}
	return b, nil
}
