package run

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/initramfs/layout"
	"github.com/slate-os/slate/internal/testtool"
)

func TestReadLoadList(t *testing.T) {
	mods, kver, err := ReadLoadList(strings.NewReader(layout.KernelLine + "6.1.0-28-cloud-amd64\n" +
		"/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/virtio/virtio.ko\n\n# comment\n" +
		"/lib/modules/6.1.0-28-cloud-amd64/kernel/fs/squashfs/squashfs.ko\n"))
	if err != nil || kver != "6.1.0-28-cloud-amd64" || !reflect.DeepEqual(mods, []string{
		"/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/virtio/virtio.ko",
		"/lib/modules/6.1.0-28-cloud-amd64/kernel/fs/squashfs/squashfs.ko",
	}) {
		t.Errorf("ReadLoadList = %q %q %v", mods, kver, err)
	}
	if _, _, err := ReadLoadList(strings.NewReader("kernel/fs/x.ko\n")); err == nil {
		t.Error("relative path accepted")
	}
}

func TestImageTool(t *testing.T) {
	testtool.Root(t, "chroot")
	// Chrooting into / runs the host's tools: enough to check exit codes and output.
	code, out, err := imageTool("/", "sh", "-c", "echo hello; exit 3")
	if err != nil || code != 3 || strings.TrimSpace(string(out)) != "hello" {
		t.Errorf("imageTool = %d %q %v", code, out, err)
	}
	code, _, err = imageTool("/", "true")
	if err != nil || code != 0 {
		t.Errorf("true: %d %v", code, err)
	}
	if _, _, err := imageTool(t.TempDir(), "mkfs.ext4"); err == nil || !strings.Contains(err.Error(), "has no mkfs.ext4") {
		t.Errorf("missing tool: %v", err)
	}
}

func TestMarkUpdated(t *testing.T) {
	dir := t.TempDir()
	etc, usr := filepath.Join(dir, "etc"), filepath.Join(dir, "usr")
	os.Mkdir(etc, 0o755)
	os.Mkdir(usr, 0o755)
	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	os.Chtimes(usr, when, when)
	if err := markUpdated(etc, usr); err != nil {
		t.Fatal(err)
	}
	var u, e unix.Stat_t
	unix.Stat(usr, &u)
	unix.Stat(filepath.Join(etc, ".updated"), &e)
	// systemd's ConditionNeedsUpdate= is false when /usr is not newer.
	if e.Mtim != u.Mtim {
		t.Errorf(".updated mtime %v, /usr %v", e.Mtim, u.Mtim)
	}
	b, _ := os.ReadFile(filepath.Join(etc, ".updated"))
	if !strings.Contains(string(b), "TIMESTAMP_NSEC=1714979289000000000\n") {
		t.Errorf(".updated:\n%s", b)
	}
	// An image's own .updated is kept.
	os.WriteFile(filepath.Join(etc, ".updated"), []byte("image\n"), 0o644)
	markUpdated(etc, usr)
	if b, _ := os.ReadFile(filepath.Join(etc, ".updated")); string(b) != "image\n" {
		t.Errorf("overwrote the image's .updated: %q", b)
	}
}

func TestFreeTree(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lib/modules/x/kernel"), 0o755)
	os.WriteFile(filepath.Join(dir, "init"), []byte("x"), 0o755)
	os.WriteFile(filepath.Join(dir, "lib/modules/x/kernel/a.ko"), []byte("x"), 0o644)
	os.Symlink("/etc", filepath.Join(dir, "link-to-dir"))
	os.Mkdir(filepath.Join(dir, "sysroot"), 0o755)
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	freeTree(int(f.Fd()))
	f.Close()
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := os.Stat("/etc/hostname"); err != nil && !os.IsNotExist(err) {
		t.Errorf("followed a symlink out: %v", err)
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine([]byte("e2fsck: Bad magic\n\n  number in super-block\n")); got != "e2fsck: Bad magic number in super-block" {
		t.Errorf("oneLine = %q", got)
	}
	if oneLine(nil) != "(no output)" {
		t.Error("empty output")
	}
}
