package state

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/internal/testtool"
)

func TestNeeds(t *testing.T) {
	src := filepath.Join(t.TempDir(), "var")
	dst := t.TempDir()
	for _, d := range []string{"lib/dpkg", "cache/apt", "log"} {
		if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	wf := func(p string, n int) {
		if err := os.WriteFile(filepath.Join(src, p), make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wf("lib/dpkg/status", 5000)                                                                // 2 blocks of 4 KiB, 5 of 1 KiB
	wf("cache/apt/pkgcache.bin", 1)                                                            // 1, 1
	wf("log/empty", 0)                                                                         // 0, 0
	os.Link(filepath.Join(src, "lib/dpkg/status"), filepath.Join(src, "lib/dpkg/status-link")) // counted once
	os.Symlink("/run", filepath.Join(src, "run"))                                              // in the inode
	os.Symlink("/"+strings.Repeat("x", 70), filepath.Join(src, "long"))                        // 1 block
	unix.Mkfifo(filepath.Join(src, "fifo"), 0o644)

	// Directories take what the source filesystem says they take, at least a block.
	dirBytes := func(bs int64) int64 {
		var sum int64
		for _, d := range []string{"lib", "lib/dpkg", "cache", "cache/apt", "log"} {
			fi, err := os.Stat(filepath.Join(src, d))
			if err != nil {
				t.Fatal(err)
			}
			sum += (max(fi.Size(), 1) + bs - 1) / bs * bs
		}
		return sum
	}
	for _, c := range []struct {
		bs    int64
		files int64
	}{{4096, 2 + 1 + 1}, {1024, 5 + 1 + 1}} {
		n, err := Needs(src, dst, c.bs)
		if err != nil {
			t.Fatal(err)
		}
		want := Need{Bytes: c.files*c.bs + dirBytes(c.bs), Inodes: 5 + 3 + 2 + 1}
		if n != want {
			t.Errorf("block size %d: %+v, want %+v", c.bs, n, want)
		}
	}

	// A copy cut short: what is there already is not needed again, and a
	// directory where the tree has a file hides the file (CopyTree keeps it).
	os.MkdirAll(filepath.Join(dst, "lib/dpkg"), 0o755)
	os.WriteFile(filepath.Join(dst, "lib/dpkg/status"), nil, 0o644)
	os.WriteFile(filepath.Join(dst, "cache"), nil, 0o644)
	n, err := Needs(src, dst, 4096)
	if err != nil {
		t.Fatal(err)
	}
	// Left: status-link (now a file of its own: its first name is copied),
	// log, log/empty, run, long, fifo.
	if fi, _ := os.Stat(filepath.Join(src, "log")); n.Inodes != 6 || n.Bytes != 2*4096+4096+(max(fi.Size(), 1)+4095)/4096*4096 {
		t.Errorf("after a partial copy: %+v", n)
	}
}

func TestCheckFits(t *testing.T) {
	const mib = 1 << 20
	space := Space{BlockSize: 4096, Size: 250 * mib, Free: 60 * mib, FreeInodes: 16000}
	for _, c := range []struct {
		need Need
		err  string
	}{
		{Need{Bytes: 59 * mib, Inodes: 4000}, ""},
		{Need{Bytes: 60 * mib, Inodes: 16000}, ""},
		{Need{Bytes: 138 * mib, Inodes: 4210}, "state partition /dev/vda4 has 60 MiB free, the image's /var needs 138 MiB: grow the disk or build the image with a larger disk.stateSize"},
		{Need{Bytes: 60*mib + 1, Inodes: 1}, "needs 61 MiB"},
		{Need{Bytes: mib, Inodes: 20000}, "state partition /dev/vda4 has 16000 free inodes, the image's /var needs 20000: grow the disk"},
	} {
		err := CheckFits("/dev/vda4", c.need, space)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%+v: %v, want %q", c.need, err, c.err)
		}
	}
}

func TestExt4Blocks(t *testing.T) {
	for _, size := range []int64{16 << 20, 600 << 20} { // mke2fs's small (1 KiB blocks here) and default types
		p := sparse(t, size, nil)
		mkfsExt4(t, p)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		bs, blocks, err := Ext4Blocks(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if int64(blocks)*bs != size {
			t.Errorf("%d-byte ext4: %d blocks of %d", size, blocks, bs)
		}
	}
	f, _ := os.Open(sparse(t, 1<<20, nil))
	defer f.Close()
	if _, _, err := Ext4Blocks(f); err == nil {
		t.Error("zeros read as ext4")
	}
}

// TestResizeFS grows a mounted ext4 on a loop device: needs root, loop
// devices and the ext4 module, so not with -short.
func TestResizeFS(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a loop device")
	}
	testtool.Root(t, "loop devices and mount")
	testtool.Need(t, "losetup")
	p := sparse(t, 64<<20, nil)
	mkfsExt4(t, p)
	if err := os.Truncate(p, 200<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", p).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	mnt := t.TempDir()
	if err := unix.Mount(loop, mnt, "ext4", 0, ""); err != nil {
		t.Skipf("mount %s: %v", loop, err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	before, err := FreeSpace(mnt)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := os.Open(loop)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	bs, blocks, err := Ext4Blocks(dev)
	if err != nil || int64(blocks)*bs != 64<<20 {
		t.Fatalf("before: %d blocks of %d, %v", blocks, bs, err)
	}
	if err := ResizeFS(mnt, uint64(200<<20/bs)); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("%v: the ioctl needs CAP_SYS_RESOURCE, which this container lacks (the QEMU tests cover it)", err)
		}
		t.Fatal(err)
	}
	after, err := FreeSpace(mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("df size %d MiB -> %d MiB", before.Size>>20, after.Size>>20)
	if after.Size < 180<<20 || after.Free <= before.Free {
		t.Errorf("after the resize: %+v (before %+v)", after, before)
	}
	if _, blocks, _ = Ext4Blocks(dev); int64(blocks)*bs != 200<<20 {
		t.Errorf("the superblock says %d blocks of %d", blocks, bs)
	}
	// Again: nothing to do, no error.
	if err := ResizeFS(mnt, uint64(200<<20/bs)); err != nil {
		t.Errorf("second resize: %v", err)
	}
}
