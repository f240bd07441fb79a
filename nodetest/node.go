package nodetest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slate-os/slate/agent/status"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/vm"
)

// Timeouts, before SLATE_TIMEOUT_SCALE (vm.Scale). Under TCG on two
// shared cores a boot to the runner takes 20–60 s; an upgrade moves the
// root through QEMU's user network, the slot and a verity read-back.
var (
	bootTimeout    = 5 * time.Minute
	upgradeTimeout = 10 * time.Minute
	// exitTimeout bounds a whole boot from power-on to QEMU's exit.
	exitTimeout = 12 * time.Minute
)

// session is one scenario's run: its machines and what they did.
type session struct {
	*env
	name, dir string
	board     *board

	mu       sync.Mutex
	machines []*vm.Machine
	boots    []BootSummary
	notes    []string
}

// note records what a scenario saw, for the report.
func (s *session) note(format string, args ...any) {
	s.mu.Lock()
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

// node is one machine of a scenario.
type node struct {
	s     *session
	m     *vm.Machine
	ctx   context.Context
	label string
	start time.Time // this boot's power-on
}

// start powers on a new machine on V1's disk with config and script.
func (s *session) start(ctx context.Context, label string, config []byte, script string) (*node, error) {
	name, dir := s.name, s.dir
	if label != "" {
		name += "-" + label
		dir = filepath.Join(s.dir, label)
	}
	m, err := vm.New(vm.Config{
		Name: name, Dir: dir,
		Disk: s.o.From.Disk, DiskFormat: s.o.From.Format,
		MemoryMiB: s.o.MemoryMiB, CPUs: s.o.CPUs, Network: true,
		FwCfgStrings: map[string]string{FwCfgConfig: string(config), FwCfgScript: script},
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.machines = append(s.machines, m)
	s.mu.Unlock()
	n := &node{s: s, m: m, ctx: ctx, label: name}
	return n, n.power()
}

func (n *node) power() error {
	n.start = time.Now()
	n.s.board.set(n.s.name, fmt.Sprintf("boot %d", len(n.s.boots)+1))
	return n.m.Boot(n.ctx)
}

// next powers the machine on again, with a new script and config where
// they are not empty.
func (n *node) next(script string, config []byte) error {
	if script != "" {
		if err := n.m.SetFwCfgString(FwCfgScript, script, false); err != nil {
			return err
		}
	}
	if config != nil {
		if err := n.m.SetFwCfgString(FwCfgConfig, string(config), false); err != nil {
			return err
		}
	}
	return n.power()
}

// bootRun is one boot as the console showed it.
type bootRun struct {
	N             int
	Slot, Version string // from the init's "slot X, image version Y" line
	Lines         []string
	Script        *scriptResult // nil if the runner never began
	Exit          vm.Exit
}

var initSlotRe = regexp.MustCompile(`slate-init: slot ([ab]), image version "([^"]*)"`)

// Has says whether a console line of the boot contains s.
func (b *bootRun) Has(s string) bool {
	for _, l := range b.Lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func (b *bootRun) String() string {
	if b.Slot == "" {
		return fmt.Sprintf("boot %d, which never reached slate's init", b.N)
	}
	return fmt.Sprintf("boot %d: slot %s (%s)", b.N, b.Slot, b.Version)
}

// wait waits until the current boot ends (the guest reboots or powers off)
// and reads what it did.
func (n *node) wait(timeout time.Duration) (*bootRun, error) {
	exit, err := n.m.WaitExit(timeout)
	if err != nil {
		return nil, err
	}
	return n.record(exit, exit.Reason)
}

// cut cuts the power and reads what the boot did up to then.
func (n *node) cut() (*bootRun, error) {
	if err := n.m.Quit(); err != nil {
		return nil, err
	}
	return n.record(vm.Exit{Reason: "power cut"}, "power cut")
}

func (n *node) record(exit vm.Exit, ended string) (*bootRun, error) {
	lines, err := n.m.BootLines()
	if err != nil {
		return nil, err
	}
	b := &bootRun{Lines: lines, Exit: exit, Script: parseScript(lines)}
	for _, l := range lines {
		if g := initSlotRe.FindStringSubmatch(l); g != nil {
			b.Slot, b.Version = g[1], g[2]
			break
		}
	}
	n.s.mu.Lock()
	b.N = len(n.s.boots) + 1
	n.s.boots = append(n.s.boots, BootSummary{N: b.N, Slot: b.Slot, Version: b.Version, Ended: ended,
		Seconds: time.Since(n.start).Round(100 * time.Millisecond).Seconds(), Runner: b.Script != nil})
	n.s.mu.Unlock()
	return b, nil
}

// expect waits for a console line of the running boot.
func (n *node) expect(re *regexp.Regexp, timeout time.Duration) (vm.Match, error) {
	return n.m.Expect(re, timeout)
}

// closeAll stops every machine of the session.
func (s *session) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.machines {
		_ = m.Close()
	}
}

// keepLogs removes the machines' disks and variables, keeping their
// console logs, and says where they are.
func (s *session) keepLogs() string {
	var logs []string
	for _, m := range s.machines {
		entries, _ := os.ReadDir(m.Dir())
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".log") {
				os.RemoveAll(filepath.Join(m.Dir(), e.Name()))
			}
		}
		logs = append(logs, m.ConsoleLog())
	}
	return strings.Join(logs, " ")
}

// Judging what a boot says.

// runnerErr explains a boot whose runner did not run: the init's verdict
// on the config when it refused it, else the console's last lines.
func (b *bootRun) runnerErr() error {
	for _, l := range b.Lines {
		if strings.Contains(l, "nothing applied") {
			return fmt.Errorf("%s: the node config was not applied, so the test runner could not run: %s", b, strings.TrimSpace(l))
		}
	}
	return fmt.Errorf("%s: the test runner did not run (%s); the console's last lines:\n%s", b, b.Exit.Reason, tail(b.Lines, 25))
}

// ran checks that the runner ran the boot's script through the probe and
// the user's checks. Its end may be missing: a script whose agent command
// reboots the node is stopped with it.
func (b *bootRun) ran() error {
	if b.Script == nil {
		return b.runnerErr()
	}
	if b.Script.Get("ETC") == "" {
		return fmt.Errorf("%s: the test script stopped before the node's state was read; its output:\n%s", b, tail(b.Script.Lines, 25))
	}
	return nil
}

// status decodes the `slate status --json` the probe printed.
func (b *bootRun) status() (*status.Status, error) {
	raw, err := base64.StdEncoding.DecodeString(b.Script.Get("STATUS"))
	if err == nil && len(raw) == 0 {
		err = fmt.Errorf("empty")
	}
	var st status.Status
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: slate status --json: %v; %s", b, err, strings.Join(grep(b.Script.Lines, "status-err: "), "; "))
	}
	return &st, nil
}

