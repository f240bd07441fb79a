package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Paths in Debian's ovmf package. The 4 MiB build has the larger variable
// store, and it is what the reference image was booted with.
const (
	DefaultFirmware     = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	DefaultVarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// Config describes a machine. The zero Config is a diskless UEFI machine
// with 1 GiB, 2 CPUs and no network, whose OVMF ends up in its shell.
type Config struct {
	// Name labels the machine in errors and in the names of saved logs,
	// for tests that run more than one machine. Optional.
	Name string

	// Disk is the base image, raw or qcow2, attached first (vda). It is
	// never written: the machine runs on a qcow2 overlay of it in its work
	// dir, see [Machine.Disk]. Empty means no disk.
	Disk string
	// DiskFormat is "raw" or "qcow2"; empty means ask `qemu-img info`.
	DiskFormat string
	// DiskSize, if not 0, is the overlay's size in bytes, for a guest that
	// grows its last partition to the end of the disk. 0 keeps the base's.
	DiskSize int64
	// DiskBus is the controller Disk is attached to: BusVirtio (the
	// default), BusSCSI, BusNVMe or BusSATA.
	DiskBus Bus
	// Disks are further disks, attached after Disk in order, each on its
	// own Bus; their QEMU drive ids are disk0, disk1... in that order (for
	// QMP commands that name a drive).
	Disks []Disk

	// Firmware is the OVMF code image; empty means DefaultFirmware.
	Firmware string
	// Vars is an OVMF variable store to use in place: QEMU writes to it,
	// and it outlives the machine, for tests that carry EFI variables
	// across machines. Empty means a fresh copy of VarsTemplate in the work
	// dir, which lasts as long as the Machine (across Boot calls), so
	// systemd-boot's counting starts clean for each test.
	Vars string
	// VarsTemplate is what a fresh variable store is copied from; empty
	// means DefaultVarsTemplate.
	VarsTemplate string

	// FwCfg adds fw_cfg entries from host files: name (such as
	// "opt/slate/config") → path. A Linux guest with the qemu_fw_cfg
	// module reads them at /sys/firmware/qemu_fw_cfg/by_name/NAME/raw.
	FwCfg map[string]string
	// FwCfgStrings adds fw_cfg entries with the given contents. They are
	// written to files in the work dir, so any bytes (commas, newlines,
	// YAML) pass unharmed.
	FwCfgStrings map[string]string

	// Network gives the guest QEMU user networking (a virtio NIC; DHCP;
	// the host's 127.0.0.1 is 10.0.2.2 from the guest). Forwards imply it.
	// Without it the machine has no NIC at all.
	Network bool
	// Forwards expose guest ports on the host's 127.0.0.1.
	Forwards []Forward

	// MemoryMiB defaults to 1024, CPUs to 2.
	MemoryMiB int
	CPUs      int

	// AllowReboot, when false (the default), passes -no-reboot: a reset by
	// the guest (or SystemReset) makes QEMU exit with Exit.Reason
	// "guest-reset", so a test sees each boot as one QEMU run and boots the
	// next with [Machine.Boot], possibly after looking at the disk. When
	// true, a reset reboots within the same QEMU process.
	AllowReboot bool

	// Interactive puts the console on this process's stdin and stdout with
	// QEMU's monitor multiplexed in (`-serial mon:stdio`: Ctrl-A X quits,
	// Ctrl-A C toggles the monitor), for `make run`. The console log and
	// Expect still work; Send does not.
	Interactive bool
	// Console, if set, receives a copy of the console output as it arrives
	// (os.Stdout for `make demo`). Ignored when Interactive.
	Console io.Writer

	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string

	// Dir is the work dir for StartContext; empty means a new temporary
	// directory, removed by Close. Start always uses t.TempDir.
	Dir string
}

// Disk is an extra disk.
type Disk struct {
	Path   string
	Format string // "raw" or "qcow2"; empty means ask qemu-img
	// InPlace attaches Path itself, so the guest's writes land in it (a
	// scratch disk the test inspects afterwards). By default the disk gets
	// an overlay and Path is never written, like Config.Disk.
	InPlace bool
	// Bus is the controller; empty means BusVirtio.
	Bus Bus
}

// Bus is a disk controller, as the guest sees it. Firmware (OVMF) boots
// from each; the guest's kernel needs its driver (virtio_blk,
// virtio_scsi + sd_mod, nvme, ahci + sd_mod).
type Bus string

const (
	BusVirtio Bus = "virtio" // virtio-blk-pci: /dev/vda
	BusSCSI   Bus = "scsi"   // scsi-hd on a virtio-scsi-pci controller: /dev/sda
	BusNVMe   Bus = "nvme"   // an NVMe controller per disk: /dev/nvme0n1
	BusSATA   Bus = "sata"   // ide-hd on q35's built-in AHCI controller: /dev/sda
)

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

// Forward exposes a guest port on the host.
type Forward struct {
	GuestPort int
	// HostPort on 127.0.0.1; 0 picks a free one, see [Machine.HostAddr].
	HostPort int
	UDP      bool
}

// Exit says how a QEMU run ended.
type Exit struct {
	// Code is QEMU's exit status; -1 if a signal killed it.
	Code int
	// Reason is the reason of QEMU's last SHUTDOWN event: "guest-shutdown"
	// (the guest powered off), "guest-reset" (the guest rebooted under
	// -no-reboot), "host-qmp-quit" (Quit), "host-qmp-system-reset"
	// (SystemReset under -no-reboot), "guest-panic", "host-signal"... or
	// "" when QEMU ended without one (killed, or failed to start).
	Reason string
}

func (e Exit) String() string {
	reason := e.Reason
	if reason == "" {
		reason = "no shutdown event"
	}
	return fmt.Sprintf("status %d, %s", e.Code, reason)
}

// Machine is one virtual machine: its disks' overlays, its EFI variables
// and its console log, and at most one running QEMU process at a time.
// Its methods are safe for concurrent use.
type Machine struct {
	cfg    Config
	label  string
	dir    string
	ownDir bool

	overlay    string   // first disk as attached ("" if none)
	drives     []string // the disks' -drive and -device arguments
	vars       string
	consoleLog string
	qemuLog    string
	fwcfg      []string
	fwcfgN     int         // fw_cfg content files written so far
	forwards   map[int]int // guest port → host port (tcp and udp alike)
	nicArg     string

	mu    sync.Mutex
	run   *run
	boots int
}

// run is one QEMU process.
type run struct {
	cmd    *exec.Cmd
	args   []string
	qmp    *qmpClient
	serial net.Conn // nil when Interactive

	wake chan struct{} // poked when console output arrives
	done chan struct{} // closed when QEMU has exited
	exit Exit
	werr error

	reasonMu sync.Mutex
	reason   string

	expectMu sync.Mutex
	pos      int64     // Expect's read position in the console log
	seenEnd  int64     // the console log's end when Expect last read it
	grewAt   time.Time // when Expect last saw the console log grow
}

func (r *run) hasExited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *run) exitInfo() string { return r.exit.String() }

