package status

import (
	"fmt"
	"io"
	"strings"

	"github.com/slate-os/slate/agent/slots"
)

// SystemdBoot is the node's boot loader: the systemd-boot binaries on the
// ESP, which an upgrade replaces with its image's when that is newer, and
// the one that started this boot, which differs from them until the next
// boot after such an upgrade.
type SystemdBoot struct {
	// ESP lists the loaders at boot.LoaderPaths that exist, with their
	// versions (or why a version cannot be read).
	ESP []slots.Loader `json:"esp"`
	// Booted is the version that started this boot, from systemd-boot's
	// LoaderInfo EFI variable; empty when it is not set.
	Booted string `json:"booted,omitempty"`
}

// systemdBoot gathers SystemdBoot; loaderInfo is the LoaderInfo EFI
// variable ("systemd-boot 257.9-1~deb13u1").
func systemdBoot(esp *slots.ESP, loaderInfo string) *SystemdBoot {
	sb := &SystemdBoot{ESP: esp.Loaders()}
	if sb.ESP == nil {
		sb.ESP = []slots.Loader{}
	}
	if v, ok := strings.CutPrefix(loaderInfo, "systemd-boot "); ok {
		sb.Booted = v
	} else {
		sb.Booted = loaderInfo
	}
	return sb
}

// writeText prints one line:
//
//	systemd-boot: 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI), booted 252.39-1~deb12u2
func (sb *SystemdBoot) writeText(w io.Writer) {
	var on []string
	for _, l := range sb.ESP {
		if l.Version != "" {
			on = append(on, fmt.Sprintf("%s on the ESP (%s)", l.Version, l.Path))
		} else {
			on = append(on, fmt.Sprintf("unknown on the ESP (%s: %s)", l.Path, l.Problem))
		}
	}
	if len(on) == 0 {
		on = append(on, "none found on the ESP")
	}
	fmt.Fprintf(w, "systemd-boot: %s", strings.Join(on, ", "))
	if sb.Booted != "" {
		fmt.Fprintf(w, ", booted %s", sb.Booted)
	}
	fmt.Fprintln(w)
}
