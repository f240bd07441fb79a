package gpt

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/testtool"
)

const stateUUID = "11111111-2222-3333-4444-555555555555"

func need(t *testing.T, tools ...string) {
	t.Helper()
	testtool.Need(t, tools...)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var (
	templateOnce sync.Once
	templateHead []byte // LBA 0..33 of the template disk
	templateTail []byte // its last 33 LBAs
	templateErr  error
)

const templateMiB = 64

// makeDisk returns a 64 MiB sparse disk image laid out like slate's (esp,
// root a, root b, state) by sgdisk. sgdisk takes a second per run (it syncs
// and waits), so it runs once and the tables are copied for each test.
func makeDisk(t *testing.T) string {
	t.Helper()
	templateOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gpt-template")
		if err != nil {
			templateErr = err
			return
		}
		defer os.RemoveAll(dir)
		p := filepath.Join(dir, "disk.img")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			templateErr = err
			return
		}
		if err := os.Truncate(p, templateMiB<<20); err != nil {
			templateErr = err
			return
		}
		out, err := exec.Command("sgdisk", "-o",
			"-n", "1:2048:+8M", "-t", "1:"+boot.TypeESP, "-c", "1:"+boot.PartESP,
			"-n", "2:0:+16M", "-t", "2:"+boot.TypeRootX8664, "-c", "2:"+boot.SlotA.PartitionName(),
			"-n", "3:0:+16M", "-t", "3:"+boot.TypeRootX8664, "-c", "3:"+boot.SlotB.PartitionName(),
			"-n", "4:0:+8M", "-t", "4:"+boot.TypeVar, "-c", "4:"+boot.PartState, "-u", "4:"+stateUUID,
			p).CombinedOutput()
		if err != nil {
			templateErr = fmt.Errorf("sgdisk: %v\n%s", err, out)
			return
		}
		b, err := os.ReadFile(p)
		if err != nil {
			templateErr = err
			return
		}
		templateHead = b[:34*512]
		templateTail = b[len(b)-33*512:]
	})
	if templateErr != nil {
		t.Fatal(templateErr)
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(templateMiB << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(templateHead, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(templateTail, templateMiB<<20-int64(len(templateTail))); err != nil {
		t.Fatal(err)
	}
	return p
}

// verify fails the test unless both gdisk and sfdisk find the table sound.
func verify(t *testing.T, p string) {
	t.Helper()
	if out := run(t, "sgdisk", "-v", p); !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v:\n%s", out)
	}
	// sfdisk --verify exits 0 even when it reports problems: read what it says.
	out, err := exec.Command("sfdisk", "--verify", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors detected") ||
		strings.Contains(string(out), "mismatch") || strings.Contains(string(out), "not on the end") {
		t.Errorf("sfdisk --verify: %v\n%s", err, out)
	}
}

type sfdiskDump struct {
	PartitionTable struct {
		LastLBA    uint64 `json:"lastlba"`
		Partitions []struct {
			Node  string `json:"node"`
			Start uint64 `json:"start"`
			Size  uint64 `json:"size"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func dump(t *testing.T, p string) sfdiskDump {
	t.Helper()
	var d sfdiskDump
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", p)), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func readAt(t *testing.T, p string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func grow(t *testing.T, p string) GrowResult {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	id, _ := ParseGUID(stateUUID)
	res, err := GrowLast(f, 512, st.Size(), id)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestGrowLast(t *testing.T) {
	need(t, "sgdisk", "sfdisk")
	p := makeDisk(t)
	verify(t, p)
	before := dump(t, p)

	if err := os.Truncate(p, 200<<20); err != nil {
		t.Fatal(err)
	}
	// Sanity: the tools do see the moved end as a problem before the grow.
	if out, _ := exec.Command("sgdisk", "-v", p).CombinedOutput(); strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v did not notice the grown disk:\n%s", out)
	}

	res := grow(t, p)
	total := uint64(200<<20) / 512
	wantLast := total - 1 - 32 - 1 // backup header, 32 sectors of entries
	if !res.Changed || res.Number != boot.NumState || res.NewLastLBA != wantLast || res.OldLastLBA != 83968+16384-1 {
		t.Fatalf("GrowLast = %+v, want partition 4 grown to LBA %d", res, wantLast)
	}
	verify(t, p)
	after := dump(t, p)
	if len(after.PartitionTable.Partitions) != 4 {
		t.Fatalf("partitions after grow: %+v", after.PartitionTable.Partitions)
	}
	for i := 0; i < 3; i++ {
		if after.PartitionTable.Partitions[i] != before.PartitionTable.Partitions[i] {
			t.Errorf("partition %d changed: %+v -> %+v", i+1, before.PartitionTable.Partitions[i], after.PartitionTable.Partitions[i])
		}
	}
	st := after.PartitionTable.Partitions[3]
	if st.Start != 83968 || st.Start+st.Size-1 != wantLast || st.UUID != stateUUID || st.Name != boot.PartState {
		t.Errorf("state partition after grow: %+v (want end %d)", st, wantLast)
	}

	// The protective MBR covers the new size.
	b := readAt(t, p, 0, 512)
	if got := binary.LittleEndian.Uint32(b[446+12:]); uint64(got) != total-1 {
		t.Errorf("protective MBR size %d, want %d", got, total-1)
	}
	// The old backup header (old last LBA) was wiped.
	oldAlt := uint64(64<<20)/512 - 1
	if string(readAt(t, p, int64(oldAlt)*512, 8)) == Signature {
		t.Errorf("old backup header still present at LBA %d", oldAlt)
	}
	// The backup header at the end reads back and agrees with the primary.
	bh, err := parseHeader(readAt(t, p, int64(total-1)*512, 512), 512)
	if err != nil {
		t.Fatalf("backup header: %v", err)
	}
	if bh.MyLBA != total-1 || bh.AlternateLBA != 1 || bh.EntriesLBA != total-33 || bh.LastUsableLBA != wantLast {
		t.Errorf("backup header %+v", bh)
	}

	// Idempotent.
	if res := grow(t, p); res.Changed {
		t.Errorf("second GrowLast changed the table: %+v", res)
	}
	verify(t, p)
}

func TestGrowLastSameSize(t *testing.T) {
	need(t, "sgdisk", "sfdisk")
	p := makeDisk(t)
	sum := func() string { return string(readAt(t, p, 0, 34*512)) }
	first := sum()
	res := grow(t, p)
	if !res.Changed { // sgdisk left free space after partition 4: it is grown into it
		t.Fatalf("partition 4 not grown into the free space: %+v", res)
	}
	verify(t, p)
	second := sum()
	if first == second {
		t.Fatal("table unchanged")
	}
	if res := grow(t, p); res.Changed {
		t.Errorf("disk already spanned: GrowLast changed it again: %+v", res)
	}
}

func TestGrowLastRefuses(t *testing.T) {
	need(t, "sgdisk")
	p := makeDisk(t)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Read(f, 512)
	if err != nil {
		t.Fatal(err)
	}
	// Root b is not the last partition.
	var rootB GUID
	for _, q := range tab.Partitions {
		if q.Name == boot.SlotB.PartitionName() {
			rootB = q.ID
		}
	}
	if _, err := GrowLast(f, 512, 128<<20, rootB); err == nil || !strings.Contains(err.Error(), "not the last") {
		t.Errorf("growing root b: err = %v, want 'not the last'", err)
	}
	// Unknown PARTUUID.
	other, _ := ParseGUID("AAAAAAAA-2222-3333-4444-555555555555")
	if _, err := GrowLast(f, 512, 128<<20, other); err == nil || !strings.Contains(err.Error(), "no partition") {
		t.Errorf("unknown GUID: err = %v", err)
	}
	// A disk smaller than the table.
	id, _ := ParseGUID(stateUUID)
	if _, err := GrowLast(f, 512, 32<<20, id); err == nil || !strings.Contains(err.Error(), "smaller") {
		t.Errorf("shrunk disk: err = %v", err)
	}
	// A corrupt entry array is refused, nothing written.
	if _, err := f.WriteAt([]byte{0xff}, 2*512+5); err != nil {
		t.Fatal(err)
	}
	if _, err := GrowLast(f, 512, 128<<20, id); err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Errorf("corrupt entries: err = %v, want CRC mismatch", err)
	}
}

func TestGUID(t *testing.T) {
	g, err := ParseGUID(strings.ToLower(boot.TypeVar))
	if err != nil {
		t.Fatal(err)
	}
	if g.String() != boot.TypeVar {
		t.Errorf("round trip %s", g)
	}
	// On-disk byte order: first three fields little endian.
	if g[0] != 0x16 || g[3] != 0x4D || g[4] != 0x34 || g[6] != 0xC2 || g[8] != 0xA9 {
		t.Errorf("byte order: % x", g[:])
	}
	for _, bad := range []string{"", "4D21B016B534-45C2-A9FB-5C16E091FD2D0", "ZD21B016-B534-45C2-A9FB-5C16E091FD2D"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) accepted", bad)
		}
	}
}
