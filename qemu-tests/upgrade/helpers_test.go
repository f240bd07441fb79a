package upgrade_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/vm"
	"github.com/slate-os/slate/vm/vmtest"
)

// FwCfgConfig is the fw_cfg entry the init reads the node config from.
const FwCfgConfig = "opt/slate/config"

// Timeouts, before SLATE_TIMEOUT_SCALE. Under TCG on two shared cores a
// boot to the test script takes 20–60 s; an upgrade moves ~100 MB through
// QEMU's user network, the slot and a verity read-back.
var (
	bootTimeout    = 5 * time.Minute
	upgradeTimeout = 10 * time.Minute
	// exitTimeout bounds a whole boot seen from power-on to QEMU's exit:
	// trial boots that panic (panic=10) or fail their health check and reboot.
	exitTimeout = 12 * time.Minute
)

// testDir holds the package's shared files (registry blobs, snapshots);
// testnode.Cleanup removes it.
func testDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("slate-qemu-tests-%d", os.Getpid()))
}

// nodeConfig points the agent at the test registry, requires the demo app
// for a good boot and gives the guest DHCP on QEMU's user network
// (10.0.2.15; the host is 10.0.2.2).
func nodeConfig(r *testReg) string { return nodeConfigFor(r.Source(), "") }

// nodeConfigFor is nodeConfig with update.source source and extra
// top-level fields.
func nodeConfigFor(source, extra string) string {
	return fmt.Sprintf(`apiVersion: slate.dev/v1alpha1
kind: NodeConfig
network:
  - name: 10-dhcp.network
    contents: |
      [Match]
      Name=en*
      [Network]
      DHCP=yes
update:
  source: %s
  insecure: true
health:
  requiredUnits: [%s]
  timeout: 3m
`, source, demoApp) + extra
}