// record decodes the boot record the probe printed.
func (b *bootRun) record() (*record.Record, error) {
	raw, err := base64.StdEncoding.DecodeString(b.Script.Get("RECORD"))
	var rec record.Record
	if err == nil {
		err = json.Unmarshal(raw, &rec)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: /run/slate/boot.json: %v", b, err)
	}
	return &rec, nil
}

// healthy is what every boot that reaches the runner must show: its health
// check good, no failed unit, the root read-only, and the user's checks
// passing.
func (s *session) healthy(b *bootRun) error {
	// A boot on trial that fails its check reboots at once, cutting the
	// runner short: the agent's verdict on the console says why.
	// (Only this slot's: a later boot may quote an earlier one's.)
	for _, l := range b.Lines {
		if _, v, ok := strings.Cut(l, "slate health: slot "+b.Slot+" "); ok {
			if i := strings.Index(v, "NOT healthy"); i >= 0 {
				return fmt.Errorf("%s: %s", b, strings.TrimSpace(v[i:]))
			}
		}
	}
	if err := b.ran(); err != nil {
		return err
	}
	var problems []string
	if h := b.Script.Get("HEALTH"); h != "active" {
		problems = append(problems, fmt.Sprintf("slate-health.service is %s, not active", h))
	}
	st, err := b.status()
	if err != nil {
		return err
	}
	if st.Health == nil || st.Health.Result != "good" {
		why := "no verdict"
		if st.Health != nil {
			why = fmt.Sprintf("%s: %s", st.Health.Result, st.Health.Reason)
		}
		problems = append(problems, "health check "+why)
	}
	if f := strings.TrimSpace(b.Script.Get("FAILED")); f != "" {
		problems = append(problems, "failed units: "+f)
	}
	if opts := b.Script.Get("ROOT"); !hasOpt(opts, "ro") {
		problems = append(problems, fmt.Sprintf("the root is mounted %q, not read-only", opts))
	}
	for i, c := range s.o.Checks {
		if code := b.Script.Get("CHECK-" + strconv.Itoa(i)); code != "0" {
			if code == "" {
				code = "nothing (the script stopped first)"
			}
			out := grep(b.Script.Lines, "check "+shellSafe(c.Name)+": ")
			problems = append(problems, fmt.Sprintf("check %s exited %q:\n%s", c.Name, code, strings.Join(out, "\n")))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: %s", b, strings.Join(problems, "; "))
	}
	return nil
}

// on checks that b ran slot slot, with version (if not "").
func (b *bootRun) on(slot, version string) error {
	if b.Slot != slot || version != "" && b.Version != version {
		want := "slot " + slot
		if version != "" {
			want += " (" + version + ")"
		}
		return fmt.Errorf("%s, want %s", b, want)
	}
	return nil
}

func slotInfo(st *status.Status, slot string) *status.Slot {
	for i := range st.Slots {
		if string(st.Slots[i].Slot) == slot {
			return &st.Slots[i]
		}
	}
	return nil
}

func hasOpt(opts, o string) bool {
	for _, x := range strings.Split(opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

func grep(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}