// Start creates a machine in t.TempDir() and boots it; it fails the test if
// either goes wrong, and skips it when QEMU or OVMF is not installed.
// Cleanup kills QEMU and, when the test has failed, saves the console log
// (see the package doc) and logs its last 80 lines.
func Start(tb testing.TB, cfg Config) *Machine {
	tb.Helper()
	SkipIfUnavailable(tb)
	if _, err := timeoutScale(); err != nil {
		tb.Fatal(err) // a typo must not silently change every timeout
	}
	m, err := newMachine(cfg, tb.TempDir(), false)
	if err != nil {
		tb.Fatalf("vm: %v", err)
	}
	tb.Cleanup(func() {
		_ = m.Kill()
		if tb.Failed() {
			m.saveLogs(tb)
		}
	})
	if err := m.Boot(tb.Context()); err != nil {
		tb.Fatalf("%v", err)
	}
	return m
}

// StartContext is Start for programs (`make run`, `make demo`): it creates
// the machine in cfg.Dir or a temporary directory and boots it. ctx bounds
// this boot: when it is done, QEMU is terminated. The caller must Close the
// machine.
func StartContext(ctx context.Context, cfg Config) (*Machine, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if _, err := timeoutScale(); err != nil {
		return nil, err
	}
	dir, own := cfg.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "slate-vm-")
		if err != nil {
			return nil, fmt.Errorf("vm: %w", err)
		}
		dir, own = d, true
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	m, err := newMachine(cfg, dir, own)
	if err != nil {
		if own {
			os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("vm: %w", err)
	}
	if err := m.Boot(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Available says why this machine cannot run VMs, or nil if it can.
func Available() error {
	for _, bin := range []string{"qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("vm: %s not found in PATH (Debian: apt-get install qemu-system-x86 qemu-utils ovmf)", bin)
		}
	}
	for _, f := range []string{DefaultFirmware, DefaultVarsTemplate} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("vm: OVMF firmware %s is missing (Debian: apt-get install ovmf)", f)
		}
	}
	return nil
}

