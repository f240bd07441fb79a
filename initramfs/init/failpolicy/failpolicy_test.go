package failpolicy

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/initramfs/init/efivar"
)

func TestCountingOf(t *testing.T) {
	for path, want := range map[string]Counting{
		"":                                    Uncounted,
		`\loader\entries\slate-b+3.conf`:      Counted,
		`\loader\entries\slate-b+1-2.conf`:    Counted,
		`\loader\entries\slate-a+0-3.conf`:    Uncounted, // no try left: booted as the last resort
		`\loader\entries\slate-a+0.conf`:      Uncounted,
		`\loader\entries\other-entry+2.conf`:  Counted, // not slate's: trust systemd-boot
		`/loader/entries/slate-b+2-1.conf`:    Counted,
		`\EFI\Linux\slate-a+0-4.efi`:          Counted, // a UKI: not an entry name slate parses
		`\loader\entries\slate-a.conf`:        Counted, // systemd-boot would not set it, but it did
		`\loader\entries\slate-b+12-0.conf`:   Counted,
		`\loader\entries\slate-b+0-12.conf`:   Uncounted,
		`\loader\entries\slate-b+00-12.conf`:  Uncounted,
		`\loader\entries\slate-b+x-12.conf`:   Counted,
		`\loader\entries\slate-c+0-1.conf`:    Counted,
		`\loader\entries\slate-b+0-1.conf.gz`: Counted,
	} {
		if got := CountingOf(path); got != want {
			t.Errorf("CountingOf(%q) = %s, want %s", path, got, want)
		}
	}
}

func TestDecide(t *testing.T) {
	when := time.Date(2026, 1, 27, 14, 0, 0, 0, time.UTC)
	this := record.InitFailure{Slot: "a", Step: "state", Error: "state partition /dev/vda4 is damaged", Time: when}
	prev := func(slot, step string, count int, counted bool) *record.InitFailure {
		return &record.InitFailure{Slot: slot, Step: step, Error: "earlier", Count: count, Counted: counted, Rebooted: true, Time: when.Add(-time.Minute)}
	}
	for _, c := range []struct {
		name     string
		counting Counting
		persist  bool
		prev     *record.InitFailure
		reboot   bool
		count    int
		why      string
	}{
		// Counted: always reboot (that is how a bad slot rolls back); the count goes on.
		{"counted, first", Counted, true, nil, true, 1, "on trial"},
		{"counted, again", Counted, true, prev("a", "state", 2, true), true, 3, "spends one of its tries"},
		{"counted, nowhere to keep it", Counted, false, nil, true, 1, "on trial"},
		{"counted, other slot before", Counted, true, prev("b", "state", 3, true), true, 1, "on trial"},
		// Unknown: UEFI without readable variables: reboot (a broken initramfs is nearly always on trial).
		{"unknown", Unknown, false, nil, true, 1, "unknown"},
		{"unknown, again", Unknown, false, prev("a", "state", 1, false), true, 2, "unknown"},
		// Uncounted: once, then stop.
		{"uncounted, first", Uncounted, true, nil, true, 1, "rebooting once"},
		{"uncounted, same step again", Uncounted, true, prev("a", "state", 1, false), false, 2, "failed at this step on the previous boot too (2 boots in a row)"},
		{"uncounted, stopped before", Uncounted, true, prev("a", "state", 2, false), false, 3, "(3 boots in a row)"},
		{"uncounted, after tries ran out at this step", Uncounted, true, prev("a", "state", 3, true), false, 4, "previous boot too"},
		{"uncounted, other step before", Uncounted, true, prev("a", "modules", 1, false), true, 2, "rebooting once"},
		{"uncounted, third in a row at other steps", Uncounted, true, prev("a", "modules", 2, false), false, 3, "failed 3 boots in a row"},
		{"uncounted, other slot failed before", Uncounted, true, prev("b", "state", 1, false), true, 1, "rebooting once"},
		{"uncounted, nowhere to keep it", Uncounted, false, nil, false, 1, "nowhere to keep the failure"},
		{"uncounted, nowhere to keep it, prev read", Uncounted, false, prev("b", "etc", 1, false), false, 1, "nowhere to keep"},
		{"uncounted, bad prev count", Uncounted, true, prev("a", "state", 0, false), true, 1, "rebooting once"},
	} {
		v := Decide(Input{Counting: c.counting, Persist: c.persist, Prev: c.prev, This: this})
		if v.Reboot != c.reboot || v.Keep.Count != c.count || !strings.Contains(v.Why, c.why) {
			t.Errorf("%s: reboot %v, count %d, why %q; want %v, %d, %q", c.name, v.Reboot, v.Keep.Count, v.Why, c.reboot, c.count, c.why)
		}
		want := this
		want.Count, want.Counted, want.Rebooted = c.count, c.counting == Counted, c.reboot
		if !v.Keep.Same(want) {
			t.Errorf("%s: keeps %+v, want %+v", c.name, v.Keep, want)
		}
	}
	// A failure before the command line named the slot.
	v := Decide(Input{Counting: Uncounted, Persist: true, Prev: &record.InitFailure{Step: "cmdline", Count: 1}, This: record.InitFailure{Step: "cmdline", Error: "x"}})
	if v.Reboot || v.Keep.Count != 2 || !strings.Contains(v.Why, "slot ?") {
		t.Errorf("no slot: %+v", v)
	}
}

