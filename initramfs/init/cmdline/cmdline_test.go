package cmdline

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
)

const (
	root  = "9d2e5c8a-1b3f-4e6d-8a7c-0f1e2d3c4b5a"
	state = "11111111-2222-3333-4444-555555555555"
	hash  = "4f1c0e9b2a7d8c6e5f3a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
)

func good() string {
	return "BOOT_IMAGE=/slate/a/vmlinuz console=ttyS0 ro slate.slot=a slate.root=" + root +
		" slate.roothash=" + hash + " slate.state=" + state + " slate.version=1.4.2 quiet"
}

func TestSplit(t *testing.T) {
	got := Split(`a  "b c" d="e f"  g=h"i j"k` + "\n")
	want := []string{"a", "b c", "d=e f", "g=hi jk"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Split = %q, want %q", got, want)
	}
	if v, ok := Value(Split("x=1 y=2 x=3"), "x"); !ok || v != "3" {
		t.Errorf("last value should win: %q %v", v, ok)
	}
	if _, ok := Value(Split("xx=1"), "x"); ok {
		t.Error("prefix matched")
	}
}

func TestParse(t *testing.T) {
	p, warns, err := Parse(good())
	if err != nil || len(warns) != 0 {
		t.Fatalf("Parse: %v %v", err, warns)
	}
	want := &Params{
		Slot:          boot.SlotA,
		RootPartUUID:  strings.ToUpper(root),
		StatePartUUID: state,
		RootHash:      hash,
		Version:       "1.4.2",
		RebootDelay:   DefaultRebootDelay,
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", p, want)
	}

	// Slot b, upper-case hash, a reboot delay.
	p, _, err = Parse(strings.NewReplacer("slot=a", "slot=B", hash, strings.ToUpper(hash)).Replace(good()) + " slate.reboot_delay=30s")
	if err != nil || p.Slot != boot.SlotB || p.RootHash != hash || p.RebootDelay != 30*time.Second {
		t.Errorf("Parse = %+v, %v", p, err)
	}

	// A missing root hash only warns.
	_, warns, err = Parse(strings.Replace(good(), "slate.roothash="+hash, "", 1))
	if err != nil || len(warns) != 1 || !strings.Contains(warns[0], "roothash") {
		t.Errorf("no root hash: %v %v", warns, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ cmdline, want string }{
		{strings.Replace(good(), "slate.slot=a", "", 1), "slate.slot= is missing"},
		{strings.Replace(good(), "slate.slot=a", "slate.slot=c", 1), "slate.slot=c"},
		{strings.Replace(good(), "slate.root="+root, "", 1), "slate.root= is missing"},
		{strings.Replace(good(), "slate.root="+root, "slate.root=/dev/vda2", 1), "slate.root=/dev/vda2 is not a GPT partition UUID"},
		{strings.Replace(good(), "slate.state="+state, "slate.state=", 1), "slate.state= is missing"},
		{strings.Replace(good(), "slate.state="+state, "slate.state="+root, 1), "name the same partition"},
		{strings.Replace(good(), hash, "xyz", 1), "slate.roothash=xyz is not a hex hash"},
		{"console=ttyS0", "slate.roothash= is missing, and so are slate.slot, slate.root and slate.state"},
		{strings.Replace(good(), "slate.slot=a", "", 1), "give slate.slot, slate.root and slate.state together, or none of them"},
	} {
		_, _, err := Parse(tc.cmdline)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): err = %v, want %q", tc.cmdline, err, tc.want)
		}
	}
	// Every problem is reported at once.
	_, _, err := Parse("console=ttyS0 slate.slot=c slate.roothash=" + hash)
	for _, key := range []string{"slate.slot=c", "slate.root= is missing", "slate.state= is missing"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("err %v does not mention %s", err, key)
		}
	}
}

// A UKI's signed command line names no slot and no partition: the init
// discovers them.
func TestParseDiscover(t *testing.T) {
	line := "console=ttyS0 quiet slate.roothash=" + hash + " slate.version=1.4.2"
	p, warns, err := Parse(line)
	if err != nil || len(warns) != 0 {
		t.Fatalf("Parse(%q): %v %v", line, err, warns)
	}
	want := &Params{RootHash: hash, Version: "1.4.2", RebootDelay: DefaultRebootDelay, Discover: true}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Parse(%q) =\n%+v\nwant\n%+v", line, p, want)
	}
	// A full command line does not discover.
	if p, _, err := Parse(good()); err != nil || p.Discover {
		t.Errorf("Parse(good) = %+v, %v", p, err)
	}
	for _, tc := range []struct{ cmdline, want string }{
		// Without a root hash it is no UKI's: an error, not a warning.
		{"console=ttyS0 slate.version=1", "slate.roothash= is missing"},
		{"console=ttyS0 slate.roothash=", "slate.roothash= is missing"},
		{"console=ttyS0 slate.roothash=xyz", "slate.roothash=xyz is not a hex hash"},
		// Some but not all: as before, an error.
		{line + " slate.slot=b", "slate.root= is missing"},
		{line + " slate.state=" + state, "slate.slot= is missing"},
		{line + " slate.root=", "give slate.slot, slate.root and slate.state together"},
	} {
		if _, _, err := Parse(tc.cmdline); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): err = %v, want %q", tc.cmdline, err, tc.want)
		}
	}
}

