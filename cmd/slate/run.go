package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/builder/format"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/nodetest"
	"github.com/slate-os/slate/vm"
)

func runCmd() *cobra.Command {
	var (
		configFile, memory         string
		cpus                       int
		persist, network, insecure bool
		forwards                   []string
	)
	c := &cobra.Command{
		Use:   "run DISK|IMAGE [--config node.yaml] [--memory 2GiB] [--cpus N] [--persist] [--forward GUEST_PORT[:HOST_PORT]]... [--network]",
		Short: "Boot a disk image, or an image built first, under QEMU with its console on this terminal",
		Long: `Run boots a node image under QEMU as a machine or a cloud would boot it (UEFI
firmware, systemd-boot, slate's init), with its serial console on this
terminal, so that an image and a node config can be tried before they are
deployed. Ctrl-a x quits (a power cut); Ctrl-a c switches to QEMU's monitor
and back. Run ends with status 0 when the guest powers off or you quit; a
guest that reboots (after an upgrade) boots again in the same machine.

DISK is a disk image as slate build writes it: raw, qcow2, vhd or vmdk (the
format is read from the file, not its name). It is not written: the machine
runs on a copy-on-write overlay that is dropped at exit, so each run starts
from the image as built. With --persist the machine runs on DISK itself, and
what the node writes (its state partition, an upgrade into slot B, boot
counting) is there for the next run.

Anything else is an image, built first as slate build would, with this slate
binary as the node's agent, into a temporary directory removed at exit: a
registry reference, oci:DIR[:TAG|@sha256:DIGEST], docker-archive:FILE, or an
image spec file (.yaml or .yml; its outputs are ignored).

--config hands the node a node config through QEMU's fw_cfg entry
opt/slate/config, which slate's init reads at boot. It is checked first, as
slate config check does, so that a mistake is reported here with its file
and line instead of on the console after a boot.

The machine has no network unless --network (QEMU user networking: DHCP,
outbound connections, the host is 10.0.2.2) or --forward, which exposes a
guest TCP port on the host's 127.0.0.1 (at HOST_PORT, or a free port) and
implies --network.

QEMU runs on KVM where /dev/kvm is usable, else in software emulation (TCG),
where a node takes about a minute to boot. It needs qemu-system-x86,
qemu-utils and ovmf (Debian's packages).`,
		Example: `  slate run build/demo.raw
  slate run --config node.yaml --forward 22:2222 node.qcow2
  slate run --persist --memory 4GiB --cpus 4 node.raw
  slate run oci:build/reference
  slate run configs/examples/image.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mem, err := parseMemory(memory)
			if err != nil {
				return err
			}
			if cpus < 1 {
				return fmt.Errorf("--cpus %d: want at least 1", cpus)
			}
			fwds, err := parseForwards(forwards)
			if err != nil {
				return err
			}
			if configFile != "" {
				if _, err := nodeconfig.Load(configFile); err != nil {
					return fmt.Errorf("--config: %w", err)
				}
			}
			target, err := classifyRunArg(args[0])
			if err != nil {
				return err
			}
			if persist {
				if err := checkPersist(args[0], target); err != nil {
					return err
				}
			}
			// Before a build that would be wasted.
			if err := vm.Available(); err != nil {
				return err
			}
			cfg := vm.Config{
				Disk: args[0], DiskFormat: target.format, Persist: persist,
				MemoryMiB: mem, CPUs: cpus,
				Network: network, Forwards: fwds,
				// An upgraded node reboots into its new slot.
				AllowReboot: true,
				Interactive: true,
			}
			if configFile != "" {
				cfg.FwCfg = map[string]string{nodetest.FwCfgConfig: configFile}
			}
			what := args[0]
			if target.kind != runDisk {
				dir, err := os.MkdirTemp("", "slate-run-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				res, err := buildForVM(cmd.Context(), args[0], dir, insecure, os.Stderr)
				if err != nil {
					return err
				}
				cfg.Disk, cfg.DiskFormat = res.Disk, "raw"
				what = fmt.Sprintf("%s (built: version %s)", args[0], res.Version)
			}
			return runMachine(cmd, cfg, what)
		},
	}
	f := c.Flags()
	f.StringVar(&configFile, "config", "", "node config (YAML or JSON) handed to the node through fw_cfg, checked first")
	f.StringVar(&memory, "memory", "2GiB", "the machine's memory: a size (2GiB, 512MiB) or a number of MiB")
	f.IntVar(&cpus, "cpus", 2, "the machine's CPUs")
	f.BoolVar(&persist, "persist", false, "run on DISK itself, keeping what the node writes, instead of on an overlay dropped at exit")
	f.StringArrayVar(&forwards, "forward", nil, "expose guest TCP port GUEST_PORT on the host's 127.0.0.1:HOST_PORT (default: a free port); implies --network (repeatable)")
	f.BoolVar(&network, "network", false, "give the machine QEMU user networking: DHCP, outbound connections; the host is 10.0.2.2")
	f.BoolVar(&insecure, "insecure", false, "allow plain HTTP to the registries of an image built first")
	return c
}

// runMachine boots cfg with the console attached, after one line on
// standard error saying how, and waits for the machine to end.
func runMachine(cmd *cobra.Command, cfg vm.Config, what string) error {
	m, err := vm.New(cfg)
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintln(os.Stderr, runBanner(m, cfg, what))
	if err := m.Boot(cmd.Context()); err != nil {
		return err
	}
	exit, err := m.WaitExit(0)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "\nslate run: the machine ended (%s)\n", exit.Reason)
	return nil
}

// runBanner is the line that says how the machine boots.
func runBanner(m *vm.Machine, cfg vm.Config, what string) string {
	disk := "on an overlay, dropped at exit"
	if cfg.Persist {
		disk = "in place (--persist: the node's writes stay in it)"
	}
	accel := "KVM"
	if m.Accel() == vm.AccelTCG {
		accel = "TCG (no usable /dev/kvm: slow, about a minute to boot)"
	}
	net := "no network"
	if cfg.Network || len(cfg.Forwards) > 0 {
		net = "network (the host is 10.0.2.2)"
		for _, f := range cfg.Forwards {
			net += fmt.Sprintf(", guest port %d on %s", f.GuestPort, m.HostAddr(f.GuestPort))
		}
	}
	return fmt.Sprintf("slate run: %s %s; %s; %d MiB, %d CPUs; %s; console log %s; Ctrl-a x quits",
		what, disk, accel, cfg.MemoryMiB, cfg.CPUs, net, m.ConsoleLog())
}

// parseMemory reads --memory: a size with a unit, or a number of MiB.
func parseMemory(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		size, perr := spec.ParseSize(s)
		if perr != nil || size%(1<<20) != 0 {
			return 0, fmt.Errorf("--memory %q: want a size in MiB or GiB (2GiB, 512MiB) or a number of MiB", s)
		}
		n = int(size >> 20)
	}
	if n < 1 {
		return 0, fmt.Errorf("--memory %q: want more than nothing", s)
	}
	return n, nil
}

// parseForwards reads --forward GUEST_PORT[:HOST_PORT] values.
func parseForwards(args []string) ([]vm.Forward, error) {
	var fwds []vm.Forward
	seen := map[int]bool{}
	for _, a := range args {
		guest, host, hasHost := strings.Cut(a, ":")
		f := vm.Forward{}
		var err error
		if f.GuestPort, err = port(guest); err == nil && hasHost {
			f.HostPort, err = port(host)
		}
		if err != nil {
			return nil, fmt.Errorf("--forward %q: want GUEST_PORT[:HOST_PORT], ports from 1 to 65535", a)
		}
		if seen[f.GuestPort] {
			return nil, fmt.Errorf("--forward %q: guest port %d is forwarded twice", a, f.GuestPort)
		}
		seen[f.GuestPort] = true
		fwds = append(fwds, f)
	}
	return fwds, nil
}

func port(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, errors.New("not a port")
	}
	return n, nil
}

// runKind is what slate run's argument names.
type runKind int

const (
	runDisk  runKind = iota // a disk image to boot
	runImage                // an image to build first
	runSpec                 // an image spec to build first
)

// runTarget is slate run's argument, classified.
type runTarget struct {
	kind   runKind
	format string // a disk's format, as QEMU names it
}

// classifyRunArg says what arg is: an existing file is a disk (by its
// contents), unless it is a spec (by its name) or a docker-save tarball;
// a directory is an OCI layout; anything else an image reference, checked
// here so that a mistyped file is reported as missing, not looked up in a
// registry.
func classifyRunArg(arg string) (runTarget, error) {
	fi, err := os.Stat(arg)
	switch {
	case errors.Is(err, fs.ErrNotExist) && isSpecFile(arg):
		return runTarget{}, err
	case errors.Is(err, fs.ErrNotExist):
		if err := source.CheckLocal(arg); err != nil {
			return runTarget{}, err
		}
		return runTarget{kind: runImage}, nil
	case err != nil:
		return runTarget{}, err
	case fi.IsDir():
		return runTarget{kind: runImage}, nil
	case isSpecFile(arg):
		return runTarget{kind: runSpec}, nil
	}
	detected, err := format.Detect(arg)
	if err != nil {
		return runTarget{}, err
	}
	if detected == format.Raw {
		if tar, err := isTar(arg); err != nil {
			return runTarget{}, err
		} else if tar {
			return runTarget{kind: runImage}, nil
		}
	}
	qf, err := qemuFormat(arg, detected)
	if err != nil {
		return runTarget{}, err
	}
	return runTarget{kind: runDisk, format: qf}, nil
}

// qemuFormat is QEMU's name for a disk format format.Detect found; the
// compressed ones QEMU cannot boot.
func qemuFormat(path, detected string) (string, error) {
	unpack := map[string]string{
		format.RawZstd: "zstd -d " + path,
		format.RawXz:   "xz -dk " + path,
		format.GCE:     "tar -xzf " + path + " (it holds disk.raw)",
	}
	switch {
	case detected == format.Raw, detected == format.QCOW2, detected == format.VMDK:
		return detected, nil
	case strings.HasPrefix(detected, format.VHD): // fixed or dynamic
		return "vpc", nil
	case unpack[detected] != "":
		return "", fmt.Errorf("%s is a %s disk, compressed, which QEMU cannot boot: decompress it first (%s) and run the raw disk", path, detected, unpack[detected])
	}
	return "", fmt.Errorf("%s: a %s disk, which slate run cannot boot", path, detected)
}

// checkPersist says why --persist cannot keep the node's writes in target.
func checkPersist(arg string, target runTarget) error {
	if target.kind != runDisk {
		return fmt.Errorf("--persist keeps the node's writes in its disk, but the disk built from %s would be deleted at exit: build it with slate build --output FILE and run FILE", arg)
	}
	if target.format != format.VMDK {
		return nil
	}
	compressed, err := vmdkCompressed(arg)
	if err != nil {
		return err
	}
	if compressed {
		return fmt.Errorf("--persist: %s is a streamOptimized VMDK (as slate build writes them), whose grains QEMU cannot rewrite: convert it first (qemu-img convert -O qcow2 %s node.qcow2)", arg, arg)
	}
	return nil
}

// vmdkCompressed says whether the VMDK at path has compressed grains (flag
// bit 16 of its sparse extent header): a streamOptimized one, which QEMU
// refuses to write to once a grain is allocated ("Could not write to
// allocated cluster for streamOptimized").
func vmdkCompressed(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := make([]byte, 12)
	if _, err := io.ReadFull(f, h); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if string(h[:4]) != "KDMV" {
		return false, nil // a descriptor file, over flat extents QEMU writes
	}
	return binary.LittleEndian.Uint32(h[8:])&(1<<16) != 0, nil
}

// isTar says whether the file at path is a tar archive (a docker-save
// tarball), by the ustar magic in its first header. A disk has its MBR's
// boot code there.
func isTar(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, 5)
	if _, err := f.ReadAt(magic, 257); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	return bytes.Equal(magic, []byte("ustar")), nil
}
