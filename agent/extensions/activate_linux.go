package extensions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	agentnode "github.com/slate-os/slate/agent/node"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/initramfs/init/dm"
)

// NewSystem is the running node's System.
func NewSystem() System {
	run := execRunner{}
	return System{Loops: loops{run: run}, DM: mapper{}, Mounts: mounts{}, Exec: run}
}

// LoopControl is the loop driver's control node.
const LoopControl = "/dev/loop-control"

type loops struct{ run Runner }

type loopDev struct {
	f    *os.File
	path string
}

func (l *loopDev) Path() string { return l.path }
func (l *loopDev) Close() error { return l.f.Close() }

// Attach implements Loops. The file is opened read-only, so the kernel
// makes the loop device read-only whatever the flags say; the device is
// checked to be read-only before it is handed out.
func (ls loops) Attach(file string) (Loop, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ctl, err := ls.control()
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	var lastErr error
	// Another program may take the free device between GET_FREE and
	// CONFIGURE (EBUSY): ask again.
	for range 8 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("%s: no free loop device: %w", LoopControl, err)
		}
		path := "/dev/loop" + strconv.Itoa(n)
		dev, err := openLoop(path, n)
		if err != nil {
			return nil, err
		}
		err = configure(dev, f, file)
		if errors.Is(err, unix.EBUSY) {
			dev.Close()
			lastErr = err
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		info, err := unix.IoctlLoopGetStatus64(int(dev.Fd()))
		if err == nil && info.Flags&unix.LO_FLAGS_READ_ONLY == 0 {
			err = errors.New("the kernel made it writable")
		}
		if err != nil {
			unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
			dev.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &loopDev{f: dev, path: path}, nil
	}
	return nil, fmt.Errorf("every free loop device was taken before slate could use it: %w", lastErr)
}

// control opens the loop control node, loading the loop module when it is
// missing.
func (ls loops) control() (*os.File, error) {
	ctl, err := os.OpenFile(LoopControl, os.O_RDWR, 0)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return ctl, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mp, lerr := ls.run.LookPath("modprobe")
	if lerr != nil {
		return nil, fmt.Errorf("no %s, and no modprobe to load the loop module: %w", LoopControl, lerr)
	}
	if out, merr := ls.run.Run(ctx, mp, "loop"); merr != nil {
		return nil, fmt.Errorf("no %s, and modprobe loop failed: %v: %s", LoopControl, merr, oneLine(out))
	}
	return os.OpenFile(LoopControl, os.O_RDWR, 0)
}

// openLoop opens /dev/loopN read-only, making its node when devtmpfs has not.
func openLoop(path string, n int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if merr := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(7, uint32(n)))); merr != nil && !errors.Is(merr, fs.ErrExist) {
			return nil, fmt.Errorf("creating %s: %w", path, merr)
		}
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	return f, err
}

// loopConfigure is false to take the older kernels' way (tests).
var loopConfigure = true

// configure binds file to the loop device: LOOP_CONFIGURE (Linux 5.8) in
// one step, else LOOP_SET_FD and LOOP_SET_STATUS64 as older kernels need.
func configure(dev, file *os.File, name string) error {
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:len(info.File_name)-1], name)
	if loopConfigure {
		err := unix.IoctlLoopConfigure(int(dev.Fd()), &unix.LoopConfig{Fd: uint32(file.Fd()), Info: info})
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
			return err
		}
	}
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(file.Fd())); err != nil {
		return err
	}
	// SET_STATUS64 cannot set READ_ONLY: the read-only file made it so.
	info.Flags = unix.LO_FLAGS_AUTOCLEAR
	if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), &info); err != nil {
		unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

type mapper struct{}

func (mapper) CreateVerity(name string, sectors uint64, table string) (string, error) {
	d, err := dm.CreateReadOnly(name, []dm.Target{{Start: 0, Length: sectors, Type: "verity", Params: table}})
	if err != nil {
		return "", err
	}
	return d.Path, nil
}

// Remove removes the device name and its node (initramfs/init/dm).
func (mapper) Remove(name string) error { return dm.Remove(name) }

// List reads the names of the device-mapper devices from sysfs.
func (mapper) List(prefix string) ([]string, error) {
	ms, err := filepath.Glob("/sys/block/dm-*/dm/name")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		b, err := os.ReadFile(m)
		if err != nil {
			continue // removed meanwhile
		}
		if n := strings.TrimSpace(string(b)); strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (mapper) Open(dev string) (io.ReadCloser, error) { return os.Open(dev) }

type mounts struct{}

func (mounts) Mount(dev, dir string) error {
	return unix.Mount(dev, dir, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, "")
}

func (mounts) Unmount(dir string) error { return unix.Unmount(dir, 0) }

// Mounted looks for dir among the mount points (agent/node).
func (mounts) Mounted(dir string) (bool, error) { return agentnode.IsMountPoint(dir) }

// emptyDir is what Hide mounts: a directory of its own on /run, so that
// nothing else writes into it.
var emptyDir = boot.RunDir + "/sysext-empty"

func (mounts) Hide(dir string) error {
	if err := os.MkdirAll(emptyDir, 0o755); err != nil {
		return err
	}
	if des, err := os.ReadDir(emptyDir); err != nil || len(des) > 0 {
		return fmt.Errorf("%s is not empty", emptyDir)
	}
	if err := unix.Mount(emptyDir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting %s: %w", emptyDir, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC)
	if err := unix.Mount("", dir, "", flags, ""); err != nil {
		unix.Unmount(dir, 0)
		return fmt.Errorf("making %s read-only: %w", dir, err)
	}
	return nil
}

type execRunner struct{}

// LookPath implements Runner; systemd's PATH for services holds /usr/bin,
// but a shell with an odd PATH should find the image's commands too.
func (execRunner) LookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"} {
		if fi, serr := os.Stat(filepath.Join(d, name)); serr == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return filepath.Join(d, name), nil
		}
	}
	return "", err
}

func (execRunner) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, path, args...).CombinedOutput()
}
