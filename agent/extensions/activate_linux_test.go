package extensions

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The real loop devices, where this test may make them (root, and a
// /dev/loop-control): read-only, the file's bytes, and gone once closed
// (autoclear), by LOOP_CONFIGURE and by the older kernels' way.
func TestLoopAttach(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := os.Stat(LoopControl); err != nil {
		t.Skipf("no %s here", LoopControl)
	}
	file := filepath.Join(t.TempDir(), "ext.raw")
	want := bytes.Repeat([]byte("slate extension "), 4096) // 64 KiB
	if err := os.WriteFile(file, want, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, configure := range []bool{true, false} {
		loopConfigure = configure
		l, err := NewSystem().Loops.Attach(file)
		loopConfigure = true
		if err != nil {
			t.Fatalf("LOOP_CONFIGURE %v: %v", configure, err)
		}
		f, err := os.Open(l.Path())
		if err != nil {
			t.Fatal(err)
		}
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		if info.Flags&unix.LO_FLAGS_READ_ONLY == 0 || info.Flags&unix.LO_FLAGS_AUTOCLEAR == 0 {
			t.Errorf("%s: flags %#x, want read-only and autoclear", l.Path(), info.Flags)
		}
		got, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: read %d bytes (%v), want the file's %d", l.Path(), len(got), err, len(want))
		}
		if w, err := os.OpenFile(l.Path(), os.O_WRONLY, 0); err == nil {
			if _, err := w.WriteAt([]byte("x"), 0); err == nil {
				t.Errorf("%s takes writes", l.Path())
			}
			w.Close()
		}
		f.Close()
		l.Close()
		// Autoclear: detached once nothing holds it.
		f, err = os.Open(l.Path())
		if err != nil {
			t.Fatal(err)
		}
		_, err = unix.IoctlLoopGetStatus64(int(f.Fd()))
		f.Close()
		if !errors.Is(err, unix.ENXIO) {
			t.Errorf("%s after close: %v, want ENXIO (detached)", l.Path(), err)
		}
	}
}

// A squashfs mounts read-only, nodev, nosuid through the real mounter, and
// Mounted sees it.
func TestMountSquashfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	mksquashfs, err := exec.LookPath("mksquashfs")
	if err != nil {
		t.Skip("no mksquashfs")
	}
	if _, err := os.Stat(LoopControl); err != nil {
		t.Skipf("no %s here", LoopControl)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "usr/lib/extension-release.d"), 0o755)
	os.WriteFile(filepath.Join(src, "usr/lib/extension-release.d/extension-release.tools"), []byte("ID=debian\n"), 0o644)
	img := filepath.Join(dir, "tools.raw")
	if out, err := exec.Command(mksquashfs, src, img, "-quiet", "-noappend").CombinedOutput(); err != nil {
		t.Skipf("mksquashfs: %v: %s", err, out)
	}
	sys := NewSystem()
	l, err := sys.Loops.Attach(img)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	mnt := filepath.Join(dir, "run/extensions/tools")
	os.MkdirAll(mnt, 0o755)
	if err := sys.Mounts.Mount(l.Path(), mnt); err != nil {
		t.Skipf("mounting squashfs: %v", err)
	}
	defer sys.Mounts.Unmount(mnt)
	if m, err := sys.Mounts.Mounted(mnt); err != nil || !m {
		t.Errorf("Mounted(%s) = %v, %v", mnt, m, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	for flag, name := range map[int64]string{unix.ST_RDONLY: "ro", unix.ST_NODEV: "nodev", unix.ST_NOSUID: "nosuid"} {
		if st.Flags&flag == 0 {
			t.Errorf("mounted without %s (flags %#x)", name, st.Flags)
		}
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "usr/lib/extension-release.d/extension-release.tools")); err != nil {
		t.Error(err)
	}
	if err := sys.Mounts.Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if m, _ := sys.Mounts.Mounted(mnt); m {
		t.Error("still mounted")
	}
}
