package nodetest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/slate-os/slate/boot/nodeconfig"
)

// fw_cfg entries: the node config slate's init reads
// (initramfs/init/configsrc.FwCfgName, which the host side does not link),
// and each boot's script.
const (
	FwCfgConfig = "opt/slate/config"
	FwCfgScript = "opt/slate/test"
)

// Markers the runner prints around a script's output.
const (
	Begin = "SLATE-TEST-BEGIN"
	End   = "SLATE-TEST-END"
)

// The runner comes with the test's node config: a script under /etc and a
// unit that runs it once the node is up.
const (
	runnerPath = "/etc/slate-test/runner"
	runnerUnit = "slate-test.service"
	// brokenUnit fails on slot b: the rollback scenario requires it, so
	// V2 fails its health check while V1, with the same config, passes.
	brokenUnit = "slate-test-broken.service"
)

// Runner runs the script QEMU hands over as fw_cfg opt/slate/test. The
// module is loaded already when the init read the config from fw_cfg.
const Runner = `#!/bin/sh
f=/sys/firmware/qemu_fw_cfg/by_name/opt/slate/test/raw
modprobe qemu_fw_cfg 2>/dev/null
i=0
while [ ! -e $f ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
if [ ! -e $f ]; then echo "SLATE-TEST-NONE"; exit 0; fi
cp $f /run/slate-test.sh
dmesg -n 1 2>/dev/null # printk would land in the middle of a script's line
echo "SLATE-TEST-BEGIN"
sh /run/slate-test.sh 2>&1
echo "SLATE-TEST-END $?"
# A script asks for a reboot or poweroff through this file, so that the end
# marker is printed before systemd stops the runner.
if [ -f /run/slate-test.after ]; then systemctl --no-block "$(cat /run/slate-test.after)"; fi
`

// RunnerUnit runs Runner once multi-user.target is reached, its output on
// the serial console whatever the kernel's console is.
const RunnerUnit = `[Unit]
Description=slate test runner
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh ` + runnerPath + `
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
`

const brokenUnitContents = `[Unit]
Description=slate test: fails on slot b, so that V2 is unhealthy
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'if grep -qw slate.slot=b /proc/cmdline; then echo "slate test: failing on slot b on purpose"; exit 1; fi'
[Install]
WantedBy=multi-user.target
`

// configOpts is what a scenario adds to the user's config.
type configOpts struct {
	source  string // update.source; "" for none
	key     string // a public key (PEM) added to update.publicKeys
	breakV2 bool   // require brokenUnit
	// unattended enables slate-upgrade.timer, firing 1 s after boot, after
	// the runner; the service prints its exit status on the console.
	unattended bool
	invalid    bool // make the config invalid (see invalidHostname)
}

// invalidHostname is set by the invalid config, which also writes a file
// outside /etc and /run: if the node took any of it, the login prompt
// would show this name.
const invalidHostname = "slate-test-invalid"

// testConfig is the user's config (or an empty one) with the runner, and
// what o asks for. The user's own settings win wherever both set
// something, except the update source, which must be the test's registry.
func testConfig(user *nodeconfig.Config, o configOpts) ([]byte, error) {
	var c nodeconfig.Config
	if user != nil {
		b, err := user.JSON()
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, err
		}
	} else {
		c = nodeconfig.Config{APIVersion: nodeconfig.APIVersion, Kind: nodeconfig.Kind}
	}
	mode := nodeconfig.Mode(0o755)
	text := Runner
	c.Files = append(c.Files, nodeconfig.File{Path: runnerPath, Mode: &mode, Contents: &nodeconfig.Contents{Text: &text}})
	yes := true
	c.Systemd.Units = append(c.Systemd.Units, nodeconfig.Unit{Name: runnerUnit, Contents: RunnerUnit, Enabled: &yes})
	// The login prompt on ttyS0 hangs up the terminal when it starts
	// (vhangup), which cut the runner's output mid-line.
	if !hasUnit(&c, "serial-getty@ttyS0.service") {
		c.Systemd.Units = append(c.Systemd.Units, nodeconfig.Unit{Name: "serial-getty@ttyS0.service", Masked: true})
	}
	if o.source != "" {
		c.Update.Source, c.Update.Insecure = o.source, true
		c.Update.PublicKeys = append(c.Update.PublicKeys, o.key)
		// DHCP on QEMU's user network, unless the user's config says how
		// the node's network is set up.
		if len(c.Network) == 0 {
			c.Network = append(c.Network, nodeconfig.NetworkFile{Name: "10-slate-test.network",
				Contents: "[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n"})
			if !hasUnit(&c, "systemd-networkd.service") {
				c.Systemd.Units = append(c.Systemd.Units, nodeconfig.Unit{Name: "systemd-networkd.service", Enabled: &yes})
			}
		}
	}
	if o.unattended {
		c.Systemd.Units = append(c.Systemd.Units,
			nodeconfig.Unit{Name: "slate-upgrade.timer", Enabled: &yes, Dropins: []nodeconfig.Dropin{{Name: "10-slate-test.conf",
				Contents: "[Timer]\nOnBootSec=\nOnBootSec=1s\nRandomizedDelaySec=0\n"}}},
			nodeconfig.Unit{Name: "slate-upgrade.service", Dropins: []nodeconfig.Dropin{{Name: "10-slate-test.conf",
				Contents: "[Unit]\nAfter=" + runnerUnit + "\n[Service]\nExecStopPost=/bin/sh -c 'echo UPGRADE-EXIT=$$EXIT_STATUS'\n"}}})
	}
	if o.breakV2 {
		c.Systemd.Units = append(c.Systemd.Units, nodeconfig.Unit{Name: brokenUnit, Contents: brokenUnitContents, Enabled: &yes})
		c.Health.RequiredUnits = append(c.Health.RequiredUnits, brokenUnit)
	}
	if o.invalid {
		c.Hostname = invalidHostname
		c.Files = append(c.Files, nodeconfig.File{Path: "/usr/lib/slate-test-invalid"})
	}
	b, err := c.JSON()
	if err != nil {
		return nil, err
	}
	if _, err := nodeconfig.Parse(b); err != nil && !o.invalid {
		return nil, fmt.Errorf("the test's node config: %w", err)
	} else if err == nil && o.invalid {
		return nil, fmt.Errorf("the test's invalid node config parses")
	}
	return b, nil
}

