// Package cmdline reads the init's parameters from the kernel command line
// (the keys are defined in package boot).
package cmdline

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/gpt"
)

// DefaultRebootDelay is how long a fatal error waits before rebooting when
// slate.reboot_delay is absent or unusable.
const DefaultRebootDelay = 5 * time.Second

// MaxRebootDelay bounds slate.reboot_delay: a node must not sit on a fatal
// error for ever.
const MaxRebootDelay = time.Hour

// Params are the init's parameters.
type Params struct {
	Slot boot.Slot
	// RootPartUUID and StatePartUUID are canonical (upper case).
	RootPartUUID  string
	StatePartUUID string
	// RootHash is the dm-verity root hash (lower-case hex), "" if absent.
	RootHash string
	// Version is the image's version label, "" if absent.
	Version string
	// SBAT is the image's SBAT generation (slate.sbat, in a UKI's signed
	// command line), 0 if absent: the init refuses to boot an image whose
	// generation the node has revoked (package run, sbat.go).
	SBAT        int
	RebootDelay time.Duration
	// Discover is true when the command line names neither the slot nor
	// the partitions, as a Unified Kernel Image's signed one does (it must
	// fit either slot of any node): the init then finds them from
	// systemd-boot's EFI variables and fills Slot, RootPartUUID and
	// StatePartUUID itself.
	Discover bool
}

// Split splits a kernel command line into arguments as the kernel does:
// on spaces, except inside double quotes, which are removed
// (a "b c" d="e f" -> [a, b c, d=e f]).
func Split(cmdline string) []string {
	var args []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			quoted = !quoted
			in = true
		case !quoted && (r == ' ' || r == '\t' || r == '\n'):
			if in {
				args = append(args, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		args = append(args, cur.String())
	}
	return args
}

// Value returns the value of key=value among args; the last one wins, as in
// the kernel. ok is false when the key is absent.
func Value(args []string, key string) (v string, ok bool) {
	for _, a := range args {
		k, val, _ := strings.Cut(a, "=")
		if k == key {
			v, ok = val, true
		}
	}
	return v, ok
}

// ParseRebootDelay reads slate.reboot_delay: a Go duration ("5s", "1m30s")
// or a plain number of seconds ("10"), from 0 to MaxRebootDelay.
func ParseRebootDelay(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else {
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%s=%q is not a duration (like 5s or 2m)", boot.ArgRebootDelay, s)
		}
	}
	if d < 0 || d > MaxRebootDelay {
		return 0, fmt.Errorf("%s=%s is out of range (0 to %s)", boot.ArgRebootDelay, s, MaxRebootDelay)
	}
	return d, nil
}

// ParseSBAT reads slate.sbat: a decimal generation, 1 or more. It is an
// error, not a warning: the value comes from the signed command line, and a
// generation the init cannot read cannot be checked against the node's level.
func ParseSBAT(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%s=%s is not an SBAT generation (a whole number, 1 or more)", boot.ArgSBAT, s)
	}
	return n, nil
}

// RebootDelay returns the reboot delay the command line asks for, or the
// default and a warning. It never fails: it is needed to report failures.
func RebootDelay(cmdline string) (time.Duration, error) {
	v, ok := Value(Split(cmdline), boot.ArgRebootDelay)
	if !ok {
		return DefaultRebootDelay, nil
	}
	d, err := ParseRebootDelay(v)
	if err != nil {
		return DefaultRebootDelay, fmt.Errorf("%w; using %s", err, DefaultRebootDelay)
	}
	return d, nil
}

// Parse reads the init's parameters. slate.slot, slate.root and
// slate.state come together, or not at all (Discover; then slate.roothash
// is required, as a UKI always carries it); warnings are for problems that
// do not stop the boot (a bad reboot delay, a missing root hash).
func Parse(cmdline string) (p *Params, warnings []string, err error) {
	args := Split(cmdline)
	p = &Params{}
	var errs []error

	given := 0
	for _, k := range []string{boot.ArgSlot, boot.ArgRoot, boot.ArgState} {
		if _, ok := Value(args, k); ok {
			given++
		}
	}
	p.Discover = given == 0

	if p.Discover {
		// Nothing to read: the init discovers them.
	} else if v, ok := Value(args, boot.ArgSlot); !ok {
		errs = append(errs, fmt.Errorf("%s= is missing", boot.ArgSlot))
	} else if s, err := boot.ParseSlot(v); err != nil {
		errs = append(errs, fmt.Errorf("%s=%s: %w", boot.ArgSlot, v, err))
	} else {
		p.Slot = s
	}
	partUUID := func(key string) string {
		v, ok := Value(args, key)
		if !ok || v == "" {
			errs = append(errs, fmt.Errorf("%s= is missing", key))
			return ""
		}
		g, err := gpt.ParseGUID(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%s is not a GPT partition UUID", key, v))
			return ""
		}
		return g.String()
	}
	if !p.Discover {
		p.RootPartUUID = partUUID(boot.ArgRoot)
		p.StatePartUUID = partUUID(boot.ArgState)
	}
	if p.RootPartUUID != "" && p.RootPartUUID == p.StatePartUUID {
		errs = append(errs, fmt.Errorf("%s and %s name the same partition %s", boot.ArgRoot, boot.ArgState, p.RootPartUUID))
	}

	if given > 0 && given < 3 {
		errs = append(errs, fmt.Errorf("give %s, %s and %s together, or none of them (a UKI's command line: the init then finds them from systemd-boot's EFI variables)",
			boot.ArgSlot, boot.ArgRoot, boot.ArgState))
	}

	if v, ok := Value(args, boot.ArgRootHash); (!ok || v == "") && p.Discover {
		errs = append(errs, fmt.Errorf("%s= is missing, and so are %s, %s and %s: this is no slate command line (a UKI's names no slot or partition, but always carries %s)",
			boot.ArgRootHash, boot.ArgSlot, boot.ArgRoot, boot.ArgState, boot.ArgRootHash))
	} else if !ok || v == "" {
		warnings = append(warnings, fmt.Sprintf("%s= is missing: the root cannot be verified", boot.ArgRootHash))
	} else if b, err := hex.DecodeString(v); err != nil || len(b) < 16 || len(b) > 64 {
		errs = append(errs, fmt.Errorf("%s=%s is not a hex hash", boot.ArgRootHash, v))
	} else {
		p.RootHash = strings.ToLower(v)
	}
	p.Version, _ = Value(args, boot.ArgVersion)
	if v, ok := Value(args, boot.ArgSBAT); ok {
		if n, err := ParseSBAT(v); err != nil {
			errs = append(errs, err)
		} else {
			p.SBAT = n
		}
	}

	d, err := RebootDelay(cmdline)
	if err != nil {
		warnings = append(warnings, err.Error())
	}
	p.RebootDelay = d

	if len(errs) > 0 {
		return p, warnings, errors.Join(errs...)
	}
	return p, warnings, nil
}
