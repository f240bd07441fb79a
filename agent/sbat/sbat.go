// Package sbat keeps a node's SBAT revocation level (package secureboot:
// the SlateSBATLevel variable the firmware guards) on the agent's side: a
// good boot of a Secure Boot image raises it to the image's generation,
// and a rollback refuses a slot whose image it has revoked (its init would
// refuse to boot, and a promoted slot has no tries to fall back by).
package sbat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/uki"
	"github.com/slate-os/slate/initramfs/init/cmdline"
	"github.com/slate-os/slate/secureboot"
)

// Raise writes the running image's level payload (file, boot.SBATLevelFile
// in the root; an image without one has nothing to raise) to the firmware
// through efivarfs at dir ("" the system's) when Secure Boot is on and the
// node's level is lower. It returns what to report, "" when nothing changed.
func Raise(file, dir string) (string, error) {
	payload, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	gen, err := secureboot.PayloadGeneration(payload)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	// With Secure Boot off any image boots: there is nothing to revoke.
	if on, err := secureboot.Enabled(dir); err != nil || !on {
		return "", err
	}
	level, err := secureboot.SBATLevel(dir)
	if err != nil {
		return "", err
	}
	if level >= gen {
		return "", nil
	}
	if err := secureboot.WriteSBATLevel(dir, payload); err != nil {
		return "", err
	}
	return fmt.Sprintf("SBAT level raised from %d to %d: images of a lower generation no longer boot on this node", level, gen), nil
}

// CheckSlot refuses slot s when its unified kernel image is of a generation
// below the node's level (efivarfs at dir, "" the system's). A slot without
// a UKI, or one that cannot be read, is left to the caller's own checks.
func CheckSlot(esp *slots.ESP, s boot.Slot, dir string) error {
	infos, err := esp.Read()
	if err != nil || infos[s] == nil || infos[s].Entry == nil || infos[s].Entry.EFI == "" {
		return nil
	}
	level, err := secureboot.SBATLevel(dir)
	if err != nil || level == 0 {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(esp.Dir, filepath.FromSlash(strings.TrimPrefix(infos[s].Entry.EFI, "/"))))
	if err != nil {
		return nil
	}
	img, err := uki.Read(data)
	if err != nil {
		return nil
	}
	gen := 1 // no slate.sbat: the first generation, as the init counts it
	// Read as the init reads it (initramfs/init/cmdline), quotes and all.
	if v, ok := cmdline.Value(cmdline.Split(string(img.Cmdline)), boot.ArgSBAT); ok {
		if n, err := cmdline.ParseSBAT(v); err == nil {
			gen = n
		}
	}
	if gen < level {
		return fmt.Errorf("slot %s's image is SBAT generation %d, and this node has revoked every generation below %d: it would not boot", s, gen, level)
	}
	return nil
}
