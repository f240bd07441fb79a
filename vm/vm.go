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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Machine is one virtual machine: its disks' overlays, its EFI variables
// and its console log, and at most one running QEMU process at a time.
// Its methods are safe for concurrent use.
type Machine struct {
	cfg    Config
	label  string
	dir    string
	ownDir bool

	accel      string   // AccelKVM or AccelTCG
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

// New creates a machine in cfg.Dir, or in a new temporary directory that
// Close removes, without booting it.
func New(cfg Config) (*Machine, error) {
	if _, err := timeoutScale(); err != nil {
		return nil, err // a typo must not silently change every timeout
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
	return m, nil
}

// StartContext creates a machine (New) and boots it, for programs (slate
// test, make demo; slate run calls New and Boot, to say how it boots in
// between). ctx bounds this boot: when it is done, QEMU is terminated. The
// caller must Close the machine.
func StartContext(ctx context.Context, cfg Config) (*Machine, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	m, err := New(cfg)
	if err != nil {
		return nil, err
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
	for _, f := range []string{DefaultFirmware, DefaultVarsTemplate, SecureBootFirmware} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("vm: OVMF firmware %s is missing (Debian: apt-get install ovmf)", f)
		}
	}
	return nil
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
	if m.accel, err = resolveAccel(cfg.Accel, probeKVM); err != nil {
		return nil, err
	}
	if cfg.Persist && cfg.DiskSize != 0 {
		return nil, errors.New("DiskSize grows an overlay: not with Persist")
	}

	// Disks, each through an overlay unless asked otherwise.
	type disk struct {
		Disk
		size int64
	}
	var disks []disk
	if cfg.Disk != "" {
		disks = append(disks, disk{Disk{Path: cfg.Disk, Format: cfg.DiskFormat, Bus: cfg.DiskBus, InPlace: cfg.Persist}, cfg.DiskSize})
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
		// cache=unsafe: the guest's flushes do not reach the host disk. A
		// guest's sync then cannot queue behind another test's gigabytes of
		// writes (in CI a shutdown took 2 min so); a power cut is still the
		// guest's (QMP quit), and QEMU writes out what it holds when it quits.
		// A persisted disk is the user's node, which must survive a host
		// crash as a real one would: there flushes go through.
		cache := "unsafe"
		if i == 0 && cfg.Disk != "" {
			m.overlay = path
			if cfg.Persist {
				cache = "writeback"
			}
		}
		a, err := driveArgs(d.Bus, fmt.Sprintf("disk%d", i), fmt.Sprintf("file=%s,format=%s,cache=%s", optEscape(path), format, cache), &sataPorts, &scsiController)
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
	if cfg.Network || len(cfg.Forwards) > 0 || cfg.GuestNet != "" || len(cfg.GuestForwards) > 0 {
		nic := "user,model=virtio-net-pci"
		if cfg.GuestNet != "" {
			nic += ",net=" + cfg.GuestNet
		}
		if len(cfg.GuestForwards) > 0 {
			self, err := os.Executable()
			if err != nil {
				return nil, err
			}
			for _, g := range cfg.GuestForwards {
				// cmd: runs a process per connection (a chardev would take
				// one connection for the machine's whole life).
				nic += fmt.Sprintf(",guestfwd=tcp:%s-cmd:%s %s=%s", g.Addr, optEscape(self), guestForwardArg, g.To)
			}
		}
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

// Dir is the machine's work dir: overlays, vars, console.log, qemu.log
// (QEMU's stderr and each boot's command line).
func (m *Machine) Dir() string { return m.dir }

// ConsoleLog is the path of the console log, which holds every boot's
// output, each after a "--- slate/vm NAME: boot N ---" line.
func (m *Machine) ConsoleLog() string { return m.consoleLog }

// Disk is the path of the first disk as the guest sees it (the overlay, or
// Config.Disk itself with Persist), for inspecting what the guest wrote
// once QEMU has exited; "" if none.
func (m *Machine) Disk() string { return m.overlay }

// Accel is the accelerator the machine runs on, AccelKVM or AccelTCG: what
// Config.Accel asked for, or what auto found usable on this host.
func (m *Machine) Accel() string { return m.accel }

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
