package status

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
)

func TestSystemdBoot(t *testing.T) {
	dir := t.TempDir()
	put := func(rel, content string) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	esp := slots.Open(dir)
	text := func(sb *SystemdBoot) string {
		var b strings.Builder
		sb.writeText(&b)
		return b.String()
	}

	if got := text(systemdBoot(esp, "")); got != "systemd-boot: none found on the ESP\n" {
		t.Errorf("no loader: %q", got)
	}

	// Just upgraded: the ESP has trixie's, this boot ran bookworm's.
	put(boot.FallbackEFI, "MZ\x00 #### LoaderInfo: systemd-boot 257.9-1~deb13u1 ####\x00")
	sb := systemdBoot(esp, "systemd-boot 252.39-1~deb12u2")
	if got, want := text(sb), "systemd-boot: 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI), booted 252.39-1~deb12u2\n"; got != want {
		t.Errorf("text %q\nwant %q", got, want)
	}
	b, _ := json.Marshal(&Status{SystemdBoot: sb})
	if want := `"systemdBoot":{"esp":[{"path":"EFI/BOOT/BOOTX64.EFI","size":55,"version":"257.9-1~deb13u1"}],"booted":"252.39-1~deb12u2"}`; !strings.Contains(string(b), want) {
		t.Errorf("JSON %s\nlacks %s", b, want)
	}

	// A second loader that is not systemd-boot is shown with the reason.
	put(boot.SystemdBootEFI, "MZ shim")
	if got, want := text(systemdBoot(esp, "")), "systemd-boot: 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI), unknown on the ESP (EFI/systemd/systemd-bootx64.efi: no LoaderInfo marker: not a systemd EFI binary)\n"; got != want {
		t.Errorf("text %q\nwant %q", got, want)
	}

	// WriteText prints it after the slots.
	var out strings.Builder
	st := &Status{Running: Running{Slot: boot.SlotA, Version: "v1"}, SystemdBoot: sb}
	if err := st.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\nsystemd-boot: 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI), booted 252.39-1~deb12u2\n") {
		t.Errorf("status text:\n%s", out.String())
	}
}
