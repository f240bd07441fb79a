package blockdev

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/gpt"
	"github.com/slate-os/slate/internal/testtool"
)

const stateUUID = "11111111-2222-3333-4444-555555555555"

// makeDisk writes a slate-like GPT disk image of size mib with sgdisk.
func makeDisk(t *testing.T, dir string, mib int) string {
	t.Helper()
	testtool.Need(t, "sgdisk")
	p := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, int64(mib)<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sgdisk", "-o",
		"-n", "1:2048:+4M", "-t", "1:"+boot.TypeESP, "-c", "1:esp",
		"-n", "2:0:+4M", "-t", "2:"+boot.TypeRootX8664, "-c", "2:slate-root-a",
		"-n", "3:0:+4M", "-t", "3:"+boot.TypeRootX8664, "-c", "3:slate-root-b",
		"-n", "4:0:+4M", "-t", "4:"+boot.TypeVar, "-c", "4:slate-state", "-u", "4:"+stateUUID,
		p).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	return p
}

func partUUIDs(t *testing.T, img string) map[int]string {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := gpt.Read(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]string{}
	for _, p := range tab.Partitions {
		m[p.Number] = p.ID.String()
	}
	return m
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeDisk lays out sysfs and /dev for disk name with partition names
// pname(1..n), backed by image img.
func fakeDisk(t *testing.T, sys, dev, name string, img []byte, parts map[int]string) {
	write(t, filepath.Join(sys, name, "size"), strconv.Itoa(len(img)/512))
	write(t, filepath.Join(sys, name, "queue", "logical_block_size"), "512")
	for n, pname := range parts {
		write(t, filepath.Join(sys, name, pname, "partition"), strconv.Itoa(n))
		write(t, filepath.Join(sys, pname, "partition"), strconv.Itoa(n)) // the /sys/class/block/<part> link
	}
	write(t, filepath.Join(dev, name), string(img))
}

func TestWait(t *testing.T) {
	dir := t.TempDir()
	img, err := os.ReadFile(makeDisk(t, dir, 24))
	if err != nil {
		t.Fatal(err)
	}
	ids := partUUIDs(t, filepath.Join(dir, "disk.img"))
	sys, dev := filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	// nvme-style names: the finder must use sysfs, not guess "<disk><n>".
	fakeDisk(t, sys, dev, "nvme0n1", img, map[int]string{1: "nvme0n1p1", 2: "nvme0n1p2", 3: "nvme0n1p3"})
	// Distractions: a disk without a GPT, an empty one, a RAM disk with our GPT.
	fakeDisk(t, sys, dev, "vdb", make([]byte, 1<<20), nil)
	write(t, filepath.Join(sys, "sr0", "size"), "0")
	fakeDisk(t, sys, dev, "ram0", img, map[int]string{4: "ram0p4"})

	f := Finder{SysBlock: sys, Dev: dev}
	want := []Want{{ids[2], "slot a"}, {stateUUID, "state"}}

	// The state partition is not there: a plain error after the timeout.
	start := time.Now()
	_, err = f.Wait(want, 150*time.Millisecond, 10*time.Millisecond)
	var nf *NotFoundError
	if !errors.As(err, &nf) || err.Error() != "state: no partition with PARTUUID "+stateUUID+" after 150ms" {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("waited %s", d)
	}

	// It appears while we wait (the kernel adds partitions after the driver probes).
	go func() {
		time.Sleep(100 * time.Millisecond)
		write(t, filepath.Join(sys, "nvme0n1", "nvme0n1p4", "partition"), "4")
	}()
	got, err := f.Wait(want, 5*time.Second, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	root, state := got[ids[2]], got[stateUUID]
	if root.Dev != filepath.Join(dev, "nvme0n1p2") || root.Number != 2 || root.Disk != filepath.Join(dev, "nvme0n1") {
		t.Errorf("root = %+v", root)
	}
	if state.Dev != filepath.Join(dev, "nvme0n1p4") || state.Number != 4 || state.FirstLBA != 2048+3*8192 || state.LastLBA != 2048+4*8192-1 || state.SectorSize != 512 {
		t.Errorf("state = %+v", state)
	}

	// The same PARTUUID on two disks is refused.
	fakeDisk(t, sys, dev, "vdc", img, map[int]string{1: "vdc1", 2: "vdc2", 3: "vdc3", 4: "vdc4"})
	if _, err := f.Wait(want, time.Second, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "on 2 partitions") {
		t.Errorf("duplicate: err = %v", err)
	}
	// Unless the scan is limited to one disk.
	f.Disks = []string{"vdc"}
	if got, err := f.Wait(want, time.Second, 10*time.Millisecond); err != nil || got[stateUUID].Dev != filepath.Join(dev, "vdc4") {
		t.Errorf("limited scan: %+v %v", got, err)
	}
}

// TestGrowLoop grows a real partition of a loop device: GPT rewrite, then
// BLKPG, checked through sysfs. It needs root and loop devices.
func TestGrowLoop(t *testing.T) {
	testtool.Root(t, "loop devices")
	testtool.Need(t, "losetup", "partx", "sgdisk")
	dir := t.TempDir()
	img := makeDisk(t, dir, 24)
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	// Partitions added with BLKPG outlive the loop device's detach: drop them first.
	t.Cleanup(func() {
		exec.Command("partx", "-d", loop).Run()
		exec.Command("losetup", "-d", loop).Run()
	})
	name := filepath.Base(loop)
	// Partition scanning on attach is not reliable in every sandbox (and a
	// previous user of the loop device may have left partitions): start
	// from the table with BLKPG (partx -d, partx -a).
	exec.Command("partx", "-d", loop).Run()
	if out, err := exec.Command("partx", "-a", loop).CombinedOutput(); err != nil {
		t.Skipf("partx -a %s: %v %s", loop, err, out)
	}
	f := Finder{Disks: []string{name}}
	var got map[string]Partition
	got, err = f.Wait([]Want{{stateUUID, "state"}}, 5*time.Second, 20*time.Millisecond)
	if err != nil {
		t.Skipf("loop partitions did not show up: %v", err)
	}
	p := got[stateUUID]
	if p.Dev != loop+"p4" {
		t.Fatalf("state = %+v", p)
	}
	before, _ := f.SysSize(p.Name)
	res, err := f.Grow(p)
	if err != nil {
		t.Fatal(err)
	}
	wantSize := int64((64<<20)/512-33-int(p.FirstLBA)) * 512 // up to the last usable LBA, total-34
	if !res.TableChanged || !res.KernelChanged || res.OldSize != before || res.NewSize != wantSize {
		t.Errorf("Grow = %+v, want new size %d", res, wantSize)
	}
	if after, _ := f.SysSize(p.Name); after != wantSize {
		t.Errorf("sysfs size %d, want %d", after, wantSize)
	}
	if out, _ := exec.Command("sgdisk", "-v", loop).CombinedOutput(); !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", loop, out)
	}
	// Again: nothing to do.
	if res, err := f.Grow(p); err != nil || res.TableChanged || res.KernelChanged {
		t.Errorf("second Grow = %+v, %v", res, err)
	}
}