// slate.sbat is a UKI's SBAT generation: 0 when absent, an error when it
// is no generation.
func TestParseSBAT(t *testing.T) {
	line := "console=ttyS0 slate.roothash=" + hash + " slate.version=1.4.2"
	if p, _, err := Parse(line); err != nil || p.SBAT != 0 {
		t.Errorf("no slate.sbat: %+v, %v", p, err)
	}
	for v, want := range map[string]int{"1": 1, "3": 3, "012": 12} {
		if p, _, err := Parse(line + " slate.sbat=" + v); err != nil || p.SBAT != want {
			t.Errorf("slate.sbat=%s: %+v, %v; want %d", v, p, err, want)
		}
	}
	for _, v := range []string{"", "0", "-1", "+2", "2a", "two", "99999999999999999999"} {
		_, _, err := Parse(line + " slate.sbat=" + v)
		if want := "slate.sbat=" + v + " is not an SBAT generation (a whole number, 1 or more)"; err == nil || err.Error() != want {
			t.Errorf("slate.sbat=%s: err = %v, want %q", v, err, want)
		}
	}
}

func TestRebootDelay(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"5s", 5 * time.Second, true},
		{"0", 0, true},
		{"0s", 0, true},
		{"10", 10 * time.Second, true},
		{"1m30s", 90 * time.Second, true},
		{"500ms", 500 * time.Millisecond, true},
		{"-1s", 0, false},
		{"2h", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		d, err := ParseRebootDelay(tc.in)
		if (err == nil) != tc.ok || (tc.ok && d != tc.want) {
			t.Errorf("ParseRebootDelay(%q) = %v, %v", tc.in, d, err)
		}
	}
	if d, err := RebootDelay("quiet"); d != DefaultRebootDelay || err != nil {
		t.Errorf("absent: %v %v", d, err)
	}
	if d, err := RebootDelay("slate.reboot_delay=never"); d != DefaultRebootDelay || err == nil {
		t.Errorf("invalid: %v %v", d, err)
	}
	if d, err := RebootDelay("slate.reboot_delay=1s slate.reboot_delay=2s"); d != 2*time.Second || err != nil {
		t.Errorf("last wins: %v %v", d, err)
	}
	// A bad delay is a warning, never a failure of Parse.
	_, warns, err := Parse(good() + " slate.reboot_delay=forever")
	if err != nil || len(warns) != 1 {
		t.Errorf("Parse with bad delay: %v %v", warns, err)
	}
}

// The builder and the agent write a slot's line with boot.SlotCmdline; the
// init must read back every field, whatever case the PARTUUIDs came in.
func TestSlotCmdlineRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		base string
		a    boot.SlotArgs
	}{
		{"", boot.SlotArgs{Slot: boot.SlotA, RootPartUUID: root, RootHash: hash, StatePartUUID: state, Version: "1.4.2"}},
		{"  console=ttyS0,115200 panic=10 " + boot.ArgRebootDelay + "=30s  ", boot.SlotArgs{Slot: boot.SlotB,
			RootPartUUID: strings.ToUpper(root), RootHash: hash, StatePartUUID: strings.ToUpper(state), Version: "v2_rc-1"}},
	} {
		line := boot.SlotCmdline(tc.base, tc.a)
		if line != strings.TrimSpace(line) || strings.Contains(line, strings.ToUpper(root)) {
			t.Errorf("%q: want no surrounding spaces and lower-case PARTUUIDs", line)
		}
		p, warns, err := Parse(line)
		if err != nil || len(warns) != 0 {
			t.Fatalf("Parse(%q): %v %v", line, err, warns)
		}
		want := &Params{Slot: tc.a.Slot, RootPartUUID: strings.ToUpper(root), StatePartUUID: strings.ToUpper(state),
			RootHash: hash, Version: tc.a.Version, RebootDelay: DefaultRebootDelay}
		if tc.base != "" {
			want.RebootDelay = 30 * time.Second
		}
		if !reflect.DeepEqual(p, want) {
			t.Errorf("Parse(%q) =\n%+v\nwant\n%+v", line, p, want)
		}
		// The agent reads the version of an entry with boot.CmdlineValue.
		if v := boot.CmdlineValue(line, boot.ArgVersion); v != tc.a.Version {
			t.Errorf("CmdlineValue(%q, version) = %q", line, v)
		}
	}
}
