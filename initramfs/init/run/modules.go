package run

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/initramfs/layout"
)

// loadModules loads the modules listed in the initramfs's load list, in
// order (the packer put every module after its dependencies). A module for
// hardware this machine lacks refuses to load (ENODEV) and is skipped, and
// so is every module that needs a skipped one: it would only fail on
// unknown symbols (hv_storvsc without Hyper-V's hv_vmbus).
func (in *initProc) loadModules() error {
	f, err := os.Open(layout.LoadList)
	if errors.Is(err, os.ErrNotExist) {
		in.warn("no module list %s in the initramfs: relying on built-in drivers", layout.LoadList)
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	mods, kver, err := layout.ParseLoadList(f)
	if err != nil {
		return fmt.Errorf("%s: %w", layout.LoadList, err)
	}
	if kver != "" && in.rec.KernelRelease != "" && kver != in.rec.KernelRelease {
		return fmt.Errorf("the initramfs's modules are for kernel %s but kernel %s is running", kver, in.rec.KernelRelease)
	}
	var names []string
	skipped := map[string]bool{}
	for _, m := range mods {
		if need := slices.IndexFunc(m.Needs, func(n string) bool { return skipped[n] }); need >= 0 {
			in.log.Infof("module %s: needs %s, skipped", m.Name(), m.Needs[need])
			skipped[m.Name()] = true
			continue
		}
		existed, err := loadModule(m.Path)
		switch {
		case errors.Is(err, unix.ENODEV):
			// A driver for something this machine lacks refuses to load
			// (efivarfs without UEFI): not a problem for the boot.
			in.log.Infof("module %s: no such device here, skipped", m.Name())
			skipped[m.Name()] = true
			continue
		case err != nil:
			return fmt.Errorf("loading %s: %w", m.Path, err)
		}
		in.rec.Modules = append(in.rec.Modules, m.Path)
		name := strings.TrimSuffix(path.Base(m.Path), ".ko")
		if existed {
			name += " (already loaded)"
		}
		names = append(names, name)
	}
	if len(names) > 0 {
		in.log.Infof("loaded %d modules: %s", len(names), strings.Join(names, " "))
	}
	return nil
}

// ReadLoadList parses the load list (see layout.LoadEntry): the modules'
// absolute paths and the kernel release from the header line.
func ReadLoadList(r io.Reader) (mods []string, kver string, err error) {
	entries, kver, err := layout.ParseLoadList(r)
	for _, e := range entries {
		mods = append(mods, e.Path)
	}
	return mods, kver, err
}

// loadModule loads an uncompressed module with finit_module(2) (the
// packer decompresses modules, so the init carries no decompressor), or
// init_module(2) where finit_module is missing. existed is true when the
// module was already loaded.
func loadModule(p string) (existed bool, err error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.ENOSYS) {
		img, rerr := io.ReadAll(f)
		if rerr != nil {
			return false, rerr
		}
		err = unix.InitModule(img, "")
	}
	if errors.Is(err, unix.EEXIST) {
		return true, nil
	}
	return false, err
}
