package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// args builds QEMU's command line for the next boot.
func (m *Machine) args() []string {
	c := m.cfg
	mem, cpus := c.MemoryMiB, c.CPUs
	if mem == 0 {
		mem = 1024
	}
	if cpus == 0 {
		cpus = 2
	}
	fw := c.Firmware
	machine := "q35"
	switch {
	case fw == "" && c.SecureBoot:
		fw = SecureBootFirmware
	case fw == "":
		fw = DefaultFirmware
	}
	if c.SecureBoot {
		machine = "q35,smm=on"
	}
	a := []string{"-machine", machine}
	if c.SecureBoot {
		// The variable store only SMM may write (OVMF's secboot build
		// refuses to run without it).
		a = append(a, "-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	if m.accel == AccelKVM {
		a = append(a, "-accel", "kvm", "-cpu", "host")
	} else {
		a = append(a,
			// One TCG thread for all vCPUs: multi-threaded TCG (QEMU 7.2)
			// once left both vCPUs of a guest spinning in kmem_cache_alloc
			// for good, and with two test packages sharing 2 cores, make
			// test ran in 16m45s this way against 18m33s multi-threaded. A
			// lone guest boots slower (99 s against 71 s for three boots).
			"-accel", "tcg,thread=single",
			"-cpu", "max") // not -svm: that breaks the guest
	}
	a = append(a,
		"-smp", strconv.Itoa(cpus),
		"-m", strconv.Itoa(mem),
		"-display", "none",
		"-monitor", "none",
		"-chardev", "socket,id=qmp,fd=3",
		"-mon", "chardev=qmp,mode=control")
	if c.Interactive {
		logfile := "logfile=" + optEscape(m.consoleLog) + ",logappend=on"
		a = append(a,
			"-chardev", "stdio,id=con0,mux=on,"+logfile,
			"-serial", "chardev:con0",
			"-mon", "chardev=con0,mode=readline")
	} else {
		a = append(a,
			// No logfile= here: QEMU 7.2 writes a chunk to the logfile
			// again each time it retries a partial write to the socket,
			// which doubled characters in the log (measured). The
			// harness writes the log from what it reads instead.
			"-chardev", "socket,id=con0,fd=4",
			"-serial", "chardev:con0")
	}
	if !c.AllowReboot {
		a = append(a, "-no-reboot")
	}
	a = append(a,
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+optEscape(fw),
		"-drive", "if=pflash,format=raw,unit=1,file="+optEscape(m.vars))
	a = append(a, m.drives...)
	for _, f := range m.fwcfg {
		a = append(a, "-fw_cfg", f)
	}
	for _, sm := range c.SMBIOS {
		a = append(a, "-smbios", sm)
	}
	if m.nicArg != "" {
		a = append(a, "-nic", m.nicArg)
	} else {
		a = append(a, "-nic", "none")
	}
	return append(a, c.ExtraArgs...)
}

// driveArgs are the QEMU arguments that attach drive id (its -drive options
// in opts, without if=) on bus b; sata counts the SATA ports used so far,
// scsi says whether the virtio-scsi controller is there yet.
func driveArgs(b Bus, id, opts string, sata *int, scsi *bool) ([]string, error) {
	switch b {
	case "", BusVirtio:
		return []string{"-drive", opts + ",if=virtio,id=" + id}, nil
	case BusSCSI:
		a := []string{"-drive", opts + ",if=none,id=" + id}
		if !*scsi {
			*scsi = true
			a = append(a, "-device", "virtio-scsi-pci,id=scsi0")
		}
		return append(a, "-device", "scsi-hd,bus=scsi0.0,drive="+id), nil
	case BusNVMe:
		return []string{"-drive", opts + ",if=none,id=" + id, "-device", "nvme,serial=slate-" + id + ",drive=" + id}, nil
	case BusSATA:
		// q35's ICH9 AHCI controller has six ports, ide.0 to ide.5.
		if *sata >= 6 {
			return nil, errors.New("more than 6 SATA disks")
		}
		a := []string{"-drive", opts + ",if=none,id=" + id, "-device", fmt.Sprintf("ide-hd,bus=ide.%d,drive=%s", *sata, id)}
		*sata++
		return a, nil
	}
	return nil, fmt.Errorf("unknown disk bus %q", b)
}

// SetFwCfgString sets (or, with remove, drops) a fw_cfg entry with the
// given contents for the next Boot: a node that reboots can find another
// config, as after an operator's change.
func (m *Machine) SetFwCfgString(name, contents string, remove bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	prefix := "name=" + optEscape(name) + ","
	kept := m.fwcfg[:0]
	for _, a := range m.fwcfg {
		if !strings.HasPrefix(a, prefix) {
			kept = append(kept, a)
		}
	}
	m.fwcfg = kept
	if remove {
		return nil
	}
	path := filepath.Join(m.dir, fmt.Sprintf("fw_cfg%d", m.fwcfgN))
	m.fwcfgN++
	if err := os.WriteFile(path, []byte(contents), 0o644); err != nil {
		return err
	}
	m.fwcfg = append(m.fwcfg, prefix+"file="+optEscape(path))
	return nil
}

// optEscape escapes a value for QEMU's comma-separated options.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func imageFormat(path string) (string, error) {
	out, err := exec.Command("qemu-img", "info", "--output=json", path).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("qemu-img info %s: %s", path, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("qemu-img info %s: %w", path, err)
	}
	var info struct {
		Format string `json:"format"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Format == "" {
		return "", fmt.Errorf("qemu-img info %s: no format in %q", path, out)
	}
	return info.Format, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// resolveAccel turns Config.Accel into the accelerator QEMU gets: auto is
// KVM when probe (kvmUsable; tests inject theirs) finds it usable.
func resolveAccel(want string, probe func() error) (string, error) {
	switch want {
	case AccelKVM, AccelTCG:
		return want, nil
	case "":
		if probe() == nil {
			return AccelKVM, nil
		}
		return AccelTCG, nil
	}
	return "", fmt.Errorf("Accel %q: want %q, %q or empty (auto)", want, AccelKVM, AccelTCG)
}

// probeKVM is kvmUsable; a variable so tests decide what the host has.
var probeKVM = kvmUsable

// kvmGetAPIVersion is the KVM_GET_API_VERSION ioctl; every KVM since Linux
// 2.6.22 answers kvmAPIVersion.
const (
	kvmGetAPIVersion = 0xAE00
	kvmAPIVersion    = 12
)

// kvmUsable says why this host's KVM cannot run a firmware guest, or nil
// if it can: /dev/kvm must open read-write and speak the stable API, and
// the CPU must have VT-x or AMD-V. Without them a /dev/kvm can still be
// there and answer (a sandbox's software KVM, such as PVM on the VMs slate
// is developed on), but it runs only paravirtualized 64-bit kernels: OVMF
// dies at once there with "KVM internal error ... emulation failure".
func kvmUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	v, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("/dev/kvm: KVM_GET_API_VERSION: %w", errno)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("/dev/kvm: API version %d, want %d", v, kvmAPIVersion)
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return err
	}
	if !hardwareVirt(info) {
		return errors.New("/dev/kvm: the CPU has neither vmx nor svm: a software KVM, which cannot run firmware")
	}
	return nil
}

// hardwareVirt says whether /proc/cpuinfo's first flags line has vmx
// (Intel VT-x) or svm (AMD-V).
func hardwareVirt(cpuinfo []byte) bool {
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
		return false
	}
	return false
}
