package boot

import (
	"strings"
	"testing"
)

func TestEntryRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		e    Entry
		name string
	}{
		{Entry{Slot: SlotA}, "slate-a.conf"},
		{Entry{Slot: SlotB, Counting: true, Left: 3}, "slate-b+3.conf"},
		{Entry{Slot: SlotB, Counting: true, Left: 2, Done: 1}, "slate-b+2-1.conf"},
		{Entry{Slot: SlotA, Counting: true, Left: 0, Done: 3}, "slate-a+0-3.conf"},
	} {
		tc.e.Generation = 7
		tc.e.Title = "slate 1.2 (slot " + string(tc.e.Slot) + ")"
		tc.e.Linux = tc.e.Slot.KernelPath()
		tc.e.Initrd = tc.e.Slot.InitrdPath()
		tc.e.Options = "console=ttyS0 slate.version=1.2 slate.slot=" + string(tc.e.Slot)
		if got := tc.e.FileName(); got != tc.name {
			t.Errorf("FileName = %q, want %q", got, tc.name)
		}
		back, err := ParseEntry(tc.name, tc.e.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		tc.e.Version = "1.2"
		if *back != tc.e {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", tc.name, *back, tc.e)
		}
	}
	for _, bad := range []string{"slate-c.conf", "other.conf", "slate-a+x.conf", "slate-a.conf~"} {
		if _, ok := ParseEntryName(bad); ok {
			t.Errorf("ParseEntryName(%q) accepted", bad)
		}
	}
	if _, err := ParseEntry("slate-a.conf", []byte("title x\nversion nope\nlinux /k\n")); err == nil {
		t.Error("bad version accepted")
	}
	if _, err := ParseEntry("slate-a.conf", []byte("title x\nversion 1\ninitrd /i\n")); err == nil || !strings.Contains(err.Error(), "no linux or efi line") {
		t.Errorf("entry without linux or efi: err = %v", err)
	}
}

// A Secure Boot entry boots the slot's UKI: an efi line, no linux or initrd.
func TestEntryEFI(t *testing.T) {
	e := Entry{Slot: SlotB, Counting: true, Left: 2, Done: 1, Generation: 4, Title: "slate 2 (slot b)",
		EFI: SlotB.UKIPath(), Options: "console=ttyS0 slate.slot=b slate.version=2"}
	if e.EFI != "/slate/b/uki.efi" {
		t.Errorf("UKIPath = %q", e.EFI)
	}
	data := string(e.Marshal())
	if !strings.Contains(data, "\nefi /slate/b/uki.efi\n") || strings.Contains(data, "linux") || strings.Contains(data, "initrd") ||
		!strings.Contains(data, "\noptions "+e.Options+"\n") {
		t.Errorf("Marshal:\n%s", data)
	}
	back, err := ParseEntry(e.FileName(), []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	e.Version = "2"
	if *back != e {
		t.Errorf("round trip:\n got %+v\nwant %+v", *back, e)
	}
}
