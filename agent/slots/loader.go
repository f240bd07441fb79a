package slots

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/slate-os/slate/boot"
)

// Loader is a boot loader binary found on the ESP at one of
// boot.LoaderPaths.
type Loader struct {
	Path string `json:"path"` // EFI/BOOT/BOOTX64.EFI
	Size int64  `json:"size"`
	// Version is systemd-boot's version, from the binary's LoaderInfo;
	// empty when it cannot be read (then Problem says why: not
	// systemd-boot, too large, unreadable).
	Version string `json:"version,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// Loaders reports the files at boot.LoaderPaths that exist, in that order.
// A file that is there but is not a readable systemd-boot is reported with
// its problem, never skipped: an upgrade leaves such a file alone.
func (e *ESP) Loaders() []Loader {
	var out []Loader
	for _, rel := range boot.LoaderPaths {
		l, ok := e.readLoader(rel)
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// readLoader reads one loader; false when there is no file at rel.
func (e *ESP) readLoader(rel string) (Loader, bool) {
	l := Loader{Path: rel}
	fi, err := os.Stat(e.path(rel))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return l, false
	case err != nil:
		l.Problem = err.Error()
		return l, true
	case !fi.Mode().IsRegular():
		l.Problem = "not a regular file"
		return l, true
	}
	l.Size = fi.Size()
	if l.Size > boot.MaxSystemdBootSize {
		l.Problem = fmt.Sprintf("%d bytes: larger than any systemd-boot", l.Size)
		return l, true
	}
	b, err := os.ReadFile(e.path(rel))
	if err == nil {
		l.Version, err = boot.SystemdBootVersion(b)
	}
	if err != nil {
		l.Problem = err.Error()
	}
	return l, true
}

// InstallLoader replaces the boot loader at rel (one of boot.LoaderPaths)
// with b, crash-safely like every write here: the firmware finds the old
// binary or the new one whole, never a mix, even after a power cut (FAT's
// rename is one directory update). It does not create a loader where there
// was none. It checks nothing about b: the caller decides what to install.
func (e *ESP) InstallLoader(rel string, b []byte) error {
	if !slices.Contains(boot.LoaderPaths, rel) {
		return fmt.Errorf("%s is not a boot loader path (%v)", rel, boot.LoaderPaths)
	}
	if _, err := os.Stat(e.path(rel)); err != nil {
		return fmt.Errorf("installing the boot loader: %w", err)
	}
	_, err := e.WriteFile(rel, bytes.NewReader(b))
	return err
}
