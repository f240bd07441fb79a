package slots

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/slate-os/slate/boot"
)

func fakeLoader(version string) string {
	return "MZ fake systemd-boot " + strings.Repeat("\x00\x01", 300) + "#### LoaderInfo: systemd-boot " + version + " ####\x00"
}

func TestLoaders(t *testing.T) {
	e := newESP(t)
	if got := e.Loaders(); len(got) != 0 {
		t.Errorf("an ESP without loaders: %+v", got)
	}
	bookworm := fakeLoader("252.39-1~deb12u2")
	put(t, e, boot.FallbackEFI, bookworm)
	put(t, e, boot.SystemdBootEFI, "MZ shim")
	want := []Loader{
		{Path: boot.FallbackEFI, Size: int64(len(bookworm)), Version: "252.39-1~deb12u2"},
		{Path: boot.SystemdBootEFI, Size: 7, Problem: "no LoaderInfo marker: not a systemd EFI binary"},
	}
	if got := e.Loaders(); !reflect.DeepEqual(got, want) {
		t.Errorf("loaders\n got %+v\nwant %+v", got, want)
	}

	big := filepath.Join(e.Dir, filepath.FromSlash(boot.SystemdBootEFI))
	if err := os.Truncate(big, boot.MaxSystemdBootSize+1); err != nil {
		t.Fatal(err)
	}
	if got := e.Loaders(); len(got) != 2 || got[1].Version != "" || !strings.Contains(got[1].Problem, "larger than any systemd-boot") {
		t.Errorf("a large file: %+v", got)
	}
}

func TestInstallLoader(t *testing.T) {
	e := newESP(t)
	put(t, e, boot.FallbackEFI, fakeLoader("252.39-1~deb12u2"))
	trixie := fakeLoader("257.9-1~deb13u1")
	if err := e.InstallLoader(boot.FallbackEFI, []byte(trixie)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(e.Dir, filepath.FromSlash(boot.FallbackEFI))); string(got) != trixie {
		t.Errorf("EFI/BOOT/BOOTX64.EFI holds %q", got)
	}
	if names := listDir(t, e, "EFI/BOOT"); !reflect.DeepEqual(names, []string{"BOOTX64.EFI"}) {
		t.Errorf("EFI/BOOT holds %v (a temporary file left?)", names)
	}
	// Never a loader where there was none, nor a file elsewhere.
	if err := e.InstallLoader(boot.SystemdBootEFI, []byte(trixie)); err == nil {
		t.Error("installed a loader at a path that had none")
	}
	if _, err := os.Stat(filepath.Join(e.Dir, "EFI", "systemd")); err == nil {
		t.Error("EFI/systemd was created")
	}
	if err := e.InstallLoader("EFI/BOOT/grubx64.efi", []byte(trixie)); err == nil || !strings.Contains(err.Error(), "not a boot loader path") {
		t.Errorf("another path: %v", err)
	}
}
