package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
)

// testPart is one partition of the fake node's disk.
type testPart struct {
	Number      int
	Name, GUID  string
	Start, Size int64
}

type testPlan struct{ Partitions []testPart }

func (p testPlan) Part(n int) testPart { return p.Partitions[n-1] }

// newPlan is slate's layout (ESP, root a, root b, state), written with
// go-diskfs: the agent must not import the builder's disk package.
func newPlan() testPlan {
	var p testPlan
	off := int64(1 << 20)
	for i, pt := range []struct {
		name string
		size int64
	}{{boot.PartESP, 64 << 20}, {boot.SlotA.PartitionName(), 128 << 20}, {boot.SlotB.PartitionName(), 128 << 20}, {boot.PartState, 64 << 20}} {
		p.Partitions = append(p.Partitions, testPart{Number: i + 1, Name: pt.name,
			GUID: fmt.Sprintf("%08x-1111-4222-8333-444444444444", i+1), Start: off, Size: pt.size})
		off += pt.size
	}
	return p
}

func createDisk(t *testing.T, path string, p testPlan) {
	t.Helper()
	last := p.Partitions[len(p.Partitions)-1]
	d, err := diskfs.Create(path, last.Start+last.Size+1<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	types := map[int]string{boot.NumESP: boot.TypeESP, boot.NumRootA: boot.TypeRootX8664, boot.NumRootB: boot.TypeRootX8664, boot.NumState: boot.TypeVar}
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	for _, pt := range p.Partitions {
		tbl.Partitions = append(tbl.Partitions, &gpt.Partition{Index: pt.Number, Start: uint64(pt.Start / 512),
			End: uint64((pt.Start+pt.Size)/512 - 1), Size: uint64(pt.Size), Type: gpt.Type(types[pt.Number]), Name: pt.Name, GUID: pt.GUID})
	}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
}

// fakeNode lays out a sysfs, a /dev with the disk as a sparse file and a
// boot record, as a booted node has them.
func fakeNode(t *testing.T, slot string, partuuid func(testPlan) string) (Paths, testPlan) {
	t.Helper()
	root := t.TempDir()
	p := Paths{Record: filepath.Join(root, "run/boot.json"), Sys: filepath.Join(root, "sys"), Dev: filepath.Join(root, "dev"), EFIVars: filepath.Join(root, "efivars")}
	plan := newPlan()
	for _, d := range []string{p.Dev, p.EFIVars, filepath.Join(p.Sys, "class/block"), filepath.Join(p.Sys, "devices/virtio/block/vda/queue")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	createDisk(t, filepath.Join(p.Dev, "vda"), plan)
	diskSys := filepath.Join(p.Sys, "devices/virtio/block/vda")
	os.WriteFile(filepath.Join(diskSys, "queue/logical_block_size"), []byte("512\n"), 0o644)
	os.Symlink(diskSys, filepath.Join(p.Sys, "class/block/vda"))
	for _, pt := range plan.Partitions {
		name := "vda" + string(rune('0'+pt.Number))
		os.MkdirAll(filepath.Join(diskSys, name), 0o755)
		os.WriteFile(filepath.Join(diskSys, name, "partition"), []byte(string(rune('0'+pt.Number))+"\n"), 0o644)
		os.Symlink(filepath.Join(diskSys, name), filepath.Join(p.Sys, "class/block", name))
	}
	rec := record.Record{FormatVersion: 1, Slot: slot, RootDevice: "/dev/vda2", RootPartUUID: partuuid(plan)}
	if err := os.MkdirAll(filepath.Dir(p.Record), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := rec.Write(p.Record); err != nil {
		t.Fatal(err)
	}
	return p, plan
}

func slotA(plan testPlan) string { return strings.ToUpper(plan.Part(boot.NumRootA).GUID) }

func TestDiscover(t *testing.T) {
	p, plan := fakeNode(t, "a", slotA)
	n, err := Discover(p)
	if err != nil {
		t.Fatal(err)
	}
	if n.Running != boot.SlotA || n.Disk != filepath.Join(p.Dev, "vda") {
		t.Errorf("running %s on %s", n.Running, n.Disk)
	}
	b := n.Slot(boot.SlotB)
	want := plan.Part(boot.NumRootB)
	if b.Device != filepath.Join(p.Dev, "vda3") || b.Size != want.Size || b.PartUUID != strings.ToLower(want.GUID) || b.Number != 3 {
		t.Errorf("slot b = %+v, plan %+v", b, want)
	}
	if n.ESP().Device != filepath.Join(p.Dev, "vda1") || n.State().Device != filepath.Join(p.Dev, "vda4") {
		t.Errorf("esp %+v state %+v", n.ESP(), n.State())
	}
}

func TestDiscoverRefuses(t *testing.T) {
	p, _ := fakeNode(t, "a", func(plan testPlan) string { return plan.Part(boot.NumRootB).GUID })
	if _, err := Discover(p); err == nil || !strings.Contains(err.Error(), "slot a is PARTUUID") {
		t.Errorf("record naming slot b's partition: %v", err)
	}
	p.Record = filepath.Join(t.TempDir(), "none.json")
	if _, err := Discover(p); err == nil || !strings.Contains(err.Error(), "not a booted slate node") {
		t.Errorf("no record: %v", err)
	}
}

func TestLoaderVar(t *testing.T) {
	p, _ := fakeNode(t, "a", slotA)
	n, err := Discover(p)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := n.BootCounted(); err != nil || c {
		t.Errorf("no variable: counted %v, %v", c, err)
	}
	// attributes, then UTF-16LE "\loader\entries\slate-b+2-1.conf" and NUL
	v := []byte{7, 0, 0, 0}
	for _, r := range `\loader\entries\slate-b+2-1.conf` {
		v = append(v, byte(r), 0)
	}
	v = append(v, 0, 0)
	os.WriteFile(filepath.Join(p.EFIVars, "LoaderBootCountPath-"+loaderGUID), v, 0o644)
	got, err := n.LoaderVar("LoaderBootCountPath")
	if err != nil || got != `\loader\entries\slate-b+2-1.conf` {
		t.Errorf("LoaderBootCountPath = %q, %v", got, err)
	}
	if c, _ := n.BootCounted(); !c {
		t.Error("counted boot not seen")
	}
	setVar := func(name, val string) {
		v := []byte{7, 0, 0, 0}
		for _, r := range val {
			v = append(v, byte(r), 0)
		}
		os.WriteFile(filepath.Join(p.EFIVars, name+"-"+loaderGUID), append(v, 0, 0), 0o644)
	}
	// The counted entry is the one booted (its id with or without the counter).
	for _, sel := range []string{"slate-b+2-1.conf", "slate-b.conf"} {
		setVar("LoaderEntrySelected", sel)
		if c, _ := n.BootCounted(); !c {
			t.Errorf("selected %s: counted boot not seen", sel)
		}
	}
	// Left from slot b's image the firmware refused; slot a booted uncounted.
	setVar("LoaderEntrySelected", "slate-a.conf")
	if c, _ := n.BootCounted(); c {
		t.Error("a count path of another slot's entry counted this boot")
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/run/a\040b`); got != "/run/a b" {
		t.Errorf("got %q", got)
	}
}
