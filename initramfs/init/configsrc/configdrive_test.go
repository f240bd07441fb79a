package configsrc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/internal/testtool"
)

// fakeBlock is a /sys/class/block and /dev whose devices are image files.
type fakeBlock struct {
	sys, dev string
	mounted  []string // devices mounted, in order
	umounts  int
}

func newFakeBlock(t *testing.T) *fakeBlock {
	d := t.TempDir()
	fb := &fakeBlock{sys: filepath.Join(d, "sys", "class", "block"), dev: filepath.Join(d, "dev")}
	os.MkdirAll(fb.sys, 0o755)
	os.MkdirAll(fb.dev, 0o755)
	return fb
}

// add makes device name from img ("" for a device of zero size, as an
// empty CD drive).
func (fb *fakeBlock) add(t *testing.T, name, img string) {
	t.Helper()
	os.MkdirAll(filepath.Join(fb.sys, name), 0o755)
	size := int64(0)
	if img != "" {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(fb.dev, name), b, 0o644)
		size = int64(len(b)) / 512
	}
	os.WriteFile(filepath.Join(fb.sys, name, "size"), []byte(fmt.Sprintf("%d\n", size)), 0o444)
}

// source returns a ConfigDrive on the fake whose mount copies the image's
// files with mtools or isoinfo, as a read-only mount would show them.
func (fb *fakeBlock) source(t *testing.T, wait time.Duration) ConfigDrive {
	mnt := filepath.Join(t.TempDir(), "mnt")
	return ConfigDrive{
		SysBlock: fb.sys, Dev: fb.dev, MountDir: mnt, Wait: wait,
		Mount: func(dev, dir, fstype, data string) error {
			if dir != mnt || data != driveMountOptions[fstype] {
				return fmt.Errorf("mount %s on %s type %s options %q", dev, dir, fstype, data)
			}
			fb.mounted = append(fb.mounted, filepath.Base(dev))
			switch fstype {
			case FSVfat:
				testtool.Need(t, "mcopy", "mdir")
				if out, err := exec.Command("mdir", "-b", "-i", dev, "::").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
					return exec.Command("mcopy", "-s", "-i", dev, "::*", dir).Run()
				}
				return nil
			case FSISO9660, FSUDF: // UDF: a UDF bridge, which has ISO 9660 too
				testtool.Need(t, "isoinfo")
				out, err := exec.Command("isoinfo", "-R", "-f", "-i", dev).Output()
				if err != nil {
					return err
				}
				paths := strings.Fields(string(out))
				for _, f := range paths {
					isDir := false
					for _, g := range paths {
						isDir = isDir || strings.HasPrefix(g, f+"/")
					}
					if isDir {
						continue
					}
					b, err := exec.Command("isoinfo", "-R", "-i", dev, "-x", f).Output()
					if err != nil {
						return err
					}
					name := filepath.Join(dir, strings.ToLower(strings.TrimSuffix(f, ";1")))
					os.MkdirAll(filepath.Dir(name), 0o755)
					os.WriteFile(name, b, 0o444)
				}
				return nil
			}
			return fmt.Errorf("unknown filesystem type %s", fstype)
		},
		Unmount: func(dir string) error {
			fb.umounts++
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
			return nil
		},
	}
}

const driveConfig = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: from-drive\n"

func TestConfigDrive(t *testing.T) {
	imgs := t.TempDir()
	cfg := map[string]string{"slate.yaml": driveConfig}
	vfat := mkVfat(t, imgs, "vfat.img", 4, 12, "SLATE-CONFI", cfg)
	other := mkVfat(t, imgs, "other.img", 4, 12, "ESP", cfg)

	fb := newFakeBlock(t)
	fb.add(t, "vda", other) // a disk that is not a config drive
	fb.add(t, "vda1", other)
	fb.add(t, "sr0", "")     // an empty CD drive
	fb.add(t, "loop0", vfat) // never looked at
	fb.add(t, "ram0", vfat)  // never looked at
	fb.add(t, "vdb", vfat)   // the config drive
	src := fb.source(t, time.Second)
	env := &Env{DevicesSince: time.Now()}
	ctx := WithEnv(context.Background(), env)
	b, err := src.Fetch(ctx)
	if err != nil || string(b) != driveConfig {
		t.Fatalf("Fetch = %q, %v", b, err)
	}
	if env.Location != filepath.Join(fb.dev, "vdb") || strings.Join(fb.mounted, " ") != "vdb" || fb.umounts != 1 {
		t.Errorf("location %q, mounted %v, %d unmounts", env.Location, fb.mounted, fb.umounts)
	}
	if _, err := os.Stat(src.MountDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount directory left behind: %v", err)
	}

	// The same filesystem seen as a disk and as its partition (a hybrid
	// ISO): one drive, the disk.
	fb.add(t, "vdb1", vfat)
	if d, err := src.Find(ctx, time.Now()); err != nil || d.Name != "vdb" {
		t.Errorf("disk and partition: %+v %v", d, err)
	}
	// Two different config drives: which one? Refused.
	vfat2 := mkVfat(t, imgs, "vfat2.img", 4, 12, "slate-confi", cfg)
	fb.add(t, "vdc", vfat2)
	_, err = src.Fetch(ctx)
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "2 filesystems are labelled as config drives: ") ||
		!strings.Contains(err.Error(), "vdc (vfat, label \"slate-confi\")") || !strings.HasSuffix(err.Error(), "refusing to guess") {
		t.Errorf("two drives: %v", err)
	}
}

