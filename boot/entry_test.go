package boot

import "testing"

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
}
