package run

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/initramfs/init/blockdev"
	"github.com/slate-os/slate/initramfs/init/state"
)

// setupState makes the state partition ready and mounts it on /sysroot/var.
//
//   - The builder's marker: first boot. Grow the partition to the end of
//     the disk, create ext4 with the image's own mkfs.ext4, copy the
//     image's /var into it.
//   - ext4: grow the partition if the disk grew since (safe to repeat),
//     e2fsck -p with the image's e2fsck, mount, and grow the filesystem
//     online to a partition larger than it.
//   - Anything else, or a filesystem that will not check or mount: fatal.
//     The partition holds the node's data: it is never formatted unless
//     the builder's marker says it is empty.
func (in *initProc) setupState() error {
	p := in.state
	damaged := func(format string, args ...any) error {
		return fmt.Errorf("state partition %s (PARTUUID %s) is damaged: will not format it: %s", p.Dev, p.PartUUID, fmt.Sprintf(format, args...))
	}
	f, err := os.Open(p.Dev)
	if err != nil {
		return err
	}
	kind, err := state.Detect(f)
	desc := state.Describe(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("state partition %s: %w", p.Dev, err)
	}
	in.log.Infof("state partition %s: %s", p.Dev, kind)

	// The image's e2fsprogs run chrooted into the read-only root, which
	// needs /dev, /proc and /sys.
	unbind, err := bindAPI(sysroot)
	if err != nil {
		return err
	}
	defer unbind()

	switch kind {
	case state.Damaged:
		return damaged("%s", desc)

	case state.Unformatted:
		in.rec.FirstBoot = true
		g, err := in.finder.Grow(p)
		if err != nil {
			return fmt.Errorf("growing the state partition: %w", err)
		}
		in.rec.StateGrown = g.TableChanged || g.KernelChanged
		if in.rec.StateGrown {
			in.log.Infof("first boot: grew %s from %s to %s (end of the disk)", p.Dev, mib(g.OldSize), mib(g.NewSize))
		} else {
			in.log.Infof("first boot: %s already spans the disk (%s)", p.Dev, mib(g.NewSize))
		}
		// Lazy init: the kernel zeroes inode tables and the journal in the
		// background instead of mkfs writing them now.
		code, out, err := imageTool(sysroot, "mkfs.ext4", "-F", "-q", "-L", "slate-state",
			"-E", "lazy_itable_init=1,lazy_journal_init=1", p.Dev)
		if err != nil {
			return fmt.Errorf("mkfs.ext4 %s: %w", p.Dev, err)
		}
		if code != 0 {
			return fmt.Errorf("mkfs.ext4 %s exited %d: %s", p.Dev, code, oneLine(out))
		}
		rw, err := os.OpenFile(p.Dev, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		err = state.ClearMarker(rw)
		if serr := rw.Sync(); err == nil {
			err = serr
		}
		rw.Close()
		if err != nil {
			return fmt.Errorf("after mkfs.ext4 on %s: %w", p.Dev, err)
		}
		in.log.Infof("first boot: created ext4 %q on %s", "slate-state", p.Dev)

	case state.Ext4:
		// A disk grown since the first boot (a resized cloud volume) is
		// taken in at the next boot. Not fatal: the node runs on the
		// space it had.
		if g, err := in.finder.Grow(p); err != nil {
			in.warn("growing the state partition %s to the end of the disk: %v", p.Dev, err)
		} else if g.TableChanged || g.KernelChanged {
			in.rec.StateGrown = true
			in.log.Infof("the disk grew: grew %s from %s to %s (end of the disk)", p.Dev, mib(g.OldSize), mib(g.NewSize))
		}
		code, out, err := imageTool(sysroot, "e2fsck", "-p", p.Dev)
		if err != nil {
			return fmt.Errorf("e2fsck %s: %w", p.Dev, err)
		}
		in.rec.StateFsck = code
		switch code {
		case 0:
		case 1, 2:
			// 1: errors fixed. 2: fixed, "reboot": that is for a mounted
			// root, and this filesystem is not mounted yet.
			in.warn("e2fsck fixed errors on %s (exit %d): %s", p.Dev, code, oneLine(out))
		default:
			return damaged("e2fsck -p exited %d: %s", code, oneLine(out))
		}
	}

	if err := os.MkdirAll(stateMount, 0o755); err != nil {
		return err
	}
	if _, err := mount.Mount(p.Dev, stateMount, "ext4", "", 0); err != nil {
		return damaged("%v", err)
	}
	moved := false
	defer func() {
		if !moved {
			unix.Unmount(stateMount, unix.MNT_DETACH)
		}
	}()

	in.growStateFS(p)

	// The image's /var seeds the state filesystem, on the first boot and
	// after a first boot that was cut short (the stamp is written last).
	if !state.Populated(stateMount) {
		// Checked first: a copy that runs out of space half way says
		// only "no space left on device".
		src := filepath.Join(sysroot, "var")
		free, err := state.FreeSpace(stateMount)
		if err != nil {
			return err
		}
		need, err := state.Needs(src, stateMount, free.BlockSize)
		if err != nil {
			return fmt.Errorf("measuring the image's /var: %w", err)
		}
		if err := state.CheckFits(p.Dev, need, free); err != nil {
			return err
		}
		st, err := state.CopyTree(src, stateMount)
		if err != nil {
			return fmt.Errorf("copying the image's /var to %s: %w", p.Dev, err)
		}
		if st.XattrErrors > 0 {
			in.warn("copying /var: %d extended attributes could not be copied", st.XattrErrors)
		}
		if err := state.MarkPopulated(stateMount, in.params.Version); err != nil {
			return err
		}
		in.rec.StatePopulated = true
		in.log.Infof("copied the image's /var: %s", st)
	}

	id, created, replaced, err := state.MachineID(stateMount)
	if err != nil {
		return fmt.Errorf("machine ID on %s: %w", p.Dev, err)
	}
	if replaced != "" {
		in.warn("%s", replaced)
	}
	if created {
		in.log.Infof("new machine ID %s", id)
	}
	in.machineID = id

	unix.Sync()
	if err := mount.MoveMount(stateMount, filepath.Join(sysroot, "var")); err != nil {
		return fmt.Errorf("moving the state filesystem to /var: %w", err)
	}
	moved = true
	if err := markInitrdMount(p.Dev, "/var"); err != nil {
		in.warn("%s: %v", utab, err)
	}
	return nil
}

// growStateFS grows the mounted state filesystem to its partition when the
// partition is larger (the disk grew after the filesystem was made), online
// through EXT4_IOC_RESIZE_FS, and records the sizes. A failure is a
// warning: the filesystem is still good, only smaller than it could be.
func (in *initProc) growStateFS(p blockdev.Partition) {
	f, err := os.Open(p.Dev)
	if err != nil {
		in.warn("state partition %s: %v", p.Dev, err)
		return
	}
	part, err := blockdev.Size(f)
	var bs int64
	var blocks uint64
	if err == nil {
		bs, blocks, err = state.Ext4Blocks(f)
	}
	f.Close()
	if err != nil {
		in.warn("state partition %s: %v", p.Dev, err)
		return
	}
	in.rec.StateSize = part
	before, err := state.FreeSpace(stateMount)
	if err != nil {
		in.warn("%v", err)
		return
	}
	in.rec.StateFSSize = before.Size
	want := uint64(part / bs)
	if want <= blocks {
		return
	}
	if err := state.ResizeFS(stateMount, want); err != nil {
		in.warn("growing the state filesystem on %s from %d to %d blocks: %v", p.Dev, blocks, want, err)
		return
	}
	after, err := state.FreeSpace(stateMount)
	if err != nil {
		in.warn("%v", err)
		return
	}
	// The kernel leaves out a last block group too small to hold its own
	// metadata: then nothing grew, and every boot asks again, quietly.
	if after.Size > before.Size {
		in.rec.StateFSGrown, in.rec.StateFSSize = true, after.Size
		in.log.Infof("grew the state filesystem from %s to %s", mib(before.Size), mib(after.Size))
	}
}

// utab is libmount's table of userspace mount options; it lives on /run,
// which carries over to the real root.
const utab = "/run/mount/utab"

// markInitrdMount tags a mount made here with x-initrd.mount, as an fstab
// entry would: systemd then leaves it alone during the shutdown transaction
// (it is "extrinsic", like / and /etc) and systemd-shutdown remounts it
// read-only and unmounts it at the very end, after journald, which writes
// to /var/log/journal until then, has been stopped. Without it var.mount
// fails to unmount while journald still holds /var.
func markInitrdMount(src, target string) error {
	if err := os.MkdirAll(filepath.Dir(utab), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(utab, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "SRC=%s TARGET=%s ROOT=/ OPTS=x-initrd.mount\n", src, target)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func mib(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

// oneLine squeezes a tool's output into one line for an error message.
func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	if s == "" {
		s = "(no output)"
	}
	return s
}

// bindAPI bind-mounts /dev, /proc and /sys into root; the returned
// function unmounts them.
func bindAPI(root string) (func(), error) {
	var done []string
	undo := func() {
		for i := len(done) - 1; i >= 0; i-- {
			unix.Unmount(done[i], unix.MNT_DETACH)
		}
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		dst := filepath.Join(root, d)
		if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
			undo()
			return nil, fmt.Errorf("the image has no %s directory", d)
		}
		if err := unix.Mount(d, dst, "", unix.MS_BIND, ""); err != nil {
			undo()
			return nil, fmt.Errorf("bind mount %s on %s: %w", d, dst, err)
		}
		done = append(done, dst)
	}
	return undo, nil
}

// imageTool runs one of the image's programs chrooted into root and
// returns its exit code and output. err is for failing to run it at all.
func imageTool(root, name string, args ...string) (code int, out []byte, err error) {
	var bin string
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if _, err := os.Lstat(filepath.Join(root, dir, name)); err == nil {
			bin = dir + "/" + name
			break
		}
	}
	if bin == "" {
		return -1, nil, fmt.Errorf("the image has no %s (e2fsprogs)", name)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), buf.Bytes(), nil
	}
	if err != nil {
		return -1, buf.Bytes(), err
	}
	return 0, buf.Bytes(), nil
}