func TestEncode(t *testing.T) {
	when := time.Date(2026, 1, 27, 14, 0, 0, 123, time.UTC)
	f := record.InitFailure{Slot: "b", Step: "state", Error: "state partition /dev/vda4 (PARTUUID x) is damaged", Count: 2, Counted: true, Rebooted: true, Time: when}
	b := Encode(f)
	got, err := Decode(b)
	if err != nil || !got.Same(f) {
		t.Fatalf("round trip: %s -> %+v %v", b, got, err)
	}
	// A long error (an e2fsck transcript) is cut: the variable stays well under 1 KiB.
	long := f
	long.Error = strings.Repeat("é", 2000)
	long.Step = strings.Repeat("s", 100)
	b = Encode(long)
	if len(b) > 768 {
		t.Errorf("encoded %d bytes", len(b))
	}
	got, err = Decode(b)
	if err != nil || !utf8.ValidString(got.Error) || !strings.HasSuffix(got.Error, "é…") || len(got.Error) > MaxError {
		t.Errorf("long error: %q %v", got.Error, err)
	}
	if _, err := Decode([]byte("{garbage")); err == nil {
		t.Error("garbage decoded")
	}
}

func TestLoadSaveClear(t *testing.T) {
	s := efivar.Store{Dir: t.TempDir()}
	if f, err := Load(s); f != nil || err != nil {
		t.Fatalf("nothing kept: %v %v", f, err)
	}
	f := record.InitFailure{Slot: "a", Step: "state", Error: "damaged", Count: 1, Rebooted: true, Time: time.Date(2026, 1, 27, 14, 0, 0, 0, time.UTC)}
	if err := Save(s, f); err != nil {
		t.Fatal(err)
	}
	attrs, data, err := s.Get("SlateInitFailure", "b3297508-91e8-4c73-a7e1-81d6f47d4769")
	if err != nil || attrs != 7 || !strings.HasPrefix(string(data), `{"slot":"a","step":"state"`) {
		t.Errorf("variable: %#x %s %v", attrs, data, err)
	}
	got, err := Load(s)
	if err != nil || got == nil || !got.Same(f) {
		t.Errorf("Load = %+v %v", got, err)
	}
	if err := Clear(s); err != nil {
		t.Fatal(err)
	}
	if f, err := Load(s); f != nil || err != nil {
		t.Errorf("after Clear: %v %v", f, err)
	}
}
