package config_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/vm"
)

// glassConfig gives root a password and writes a sudoers drop-in: both
// need access.breakGlass.
const glassConfig = `apiVersion: slate.dev/v1alpha1
kind: NodeConfig
hostname: node-glass
files:
  - path: /etc/sudoers.d/slate-test
    mode: "0440"
    contents:
      text: "root ALL=(ALL) ALL\n"
access:
  breakGlass: true
  rootPasswordHash: "$6$saltsalt$JcVDtuB6d1BHhCd5RPBh8g8xX/1CbY8EU2PN0MTaj2/Mypw4P./C6dN4j0HALhzBDTocyW1Jm.gYaTPjFGCV40"
`

// taintProbe prints what the config left and what `slate status` says. It
// waits for slate-health first: both mount the ESP.
const taintProbe = `
echo "HOSTNAME=$(cat /proc/sys/kernel/hostname)"
echo "SUDOERS=$(cat /etc/sudoers.d/slate-test 2>/dev/null)"
echo "ROOTHASH=$(grep '^root:' /etc/shadow | cut -d: -f2)"
i=0; while [ "$(systemctl is-active slate-health.service)" = activating ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done
echo "STATUS=$(slate status --json | base64 -w0)"
slate status | sed 's/^/status: /'
` + testnode.PrintRecord

// taintStatus is the part of `slate status --json` this test reads.
type taintStatus struct {
	Tainted bool
	Taint   *struct {
		Since        string
		ConfigSHA256 string `json:"config_sha256"`
		Source       string
		Boots        int
	}
	Config *struct {
		Applied, Tainted bool
		Error            string
	}
}

func statusOf(t *testing.T, r *testnode.Result) taintStatus {
	t.Helper()
	var st taintStatus
	b, err := base64.StdEncoding.DecodeString(r.Get("STATUS"))
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil || st.Config == nil {
		t.Fatalf("slate status --json: %v: %s", err, b)
	}
	return st
}

// TestBreakGlassTaintKept: a node booted with a breakGlass config is
// tainted on its state partition; rebooted with a 4 MiB invalid config
// (which applies nothing: the node runs the image's defaults, as with no
// config) it is tainted still, by the first config, and the console says
// why the config is invalid in one short line.
func TestBreakGlassTaintKept(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	sum := sha256.Sum256([]byte(glassConfig))
	glassSHA := hex.EncodeToString(sum[:])

	// Boot 1: breakGlass.
	m := testnode.Boot(t, d.Disk, taintProbe+testnode.ThenReboot, func(c *vm.Config) {
		c.FwCfgStrings[fwCfgConfig] = glassConfig
	})
	if _, err := m.Expect("slate-init: warning: this node is tainted: its config sets access.breakGlass (kept in /var/lib/slate/tainted", bootTimeout); err != nil {
		t.Fatal(err)
	}
	r := testnode.Run(t, m, bootTimeout)
	if h, s, p := r.Get("HOSTNAME"), r.Get("SUDOERS"), r.Get("ROOTHASH"); h != "node-glass" || s != "root ALL=(ALL) ALL" || !strings.HasPrefix(p, "$6$saltsalt$") {
		t.Errorf("breakGlass config not applied: hostname %q, sudoers %q, root's hash %q", h, s, p)
	}
	st := statusOf(t, r)
	if !st.Tainted || st.Taint == nil || st.Taint.ConfigSHA256 != glassSHA || st.Taint.Source != "fw_cfg" || st.Taint.Boots != 1 ||
		!st.Config.Applied || !st.Config.Tainted {
		t.Errorf("breakGlass boot: status %+v taint %+v config %+v", st, st.Taint, st.Config)
	}
	since := ""
	if st.Taint != nil {
		since = st.Taint.Since
	}
	if rec := testnode.Record(t, r); rec.Taint == nil || rec.Taint.ConfigSHA256 != glassSHA {
		t.Errorf("boot record's taint: %+v", rec.Taint)
	}
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}

	// Boot 2: a 4 MiB invalid config. Nothing applied, one short console
	// line, and the node tainted still by boot 1's config.
	huge := "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: " + strings.Repeat("a", 4<<20) + "\n"
	sum = sha256.Sum256([]byte(huge))
	if err := m.SetFwCfgString(fwCfgConfig, huge, false); err != nil {
		t.Fatal(err)
	}
	if err := m.SetFwCfgString(testnode.FwCfgTest, taintProbe+testnode.ThenPoweroff, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	invalid := regexp.MustCompile(`slate-init: config from fw_cfg \(sha256 ` + hex.EncodeToString(sum[:]) + `\) is invalid, nothing applied: ` +
		`hostname \(line 3\): "a{64}"…\(4194240 bytes more\) is longer than 64 characters$`)
	mt, err := m.Expect(invalid, bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("console, %d bytes: %s", len(mt.Line), mt.Line)
	if len(mt.Line) > 1024 {
		t.Errorf("the config's console line is %d bytes", len(mt.Line))
	}
	if _, err := m.Expect(regexp.MustCompile(`slate-init: warning: this node is tainted since .*, by config sha256:`+glassSHA[:12]+`… from fw_cfg \(access\.breakGlass\): it stays so until it is re-imaged`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	r = testnode.Run(t, m, bootTimeout)
	if h, s, p := r.Get("HOSTNAME"), r.Get("SUDOERS"), r.Get("ROOTHASH"); h != "slate" || s != "" || strings.HasPrefix(p, "$6$saltsalt$") {
		t.Errorf("something applied: hostname %q, sudoers %q, root's hash %q", h, s, p)
	}
	st = statusOf(t, r)
	if !st.Tainted || st.Taint == nil || st.Taint.ConfigSHA256 != glassSHA || st.Taint.Since != since || st.Taint.Boots != 1 ||
		st.Config.Applied || st.Config.Tainted || len(st.Config.Error) > 768 || !strings.HasPrefix(st.Config.Error, "hostname (line 3): ") {
		t.Errorf("after the invalid config: status %+v taint %+v config %+v", st, st.Taint, st.Config)
	}
	found := false
	for _, l := range r.Lines {
		if strings.HasPrefix(l, "status: TAINTED since ") && strings.Contains(l, "by config sha256:"+glassSHA[:12]) {
			found = true
		}
	}
	if !found {
		t.Errorf("slate status does not show the taint:\n%s", strings.Join(r.Lines, "\n"))
	}
	for _, l := range r.Lines {
		if strings.HasPrefix(l, "status: ") {
			t.Log(l)
		}
	}
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	// No console line of that boot is long (but the probe's own base64):
	// the 4 MiB went nowhere.
	lines, err := m.BootLines()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if len(l) > 2048 && !strings.HasPrefix(l, "STATUS=") && !strings.HasPrefix(l, "RECORD=") {
			t.Errorf("a %d-byte console line: %.200s…", len(l), l)
		}
	}
}