// testKey signs every artifact the tests push (ECDSA P-256, cosign's
// default); every test image trusts it (see image), so every upgrade in
// these tests checks a signature, whatever the node config.
var testKey = sync.OnceValue(func() crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

func testPublicKey() string {
	b, err := signature.MarshalPublicKey(testKey().Public())
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(b))
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// prelude defines the shell functions the scripts use. It first keeps the
// kernel's messages off the console (they stay in the journal): printk
// writes to the serial port directly and can land in the middle of a
// script's line, such as a long base64 status.
const prelude = `
dmesg -n 1
partdev() { for u in /sys/class/block/*/uevent; do if grep -qx "PARTNAME=$1" "$u"; then echo "/dev/$(sed -n 's/^DEVNAME=//p' "$u")"; return; fi; done; }
version() { echo "VERSION=$(cat ` + VersionFile + ` 2>/dev/null || echo none)"; }
waitnet() {
	i=0
	while ! ip -4 addr show | grep -q 'inet 10.0.2.15/'; do
		i=$((i+1)); if [ $i -ge 120 ]; then echo "NET=none"; ip addr; return; fi; sleep 1
	done
	echo NET=up
}
# waithealth waits for this boot's assessment: slate-health done, and on a
# counted boot systemd-bless-boot too (it runs after boot-complete.target).
waithealth() {
	i=0
	while [ $i -lt 600 ]; do
		h=$(systemctl is-active slate-health.service)
		j=$(systemctl list-jobs --no-legend 2>/dev/null | grep -c -e boot-complete.target -e systemd-bless-boot.service)
		if [ "$h" != activating ] && [ "$h" != inactive ] && [ "$j" = 0 ]; then break; fi
		sleep 1; i=$((i+1))
	done
	echo "HEALTH=$h"
	echo "BLESS=$(systemctl is-active systemd-bless-boot.service)"
}
# status prints slate status --json as KEY=<base64> (default STATUS), and the
# text status for the log.
status() {
	echo "${1:-STATUS}=$(slate status --json 2>/run/status.err | base64 -w0)"
	sed 's/^/status-err: /' /run/status.err
	slate status 2>&1 | sed 's/^/status: /'
}
# agent runs an agent command that reboots the node when it succeeds; if it
# returns instead, the script says how and powers the node off, so the test
# sees it at once rather than at a timeout.
agent() { name=$1; shift; "$@"; rc=$?; echo "$name-EXIT=$rc"; echo poweroff > /run/slate-test.after; }
# try runs a command that is expected to fail, and prints its exit status and
# output as EXIT-NAME and OUT-NAME (base64).
try() { n=$1; shift; "$@" > /run/out 2>&1; echo "EXIT-$n=$?"; sed "s/^/$n: /" /run/out; echo "OUT-$n=$(base64 -w0 < /run/out)"; }
varsum() { echo "VARSUM=$(sha256sum < /var/lib/slate-test/kept 2>/dev/null | cut -d' ' -f1)"; }
`

// probe starts every script: what runs, and its health.
const probe = prelude + `
version
` + testnode.PrintRecord + `
waithealth
`

// startNode powers on a node on disk with the test node config and script.
// vars is the OVMF variable store to use in place, or "" for a fresh one.
func startNode(t *testing.T, name, disk, format, vars, script string) *vm.Machine {
	t.Helper()
	return startNodeConfig(t, name, disk, format, vars, script, nodeConfig(testRegistry(t)))
}

func startNodeConfig(t *testing.T, name, disk, format, vars, script, config string) *vm.Machine {
	t.Helper()
	return vmtest.Start(t, vm.Config{
		Name: name, Disk: disk, DiskFormat: format, Vars: vars, Network: true,
		FwCfgStrings: map[string]string{testnode.FwCfgTest: script, FwCfgConfig: config},
	})
}

// freshV1 powers on a new node from the v1 disk.
func freshV1(t *testing.T, name, script string) *vm.Machine {
	t.Helper()
	v1 := image(t, "v1")
	return startNode(t, name, v1.Disk, "raw", "", script)
}

// snapshot is a powered-off node: its disk (a qcow2 overlay over the v1
// disk) and its EFI variables, to start further nodes from.
type snapshot struct{ disk, vars string }

// takeSnapshot copies m's disk overlay and variables once QEMU has exited.
func takeSnapshot(t *testing.T, m *vm.Machine, name string) snapshot {
	t.Helper()
	dir := filepath.Join(testDir(), "snapshots", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := snapshot{filepath.Join(dir, "disk.qcow2"), filepath.Join(dir, "vars.fd")}
	testnode.Cmd(t, "cp", "--sparse=always", m.Disk(), s.disk)
	testnode.Cmd(t, "cp", m.Vars(), s.vars)
	return s
}

// start powers on a new node from s (s itself is never written).
func (s snapshot) start(t *testing.T, name, script string) *vm.Machine {
	t.Helper()
	return s.startConfig(t, name, script, nodeConfig(testRegistry(t)))
}

// startConfig is start with another node config.
func (s snapshot) startConfig(t *testing.T, name, script, config string) *vm.Machine {
	t.Helper()
	vars := filepath.Join(t.TempDir(), "vars.fd")
	testnode.Cmd(t, "cp", s.vars, vars)
	return startNodeConfig(t, name, s.disk, "qcow2", vars, script, config)
}

// bootRun is one boot as the console showed it.
type bootRun struct {
	Slot, Version string // from the init's "slot X, image version Y" line
	Lines         []string
	Script        *testnode.Result // nil if the test script never started
	Ended         bool             // the script printed its end marker
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
		return "a boot that never reached the init"
	}
	return fmt.Sprintf("slot %s (%s), %s", b.Slot, b.Version, b.Exit)
}

// waitBoot waits until the current boot ends (the guest reboots or powers
// off) and reads what it did.
func waitBoot(t *testing.T, m *vm.Machine, timeout time.Duration) *bootRun {
	t.Helper()
	exit, err := m.WaitExit(timeout)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := m.BootLines()
	if err != nil {
		t.Fatal(err)
	}
	b := &bootRun{Lines: lines, Exit: exit}
	for _, l := range lines {
		if g := initSlotRe.FindStringSubmatch(l); g != nil {
			b.Slot, b.Version = g[1], g[2]
			break
		}
	}
	b.Script, b.Ended = testnode.ParseResult(lines)
	return b
}

// nextBoot powers m on again, with a new test script if script is not "".
func nextBoot(t *testing.T, m *vm.Machine, script string) {
	t.Helper()
	if script != "" {
		if err := m.SetFwCfgString(testnode.FwCfgTest, script, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// expectStep waits for an agent step line, failing early (with the script's
// output) if the agent command ended first: scripts print "<NAME>-EXIT=<code>"
// after it.
func expectStep(t *testing.T, m *vm.Machine, step string, timeout time.Duration) time.Time {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(step) + `|\b(UPGRADE|ROLLBACK)-EXIT=(\d+)`)
	mt, err := m.Expect(re, timeout)
	if err != nil {
		t.Fatalf("waiting for %q: %v", step, err)
	}
	if mt.Groups[1] != "" {
		lines, _ := m.BootLines()
		t.Fatalf("the agent ended (%s) before the console showed %q; this boot's console:\n%s",
			strings.TrimSpace(mt.Line), step, tail(lines, 60))
	}
	return time.Now()
}

func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}

// status is `slate status --json` as the plan defines it (only the fields
// the tests read).
type status struct {
	Running struct {
		Slot    string `json:"slot"`
		Version string `json:"version"`
		Entry   string `json:"entry"`
	} `json:"running"`
	Slots        []slotInfo `json:"slots"`
	LastRollback *rollback  `json:"lastRollback"`
	Config       *struct {
		Source  string `json:"source"`
		SHA256  string `json:"sha256"`
		Applied bool   `json:"applied"`
		Tainted bool   `json:"tainted"`
	} `json:"config"`
	Health *struct {
		Result string `json:"result"`
		Reason string `json:"reason"`
	} `json:"health"`
	Update *struct {
		Source string `json:"source"`
		Policy string `json:"policy"`
		Keys   []struct {
			ID    string `json:"id"`
			From  string `json:"from"`
			Where string `json:"where"`
		} `json:"keys"`
		Error     string    `json:"error"`
		NotBefore time.Time `json:"notBefore"`
	} `json:"update"`
}

type slotInfo struct {
	Slot       string        `json:"slot"`
	State      string        `json:"state"`
	Entry      string        `json:"entry"`
	Generation int           `json:"generation"`
	Counting   bool          `json:"counting"`
	TriesLeft  int           `json:"triesLeft"`
	TriesDone  int           `json:"triesDone"`
	Release    *boot.Release `json:"release"`
	Problems   []string      `json:"problems"`
	Running    bool          `json:"running"`
}

type rollback struct {
	Time           time.Time `json:"time"`
	FromSlot       string    `json:"fromSlot"`
	FromVersion    string    `json:"fromVersion"`
	FromGeneration int       `json:"fromGeneration"`
	ToSlot         string    `json:"toSlot"`
	ToVersion      string    `json:"toVersion"`
	Cause          string    `json:"cause"`
	Files          []string  `json:"files"`
	ConsoleTail    string    `json:"consoleTail"`
}

// Slot returns slot s's info.
func (st *status) Slot(s string) slotInfo {
	for _, i := range st.Slots {
		if i.Slot == s {
			return i
		}
	}
	return slotInfo{Slot: s, State: "missing from status"}
}

func (i slotInfo) String() string {
	v := "-"
	if i.Release != nil {
		v = i.Release.Version
	}
	return fmt.Sprintf("slot %s: %s, %s, generation %d, entry %q, tries left %d", i.Slot, i.State, v, i.Generation, i.Entry, i.TriesLeft)
}

// getStatus decodes the STATUS=<base64> line the status function printed.
func getStatus(t *testing.T, r *testnode.Result) *status {
	t.Helper()
	return getStatusKey(t, r, "STATUS")
}

func getStatusKey(t *testing.T, r *testnode.Result, key string) *status {
	t.Helper()
	var st status
	decodeJSONKey(t, r, key, &st)
	return &st
}

// decodeJSONKey decodes the slate status --json that the status function
// printed as KEY=<base64> into v.
func decodeJSONKey(t *testing.T, r *testnode.Result, key string, v any) {
	t.Helper()
	if r == nil {
		t.Fatal("no script output, so no status")
	}
	decodeStatusInto(t, r.Get(key), strings.Join(r.Lines, "\n"), v)
}

// decodeStatus decodes slate status --json in base64; context is shown if
// that fails.
func decodeStatus(t *testing.T, b64, context string) *status {
	t.Helper()
	var st status
	decodeStatusInto(t, b64, context, &st)
	return &st
}

func decodeStatusInto(t *testing.T, b64, context string, v any) {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) == 0 {
		t.Fatalf("slate status --json printed nothing usable (%v); script output:\n%s", err, context)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("slate status --json: %v:\n%s", err, raw)
	}
}

// logStatus logs the human status lines the script printed.
func logStatus(t *testing.T, what string, r *testnode.Result) {
	t.Helper()
	var b strings.Builder
	for _, l := range r.Lines {
		if s, ok := strings.CutPrefix(l, "status: "); ok {
			b.WriteString("\n\t" + s)
		}
	}
	t.Logf("slate status %s:%s", what, b.String())
}

// checkSlot fails the test unless slot s has state and version.
func checkSlot(t *testing.T, what string, st *status, s, state, version string) {
	t.Helper()
	i := st.Slot(s)
	if i.State != state || i.Release == nil || i.Release.Version != version {
		t.Errorf("%s: %v; want %s holding %s", what, i, state, version)
	}
}

// begin starts a scenario: it skips the test where QEMU tests do not run
// (-short, no QEMU, no reference image; see testnode.Reference) and logs the
// scenario's wall time when it ends.
func begin(t *testing.T) {
	t.Helper()
	testnode.Reference(t)
	t.Parallel()
	start := time.Now()
	t.Cleanup(func() { t.Logf("wall time: %s", time.Since(start).Round(time.Second)) })
}
