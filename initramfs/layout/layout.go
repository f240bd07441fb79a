// Package layout holds the paths inside the initramfs that the packer
// (package initramfs, run by the builder) and the init (cmd/slate-init)
// must agree on. It has no dependencies: the init links it.
package layout

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

const (
	// Init is the init binary; the kernel runs /init from an initramfs.
	Init = "/init"

	// ModulesDir holds the modules, under ModulesDir/<kernel release>/ at
	// the paths modules.dep gives them, decompressed (.ko).
	ModulesDir = "/lib/modules"

	// LoadList lists the modules the init loads, in load order (every
	// module after its dependencies): a LoadEntry a line. Lines starting
	// with '#' are comments; the first is KernelLine followed by the
	// kernel release the modules are for.
	LoadList = "/etc/slate-init/modules.load"

	// KernelLine starts the load list's first line.
	KernelLine = "# kernel "

	// SysRoot is where the init mounts the slot's root before switching to it.
	SysRoot = "/sysroot"
)

// LoadEntry is a line of the load list: the module's absolute path in the
// initramfs, then the names of the modules it needs (its modules.dep line,
// '-' as '_'), space-separated. A module that refuses to load because its
// hardware is absent (hv_vmbus off Hyper-V) would leave the modules that
// need it failing on unknown symbols: the init skips those too.
type LoadEntry struct {
	Path  string
	Needs []string
}

func (e LoadEntry) String() string {
	return strings.Join(append([]string{e.Path}, e.Needs...), " ")
}

// Name is the module's name: its file name without .ko, '-' as '_'.
func (e LoadEntry) Name() string {
	return strings.ReplaceAll(strings.TrimSuffix(path.Base(e.Path), ".ko"), "-", "_")
}

// ParseLoadList reads a load list: its entries in order and the kernel
// release from the header line.
func ParseLoadList(r io.Reader) (mods []LoadEntry, kver string, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, KernelLine):
			kver = strings.TrimSpace(strings.TrimPrefix(line, KernelLine))
		case line == "" || strings.HasPrefix(line, "#"):
		case !strings.HasPrefix(line, "/"):
			return nil, "", fmt.Errorf("module path %q is not absolute", line)
		default:
			f := strings.Fields(line)
			mods = append(mods, LoadEntry{Path: f[0], Needs: f[1:]})
		}
	}
	return mods, kver, sc.Err()
}
