package run

// SBAT revocation without shim. A UKI's .sbat section names its generation
// of component "slate", but nothing in slate's boot chain (firmware →
// systemd-boot → UKI) enforces SBAT: shim would, and there is none. So the
// init does. The node keeps its level in the EFI variable SlateSBATLevel
// (a time-based authenticated variable: only a payload signed with the
// image's db key can change it, and only upwards; the agent writes it once
// a newer image booted well), and the UKI's signed command line carries
// its generation (slate.sbat). An image below the level fails the boot
// like any other step, so a counted boot spends a try and systemd-boot
// falls back to the other slot.

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/slate-os/slate/initramfs/init/efivar"
)

// VarSBATLevel is the node's SBAT level (vendor efivar.SlateGUID): ASCII
// "slate,L\n", every generation of slate below L revoked.
const VarSBATLevel = "SlateSBATLevel"

// parseSBATLevel reads the variable's data; the newline may be missing.
func parseSBATLevel(data []byte) (int, error) {
	s := strings.TrimSuffix(string(data), "\n")
	v, ok := strings.CutPrefix(s, "slate,")
	n, err := strconv.Atoi(v)
	if !ok || err != nil || n < 1 || strings.TrimLeft(v, "0123456789") != "" {
		return 0, fmt.Errorf("it holds %q, not slate,<generation>", data)
	}
	return n, nil
}

// sbatLevel is the node's level, 0 when the variable is not set; authed is
// false when it is set but not as an authenticated variable.
func sbatLevel(store efivar.Store) (level int, authed bool, err error) {
	attrs, data, err := store.Get(VarSBATLevel, efivar.SlateGUID)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	level, err = parseSBATLevel(data)
	return level, attrs&efivar.TimeBasedAuthenticated != 0, err
}

// checkSBAT is the "sbat" step: it fails when the image's generation
// (slate.sbat; none counts as 1) is below the node's level.
func (in *initProc) checkSBAT() error {
	gen := max(in.params.SBAT, 1)
	if !in.efi.mounted {
		in.log.Debugf("sbat: generation %d, not checked: no EFI variables", gen)
		return nil
	}
	// Without Secure Boot the command line is the entry's, which carries
	// no generation, and any image boots anyway: nothing to enforce.
	if _, sb, err := in.efiStore.Get("SecureBoot", globalGUID); err != nil || len(sb) != 1 || sb[0] != 1 {
		in.log.Infof("sbat: generation %d, not checked: Secure Boot is off", gen)
		return nil
	}
	name := VarSBATLevel + "-" + efivar.SlateGUID
	level, authed, err := sbatLevel(in.efiStore)
	if err != nil {
		// Fail open: a level that cannot be read or parsed must not brick
		// the node, whose every image would then fail here. Only the db
		// key's holder can have written it.
		in.warn("sbat: EFI variable %s: %v; the node's SBAT level is not checked", name, err)
		return nil
	}
	if level == 0 {
		in.log.Infof("sbat: generation %d, the node has no level (EFI variable %s is not set)", gen, name)
		return nil
	}
	in.log.Infof("sbat: generation %d, the node's level %d", gen, level)
	if !authed {
		// Still honoured: a level set by anyone can only stop a boot,
		// which root on the node can do anyway.
		in.warn("sbat: EFI variable %s is not an authenticated variable: anything on the node could have set it", name)
	}
	if gen < level {
		return fmt.Errorf("this image is SBAT generation %d of slate, but the node has revoked every generation below %d (EFI variable %s): boot a newer image", gen, level, name)
	}
	return nil
}

// globalGUID is EFI_GLOBAL_VARIABLE, the vendor of SecureBoot.
const globalGUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