// SkipIfUnavailable skips the test when QEMU or OVMF is not installed, or
// under -short (make unit). With SLATE_REQUIRE_QEMU set (make test, CI) a
// missing QEMU fails the test instead: the suite must not pass by skipping.
func SkipIfUnavailable(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("QEMU boots do not run with -short")
	}
	if err := Available(); err != nil {
		if os.Getenv("SLATE_REQUIRE_QEMU") != "" {
			tb.Fatalf("QEMU test: %v", err)
		}
		tb.Skipf("skipping QEMU test: %v", err)
	}
}

func newMachine(cfg Config, dir string, ownDir bool) (*Machine, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	m := &Machine{
		cfg:        cfg,
		dir:        dir,
		ownDir:     ownDir,
		consoleLog: filepath.Join(dir, "console.log"),
		qemuLog:    filepath.Join(dir, "qemu.log"),
		forwards:   map[int]int{},
	}
	// The label starts every error and log line about this machine.
	m.label = "vm"
	if cfg.Name != "" {
		m.label += " " + cfg.Name
	}

	// Disks, each through an overlay unless asked otherwise.
	type disk struct {
		Disk
		size int64
	}
	var disks []disk
	if cfg.Disk != "" {
		disks = append(disks, disk{Disk{Path: cfg.Disk, Format: cfg.DiskFormat, Bus: cfg.DiskBus}, cfg.DiskSize})
	}
	sataPorts, scsiController := 0, false
	for _, d := range cfg.Disks {
		disks = append(disks, disk{d, 0})
	}
	for i, d := range disks {
		path, err := filepath.Abs(d.Path)
		if err != nil {
			return nil, err
		}
		format := d.Format
		if format == "" {
			if format, err = imageFormat(path); err != nil {
				return nil, err
			}
		}
		if !d.InPlace {
			overlay := filepath.Join(dir, fmt.Sprintf("disk%d.qcow2", i))
			args := []string{"create", "-q", "-f", "qcow2", "-b", path, "-F", format, overlay}
			if d.size > 0 {
				args = append(args, strconv.FormatInt(d.size, 10))
			}
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
			path, format = overlay, "qcow2"
		}
		if i == 0 && cfg.Disk != "" {
			m.overlay = path
		}
		// cache=unsafe: the guest's flushes do not reach the host disk. A
		// guest's sync then cannot queue behind another test's gigabytes of
		// writes (in CI a shutdown took 2 min so); a power cut is still the
		// guest's (QMP quit), and QEMU writes out what it holds when it quits.
		a, err := driveArgs(d.Bus, fmt.Sprintf("disk%d", i), fmt.Sprintf("file=%s,format=%s,cache=unsafe", optEscape(path), format), &sataPorts, &scsiController)
		if err != nil {
			return nil, err
		}
		m.drives = append(m.drives, a...)
	}

	// EFI variables.
	if cfg.Vars != "" {
		if m.vars, err = filepath.Abs(cfg.Vars); err != nil {
			return nil, err
		}
		if _, err := os.Stat(m.vars); err != nil {
			return nil, fmt.Errorf("OVMF vars: %w", err)
		}
	} else {
		tmpl := cfg.VarsTemplate
		if tmpl == "" {
			tmpl = DefaultVarsTemplate
		}
		m.vars = filepath.Join(dir, "vars.fd")
		if err := copyFile(tmpl, m.vars); err != nil {
			return nil, fmt.Errorf("OVMF vars: %w", err)
		}
	}

	// fw_cfg, in a stable order.
	for _, name := range sortedKeys(cfg.FwCfg) {
		path, err := filepath.Abs(cfg.FwCfg[name])
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("fw_cfg %s: %w", name, err)
		}
		m.fwcfg = append(m.fwcfg, fmt.Sprintf("name=%s,file=%s", optEscape(name), optEscape(path)))
	}
	for i, name := range sortedKeys(cfg.FwCfgStrings) {
		path := filepath.Join(dir, fmt.Sprintf("fw_cfg%d", i))
		if err := os.WriteFile(path, []byte(cfg.FwCfgStrings[name]), 0o644); err != nil {
			return nil, err
		}
		m.fwcfg = append(m.fwcfg, fmt.Sprintf("name=%s,file=%s", optEscape(name), optEscape(path)))
	}
	m.fwcfgN = len(cfg.FwCfgStrings)

	// Network. Host ports are chosen once, so they stay put across boots.
	if cfg.Network || len(cfg.Forwards) > 0 {
		nic := "user,model=virtio-net-pci"
		for _, f := range cfg.Forwards {
			proto := "tcp"
			if f.UDP {
				proto = "udp"
			}
			hp := f.HostPort
			if hp == 0 {
				if hp, err = freePort(proto); err != nil {
					return nil, err
				}
			}
			m.forwards[f.GuestPort] = hp
			nic += fmt.Sprintf(",hostfwd=%s:127.0.0.1:%d-:%d", proto, hp, f.GuestPort)
		}
		m.nicArg = nic
	}
	return m, nil
}

