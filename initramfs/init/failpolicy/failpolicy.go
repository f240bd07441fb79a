// Package failpolicy decides what slate's init does after a fatal error:
// reboot, or stop and wait with the reason on the console. A reboot that
// cannot cure the failure (a damaged state partition, a missing module, a
// bad command line) must not loop forever.
//
// The policy (Decide):
//
//   - A counted boot (systemd-boot booted an entry with tries left, and
//     says so in LoaderBootCountPath) reboots: that spends one of the
//     slot's tries, and when they are spent systemd-boot boots the other
//     slot. That is how a bad upgrade rolls back.
//   - An uncounted boot (a blessed entry, slate-a.conf; an entry with no
//     tries left, booted because nothing better is there; no UEFI at all)
//     keeps the failure in an EFI variable and reboots once: a transient
//     failure (a slow disk) may be cured. When the boot before failed too,
//     on the same slot and at the same step (or it was the third failed
//     boot in a row, at any steps), it stops: no reboot.
//   - An uncounted boot with nowhere to keep the failure (no UEFI, or
//     variables that cannot be written) stops at the first failure: a loop
//     is worse than a stop.
//   - A boot whose counting cannot be known (UEFI, but the variables are
//     unreadable: efivarfs would not mount, which only an initramfs whose
//     modules do not load gets to) reboots as a counted one: a slot whose
//     initramfs is that broken is nearly always a fresh upgrade on trial,
//     and its reboot is what rolls it back.
//
// The failure is kept in the EFI variable SlateInitFailure of slate's
// vendor GUID (efivar.SlateGUID): a small JSON record.InitFailure. The
// next boot that mounts the state partition moves it there (see package
// run) and `slate status` shows it.
package failpolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/initramfs/init/efivar"
)

// Counting is whether a reboot of this boot spends one of systemd-boot's tries.
type Counting int

const (
	// Uncounted: no try to spend. A reboot boots the same entry again.
	Uncounted Counting = iota
	// Counted: the entry had tries left; a reboot spends one.
	Counted
	// Unknown: the machine has UEFI but its variables cannot be read.
	Unknown
)

func (c Counting) String() string {
	switch c {
	case Counted:
		return "counted"
	case Uncounted:
		return "not counted"
	}
	return "counting unknown"
}

// CountingOf reads systemd-boot's LoaderBootCountPath, which it sets only
// when the entry it booted has a boot counter: the entry's path as it was
// named before this boot's try was taken (\loader\entries\slate-b+3.conf).
// An entry with no tries left (+0) is still booted when no better entry
// is there, and still gets the variable, but its reboot spends nothing:
// that boot is Uncounted.
func CountingOf(loaderBootCountPath string) Counting {
	if loaderBootCountPath == "" {
		return Uncounted
	}
	name := path.Base(strings.ReplaceAll(loaderBootCountPath, `\`, "/"))
	if e, ok := boot.ParseEntryName(name); ok && e.Counting && e.Left == 0 {
		return Uncounted
	}
	return Counted
}

// MaxUncounted is how many boots of a slot in a row may fail, at different
// steps, before an uncounted boot stops; at the same step the second one
// stops.
const MaxUncounted = 3

// Input is what the decision depends on.
type Input struct {
	Counting Counting
	// Persist is true when a failure can be kept across the reboot (the
	// EFI variables are mounted and writable).
	Persist bool
	// Prev is the failure the previous boot kept, as this boot read it at
	// its start; nil when there was none.
	Prev *record.InitFailure
	// This is this boot's failure: Slot, Step, Error, Time (Count,
	// Counted and Rebooted are Decide's).
	This record.InitFailure
}

// Verdict is what the init does.
type Verdict struct {
	// Reboot, or stop and wait.
	Reboot bool
	// Keep is the failure to keep in the EFI variable.
	Keep record.InitFailure
	// Why explains the choice, for the console.
	Why string
}

// Decide applies the policy. It is pure: the init reads the inputs and
// acts on the verdict (and decides again with Persist false when keeping
// the failure turns out to be impossible).
func Decide(in Input) Verdict {
	k := in.This
	k.Count = 1
	if p := in.Prev; p != nil && p.Slot == k.Slot && p.Count > 0 {
		k.Count = p.Count + 1
	}
	k.Counted = in.Counting == Counted
	v := Verdict{Reboot: true}
	slot := k.Slot
	if slot == "" {
		slot = "?"
	}
	switch {
	case in.Counting == Counted:
		v.Why = "this boot is on trial: the reboot spends one of its tries (systemd-boot boots the other slot when they are spent)"
	case in.Counting == Unknown:
		v.Why = "the EFI variables cannot be read, so whether this boot is on trial is unknown: rebooting, which spends a try if it is"
	case !in.Persist:
		v.Reboot = false
		v.Why = "this boot is not counted (no boot-counting try to spend) and there is nowhere to keep the failure (no writable EFI variables): a reboot could loop forever"
	case k.Count > 1 && in.Prev.Step == k.Step:
		v.Reboot = false
		v.Why = fmt.Sprintf("slot %s failed at this step on the previous boot too (%d boots in a row) and this boot is not counted: a reboot would loop", slot, k.Count)
	case k.Count >= MaxUncounted:
		v.Reboot = false
		v.Why = fmt.Sprintf("slot %s failed %d boots in a row and this boot is not counted: a reboot would loop", slot, k.Count)
	default:
		v.Why = fmt.Sprintf("this boot is not counted: rebooting once, as the failure may be transient; the failure is kept (EFI variable %s-%s), and if slot %s fails at this step again the next boot stops", VarName, efivar.SlateGUID, slot)
	}
	k.Rebooted = v.Reboot
	v.Keep = k
	return v
}

// VarName is the EFI variable (of efivar.SlateGUID) that keeps the failure.
const VarName = "SlateInitFailure"

// MaxError is how much of the error the variable keeps: firmware variable
// stores are small (tens of KiB for everything).
const MaxError = 480

// Encode is the variable's data: JSON, under 1 KiB.
func Encode(f record.InitFailure) []byte {
	f.Error = truncate(f.Error, MaxError)
	f.Step = truncate(f.Step, 40)
	f.Slot = truncate(f.Slot, 8)
	b, _ := json.Marshal(f)
	return b
}

// Decode reads the variable's data.
func Decode(b []byte) (*record.InitFailure, error) {
	var f record.InitFailure
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("EFI variable %s: %w", VarName, err)
	}
	return &f, nil
}

// truncate cuts s to at most n bytes, on a character boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Load reads the kept failure; nil when there is none.
func Load(s efivar.Store) (*record.InitFailure, error) {
	_, b, err := s.Get(VarName, efivar.SlateGUID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// Save keeps a failure, replacing the one kept before.
func Save(s efivar.Store, f record.InitFailure) error {
	return s.Set(VarName, efivar.SlateGUID, efivar.Default, Encode(f))
}

// Clear deletes the kept failure.
func Clear(s efivar.Store) error { return s.Delete(VarName, efivar.SlateGUID) }
