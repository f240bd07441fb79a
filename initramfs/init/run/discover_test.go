package run

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/gpt"
	"github.com/slate-os/slate/initramfs/init/blockdev"
	"github.com/slate-os/slate/initramfs/init/cmdline"
	"github.com/slate-os/slate/initramfs/init/efivar"
	"github.com/slate-os/slate/initramfs/init/klog"
	"github.com/slate-os/slate/internal/testtool"
)

func setVar(t *testing.T, s efivar.Store, name, value string) {
	t.Helper()
	if err := s.Set(name, efivar.LoaderGUID, efivar.BootserviceAccess|efivar.RuntimeAccess, efivar.EncodeUTF16(value)); err != nil {
		t.Fatal(err)
	}
}

func TestSelectedSlot(t *testing.T) {
	s := efivar.Store{Dir: t.TempDir()}
	if _, _, err := selectedSlot(s); err == nil || err.Error() != "discover: EFI variable LoaderEntrySelected is not set: boot this UKI through systemd-boot" {
		t.Errorf("not set: %v", err)
	}
	for id, want := range map[string]boot.Slot{
		"slate-a.conf": boot.SlotA, "slate-b.conf": boot.SlotB, "slate-b+3.conf": boot.SlotB,
		"slate-b+2-1.conf": boot.SlotB, "slate-a+0-3.conf": boot.SlotA, "slate-b": boot.SlotB, "slate-a+1-2": boot.SlotA,
	} {
		setVar(t, s, VarEntrySelected, id)
		if got, entry, err := selectedSlot(s); err != nil || got != want || entry != id {
			t.Errorf("%s: slot %q entry %q, %v; want %s", id, got, entry, err, want)
		}
	}
	for _, id := range []string{"debian.conf", "slate-c.conf", "slate-ab.conf", "slate-b+x.conf", "auto-efi-shell", "xslate-a.conf"} {
		setVar(t, s, VarEntrySelected, id)
		if _, _, err := selectedSlot(s); err == nil || !strings.Contains(err.Error(), `booted entry "`+id+`"`) {
			t.Errorf("%s: err = %v", id, err)
		}
	}
}