func hasUnit(c *nodeconfig.Config, name string) bool {
	for _, u := range c.Systemd.Units {
		if u.Name == name {
			return true
		}
	}
	return false
}

// prelude defines the shell functions scripts use, for any POSIX sh with
// coreutils. It first keeps the kernel's messages off the console (they
// stay in the journal): printk writes to the serial port directly and can
// land in the middle of a script's line, such as a long base64 status.
const prelude = `
dmesg -n 1 2>/dev/null
# waitnet waits for a default route: the network is up.
waitnet() {
	i=0
	while ! awk 'NR>1 && $2=="00000000" {f=1} END {exit !f}' /proc/net/route; do
		i=$((i+1)); if [ $i -ge 120 ]; then echo "NET=none"; return; fi; sleep 1
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
}
status() {
	echo "STATUS=$(slate status --json 2>/run/status.err | base64 -w0)"
	sed 's/^/status-err: /' /run/status.err
	slate status 2>&1 | sed 's/^/status: /'
}
# agent runs an agent command that reboots the node when it succeeds; if it
# returns instead, the script says how and powers the node off.
agent() { name=$1; shift; "$@"; rc=$?; echo "$name-EXIT=$rc"; echo poweroff > /run/slate-test.after; }
varsum() { echo "VARSUM=$(sha256sum < /var/lib/slate-test/kept 2>/dev/null | cut -d' ' -f1)"; }
`

// probe starts every script: what runs, its health, its state.
const probe = prelude + `
echo "RECORD=$(base64 -w0 /run/slate/boot.json)"
waithealth
status
echo "FAILED=$(systemctl list-units --state=failed --no-legend --plain 2>/dev/null | awk '{print $1}' | grep -v -x -e ` + runnerUnit + ` -e ` + brokenUnit + ` | tr '\n' ' ')"
echo "ROOT=$(awk '$2=="/" {print $4}' /proc/mounts | tail -n1)"
echo "ETC=$(awk '$2=="/etc" {print $3}' /proc/mounts | tail -n1)"
`

// Script endings: the runner reboots or powers off after the end marker.
const (
	thenReboot   = "\necho reboot > /run/slate-test.after\n"
	thenPoweroff = "\necho poweroff > /run/slate-test.after\n"
)

// checksScript runs the user's checks; each prints CHECK-i=<exit status>
// and its output prefixed with its name.
func checksScript(checks []Check) string {
	var b strings.Builder
	for i, c := range checks {
		fmt.Fprintf(&b, "echo %s | base64 -d > /run/slate-check-%d\n", base64.StdEncoding.EncodeToString([]byte(c.Script)), i)
		fmt.Fprintf(&b, "sh /run/slate-check-%d > /run/slate-check-%d.out 2>&1; echo \"CHECK-%d=$?\"\n", i, i, i)
		fmt.Fprintf(&b, "sed 's/^/check %s: /' /run/slate-check-%d.out | tail -n 40\n", shellSafe(c.Name), i)
	}
	return b.String()
}

// shellSafe keeps a name's harmless characters, for a sed expression.
func shellSafe(s string) string {
	return regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(s, "_")
}

// scriptResult is what a script printed between the markers.
type scriptResult struct {
	Lines []string
	Code  string
	Ended bool
}

// Get returns the value of the first "KEY=value" line.
func (r *scriptResult) Get(key string) string {
	for _, l := range r.Lines {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

var endRe = regexp.MustCompile(End + ` (\d+)`)

// parseScript finds the script's output in a boot's console lines; nil if
// the runner never began.
func parseScript(lines []string) *scriptResult {
	var r *scriptResult
	for _, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case r == nil:
			if strings.Contains(l, Begin) {
				r = &scriptResult{}
			}
		case endRe.MatchString(l):
			r.Code, r.Ended = endRe.FindStringSubmatch(l)[1], true
			return r
		default:
			r.Lines = append(r.Lines, l)
		}
	}
	return r
}
