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
	p := filepath.Join(dir, "disk.img")
	sgdiskImage(t, p, mib, slateLayout("slate-root-b", "-u", "4:"+stateUUID)...)
	return p
}

// slateLayout is sgdisk's arguments for slate's four partitions, the third
// named rootB; extra are added.
func slateLayout(rootB string, extra ...string) []string {
	return append([]string{
		"-n", "1:2048:+4M", "-t", "1:" + boot.TypeESP, "-c", "1:esp",
		"-n", "2:0:+4M", "-t", "2:" + boot.TypeRootX8664, "-c", "2:slate-root-a",
		"-n", "3:0:+4M", "-t", "3:" + boot.TypeRootX8664, "-c", "3:" + rootB,
		"-n", "4:0:+4M", "-t", "4:" + boot.TypeVar, "-c", "4:slate-state",
	}, extra...)
}

// sgdiskImage writes a GPT disk image of size mib at p, partitioned by
// sgdisk with args (random PARTUUIDs unless args set them).
func sgdiskImage(t *testing.T, p string, mib int, args ...string) {
	t.Helper()
	testtool.Need(t, "sgdisk")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, int64(mib)<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sgdisk", append(append([]string{"-o"}, args...), p)...).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
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

// Under Secure Boot the init knows the ESP's PARTUUID (from systemd-boot)
// and looks for the root and state partitions by name on its disk.
func TestWaitOnDiskOf(t *testing.T) {
	t.Parallel() // sgdisk takes a second
	dir := t.TempDir()
	img, err := os.ReadFile(makeDisk(t, dir, 24))
	if err != nil {
		t.Fatal(err)
	}
	ids := partUUIDs(t, filepath.Join(dir, "disk.img"))
	esp := Want{PartUUID: ids[1], What: "the ESP"}
	names := []string{"slate-root-b", "slate-state"}
	sys, dev := filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	f := Finder{SysBlock: sys, Dev: dev}
	const short = 100 * time.Millisecond

	// No disk yet: the ESP is what is missing.
	_, _, err = f.WaitOnDiskOf(esp, names, short, 10*time.Millisecond)
	var nf *NotFoundError
	if !errors.As(err, &nf) || err.Error() != "the ESP: no partition with PARTUUID "+ids[1]+" after 100ms" {
		t.Fatalf("no disk: err = %v", err)
	}

	// The disk without its third partition (the kernel has not added it yet).
	fakeDisk(t, sys, dev, "vda", img, map[int]string{1: "vda1", 2: "vda2", 4: "vda4"})
	_, _, err = f.WaitOnDiskOf(esp, names, short, 10*time.Millisecond)
	if want := "no partition named slate-root-b on disk vda (the disk of the ESP, PARTUUID " + ids[1] + ") after 100ms"; err == nil || err.Error() != want {
		t.Fatalf("missing root:\n got %v\nwant %s", err, want)
	}
	// It shows up while we wait.
	go func() {
		time.Sleep(50 * time.Millisecond)
		write(t, filepath.Join(sys, "vda", "vda3", "partition"), "3")
	}()
	at, got, err := f.WaitOnDiskOf(esp, names, 5*time.Second, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if at.Dev != filepath.Join(dev, "vda1") || at.DiskName != "vda" {
		t.Errorf("ESP = %+v", at)
	}
	root, state := got["slate-root-b"], got["slate-state"]
	if root.Dev != filepath.Join(dev, "vda3") || root.PartUUID != ids[3] || root.Label != "slate-root-b" {
		t.Errorf("root = %+v", root)
	}
	if state.Dev != filepath.Join(dev, "vda4") || state.PartUUID != stateUUID || state.Number != 4 || state.FirstLBA != 2048+3*8192 {
		t.Errorf("state = %+v", state)
	}

	// A second slate disk (other PARTUUIDs, same names) sorts before vda:
	// only the ESP's disk counts.
	other := filepath.Join(dir, "other.img")
	sgdiskImage(t, other, 24, slateLayout("slate-root-b")...)
	oimg, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	fakeDisk(t, sys, dev, "sda", oimg, map[int]string{1: "sda1", 2: "sda2", 3: "sda3", 4: "sda4"})
	if _, got, err := f.WaitOnDiskOf(esp, names, short, 10*time.Millisecond); err != nil ||
		got["slate-root-b"].Dev != filepath.Join(dev, "vda3") || got["slate-state"].Dev != filepath.Join(dev, "vda4") {
		t.Errorf("two slate disks: %+v %v", got, err)
	}
	// The other disk's ESP anchors the search there.
	oids := partUUIDs(t, other)
	if _, got, err := f.WaitOnDiskOf(Want{oids[1], "the ESP"}, names, short, 10*time.Millisecond); err != nil ||
		got["slate-root-b"].PartUUID != oids[3] || got["slate-state"].Dev != filepath.Join(dev, "sda4") {
		t.Errorf("the other disk: %+v %v", got, err)
	}

	// A copy of the disk (the same PARTUUIDs) leaves the ESP ambiguous.
	fakeDisk(t, sys, dev, "vdb", img, map[int]string{1: "vdb1", 2: "vdb2", 3: "vdb3", 4: "vdb4"})
	if _, _, err := f.WaitOnDiskOf(esp, names, short, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "the ESP: PARTUUID "+ids[1]+" is on 2 partitions") {
		t.Errorf("copied disk: err = %v", err)
	}
}

// A name on two partitions of the ESP's disk is not guessed at.
func TestWaitOnDiskOfDuplicateName(t *testing.T) {
	t.Parallel() // sgdisk takes a second
	dir := t.TempDir()
	p := filepath.Join(dir, "disk.img")
	sgdiskImage(t, p, 24, slateLayout("slate-root-a")...)
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	ids := partUUIDs(t, p)
	sys, dev := filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	fakeDisk(t, sys, dev, "nvme0n1", img, map[int]string{1: "nvme0n1p1", 2: "nvme0n1p2", 3: "nvme0n1p3", 4: "nvme0n1p4"})
	f := Finder{SysBlock: sys, Dev: dev}
	_, _, err = f.WaitOnDiskOf(Want{ids[1], "the ESP"}, []string{"slate-root-a"}, time.Second, 10*time.Millisecond)
	want := "2 partitions are named slate-root-a on disk nvme0n1 (" + filepath.Join(dev, "nvme0n1p2") + ", " + filepath.Join(dev, "nvme0n1p3") + "): refusing to guess"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
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
