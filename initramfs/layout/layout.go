// Package layout holds the paths inside the initramfs that the packer
// (package initramfs, run by the builder) and the init (cmd/slate-init)
// must agree on. It has no dependencies: the init links it.
package layout

const (
	// Init is the init binary; the kernel runs /init from an initramfs.
	Init = "/init"

	// ModulesDir holds the modules, under ModulesDir/<kernel release>/ at
	// the paths modules.dep gives them, decompressed (.ko).
	ModulesDir = "/lib/modules"

	// LoadList lists the modules the init loads, in load order (every
	// module after its dependencies): one absolute path in the initramfs
	// a line. Lines starting with '#' are comments; the first is
	// KernelLine followed by the kernel release the modules are for.
	LoadList = "/etc/slate-init/modules.load"

	// KernelLine starts the load list's first line.
	KernelLine = "# kernel "

	// SysRoot is where the init mounts the slot's root before switching to it.
	SysRoot = "/sysroot"
)