// fakeGPTDisk writes a GPT image with sgdisk and lays it out as the
// kernel would under sys and dev: disk name, partitions name1, name2, ...
// (only those in present). It returns the partitions' PARTUUIDs by number.
func fakeGPTDisk(t *testing.T, dir, name string, present []int, sgdiskArgs ...string) map[int]string {
	t.Helper()
	testtool.Need(t, "sgdisk")
	img := filepath.Join(dir, name+".img")
	if err := os.WriteFile(img, make([]byte, 24<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sgdisk", append(append([]string{"-o"}, sgdiskArgs...), img)...).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := gpt.Read(bytes.NewReader(data), 512)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int]string{}
	for _, p := range tab.Partitions {
		ids[p.Number] = p.ID.String()
	}
	put := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sys, dev := filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	put(filepath.Join(sys, name, "size"), strconv.Itoa(len(data)/512))
	for _, n := range present {
		put(filepath.Join(sys, name, name+strconv.Itoa(n), "partition"), strconv.Itoa(n))
	}
	put(filepath.Join(dev, name), string(data))
	return ids
}

var slateDisk = []string{
	"-n", "1:2048:+4M", "-t", "1:" + boot.TypeESP, "-c", "1:esp",
	"-n", "2:0:+4M", "-t", "2:" + boot.TypeRootX8664, "-c", "2:slate-root-a",
	"-n", "3:0:+4M", "-t", "3:" + boot.TypeRootX8664, "-c", "3:slate-root-b",
	"-n", "4:0:+4M", "-t", "4:" + boot.TypeVar, "-c", "4:slate-state",
}

func TestDiscover(t *testing.T) {
	t.Parallel() // sgdisk takes a second a disk
	dir := t.TempDir()
	s := efivar.Store{Dir: filepath.Join(dir, "efivars")}
	os.Mkdir(s.Dir, 0o755)
	f := blockdev.Finder{SysBlock: filepath.Join(dir, "sys"), Dev: filepath.Join(dir, "dev")}
	const timeout, poll = 100 * time.Millisecond, 10 * time.Millisecond

	// Two slate disks; systemd-boot ran from vdb's ESP. vdb has no
	// slate-root-b yet (the kernel has not added it).
	fakeGPTDisk(t, dir, "vda", []int{1, 2, 3, 4}, slateDisk...)
	ids := fakeGPTDisk(t, dir, "vdb", []int{1, 2, 4}, slateDisk...)
	setVar(t, s, VarEntrySelected, "slate-b+2-1.conf")

	d, err := discover(s, f, timeout, poll)
	if err == nil || err.Error() != "discover: EFI variable LoaderDevicePartUUID is not set: boot this UKI through systemd-boot" || d.slot != boot.SlotB {
		t.Errorf("no LoaderDevicePartUUID: %v (slot %q)", err, d.slot)
	}
	setVar(t, s, VarDevicePartUUID, "HD(1,GPT)")
	if _, err := discover(s, f, timeout, poll); err == nil || err.Error() != `discover: EFI variable LoaderDevicePartUUID is "HD(1,GPT)", not a partition UUID` {
		t.Errorf("bad LoaderDevicePartUUID: %v", err)
	}
	setVar(t, s, VarDevicePartUUID, strings.ToLower(ids[1])) // systemd-boot writes it in lower case
	_, err = discover(s, f, timeout, poll)
	if want := "discover: slot b (from LoaderEntrySelected slate-b+2-1.conf): no partition named slate-root-b on disk vdb (the disk of the ESP, PARTUUID " + ids[1] + ") after 100ms"; err == nil || err.Error() != want {
		t.Errorf("missing root:\n got %v\nwant %s", err, want)
	}

	// vda's root b does not stand in for it; once vdb's shows up, it is found.
	os.MkdirAll(filepath.Join(dir, "sys", "vdb", "vdb3"), 0o755)
	os.WriteFile(filepath.Join(dir, "sys", "vdb", "vdb3", "partition"), []byte("3"), 0o644)
	d, err = discover(s, f, timeout, poll)
	if err != nil {
		t.Fatal(err)
	}
	if d.slot != boot.SlotB || d.root.Name != "vdb3" || d.root.PartUUID != ids[3] || d.state.Name != "vdb4" || d.state.PartUUID != ids[4] || d.esp.Name != "vdb1" {
		t.Errorf("discovery = %+v", d)
	}
	if got, want := d.String(), "slot b (from LoaderEntrySelected slate-b+2-1.conf), root vdb3 slate-root-b, state vdb4 (disk vdb, the ESP's: vdb1, PARTUUID "+ids[1]+")"; got != want {
		t.Errorf("String:\n got %s\nwant %s", got, want)
	}

	// The init's step fills the parameters and the record as the command line would.
	var out bytes.Buffer
	in := &initProc{log: &klog.Logger{Console: &out}, efiStore: s, finder: f, params: &cmdline.Params{Discover: true, RootHash: "ab"}}
	in.efi.mounted = true
	if err := in.findPartitions(); err != nil {
		t.Fatal(err)
	}
	p := in.params
	if p.Slot != boot.SlotB || p.RootPartUUID != ids[3] || p.StatePartUUID != ids[4] || in.root.Dev != filepath.Join(dir, "dev", "vdb3") || in.state.Dev != filepath.Join(dir, "dev", "vdb4") {
		t.Errorf("params %+v root %+v state %+v", p, in.root, in.state)
	}
	r := in.rec
	if r.Slot != "b" || r.RootPartUUID != ids[3] || r.StatePartUUID != ids[4] || r.RootDevice != in.root.Dev || r.StateDevice != in.state.Dev {
		t.Errorf("record %+v", r)
	}
	if !strings.Contains(out.String(), "discovered slot b (from LoaderEntrySelected slate-b+2-1.conf), root vdb3 slate-root-b, state vdb4") {
		t.Errorf("log: %s", out.String())
	}

	// Without EFI variables there is nothing to discover from.
	in = &initProc{log: &klog.Logger{Console: &out}, efiStore: s, finder: f, params: &cmdline.Params{Discover: true}}
	if err := in.findPartitions(); err == nil || !strings.Contains(err.Error(), "no EFI variables to find them from") {
		t.Errorf("no EFI: %v", err)
	}
}
