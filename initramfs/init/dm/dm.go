// Package dm creates device-mapper devices through the ioctls on
// /dev/mapper/control, in pure Go: what the init needs to put a dm-verity
// device over the slot, without libdevmapper or dmsetup.
//
// The ioctl structures are the kernel's (include/uapi/linux/dm-ioctl.h, as
// golang.org/x/sys/unix defines them): a struct dm_ioctl header (312 bytes)
// followed by its payload; for DM_TABLE_LOAD the payload is one struct
// dm_target_spec (40 bytes) per target, each followed by its NUL-terminated
// parameter string and padded to 8 bytes.
package dm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control node devtmpfs creates when
// dm_mod is loaded.
const ControlPath = "/dev/mapper/control"

// Interface version the init speaks: 4.x, any x the kernel has (the kernel
// checks the major and that its minor is not older than ours).
const (
	versionMajor = 4
	versionMinor = 0
	versionPatch = 0
)

// Sizes of the C structures, fixed by the kernel ABI.
const (
	sizeofIoctl      = 312 // struct dm_ioctl
	sizeofTargetSpec = 40  // struct dm_target_spec
	// bufSize is what every ioctl carries: room for the kernel's replies
	// (the status ioctls write back into data; the ones used here write
	// nothing large).
	bufSize = 16 << 10
)

// Target is one line of a device-mapper table, in 512-byte sectors.
type Target struct {
	Start, Length uint64
	Type          string // "verity", "linear", ...
	Params        string
}

// Device is a device-mapper device the init created.
type Device struct {
	Name string
	// Dev is the device number (unix.Mkdev form).
	Dev uint64
	// Path is the block node the device can be opened by: /dev/mapper/<name>.
	Path string
}

// header fills the dm_ioctl header: version, name, flags. Data size and
// start are set by marshal.
func header(name string, flags uint32) (*unix.DmIoctl, error) {
	if name == "" || len(name) >= unix.DM_NAME_LEN || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("dm: bad device name %q", name)
	}
	h := &unix.DmIoctl{Version: [3]uint32{versionMajor, versionMinor, versionPatch}, Flags: flags}
	copy(h.Name[:], name)
	return h, nil
}

// marshal lays out the header and its payload in one ioctl buffer of at
// least bufSize bytes; the header's data_start is sizeof(struct dm_ioctl)
// and data_size the whole buffer, as libdevmapper sets them.
func marshal(h *unix.DmIoctl, payload []byte) []byte {
	size := max(bufSize, sizeofIoctl+len(payload))
	h.Data_start = sizeofIoctl
	h.Data_size = uint32(size)
	buf := make([]byte, size)
	w := bytes.NewBuffer(buf[:0])
	binary.Write(w, binary.NativeEndian, h) // cannot fail: fixed-size struct into a buffer
	copy(buf[sizeofIoctl:], payload)
	return buf
}

// unmarshalHeader reads back the header the kernel wrote into buf.
func unmarshalHeader(buf []byte) *unix.DmIoctl {
	var h unix.DmIoctl
	binary.Read(bytes.NewReader(buf[:sizeofIoctl]), binary.NativeEndian, &h)
	return &h
}

// tablePayload encodes targets as DM_TABLE_LOAD wants them: each
// dm_target_spec followed by its NUL-terminated params, padded to 8 bytes;
// next is the offset from this spec to the following one.
func tablePayload(targets []Target) ([]byte, error) {
	var out []byte
	for i, t := range targets {
		if t.Type == "" || len(t.Type) >= unix.DM_MAX_TYPE_NAME {
			return nil, fmt.Errorf("dm: bad target type %q", t.Type)
		}
		if t.Length == 0 {
			return nil, fmt.Errorf("dm: target %d (%s) has no length", i, t.Type)
		}
		if strings.ContainsRune(t.Params, 0) {
			return nil, fmt.Errorf("dm: target %d (%s): NUL in its parameters", i, t.Type)
		}
		n := sizeofTargetSpec + len(t.Params) + 1
		n = (n + 7) &^ 7
		spec := unix.DmTargetSpec{Sector_start: t.Start, Length: t.Length}
		if i < len(targets)-1 {
			spec.Next = uint32(n)
		}
		copy(spec.Target_type[:], t.Type)
		rec := make([]byte, n)
		w := bytes.NewBuffer(rec[:0])
		binary.Write(w, binary.NativeEndian, &spec)
		copy(rec[sizeofTargetSpec:], t.Params)
		out = append(out, rec...)
	}
	return out, nil
}

