package run

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"
)

// switchRoot moves /dev, /proc, /sys and /run into the new root, makes it
// the root, frees the initramfs and execs the image's init with the
// arguments and environment the kernel gave this one. It returns only on
// failure.
//
// u-root's mount.SwitchRoot does the same but execs the new init with no
// arguments and an empty environment; the kernel passes command line
// arguments meant for init (such as "emergency" or systemd.unit=) that way.
func (in *initProc) switchRoot() error {
	// The image's init, checked before anything is moved. Lstat: it is
	// normally an absolute symlink (to /lib/systemd/systemd), which only
	// resolves once the root is switched.
	if _, err := os.Lstat(filepath.Join(sysroot, ImageInit)); err != nil {
		return fmt.Errorf("the image has no %s: %w", ImageInit, err)
	}
	in.networkDown() // down after the config step already; the image's network stack starts clean
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		if err := mount.MoveMount(m, filepath.Join(sysroot, m)); err != nil {
			return fmt.Errorf("moving %s into the new root: %w", m, err)
		}
	}
	if err := unix.Chdir(sysroot); err != nil {
		return err
	}
	oldRoot, err := os.Open("/")
	if err != nil {
		return err
	}
	defer oldRoot.Close()
	if err := mount.MoveMount(".", "/"); err != nil {
		return fmt.Errorf("moving %s to /: %w", sysroot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// The initramfs stays in memory until it is emptied: the init binary
	// and the modules are megabytes.
	freeTree(int(oldRoot.Fd()))

	argv := append([]string{ImageInit}, os.Args[1:]...)
	in.log.Infof("switching root to %s after %d ms", ImageInit, time.Since(in.start).Milliseconds())
	in.disarmPanicReboot()
	err = unix.Exec(ImageInit, argv, os.Environ())
	in.armPanicReboot()
	return fmt.Errorf("exec %s: %w", ImageInit, err)
}

// freeTree deletes everything under the directory fd that is on the same
// filesystem, best effort (mount points and their parents stay).
func freeTree(fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return
	}
	dup, err := unix.Dup(fd) // os.File closes what it wraps: give it its own fd
	if err != nil {
		return
	}
	dir := os.NewFile(uintptr(dup), "oldroot")
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return
	}
	for _, name := range names {
		child, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil { // not a directory (or a symlink): unlink it
			unix.Unlinkat(fd, name, 0)
			continue
		}
		var cst unix.Stat_t
		if unix.Fstat(child, &cst) == nil && cst.Dev == st.Dev {
			freeTree(child)
			unix.Unlinkat(fd, name, unix.AT_REMOVEDIR)
		}
		unix.Close(child)
	}
}
