package status

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/secureboot"
)

// SecureBoot is the firmware's Secure Boot state and what signed the
// unified kernel image of the running slot.
type SecureBoot struct {
	// Enabled is the firmware's SecureBoot variable: the firmware checks
	// what it boots against its db.
	Enabled bool `json:"enabled"`
	// UKI is the running slot's unified kernel image on the ESP, ""
	// when the slot boots a plain kernel and initramfs.
	UKI string `json:"uki,omitempty"`
	// SignedBy and Fingerprint name the certificate that signed it.
	SignedBy    string `json:"signedBy,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// SBATLevel is the node's revocation level (0: none): images of a
	// lower SBAT generation do not boot here.
	SBATLevel int `json:"sbatLevel,omitempty"`
	// Error says what could not be read.
	Error string `json:"error,omitempty"`
}

// secureBootStatus reads the firmware's state from efivarfs at dir ("" the
// system's) and the running slot's UKI's signer.
func secureBootStatus(dir string, esp *slots.ESP, running *slots.Info) *SecureBoot {
	sb := &SecureBoot{}
	var errs []string
	on, err := secureboot.Enabled(dir)
	if err != nil {
		errs = append(errs, err.Error())
	}
	sb.Enabled = on
	if sb.SBATLevel, err = secureboot.SBATLevel(dir); err != nil {
		errs = append(errs, err.Error())
	}
	if running != nil && running.Entry != nil && running.Entry.EFI != "" {
		sb.UKI = running.Entry.EFI
		data, err := os.ReadFile(filepath.Join(esp.Dir, filepath.FromSlash(strings.TrimPrefix(running.Entry.EFI, "/"))))
		if err == nil {
			signers, serr := secureboot.Signers(data)
			switch {
			case serr != nil:
				err = serr
			case len(signers) == 0:
				errs = append(errs, sb.UKI+" is not signed")
			default:
				sb.SignedBy, sb.Fingerprint = signers[0].Subject.String(), secureboot.Fingerprint(signers[0])
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", sb.UKI, err))
		}
	}
	sb.Error = strings.Join(errs, "; ")
	return sb
}

func (sb *SecureBoot) writeText(w io.Writer) {
	state := "off"
	if sb.Enabled {
		state = "on"
	}
	fmt.Fprintf(w, "secure boot: %s", state)
	if sb.UKI != "" {
		fmt.Fprintf(w, "; running %s", sb.UKI)
		if sb.SignedBy != "" {
			fmt.Fprintf(w, " signed by %s (%s)", sb.SignedBy, sb.Fingerprint)
		}
	}
	if sb.SBATLevel > 0 {
		fmt.Fprintf(w, "; SBAT level %d", sb.SBATLevel)
	}
	if sb.Error != "" {
		fmt.Fprintf(w, " (%s)", sb.Error)
	}
	fmt.Fprintln(w)
}
