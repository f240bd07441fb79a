package run

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"
)

// setupEtc makes the image's /etc writable for this boot only (an overlay
// whose upper layer is on the /run tmpfs), gives it the node's machine ID,
// mounts a tmpfs on /tmp, and leaves the hints systemd needs to start
// quietly on a read-only root.
func (in *initProc) setupEtc() error {
	etc := filepath.Join(sysroot, "etc")
	upper, work := filepath.Join(etcOverlay, "upper"), filepath.Join(etcOverlay, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The overlay's root shows the upper directory's owner, mode and times:
	// make them the image's /etc's.
	var st unix.Stat_t
	if err := unix.Stat(etc, &st); err != nil {
		return fmt.Errorf("the image has no /etc: %w", err)
	}
	unix.Chown(upper, int(st.Uid), int(st.Gid))
	unix.Chmod(upper, st.Mode&0o7777)
	unix.UtimesNano(upper, []unix.Timespec{st.Atim, st.Mtim})

	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", etc, upper, work)
	if _, err := mount.Mount("overlay", etc, "overlay", opts, 0); err != nil {
		return fmt.Errorf("/etc overlay: %w", err)
	}

	// The machine ID kept on the state partition: the same at every boot.
	// (An image's own /etc/machine-id, empty or "uninitialized", would make
	// systemd invent a new one each boot on this throw-away /etc.)
	mid := filepath.Join(etc, "machine-id")
	os.Remove(mid)
	if err := os.WriteFile(mid, []byte(in.machineID+"\n"), 0o444); err != nil {
		return fmt.Errorf("writing /etc/machine-id: %w", err)
	}

	// /etc/mtab: the image should have the symlink; tools expect it.
	if _, err := os.Lstat(filepath.Join(etc, "mtab")); errors.Is(err, os.ErrNotExist) {
		os.Symlink("../proc/self/mounts", filepath.Join(etc, "mtab"))
	}

	// /etc/.updated: units with ConditionNeedsUpdate=/etc (ldconfig,
	// systemd-hwdb-update, ...) run when /usr is newer than it. On this
	// /etc nothing they write survives a reboot, and the image was built
	// with their output in place, so mark /etc as updated for this /usr.
	if err := markUpdated(etc, filepath.Join(sysroot, "usr")); err != nil {
		in.warn("/etc/.updated: %v", err)
	}

	// The root was "checked" here: it is a read-only squashfs, fsck has
	// nothing to do. Debian's systemd-fsck-root.service skips when this
	// file exists, as it does after initramfs-tools.
	if err := os.MkdirAll("/run/initramfs", 0o755); err == nil {
		os.WriteFile("/run/initramfs/fsck-root", nil, 0o644)
	}

	// /tmp: a tmpfs, as systemd's tmp.mount would make it.
	tmp := filepath.Join(sysroot, "tmp")
	if _, err := mount.Mount("tmpfs", tmp, "tmpfs", "mode=1777,size=50%,nr_inodes=1m",
		unix.MS_NOSUID|unix.MS_NODEV|unix.MS_STRICTATIME); err != nil {
		return fmt.Errorf("/tmp: %w", err)
	}
	in.log.Infof("/etc is an overlay on tmpfs (changes last until reboot), /tmp a tmpfs, machine ID %s", in.machineID)
	return nil
}

// markUpdated writes etc/.updated as systemd-update-done does, stamped with
// usr's mtime, unless the image has one.
func markUpdated(etc, usr string) error {
	p := filepath.Join(etc, ".updated")
	if _, err := os.Lstat(p); err == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(usr, &st); err != nil {
		return err
	}
	content := fmt.Sprintf("# This file was created by slate-init for systemd's ConditionNeedsUpdate=.\n"+
		"# /etc is a tmpfs overlay of the image's: see man:systemd-update-done.service(8).\n"+
		"TIMESTAMP_NSEC=%d\n", st.Mtim.Nano())
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		return err
	}
	return unix.UtimesNano(p, []unix.Timespec{st.Mtim, st.Mtim})
}