// Boot starts QEMU on the machine's disks and variables: the first boot,
// or power-on again after the previous QEMU run ended. It returns once QMP
// is up; the guest is then running. ctx bounds this run: when it is done,
// QEMU is terminated.
func (m *Machine) Boot(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.run != nil && !m.run.hasExited() {
		return fmt.Errorf("%s: Boot: already running", m.label)
	}
	m.boots++

	// Mark the boot in the console log; this boot's Expect starts after it.
	logf, err := os.OpenFile(m.consoleLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", m.label, err)
	}
	st, _ := logf.Stat()
	marker := fmt.Sprintf("--- slate/%s: boot %d ---\n", m.label, m.boots)
	if st.Size() > 0 {
		marker = "\n" + marker
	}
	_, err = logf.WriteString(marker)
	pos := st.Size() + int64(len(marker))
	logf.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", m.label, err)
	}

	r := &run{wake: make(chan struct{}, 1), done: make(chan struct{}), pos: pos, args: m.args()}
	qlog, err := os.OpenFile(m.qemuLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", m.label, err)
	}
	defer qlog.Close()
	fmt.Fprintf(qlog, "--- boot %d: qemu-system-x86_64 %s\n", m.boots, shellQuote(r.args))

	// QMP, and the console unless it is on stdio, over socketpairs whose
	// QEMU ends become fds 3 and 4 of the child.
	var hosts []net.Conn
	var files []*os.File
	closeAll := func() {
		for _, c := range hosts {
			c.Close()
		}
	}
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
	}
	n := 2
	if m.cfg.Interactive {
		n = 1
	}
	for range n {
		host, child, err := socketpair()
		if err != nil {
			closeAll()
			closeFiles()
			return fmt.Errorf("%s: %w", m.label, err)
		}
		hosts, files = append(hosts, host), append(files, child)
	}
	qmpHost := hosts[0]
	if len(hosts) > 1 {
		r.serial = hosts[1]
	}

	cmd := exec.Command("qemu-system-x86_64", r.args...)
	cmd.Dir = m.dir
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// If the test binary dies (go test's timeout panics without running
		// Cleanup), QEMU must not go on burning a CPU.
		Pdeathsig: syscall.SIGKILL,
		// Its own process group keeps a terminal's Ctrl-C from reaching QEMU
		// behind the harness's back; but an interactive QEMU must stay in
		// the foreground group to read the terminal.
		Setpgid: !m.cfg.Interactive,
	}
	cmd.Stdout, cmd.Stderr = qlog, qlog
	if m.cfg.Interactive {
		cmd.Stdin, cmd.Stdout = os.Stdin, os.Stdout
		cmd.Stderr = io.MultiWriter(qlog, os.Stderr)
	}
	err = cmd.Start()
	// QEMU has its own copies now. Ours must go at once, or QEMU's exit
	// would not close the sockets, and a QEMU that dies at start-up would
	// leave the QMP greeting read below waiting for its timeout.
	closeFiles()
	if err != nil {
		closeAll()
		return fmt.Errorf("%s: starting qemu: %w", m.label, err)
	}
	r.cmd = cmd
	m.run = r

	drained := make(chan struct{})
	if r.serial != nil {
		go func() {
			defer close(drained)
			r.drainConsole(m.consoleLog, m.cfg.Console)
		}()
	} else {
		close(drained)
	}
	qmpDone := make(chan struct{})
	go func() {
		werr := cmd.Wait()
		// QEMU has exited, so the monitor is at EOF: let the reader take
		// the last SHUTDOWN event off it before reporting the reason.
		select {
		case <-qmpDone:
		case <-time.After(2 * time.Second):
		}
		// Likewise the console: its last lines must be in the log
		// before anyone is told QEMU has exited.
		select {
		case <-drained:
		case <-time.After(2 * time.Second):
		}
		r.reasonMu.Lock()
		r.exit = Exit{Code: cmd.ProcessState.ExitCode(), Reason: r.reason}
		r.reasonMu.Unlock()
		r.werr = werr
		qmpHost.Close()
		if r.serial != nil {
			r.serial.Close()
		}
		close(r.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			r.terminate()
		case <-r.done:
		}
	}()

	onEvent := func(name string, data json.RawMessage) {
		if name != "SHUTDOWN" {
			return
		}
		var d struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(data, &d)
		r.reasonMu.Lock()
		r.reason = d.Reason
		r.reasonMu.Unlock()
	}
	q, err := dialQMP(qmpHost, Scale(30*time.Second), onEvent)
	if err != nil {
		close(qmpDone)
		_ = r.kill()
		return fmt.Errorf("%s: qemu did not come up: %v; %s", m.label, err, m.qemuTail())
	}
	r.qmp = q
	go func() { <-q.done; close(qmpDone) }()
	return nil
}

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
	if fw == "" {
		fw = DefaultFirmware
	}
	a := []string{
		"-machine", "q35",
		// One TCG thread for all vCPUs: multi-threaded TCG (QEMU 7.2) once
		// left both vCPUs of a guest spinning in kmem_cache_alloc for good,
		// and with two test packages sharing 2 cores, make test ran in
		// 16m45s this way against 18m33s multi-threaded. A lone guest boots
		// slower (99 s against 71 s for three boots).
		"-accel", "tcg,thread=single",
		"-cpu", "max", // not -svm: that breaks the guest
		"-smp", strconv.Itoa(cpus),
		"-m", strconv.Itoa(mem),
		"-display", "none",
		"-monitor", "none",
		"-chardev", "socket,id=qmp,fd=3",
		"-mon", "chardev=qmp,mode=control",
	}
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
	if m.nicArg != "" {
		a = append(a, "-nic", m.nicArg)
	} else {
		a = append(a, "-nic", "none")
	}
	return append(a, c.ExtraArgs...)
}

