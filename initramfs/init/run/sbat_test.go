package run

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/slate-os/slate/initramfs/init/cmdline"
	"github.com/slate-os/slate/initramfs/init/efivar"
	"github.com/slate-os/slate/initramfs/init/klog"
)

func TestParseSBATLevel(t *testing.T) {
	for in, want := range map[string]int{"slate,1\n": 1, "slate,2": 2, "slate,12\n": 12} {
		if got, err := parseSBATLevel([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "slate,", "slate,0\n", "slate,-1", "slate,+2", "slate,2\n\n", "shim,2\n", "slate,2,x", " slate,2", "slate,99999999999999999999"} {
		if got, err := parseSBATLevel([]byte(in)); err == nil {
			t.Errorf("%q: %d, want an error", in, got)
		}
	}
}

func TestCheckSBAT(t *testing.T) {
	const authed = efivar.Default | efivar.TimeBasedAuthenticated
	const name = "SlateSBATLevel-" + efivar.SlateGUID
	s := efivar.Store{Dir: t.TempDir()}
	if err := s.Set("SecureBoot", globalGUID, efivar.Default, []byte{1}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	check := func(gen int) error {
		t.Helper()
		out.Reset()
		in := &initProc{log: &klog.Logger{Console: &out}, efiStore: s, params: &cmdline.Params{SBAT: gen}}
		in.efi.mounted = true
		err := in.checkSBAT()
		if len(in.rec.Warnings) > 0 && !strings.Contains(out.String(), in.rec.Warnings[0]) {
			t.Errorf("warning %q not logged: %s", in.rec.Warnings[0], out.String())
		}
		return err
	}
	set := func(attrs uint32, data string) {
		t.Helper()
		if err := s.Set(VarSBATLevel, efivar.SlateGUID, attrs, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}

	// No level: any image boots.
	for _, gen := range []int{5, 1, 0} {
		if err := check(gen); err != nil {
			t.Errorf("no level, generation %d: %v", gen, err)
		}
	}
	if want := "sbat: generation 1, the node has no level (EFI variable " + name + " is not set)"; !strings.Contains(out.String(), want) {
		t.Errorf("log: %s", out.String())
	}

	// Level 2 revokes generation 1, and an image with no slate.sbat, which counts as 1.
	set(authed, "slate,2\n")
	for _, gen := range []int{0, 1} {
		err := check(gen)
		if want := "this image is SBAT generation 1 of slate, but the node has revoked every generation below 2 (EFI variable " + name + "): boot a newer image"; err == nil || err.Error() != want {
			t.Errorf("level 2, generation %d:\n got %v\nwant %s", gen, err, want)
		}
		if !strings.Contains(out.String(), "sbat: generation 1, the node's level 2") || strings.Contains(out.String(), "warning:") {
			t.Errorf("log: %s", out.String())
		}
	}
	for _, gen := range []int{2, 3} {
		if err := check(gen); err != nil {
			t.Errorf("level 2, generation %d: %v", gen, err)
		}
		if want := fmt.Sprintf("sbat: generation %d, the node's level 2", gen); !strings.Contains(out.String(), want) {
			t.Errorf("log: %s", out.String())
		}
	}
	set(authed, "slate,3") // no newline
	if err := check(2); err == nil || !strings.Contains(err.Error(), "generation 2 of slate, but the node has revoked every generation below 3") {
		t.Errorf("level 3 without a newline, generation 2: %v", err)
	}

	// A level that is not an authenticated variable still counts, with a warning.
	set(efivar.Default, "slate,2\n")
	if err := check(1); err == nil {
		t.Error("unauthenticated level 2, generation 1: no error")
	}
	if !strings.Contains(out.String(), "sbat: EFI variable "+name+" is not an authenticated variable") {
		t.Errorf("log: %s", out.String())
	}

	// A malformed or unreadable level fails open, with a warning.
	set(authed, "slate,two\n")
	if err := check(1); err != nil {
		t.Errorf("malformed level: %v", err)
	}
	if want := `sbat: EFI variable ` + name + `: it holds "slate,two\n", not slate,<generation>; the node's SBAT level is not checked`; !strings.Contains(out.String(), want) {
		t.Errorf("log: %s\nwant %s", out.String(), want)
	}
	if err := os.WriteFile(s.Path(VarSBATLevel, efivar.SlateGUID), []byte{7, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := check(1); err != nil || !strings.Contains(out.String(), "shorter than its attributes; the node's SBAT level is not checked") {
		t.Errorf("short variable: %v\n%s", err, out.String())
	}

	// Without EFI variables there is nothing to check.
	out.Reset()
	in := &initProc{log: &klog.Logger{Console: &out}, efiStore: s, params: &cmdline.Params{SBAT: 1}}
	if err := in.checkSBAT(); err != nil || len(in.rec.Warnings) != 0 {
		t.Errorf("no EFI variables: %v %v", err, in.rec.Warnings)
	}
}

func TestCheckSBATSecureBootOff(t *testing.T) {
	s := efivar.Store{Dir: t.TempDir()}
	s.Set(VarSBATLevel, efivar.SlateGUID, efivar.Default|efivar.TimeBasedAuthenticated, []byte("slate,2\n"))
	var out bytes.Buffer
	in := &initProc{log: &klog.Logger{Console: &out}, efiStore: s, params: &cmdline.Params{}}
	in.efi.mounted = true
	// The entry's command line (no slate.sbat) under Secure Boot off: not refused.
	if err := in.checkSBAT(); err != nil || !strings.Contains(out.String(), "not checked: Secure Boot is off") {
		t.Errorf("Secure Boot off: %v; log %s", err, out.String())
	}
	s.Set("SecureBoot", globalGUID, efivar.Default, []byte{1})
	out.Reset()
	if err := in.checkSBAT(); err == nil {
		t.Errorf("Secure Boot on, generation 1 below level 2: booted; log %s", out.String())
	}
}