func TestConfigDriveISO(t *testing.T) {
	imgs := t.TempDir()
	iso := mkISO(t, imgs, "c.iso", "SLATE-CONFIG", false, map[string]string{"slate.yaml": driveConfig})
	fb := newFakeBlock(t)
	fb.add(t, "sr0", iso)
	b, err := fb.source(t, time.Second).Fetch(context.Background())
	if err != nil || string(b) != driveConfig {
		t.Fatalf("Fetch = %q, %v", b, err)
	}
	// Plain ISO 9660 names (no Rock Ridge, no Joliet) are 8.3: SLATE.YAM.
	plain := mkISO(t, imgs, "p.iso", "SLATE-CONFIG", true, map[string]string{"slate.yaml": driveConfig})
	fb = newFakeBlock(t)
	fb.add(t, "sr0", plain)
	_, err = fb.source(t, time.Second).Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no slate.yaml at its root (its names are 8.3: make the ISO with Rock Ridge or Joliet names, genisoimage -R -J)") {
		t.Errorf("plain ISO: %v", err)
	}
}

func TestConfigDriveErrors(t *testing.T) {
	imgs := t.TempDir()
	fb := newFakeBlock(t)
	fb.add(t, "vdb", mkVfat(t, imgs, "empty.img", 4, 12, "SLATE-CONFI", nil))
	src := fb.source(t, time.Second)
	_, err := src.Fetch(context.Background())
	want := "config drive " + filepath.Join(fb.dev, "vdb") + ` (vfat, label "SLATE-CONFI"): no slate.yaml at its root`
	if err == nil || err.Error() != want || fb.umounts != 1 {
		t.Errorf("no slate.yaml: %v (want %s), %d unmounts", err, want, fb.umounts)
	}

	// A symlink (Rock Ridge has them) or a directory is refused.
	for _, kind := range []string{"symlink", "dir"} {
		s := src
		s.Mount = func(dev, dir, fstype, data string) error {
			if kind == "symlink" {
				return os.Symlink("/etc/shadow", filepath.Join(dir, DriveFile))
			}
			return os.Mkdir(filepath.Join(dir, DriveFile), 0o755)
		}
		_, err := s.Fetch(context.Background())
		if err == nil || !strings.Contains(err.Error(), map[string]string{"symlink": "slate.yaml is a symbolic link", "dir": "slate.yaml is not a regular file"}[kind]) {
			t.Errorf("%s: %v", kind, err)
		}
	}
	// Mount and unmount failures.
	s := src
	s.Mount = func(dev, dir, fstype, data string) error { return errors.New("invalid argument") }
	if _, err := s.Fetch(context.Background()); err == nil || !strings.HasSuffix(err.Error(), "mounting it read-only: invalid argument") {
		t.Errorf("mount failure: %v", err)
	}
	s = src
	s.Mount = func(dev, dir, fstype, data string) error {
		return os.WriteFile(filepath.Join(dir, DriveFile), []byte("x"), 0o444)
	}
	s.Unmount = func(string) error { return errors.New("busy") }
	if b, err := s.Fetch(context.Background()); err == nil || b != nil || !strings.HasSuffix(err.Error(), "unmounting it: busy") {
		t.Errorf("unmount failure: %q %v", b, err)
	}
}

func TestConfigDriveWait(t *testing.T) {
	imgs := t.TempDir()
	vfat := mkVfat(t, imgs, "vfat.img", 4, 12, "SLATE-CONFI", map[string]string{"slate.yaml": driveConfig})
	fb := newFakeBlock(t)
	fb.add(t, "vda", "")
	src := fb.source(t, 300*time.Millisecond)

	// Only controllers that add their disks synchronously (virtio-blk):
	// one scan, no wait.
	start := time.Now()
	_, err := src.Fetch(WithEnv(context.Background(), &Env{DevicesSince: start}))
	if d := time.Since(start); !errors.Is(err, ErrNotFound) || d > 100*time.Millisecond {
		t.Errorf("no drive, no SCSI or NVMe: %v after %s", err, d)
	}
	for _, class := range []string{"scsi_host/host0", "nvme/nvme0", "mmc_host/mmc0"} {
		dir := filepath.Join(filepath.Dir(fb.sys), class)
		os.MkdirAll(dir, 0o755)
		if !src.disksMayAppear() {
			t.Errorf("%s: disks may appear, but disksMayAppear is false", class)
		}
		os.RemoveAll(filepath.Dir(dir))
	}
	// A SCSI host: disks may still appear.
	os.MkdirAll(filepath.Join(filepath.Dir(fb.sys), "scsi_host", "host0"), 0o755)

	// Nothing: not found once the wait, counted from DevicesSince, is over.
	start = time.Now()
	_, err = src.Fetch(WithEnv(context.Background(), &Env{DevicesSince: start}))
	if d := time.Since(start); !errors.Is(err, ErrNotFound) || d < 300*time.Millisecond || d > 2*time.Second {
		t.Errorf("no drive: %v after %s", err, d)
	}
	// Devices loaded long ago: no wait at all.
	start = time.Now()
	_, err = src.Fetch(WithEnv(context.Background(), &Env{DevicesSince: start.Add(-time.Minute)}))
	if d := time.Since(start); !errors.Is(err, ErrNotFound) || d > 100*time.Millisecond {
		t.Errorf("no drive, no wait: %v after %s", err, d)
	}
	// A drive that shows up during the wait is found.
	src.Wait = 5 * time.Second
	go func() {
		time.Sleep(150 * time.Millisecond)
		fb.add(t, "vdb", vfat)
	}()
	start = time.Now()
	b, err := src.Fetch(WithEnv(context.Background(), &Env{DevicesSince: start}))
	if d := time.Since(start); err != nil || string(b) != driveConfig || d > 2*time.Second {
		t.Errorf("late drive: %q %v after %s", b, err, d)
	}
	// The context cuts the wait short.
	os.RemoveAll(filepath.Join(fb.sys, "vdb"))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := src.Fetch(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled wait: %v", err)
	}
}