func (r *run) drainConsole(logPath string, w io.Writer) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer logf.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.serial.Read(buf)
		if n > 0 {
			_, _ = logf.Write(buf[:n])
			if w != nil {
				_, _ = w.Write(buf[:n])
			}
			select {
			case r.wake <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return
		}
	}
}

func (m *Machine) current() *run {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.run
}

// ShutdownTimeout is how long a guest may take to go down once its work is
// done: generous, since a busy host slows a TCG guest's shutdown many times,
// and it is not what any test measures.
const ShutdownTimeout = 5 * time.Minute

// WaitExit waits for QEMU to exit and says how it ended. It is an error if
// QEMU is still running after timeout (scaled by SLATE_TIMEOUT_SCALE) or
// exited with a non-zero status; the error carries the console's tail.
// After a guest power-off or reboot, Exit.Reason tells which it was. A
// timeout of 0 waits as long as QEMU runs (`make run`).
func (m *Machine) WaitExit(timeout time.Duration) (Exit, error) {
	r := m.current()
	if r == nil {
		return Exit{}, fmt.Errorf("%s: WaitExit: the machine was never booted", m.label)
	}
	if timeout <= 0 {
		<-r.done
	} else {
		scaled := Scale(timeout)
		select {
		case <-r.done:
		case <-time.After(scaled):
			return Exit{}, fmt.Errorf("%s: qemu still running after %s; %s", m.label, scaled, m.consoleTail(errorLines))
		}
	}
	if r.exit.Code != 0 {
		return r.exit, fmt.Errorf("%s: qemu exited: %s (%v); %s; %s", m.label, r.exit, r.werr, m.qemuTail(), m.consoleTail(errorLines))
	}
	return r.exit, nil
}

