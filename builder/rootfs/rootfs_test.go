package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/internal/testtool"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	testtool.Need(t, tools...)
}

func build(t *testing.T, o testimage.Options, out string) (*Boot, error) {
	t.Helper()
	img, err := testimage.Node(o)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	work := t.TempDir()
	return Build(context.Background(), rc, out, Options{WorkDir: work, ModTime: testimage.Epoch})
}

func TestBuildKeepsEverything(t *testing.T) {
	need(t, "tar2sqfs", "unsquashfs", "rdsquashfs")
	out := filepath.Join(t.TempDir(), "root.sqfs")
	b, err := build(t, testimage.Options{}, out)
	if err != nil {
		t.Fatal(err)
	}
	if b.KernelRelease != testimage.KernelRelease {
		t.Errorf("kernel release %q", b.KernelRelease)
	}
	if k, _ := os.ReadFile(b.Kernel); !strings.HasPrefix(string(k), "fake kernel") {
		t.Errorf("kernel content %q", k)
	}
	if sd, _ := os.ReadFile(b.SystemdBoot); !strings.HasPrefix(string(sd), "MZ") {
		t.Errorf("systemd-boot content %q", sd)
	}
	if !bytes.Contains(b.ModulesDep, []byte("virtio_blk.ko")) || !bytes.Contains(b.ModulesBuiltin, []byte("overlay.ko")) {
		t.Error("modules.dep or modules.builtin missing")
	}
	if !bytes.Contains(b.ModulesSoftdep, []byte("softdep ext4 pre: crypto-crc32c")) || !bytes.Contains(b.ModulesAlias, []byte("alias crypto-crc32c crc32c_generic")) {
		t.Errorf("modules.softdep %q or modules.alias %q missing", b.ModulesSoftdep, b.ModulesAlias)
	}
	if _, err := os.Stat(filepath.Join(b.ModulesDir, "kernel/drivers/virtio_blk.ko")); err != nil {
		t.Error(err)
	}
	if !bytes.Contains(b.OSRelease, []byte("ID=testos")) || !bytes.Contains(b.KernelConfig, []byte("CONFIG_RD_ZSTD=y")) {
		t.Error("os-release or kernel config missing")
	}

	ls, err := exec.Command("unsquashfs", "-lln", "-d", "", out).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, ls)
	}
	list := string(ls)
	for _, want := range []string{
		"-rwsr-xr-x 0/0", "/usr/bin/su",
		"-rwxr-sr-x 0/5", "/usr/bin/wall",
		"drwxrwxrwt 0/0", "/tmp",
		"-rw------- 1000/1001", "/usr/share/owned",
		"crw-rw-rw- 0/0", "1,  3", "/dev/null",
		"prw-r--r--", "/run/fifo",
		"/usr/share/dangling -> /nonexistent/target",
		"/usr/share/many/f1999",
		"/opt/old/fresh",
	} {
		if !strings.Contains(list, want) {
			t.Errorf("squashfs listing lacks %q", want)
		}
	}
	for _, gone := range []string{"/opt/removed", "/opt/old/stale", ".wh."} {
		if strings.Contains(list, gone) {
			t.Errorf("squashfs still has %q", gone)
		}
	}
	if n := strings.Count(list, "/usr/share/many/f"); n != 2000 {
		t.Errorf("%d entries in the large directory, want 2000", n)
	}
	// Hard links share an inode, which only an extraction shows.
	dir := filepath.Join(t.TempDir(), "x")
	if out, err := exec.Command("unsquashfs", "-q", "-n", "-d", dir, out, "usr/bin").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs extract: %v\n%s", err, out)
	}
	a, _ := os.Stat(filepath.Join(dir, "usr/bin/ping"))
	c, _ := os.Stat(filepath.Join(dir, "usr/bin/ping6"))
	if a == nil || c == nil || !os.SameFile(a, c) {
		t.Error("usr/bin/ping6 is not a hard link of usr/bin/ping")
	}
	xattrs, err := exec.Command("rdsquashfs", "--xattr", "/usr/bin/ping", out).CombinedOutput()
	if err != nil {
		t.Fatalf("rdsquashfs: %v\n%s", err, xattrs)
	}
	if !strings.Contains(string(xattrs), "security.capability") {
		t.Errorf("security.capability lost: %s", xattrs)
	}
}

func TestBuildIsReproducible(t *testing.T) {
	need(t, "tar2sqfs")
	dir := t.TempDir()
	var sums [2][32]byte
	for i := range sums {
		out := filepath.Join(dir, "r.sqfs")
		if _, err := build(t, testimage.Options{}, out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = sha256.Sum256(b)
	}
	if sums[0] != sums[1] {
		t.Error("two builds of the same image differ")
	}
}

func TestBuildErrors(t *testing.T) {
	need(t, "tar2sqfs")
	for _, tc := range []struct {
		o    testimage.Options
		want string
	}{
		{testimage.Options{NoKernel: true}, "no kernel in the image: looked for /usr/lib/modules/<kver>/vmlinuz or /boot/vmlinuz-<kver>"},
		{testimage.Options{NoSystemdBoot: true}, "no systemd-boot in the image: looked for /usr/lib/systemd/boot/efi/systemd-bootx64.efi"},
	} {
		_, err := build(t, tc.o, filepath.Join(t.TempDir(), "r.sqfs"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
	if _, err := Build(context.Background(), strings.NewReader("this is not a tar stream at all, just text"+strings.Repeat(" ", 600)),
		filepath.Join(t.TempDir(), "r.sqfs"), Options{WorkDir: t.TempDir()}); err == nil {
		t.Error("garbage stream accepted")
	}
}

func TestVersionLess(t *testing.T) {
	if !versionLess("6.1.0-9-amd64", "6.1.0-28-amd64") || versionLess("6.10.0", "6.9.0") {
		t.Error("versionLess is not numeric")
	}
}
