package run

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/initramfs/layout"
)

// loadModules loads the modules listed in the initramfs's load list, in
// order (the packer put every module after its dependencies).
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
	mods, kver, err := ReadLoadList(f)
	if err != nil {
		return fmt.Errorf("%s: %w", layout.LoadList, err)
	}
	if kver != "" && in.rec.KernelRelease != "" && kver != in.rec.KernelRelease {
		return fmt.Errorf("the initramfs's modules are for kernel %s but kernel %s is running", kver, in.rec.KernelRelease)
	}
	var names []string
	for _, m := range mods {
		existed, err := loadModule(m)
		switch {
		case errors.Is(err, unix.ENODEV):
			// A driver for something this machine lacks refuses to load
			// (efivarfs without UEFI): not a problem for the boot.
			in.log.Infof("module %s: no such device here, skipped", path.Base(m))
			continue
		case err != nil:
			return fmt.Errorf("loading %s: %w", m, err)
		}
		in.rec.Modules = append(in.rec.Modules, m)
		name := strings.TrimSuffix(path.Base(m), ".ko")
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

// ReadLoadList parses the load list: absolute module paths, one a line, and
// the kernel release from the header line.
func ReadLoadList(r io.Reader) (mods []string, kver string, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, layout.KernelLine):
			kver = strings.TrimSpace(strings.TrimPrefix(line, layout.KernelLine))
		case line == "" || strings.HasPrefix(line, "#"):
		case !strings.HasPrefix(line, "/"):
			return nil, "", fmt.Errorf("module path %q is not absolute", line)
		default:
			mods = append(mods, line)
		}
	}
	return mods, kver, sc.Err()
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