// Execute runs a QMP command and returns its "return" value. args is
// marshalled to JSON (nil for none). A command QEMU refuses returns a
// *QMPError.
func (m *Machine) Execute(command string, args any) (json.RawMessage, error) {
	r := m.current()
	if r == nil || r.qmp == nil || r.hasExited() {
		return nil, fmt.Errorf("%s: %s: the machine is not running", m.label, command)
	}
	ret, err := r.qmp.execute(command, args, Scale(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.label, err)
	}
	return ret, nil
}

// Quit cuts the power: QMP `quit` ends QEMU at once, with no warning to the
// guest (QEMU itself still flushes the overlay and vars files, so the host
// side is consistent). It waits for QEMU to exit, killing it if needed.
// That is the power-failure step of upgrade tests; Boot powers on again.
func (m *Machine) Quit() error {
	r := m.current()
	if r == nil || r.hasExited() {
		return nil
	}
	_, err := m.Execute("quit", nil)
	if err != nil && !errors.Is(err, errQMPClosed) && !r.hasExited() {
		_ = r.kill()
		return err
	}
	select {
	case <-r.done:
		return nil
	case <-time.After(Scale(30 * time.Second)):
		_ = r.kill()
		return fmt.Errorf("%s: qemu ignored quit; killed it", m.label)
	}
}

// SystemPowerdown presses the ACPI power button; the guest decides what
// to do (systemd powers off; OVMF ignores it). It does not wait.
func (m *Machine) SystemPowerdown() error {
	_, err := m.Execute("system_powerdown", nil)
	return err
}

// SystemReset presses the reset button: an instant reboot with no
// shutdown in the guest. Without AllowReboot, QEMU then exits
// (Exit.Reason "host-qmp-system-reset") as for a guest reboot.
func (m *Machine) SystemReset() error {
	_, err := m.Execute("system_reset", nil)
	return err
}

