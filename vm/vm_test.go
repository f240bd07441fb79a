package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests boot OVMF with no bootable disk, which needs nothing from the
// rest of slate. Under TCG OVMF prints, about 4 s after power-on:
//
//	BdsDxe: failed to load Boot0001 "UEFI QEMU DVD-ROM QM00005 " from ...: Not Found
//	BdsDxe: loading Boot0002 "EFI Internal Shell" from Fv(...)/FvFile(...)
//	BdsDxe: starting Boot0002 "EFI Internal Shell" from Fv(...)/FvFile(...)
//	UEFI Interactive Shell v2.2
//	...
//	Press ESC in 5 seconds to skip startup.nsh or any other key to continue.
//	Shell>
//
// (the DVD-ROM is q35's default CD drive) and the shell's `reset` makes
// the guest reboot, which is enough to exercise every part of the harness.

// startVM creates a machine in t.TempDir() and boots it; vmtest.Start, which
// this package's own tests cannot import.
func startVM(t *testing.T, cfg Config) *Machine {
	t.Helper()
	skipIfUnavailable(t)
	cfg.Dir = t.TempDir()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Kill() })
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	return m
}

func skipIfUnavailable(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU boots do not run with -short")
	}
	if err := Available(); err != nil {
		if os.Getenv("SLATE_REQUIRE_QEMU") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// bootTimeout bounds how long OVMF may take to reach its boot manager.
const bootTimeout = 60 * time.Second

// toShell waits for the UEFI shell's countdown, skips it, and waits for the
// prompt, which has no newline after it.
func toShell(t *testing.T, m *Machine) {
	t.Helper()
	if _, err := m.Expect("Press ESC in", bootTimeout); err != nil {
		t.Fatal(err)
	}
	if err := m.Send("\x1b"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect(regexp.MustCompile(`^Shell> $`), 20*time.Second); err != nil {
		t.Fatal(err)
	}
}

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestBootToShellGuestReset boots to the UEFI shell, measures how long OVMF
// takes, and checks that a reboot by the guest ends QEMU under -no-reboot.
// It also runs on a vars file it provides, which must be written in place.
func TestBootToShellGuestReset(t *testing.T) {
	t.Parallel() // each boots OVMF: ~4 s, mostly on one host core
	skipIfUnavailable(t)
	vars := filepath.Join(t.TempDir(), "my-vars.fd")
	if err := copyFile(DefaultVarsTemplate, vars); err != nil {
		t.Fatal(err)
	}
	before := sha(t, vars)

	start := time.Now()
	m := startVM(t, Config{Vars: vars})
	mt, err := m.Expect(regexp.MustCompile(`BdsDxe: (?:loading|starting) (Boot[0-9A-F]{4}) "([^"]+)"`), bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("OVMF reached its boot manager %.1f s after Start: %q", time.Since(start).Seconds(), mt.Line)
	if mt.Groups[2] != "EFI Internal Shell" {
		t.Errorf("OVMF boots %q (%s), want the EFI Internal Shell", mt.Groups[2], mt.Groups[1])
	}
	toShell(t, m)
	t.Logf("UEFI shell prompt %.1f s after Start", time.Since(start).Seconds())

	if err := m.Send("reset\r"); err != nil {
		t.Fatal(err)
	}
	exit, err := m.WaitExit(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Reason != "guest-reset" || exit.Code != 0 {
		t.Errorf("after the guest's reset under -no-reboot: %s, want status 0, guest-reset", exit)
	}
	if m.Vars() != vars {
		t.Errorf("Vars() = %s, want the given %s", m.Vars(), vars)
	}
	if sha(t, vars) == before {
		t.Errorf("OVMF wrote nothing to the given vars file (it records its boot options at first boot)")
	}
	if err := m.Send("x"); err == nil {
		t.Errorf("Send after exit: no error")
	}
}

// TestAllowReboot checks that with AllowReboot a reset reboots in the same
// QEMU process, and that Quit then ends it.
func TestAllowReboot(t *testing.T) {
	t.Parallel() // each boots OVMF: ~4 s, mostly on one host core
	m := startVM(t, Config{AllowReboot: true})
	// The shell's countdown comes after all of the first boot's BdsDxe lines.
	if _, err := m.Expect("Press ESC in", bootTimeout); err != nil {
		t.Fatal(err)
	}
	if err := m.SystemReset(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect("BdsDxe:", bootTimeout); err != nil {
		t.Fatalf("no second boot after SystemReset: %v", err)
	}
	if _, err := m.Execute("query-status", nil); err != nil {
		t.Fatalf("QEMU is gone after a reset with AllowReboot: %v", err)
	}
	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}
	exit, err := m.WaitExit(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Reason != "host-qmp-quit" {
		t.Errorf("after Quit: %s, want host-qmp-quit", exit)
	}
}

// TestMachineRebootKeepsState powers the same machine on twice: an EFI
// variable the guest sets in the first run must be there in the second,
// and the overlay and vars files must be the same ones.
func TestMachineRebootKeepsState(t *testing.T) {
	t.Parallel() // each boots OVMF: ~4 s, mostly on one host core
	base := filepath.Join(t.TempDir(), "base.raw")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startVM(t, Config{Disk: base, DiskFormat: "raw"})
	overlay, vars := m.Disk(), m.Vars()
	if filepath.Dir(vars) != m.Dir() {
		t.Errorf("fresh vars %s not in the work dir %s", vars, m.Dir())
	}
	toShell(t, m)
	const guid = "5a7e5a7e-0000-4000-8000-000000000001"
	if err := m.Send("setvar SlateTest -guid " + guid + " -nv -bs -rt =736C617465\r"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect(regexp.MustCompile(`^Shell> $`), 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := m.Quit(); err != nil { // a power cut, not a clean shutdown
		t.Fatal(err)
	}
	if sha(t, vars) == sha(t, DefaultVarsTemplate) {
		t.Errorf("the first run left the vars file as the template")
	}

	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if m.Disk() != overlay || m.Vars() != vars {
		t.Errorf("second boot on %s, %s; want the first's %s, %s", m.Disk(), m.Vars(), overlay, vars)
	}
	toShell(t, m)
	if err := m.Send("dmpstore SlateTest -guid " + guid + "\r"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect(regexp.MustCompile(`73 6C 61 74 65 +\*slate\*`), 20*time.Second); err != nil {
		t.Fatalf("the variable set in the first run is gone: %v", err)
	}
	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}

	log, err := os.ReadFile(m.ConsoleLog())
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "--- slate/vm: boot "); n != 2 {
		t.Errorf("console log has %d boot markers, want 2 (one log across boots)", n)
	}
}

// TestOverlayKeepsBase writes through the guest's disk and checks that
// the base image, raw or qcow2, is unchanged while the overlay has the data.
func TestOverlayKeepsBase(t *testing.T) {
	skipIfUnavailable(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "base.raw")
	content := make([]byte, 4<<20)
	if _, err := rand.Read(content); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(raw, content, 0o644); err != nil {
		t.Fatal(err)
	}
	qcow := filepath.Join(dir, "base.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}

	for _, tc := range []struct {
		name, base, format string
		size               int64
	}{
		{"raw", raw, "raw", 0},
		{"qcow2-detected-and-grown", qcow, "", 8 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := sha(t, tc.base)
			m := startVM(t, Config{Disk: tc.base, DiskFormat: tc.format, DiskSize: tc.size})
			// Write 64 KiB of 0xab at offset 0 through QEMU's block layer,
			// as the guest would.
			if _, err := m.Execute("human-monitor-command", map[string]string{
				"command-line": `qemu-io disk0 "write -P 0xab 0 64k"`,
			}); err != nil {
				t.Fatal(err)
			}
			if err := m.Quit(); err != nil {
				t.Fatal(err)
			}
			if sha(t, tc.base) != before {
				t.Fatalf("the base image %s changed", tc.base)
			}
			out := filepath.Join(t.TempDir(), "flat.raw")
			if b, err := exec.Command("qemu-img", "convert", "-O", "raw", m.Disk(), out).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v: %s", err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want := append(bytes.Repeat([]byte{0xab}, 64<<10), content[64<<10:]...)
			if tc.size > int64(len(content)) {
				want = append(want, make([]byte, tc.size-int64(len(content)))...)
			}
			if len(got) != len(want) {
				t.Fatalf("overlay is %d bytes, want %d", len(got), len(want))
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("overlay content is not the guest's write over the base")
			}
		})
	}
}

// TestQMP checks commands, errors, a reply larger than 64 KiB, and that a
// reset under -no-reboot ends QEMU.
func TestQMP(t *testing.T) {
	m := startVM(t, Config{})
	ret, err := m.Execute("query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(ret, &st); err != nil || st.Status != "running" {
		t.Errorf("query-status = %s (%v), want running", ret, err)
	}

	_, err = m.Execute("no-such-command", nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v, want a CommandNotFound QMPError", err)
	}

	schema, err := m.Execute("query-qmp-schema", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(schema) < 64<<10 {
		t.Logf("query-qmp-schema is only %d bytes", len(schema))
	}

	if err := m.SystemPowerdown(); err != nil { // OVMF ignores it; QEMU must accept it
		t.Fatal(err)
	}
	if err := m.SystemReset(); err != nil {
		t.Fatal(err)
	}
	exit, err := m.WaitExit(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Reason != "host-qmp-system-reset" {
		t.Errorf("SystemReset under -no-reboot: %s, want host-qmp-system-reset", exit)
	}
	if _, err := m.Execute("query-status", nil); err == nil {
		t.Errorf("Execute after exit: no error")
	}
}

// TestOptions checks fw_cfg, networking and sizing reach QEMU, and that
// QEMU's refusal of an argument comes back as an error with its message.
func TestOptions(t *testing.T) {
	skipIfUnavailable(t)
	cfgFile := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(cfgFile, []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startVM(t, Config{
		FwCfg:        map[string]string{"opt/slate/config": cfgFile},
		FwCfgStrings: map[string]string{"opt/slate/note": "a, b\nc"},
		Forwards:     []Forward{{GuestPort: 22}},
		MemoryMiB:    512,
		CPUs:         1,
	})
	ret, err := m.Execute("query-memory-size-summary", nil)
	if err != nil {
		t.Fatal(err)
	}
	var mem struct {
		Base int64 `json:"base-memory"`
	}
	if err := json.Unmarshal(ret, &mem); err != nil || mem.Base != 512<<20 {
		t.Errorf("memory = %s, want 512 MiB", ret)
	}
	ret, err = m.Execute("query-cpus-fast", nil)
	if err != nil {
		t.Fatal(err)
	}
	var cpus []json.RawMessage
	if err := json.Unmarshal(ret, &cpus); err != nil || len(cpus) != 1 {
		t.Errorf("cpus = %s, want 1", ret)
	}

	addr := m.HostAddr(22)
	if addr == "" {
		t.Fatal("HostAddr(22) is empty")
	}
	ret, err = m.Execute("human-monitor-command", map[string]string{"command-line": "info usernet"})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(addr, ":")
	if s := string(ret); !strings.Contains(s, "HOST_FORWARD") || !strings.Contains(s, port) {
		t.Errorf("info usernet has no forward of %s:\n%s", addr, s)
	}

	// There is no QMP query for fw_cfg files; the guest reads them. Here:
	// QEMU accepted both entries, and the string entry's file is exact.
	args, err := os.ReadFile(filepath.Join(m.Dir(), "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name=opt/slate/config,file=" + cfgFile, "name=opt/slate/note,file="} {
		if !strings.Contains(string(args), want) {
			t.Errorf("QEMU's command line lacks -fw_cfg %s", want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(m.Dir(), "fw_cfg0")); err != nil || string(b) != "a, b\nc" {
		t.Errorf("fw_cfg string entry file = %q, %v", b, err)
	}

	// QEMU refuses a fw_cfg entry whose file is missing; its words must
	// reach the caller.
	_, err = StartContext(t.Context(), Config{
		Dir:       t.TempDir(),
		ExtraArgs: []string{"-fw_cfg", "name=opt/slate/missing,file=/nonexistent/slate-config"},
	})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/slate-config") {
		t.Errorf("StartContext with a bad -fw_cfg: %v, want QEMU's complaint", err)
	}
}

// TestExpectExitEndsWait checks that Expect gives up as soon as QEMU exits.
func TestExpectExitEndsWait(t *testing.T) {
	m := startVM(t, Config{})
	go func() {
		time.Sleep(500 * time.Millisecond)
		_ = m.Quit()
	}()
	start := time.Now()
	_, err := m.Expect("this never appears", time.Minute)
	if err == nil || !strings.Contains(err.Error(), "qemu exited") {
		t.Errorf("Expect after exit: %v", err)
	}
	if d := time.Since(start); d > Scale(10*time.Second) {
		t.Errorf("Expect waited %s after QEMU exited", d)
	}
}

func TestScale(t *testing.T) {
	t.Setenv("SLATE_TIMEOUT_SCALE", "2.5")
	if got := Scale(2 * time.Second); got != 5*time.Second {
		t.Errorf("Scale(2s) = %s with 2.5, want 5s", got)
	}
	t.Setenv("SLATE_TIMEOUT_SCALE", "fast")
	if got := Scale(time.Second); got != time.Second {
		t.Errorf("Scale with an invalid value = %s, want 1s", got)
	}
	skipIfUnavailable(t)
	if _, err := StartContext(t.Context(), Config{Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "SLATE_TIMEOUT_SCALE") {
		t.Errorf("StartContext with an invalid scale: %v", err)
	}
}

func TestCleanLine(t *testing.T) {
	in := "\x1b[08;01H\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m\x1b[37m\x1b[40m\r\n"
	if got := cleanLine([]byte(in)); got != "Shell> " {
		t.Errorf("cleanLine = %q", got)
	}
}

// A Machine made for a program (StartContext) stops with its context and
// cleans up after itself.
func TestStartContext(t *testing.T) {
	t.Parallel() // each boots OVMF: ~4 s, mostly on one host core
	skipIfUnavailable(t)
	ctx, cancel := context.WithCancel(t.Context())
	var console bytes.Buffer
	var mu sync.Mutex
	m, err := StartContext(ctx, Config{Console: writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return console.Write(p)
	})})
	if err != nil {
		t.Fatal(err)
	}
	dir := m.Dir()
	if _, err := m.Expect("BdsDxe:", bootTimeout); err != nil {
		t.Fatal(err)
	}
	cancel()
	exit, err := m.WaitExit(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Reason != "host-signal" {
		t.Errorf("after the context ended: %s, want host-signal", exit)
	}
	mu.Lock()
	if !strings.Contains(console.String(), "BdsDxe:") {
		t.Errorf("Console writer did not get the output")
	}
	mu.Unlock()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s", dir)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestExpectLines checks Expect's reading rules on a console log written by
// hand: submatches, the read position, lines arriving in pieces, a prompt
// with no newline, and giving up once QEMU has exited.
func TestExpectLines(t *testing.T) {
	m := &Machine{label: "fake", consoleLog: filepath.Join(t.TempDir(), "console.log")}
	r := &run{wake: make(chan struct{}, 1), done: make(chan struct{})}
	m.run = r
	f, err := os.Create(m.consoleLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	write := func(s string) {
		if _, err := f.WriteString(s); err != nil {
			t.Error(err)
		}
	}

	write("one\r\ntwo 42\r\nthree\r\n")
	mt, err := m.Expect(regexp.MustCompile(`two (\d+)`), time.Second)
	if err != nil || mt.Line != "two 42" || len(mt.Groups) != 2 || mt.Groups[1] != "42" {
		t.Fatalf("Expect = %+v, %v", mt, err)
	}
	if _, err := m.Expect("one", 300*time.Millisecond); err == nil {
		t.Errorf("Expect matched a line before the read position")
	} else if !strings.Contains(err.Error(), "three") {
		t.Errorf("timeout error lacks the console's tail: %v", err)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		write(`BdsDxe: loading Boot0002 "EFI`)
		time.Sleep(100 * time.Millisecond)
		write(" Internal Shell\" from Fv\r\n")
	}()
	mt, err = m.Expect("BdsDxe: loading", 5*time.Second)
	<-done
	if err != nil || mt.Line != `BdsDxe: loading Boot0002 "EFI Internal Shell" from Fv` {
		t.Errorf("a line written in pieces: %q, %v; want it whole", mt.Line, err)
	}

	write("\x1b[08;01H\x1b[1m\x1b[33mShell> \x1b[0m")
	if mt, err := m.Expect(regexp.MustCompile(`^Shell> $`), 5*time.Second); err != nil {
		t.Errorf("a prompt with no newline: %v", err)
	} else if mt.Line != "Shell> " {
		t.Errorf("prompt line = %q", mt.Line)
	}

	r.exit = Exit{Code: 0, Reason: "guest-shutdown"}
	close(r.done)
	start := time.Now()
	if _, err := m.Expect("never", time.Minute); err == nil || !strings.Contains(err.Error(), "guest-shutdown") {
		t.Errorf("Expect after exit: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Expect after exit took %s", d)
	}
}

// fakeVars is an OVMF variable store template, so that machines can be made
// (New) where OVMF is not installed.
func fakeVars(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vars.fd")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Auto is KVM only when the probe finds it usable; an explicit choice is
// taken as it is; QEMU gets the matching -accel and -cpu. No QEMU needed.
func TestAccel(t *testing.T) {
	usable, broken := func() error { return nil }, func() error { return errors.New("/dev/kvm: permission denied") }
	for _, tc := range []struct {
		want  string
		probe func() error
		got   string
	}{
		{"", usable, AccelKVM},
		{"", broken, AccelTCG},
		{AccelKVM, broken, AccelKVM},
		{AccelTCG, usable, AccelTCG},
	} {
		if got, err := resolveAccel(tc.want, tc.probe); err != nil || got != tc.got {
			t.Errorf("resolveAccel(%q) = %q, %v; want %q", tc.want, got, err, tc.got)
		}
	}
	if _, err := resolveAccel("hvf", usable); err == nil || !strings.Contains(err.Error(), `"hvf"`) {
		t.Errorf("resolveAccel(hvf): %v", err)
	}

	orig := probeKVM
	t.Cleanup(func() { probeKVM = orig })
	for probe, want := range map[string]struct {
		accel string
		args  string
	}{
		"usable": {AccelKVM, "-accel kvm -cpu host"},
		"broken": {AccelTCG, "-accel tcg,thread=single -cpu max"},
	} {
		probeKVM = map[string]func() error{"usable": usable, "broken": broken}[probe]
		m, err := New(Config{Dir: t.TempDir(), VarsTemplate: fakeVars(t)})
		if err != nil {
			t.Fatal(err)
		}
		if m.Accel() != want.accel {
			t.Errorf("KVM %s: Accel() = %q, want %q", probe, m.Accel(), want.accel)
		}
		if args := strings.Join(m.args(), " "); !strings.Contains(args, want.args) {
			t.Errorf("KVM %s: QEMU's arguments lack %q: %s", probe, want.args, args)
		}
	}
	t.Logf("this host: %v", orig())
}

func TestHardwareVirt(t *testing.T) {
	for info, want := range map[string]bool{
		"processor\t: 0\nflags\t\t: fpu vme vmx sse\n":       true,
		"flags\t\t: fpu svm\nflags\t\t: fpu\n":               true,
		"processor\t: 0\nflags\t\t: fpu hypervisor sse4_2\n": false,
		"": false,
	} {
		if got := hardwareVirt([]byte(info)); got != want {
			t.Errorf("hardwareVirt(%q) = %v, want %v", info, got, want)
		}
	}
}

// Persist attaches the first disk itself, no overlay, with flushes that
// reach the host; the guest's writes land in it.
func TestPersist(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "node.raw")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Dir: t.TempDir(), VarsTemplate: fakeVars(t), Disk: raw, DiskFormat: "raw", Persist: true, DiskSize: 2 << 20}); err == nil || !strings.Contains(err.Error(), "DiskSize") {
		t.Errorf("Persist with DiskSize: %v", err)
	}
	cfg := Config{Dir: t.TempDir(), VarsTemplate: fakeVars(t), Disk: raw, DiskFormat: "raw", Persist: true}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Disk() != raw {
		t.Errorf("Disk() = %q, want %q", m.Disk(), raw)
	}
	if args := strings.Join(m.args(), " "); !strings.Contains(args, "file="+raw+",format=raw,cache=writeback,if=virtio,id=disk0") {
		t.Errorf("QEMU's arguments do not attach %s in place: %s", raw, args)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "disk0.qcow2")); err == nil {
		t.Errorf("Persist made an overlay")
	}

	// The guest's write, through QEMU's block layer, reaches the file.
	cfg.Dir, cfg.VarsTemplate = "", ""
	m = startVM(t, cfg)
	if _, err := m.Execute("human-monitor-command", map[string]string{
		"command-line": `qemu-io disk0 "write -P 0xab 0 64k"`,
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:64<<10], bytes.Repeat([]byte{0xab}, 64<<10)) || len(got) != 1<<20 {
		t.Errorf("the guest's write did not land in %s", raw)
	}
}
