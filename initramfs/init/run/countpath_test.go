package run

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/slate-os/slate/initramfs/init/efivar"
	"github.com/slate-os/slate/initramfs/init/failpolicy"
	"github.com/slate-os/slate/initramfs/init/klog"
)

// utf16z is an EFI string variable's data: UTF-16LE, NUL-terminated.
func utf16z(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s + "\x00")) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

func TestDropStaleCountPath(t *testing.T) {
	for _, c := range []struct {
		name, countPath, selected string
		stale                     bool
	}{
		{"the counted entry booted", `\loader\entries\slate-b+2-1.conf`, "slate-b+2-1.conf", false},
		{"selected without the counter", `\loader\entries\slate-b+2-1.conf`, "slate-b.conf", false},
		{"another slot booted after a refused image", `\loader\entries\slate-b+0-3.conf`, "slate-a.conf", true},
		{"no selected entry", `\loader\entries\slate-b+0-3.conf`, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := efivar.Store{Dir: t.TempDir()}
			s.Set("LoaderBootCountPath", efivar.LoaderGUID, efivar.Default, utf16z(c.countPath))
			if c.selected != "" {
				s.Set(VarEntrySelected, efivar.LoaderGUID, efivar.Default, utf16z(c.selected))
			}
			blessUnitMask = filepath.Join(t.TempDir(), "run/systemd/system/systemd-bless-boot.service")
			var out bytes.Buffer
			in := &initProc{log: &klog.Logger{Console: &out}, efiStore: s}
			in.efi.countPath, in.efi.counting = c.countPath, failpolicy.CountingOf(c.countPath)
			in.dropStaleCountPath(&in.efi)
			_, maskErr := os.Lstat(blessUnitMask)
			if c.stale {
				if in.efi.countPath != "" || in.efi.counting != failpolicy.Uncounted || maskErr != nil {
					t.Errorf("kept: countPath %q, %s; mask %v", in.efi.countPath, in.efi.counting, maskErr)
				}
				if !strings.Contains(out.String(), "left from an image that failed to load") {
					t.Errorf("log: %s", out.String())
				}
			} else if in.efi.countPath != c.countPath || maskErr == nil {
				t.Errorf("dropped: countPath %q, mask %v", in.efi.countPath, maskErr)
			}
		})
	}
}