func ioctl(fd int, req uint, buf []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// openControl opens the control node, creating it from sysfs when devtmpfs
// has not (or /dev is not a devtmpfs).
func openControl() (*os.File, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR, 0)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	b, rerr := os.ReadFile("/sys/class/misc/device-mapper/dev")
	if rerr != nil {
		return nil, fmt.Errorf("%w (and no device-mapper in /sys/class/misc: is dm_mod loaded?)", err)
	}
	var maj, min uint32
	if _, serr := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); serr != nil {
		return nil, fmt.Errorf("dm: /sys/class/misc/device-mapper/dev: %q", b)
	}
	os.MkdirAll(filepath.Dir(ControlPath), 0o755)
	if merr := unix.Mknod(ControlPath, unix.S_IFCHR|0o600, int(unix.Mkdev(maj, min))); merr != nil && !errors.Is(merr, os.ErrExist) {
		return nil, fmt.Errorf("dm: creating %s: %w", ControlPath, merr)
	}
	return os.OpenFile(ControlPath, os.O_RDWR, 0)
}

// CreateReadOnly creates the device name with the given table, read-only,
// resumes it (makes the table live) and creates its node /dev/mapper/<name>.
// On any failure the half-made device is removed again. The kernel's
// refusal of a table (a bad parameter, a missing target module) comes back
// as the DM_TABLE_LOAD error; the kernel logs the reason in kmsg.
func CreateReadOnly(name string, targets []Target) (*Device, error) {
	payload, err := tablePayload(targets)
	if err != nil {
		return nil, err
	}
	ctl, err := openControl()
	if err != nil {
		return nil, fmt.Errorf("dm: %w", err)
	}
	defer ctl.Close()
	fd := int(ctl.Fd())

	h, err := header(name, 0)
	if err != nil {
		return nil, err
	}
	buf := marshal(h, nil)
	if err := ioctl(fd, unix.DM_DEV_CREATE, buf); err != nil {
		return nil, fmt.Errorf("dm: creating device %s: %w", name, err)
	}
	dev := unmarshalHeader(buf).Dev
	ok := false
	defer func() {
		if !ok {
			remove(fd, name)
		}
	}()

	h, _ = header(name, unix.DM_READONLY_FLAG)
	h.Target_count = uint32(len(targets))
	if err := ioctl(fd, unix.DM_TABLE_LOAD, marshal(h, payload)); err != nil {
		return nil, fmt.Errorf("dm: the kernel refused the %s table for %s (%w; see the kernel log): %s", targetTypes(targets), name, err, tableString(targets))
	}
	// DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes: the loaded table goes live.
	h, _ = header(name, 0)
	if err := ioctl(fd, unix.DM_DEV_SUSPEND, marshal(h, nil)); err != nil {
		return nil, fmt.Errorf("dm: resuming %s: %w", name, err)
	}

	// dev is the kernel's huge_encode_dev form, which agrees with
	// unix.Major/Minor for every number device-mapper hands out.
	mdev := unix.Mkdev(unix.Major(dev), unix.Minor(dev))
	path := filepath.Join(filepath.Dir(ControlPath), name)
	if err := mknodBlock(path, mdev); err != nil {
		return nil, err
	}
	ok = true
	return &Device{Name: name, Dev: mdev, Path: path}, nil
}

// mknodBlock creates a block node, or accepts an existing one for the same device.
func mknodBlock(path string, dev uint64) error {
	err := unix.Mknod(path, unix.S_IFBLK|0o600, int(dev))
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrExist) {
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == dev {
			return nil
		}
	}
	return fmt.Errorf("dm: creating %s (%d:%d): %w", path, unix.Major(dev), unix.Minor(dev), err)
}

// Remove removes the device name and its node /dev/mapper/<name>. A device
// busy for a moment (udev probing it) is retried for about a second. The
// init never removes a device; the agent does (its system extensions).
func Remove(name string) error {
	if _, err := header(name, 0); err != nil {
		return err
	}
	ctl, err := openControl()
	if err != nil {
		return fmt.Errorf("dm: %w", err)
	}
	defer ctl.Close()
	for try := 0; ; try++ {
		err = remove(int(ctl.Fd()), name)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EBUSY) || try == 10 {
			return fmt.Errorf("dm: removing %s: %w", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.Remove(filepath.Join(filepath.Dir(ControlPath), name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dm: %w", err)
	}
	return nil
}

func remove(fd int, name string) error {
	h, err := header(name, 0)
	if err != nil {
		return err
	}
	return ioctl(fd, unix.DM_DEV_REMOVE, marshal(h, nil))
}

// DevName is the kernel's name for a device-mapper device: dm-<minor>.
func DevName(dev uint64) string { return "dm-" + strconv.FormatUint(uint64(unix.Minor(dev)), 10) }

func targetTypes(ts []Target) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Type)
	}
	return strings.Join(s, "+")
}

func tableString(ts []Target) string {
	var s []string
	for _, t := range ts {
		s = append(s, fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params))
	}
	return strings.Join(s, "; ")
}