// Kill ends QEMU with SIGKILL and waits for it. Test cleanup does this.
func (m *Machine) Kill() error {
	r := m.current()
	if r == nil {
		return nil
	}
	return r.kill()
}

func (r *run) kill() error {
	if r.hasExited() {
		return nil
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	return nil
}

// terminate asks QEMU to stop with SIGTERM (it restores the terminal and
// flushes its files), then kills it if it does not.
func (r *run) terminate() {
	if r.hasExited() {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.kill()
	}
}

// Close stops QEMU (Quit, then SIGTERM, then SIGKILL) and removes the work
// dir if StartContext made it.
func (m *Machine) Close() error {
	if r := m.current(); r != nil && !r.hasExited() {
		if r.qmp != nil {
			_, _ = r.qmp.execute("quit", nil, 5*time.Second)
			select {
			case <-r.done:
			case <-time.After(5 * time.Second):
			}
		}
		r.terminate()
	}
	if m.ownDir {
		return os.RemoveAll(m.dir)
	}
	return nil
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

// Dir is the machine's work dir: overlays, vars, console.log, qemu.log
// (QEMU's stderr and each boot's command line).
func (m *Machine) Dir() string { return m.dir }

// ConsoleLog is the path of the console log, which holds every boot's
// output, each after a "--- slate/vm NAME: boot N ---" line.
func (m *Machine) ConsoleLog() string { return m.consoleLog }

// Disk is the path of the first disk as the guest sees it (the overlay),
// for inspecting what the guest wrote once QEMU has exited; "" if none.
func (m *Machine) Disk() string { return m.overlay }

// Vars is the path of the machine's OVMF variable store.
func (m *Machine) Vars() string { return m.vars }

// HostAddr is the host address ("127.0.0.1:PORT") forwarded to guestPort,
// or "" if that port is not forwarded.
func (m *Machine) HostAddr(guestPort int) string {
	hp, ok := m.forwards[guestPort]
	if !ok {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(hp))
}

// qemuTail is the end of QEMU's own output, for errors.
func (m *Machine) qemuTail() string {
	b, err := os.ReadFile(m.qemuLog)
	if err != nil {
		return "no qemu output"
	}
	s := strings.TrimSpace(string(b))
	// Only this boot's part.
	if i := strings.LastIndex(s, "\n--- boot "); i >= 0 {
		s = s[i+1:]
	}
	if j := strings.IndexByte(s, '\n'); j >= 0 && strings.HasPrefix(s, "--- boot ") {
		s = strings.TrimSpace(s[j+1:])
	} else if strings.HasPrefix(s, "--- boot ") {
		s = ""
	}
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	if s == "" {
		return "qemu printed nothing"
	}
	return "qemu said: " + s
}

// Scale multiplies d by SLATE_TIMEOUT_SCALE (a positive float, default 1).
// Every timeout passed to this package is scaled; tests use Scale for
// their own waits too.
func Scale(d time.Duration) time.Duration {
	f, _ := timeoutScale() // Start and StartContext report invalid values
	return time.Duration(float64(d) * f)
}

// timeoutScale reads SLATE_TIMEOUT_SCALE; 1 when unset or invalid.
func timeoutScale() (float64, error) {
	s := os.Getenv("SLATE_TIMEOUT_SCALE")
	if s == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 || f > 1000 {
		return 1, fmt.Errorf("vm: SLATE_TIMEOUT_SCALE=%q: want a positive number", s)
	}
	return f, nil
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

// socketpair returns a connected pair: a net.Conn for the harness and a
// file to hand to QEMU.
func socketpair() (net.Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	host := os.NewFile(uintptr(fds[0]), "host")
	defer host.Close() // FileConn dups it
	conn, err := net.FileConn(host)
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return conn, os.NewFile(uintptr(fds[1]), "qemu"), nil
}

func freePort(proto string) (int, error) {
	if proto == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
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
