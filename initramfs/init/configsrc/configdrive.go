package configsrc

import (
	"context"
	"errors"
	"fmt"
	"io"
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
// NLS table; nor does udf (Azure's provisioning CD), whose names are UTF-8.
var driveMountOptions = map[string]string{
	FSVfat:    "codepage=437,iocharset=ascii,utf8",
	FSISO9660: "",
	FSUDF:     "",
}

// Drives finds filesystems on the machine's disks, partitions and CDs by
// reading their superblocks, and reads files from them: the vfat and
// iso9660 filesystems labelled as the config drive (SLATE-CONFIG),
// OpenStack's (config-2) or NoCloud's (cidata), and Azure's provisioning
// CD. It mounts only a filesystem it reads, read-only, and only while it
// reads it.
type Drives struct {
	// SysBlock is /sys/class/block and Dev is /dev (tests point them at fakes).
	SysBlock, Dev string
	// MountDir is where a drive is mounted while it is read; "" is the
	// source's own directory under /.
	MountDir string
	// Wait overrides DriveWait.
	Wait time.Duration
	// Mount and Unmount override mount(2) and umount(2) (tests).
	Mount   func(dev, dir, fstype, data string) error
	Unmount func(dir string) error
}

// ConfigDrive reads slate.yaml from a config drive: any disk or partition
// whose vfat or iso9660 filesystem is labelled SLATE-CONFIG (see
// DriveLabel), found and mounted as Drives does. Two different
// filesystems with the label are an error: which one was meant?
type ConfigDrive Drives

// Name implements Source.
func (ConfigDrive) Name() string { return "config-drive" }

// Drive is a filesystem found on a block device.
type Drive struct {
	// Dev is the device node, Name its sysfs name (vdb, sr0, sda1).
	Dev, Name string
	Probed
}

func (d Drive) String() string { return fmt.Sprintf("%s (%s, label %q)", d.Dev, d.Type, d.Label) }

// driveMatch says whether a block device (sysfs name, device) holds a
// filesystem a source wants, and which.
type driveMatch func(name string, r io.ReaderAt) (Probed, bool)

// labelled matches the vfat and iso9660 filesystems whose label satisfies
// match.
func labelled(match func(fsType, label string) bool) driveMatch {
	return func(_ string, r io.ReaderAt) (Probed, bool) {
		p, ok := Probe(r)
		return p, ok && match(p.Type, p.Label)
	}
}

func (d Drives) sysBlock() string {
	if d.SysBlock == "" {
		return "/sys/class/block"
	}
	return d.SysBlock
}

func (d Drives) dev() string {
	if d.Dev == "" {
		return "/dev"
	}
	return d.Dev
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

// scan returns the drives present now that match, disks and partitions
// alike, in sysfs name order. The same filesystem seen twice (a hybrid
// ISO seen as a disk and as its first partition) is listed once.
func (d Drives) scan(match driveMatch) ([]Drive, error) {
	ents, err := os.ReadDir(d.sysBlock())
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
		if s, err := os.ReadFile(filepath.Join(d.sysBlock(), name, "size")); err != nil || strings.TrimSpace(string(s)) == "0" {
			continue
		}
		dev := filepath.Join(d.dev(), name)
		f, err := os.Open(dev)
		if err != nil {
			continue // the node is not there yet, or no medium
		}
		p, ok := match(name, f)
		f.Close()
		if !ok || seen[p] {
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
func (d Drives) disksMayAppear() bool {
	class := filepath.Dir(d.sysBlock())
	for _, c := range asyncClasses {
		if ents, _ := os.ReadDir(filepath.Join(class, c)); len(ents) > 0 {
			return true
		}
	}
	return false
}

// find waits for the one drive that matches until the deadline and
// returns it; ErrNotFound when there is none, an error when there are
// several (what names them: "config drives").
func (d Drives) find(ctx context.Context, deadline time.Time, what string, match driveMatch) (Drive, error) {
	for {
		drives, err := d.scan(match)
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
			return Drive{}, fmt.Errorf("%d filesystems are labelled as %s: %s: refusing to guess", len(drives), what, strings.Join(ds, ", "))
		}
		if !time.Now().Before(deadline) || !d.disksMayAppear() {
			return Drive{}, ErrNotFound
		}
		if err := sleep(ctx, drivePoll); err != nil {
			return Drive{}, err
		}
	}
}

// deadline is when the wait for drives ends on this boot: Wait (or
// DriveWait) from when the block drivers were loaded. Every source that
// looks for a drive shares it, so only the first one waits.
func (d Drives) deadline(ctx context.Context) time.Time {
	wait := d.Wait
	if wait == 0 {
		wait = DriveWait
	}
	since := EnvFrom(ctx).DevicesSince
	if since.IsZero() {
		since = time.Now()
	}
	return since.Add(wait)
}

// mounted mounts the drive read-only on MountDir (else defaultDir), calls
// fn with the directory and unmounts it. An unmount that fails fails the
// call: what fn read is not trusted then.
func (d Drives) mounted(drv Drive, defaultDir string, fn func(dir string) error) (err error) {
	dir := d.MountDir
	if dir == "" {
		dir = defaultDir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	mnt, umnt := d.Mount, d.Unmount
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
	if err := mnt(drv.Dev, dir, drv.Type, driveMountOptions[drv.Type]); err != nil {
		os.Remove(dir)
		return fmt.Errorf("mounting it read-only: %w", err)
	}
	defer func() {
		if uerr := umnt(dir); uerr != nil && err == nil {
			err = fmt.Errorf("unmounting it: %w", uerr)
		}
		os.Remove(dir)
	}()
	return fn(dir)
}

// readFile reads the regular file name (a slash-separated path) under
// dir, following no symbolic link (Rock Ridge has them) on the way, and
// at most MaxSize bytes of it. A missing file or directory is an error
// that matches os.ErrNotExist.
func readFile(dir, name string) ([]byte, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	parts := strings.Split(name, "/")
	for i, p := range parts {
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if i < len(parts)-1 {
			flags |= unix.O_DIRECTORY
		} else {
			flags |= unix.O_NONBLOCK // a FIFO does not block the boot
		}
		next, err := unix.Openat(fd, p, flags, 0)
		if errors.Is(err, unix.ENOTDIR) { // O_DIRECTORY on a symbolic link
			var st unix.Stat_t
			if unix.Fstatat(fd, p, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = unix.ELOOP
			}
		}
		unix.Close(fd)
		sub := strings.Join(parts[:i+1], "/")
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, &os.PathError{Op: "open", Path: sub, Err: os.ErrNotExist}
		case errors.Is(err, unix.ELOOP):
			return nil, fmt.Errorf("%s is a symbolic link", sub)
		case errors.Is(err, unix.ENOTDIR):
			return nil, fmt.Errorf("%s is not a directory", sub)
		case err != nil:
			return nil, fmt.Errorf("%s: %w", sub, err)
		}
		fd = next
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", name, st.Mode().Type())
	}
	b, err := readLimited(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return b, nil
}

// isConfigDrive matches the config drive's label.
var isConfigDrive = labelled(IsDriveLabel)

// Scan returns the config drives present now, disks and partitions alike,
// in sysfs name order. The same filesystem seen twice (a hybrid ISO seen
// as a disk and as its first partition) is listed once.
func (c ConfigDrive) Scan() ([]Drive, error) { return Drives(c).scan(isConfigDrive) }

func (c ConfigDrive) disksMayAppear() bool { return Drives(c).disksMayAppear() }

// Find waits for a config drive until the deadline and returns it;
// ErrNotFound when there is none.
func (c ConfigDrive) Find(ctx context.Context, deadline time.Time) (Drive, error) {
	return Drives(c).find(ctx, deadline, "config drives", isConfigDrive)
}

// Fetch implements Source.
func (c ConfigDrive) Fetch(ctx context.Context) ([]byte, error) {
	d, err := c.Find(ctx, Drives(c).deadline(ctx))
	if err != nil {
		return nil, err
	}
	EnvFrom(ctx).Location = d.Dev
	logf(ctx, "config drive: %s", d)
	var b []byte
	err = Drives(c).mounted(d, "/slate-config-drive", func(dir string) error {
		var err error
		b, err = readFile(dir, DriveFile)
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Lstat(filepath.Join(dir, "slate.yam")); serr == nil && d.Type == FSISO9660 {
				return fmt.Errorf("no %s at its root (its names are 8.3: make the ISO with Rock Ridge or Joliet names, genisoimage -R -J)", DriveFile)
			}
			return fmt.Errorf("no %s at its root", DriveFile)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("config drive %s: %w", d, err)
	}
	return b, nil
}
