// Package config_test proves node configs injected at boot: through fw_cfg,
// a config drive and the kernel command line; applied every boot and gone
// when the next boot's config no longer has them; all or nothing.
package config_test

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/vm"
)

func TestMain(m *testing.M) {
	vm.ServeGuestForward() // QEMU runs this binary for each connection to a fake metadata service
	code := m.Run()
	testnode.Cleanup()
	os.Exit(code)
}

const fwCfgConfig = "opt/slate/config"

var bootTimeout = vm.Scale(4 * time.Minute)

// nodeConfig is a config that leaves a trace of every kind, named by tag.
func nodeConfig(tag string) string {
	return fmt.Sprintf(`apiVersion: slate.dev/v1alpha1
kind: NodeConfig
hostname: node-%[1]s
files:
  - path: /etc/slate-test/%[1]s.txt
    mode: "0640"
    contents:
      text: "hello from %[1]s\n"
systemd:
  units:
    - name: marker-%[1]s.service
      enabled: true
      contents: |
        [Unit]
        Description=config marker %[1]s
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c 'echo ran-%[1]s > /run/marker-%[1]s'
        [Install]
        WantedBy=multi-user.target
sysctl:
  vm.swappiness: "%[2]d"
`, tag, len(tag)*10+3)
}

// probe prints what a config could have changed.
const probe = `
echo "HOSTNAME=$(cat /proc/sys/kernel/hostname)"
echo "FILES=$(ls /etc/slate-test 2>/dev/null | tr '\n' ' ')"
for f in /etc/slate-test/*.txt; do [ -f "$f" ] && echo "MODE $(basename $f)=$(stat -c %a "$f")"; done
echo "MARKERS=$(cat /run/marker-* 2>/dev/null | tr '\n' ' ')"
echo "UNITS=$(ls /etc/systemd/system | grep marker- | tr '\n' ' ')"
echo "SWAPPINESS=$(cat /proc/sys/vm/swappiness)"
` + testnode.PrintRecord

// checkApplied says whether config tag's effects, and only its, are in place.
func checkApplied(t *testing.T, r *testnode.Result, tag string) {
	t.Helper()
	want := map[string]string{
		"HOSTNAME":             "node-" + tag,
		"FILES":                tag + ".txt",
		"MARKERS":              "ran-" + tag,
		"UNITS":                "marker-" + tag + ".service",
		"SWAPPINESS":           fmt.Sprint(len(tag)*10 + 3),
		"MODE " + tag + ".txt": "640",
	}
	for k, v := range want {
		if got := r.Get(k); got != v {
			t.Errorf("config %s: %s=%q, want %q", tag, k, got, v)
		}
	}
}

// TestConfigEveryBoot: a config through fw_cfg is in force when systemd
// starts; after a reboot with another config only the new one's effects are
// there.
func TestConfigEveryBoot(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	m := testnode.Boot(t, d.Disk, probe+testnode.ThenReboot, func(c *vm.Config) {
		c.FwCfgStrings[fwCfgConfig] = nodeConfig("one")
	})
	if _, err := m.Expect(regexp.MustCompile(`slate-init: config from fw_cfg \(sha256 [0-9a-f]+.*\) applied`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	r := testnode.Run(t, m, bootTimeout)
	checkApplied(t, r, "one")
	if rec := testnode.Record(t, r); rec.Config == nil || rec.Config.Source != "fw_cfg" || !rec.Config.Applied || len(rec.Config.SHA256) != 64 {
		t.Errorf("record's config: %+v", rec.Config)
	}
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}

	if err := m.SetFwCfgString(fwCfgConfig, nodeConfig("second"), false); err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	r = testnode.Run(t, m, bootTimeout)
	checkApplied(t, r, "second")
	if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}

	// No config at all: the image's defaults, and the node says so.
	if err := m.SetFwCfgString(fwCfgConfig, "", true); err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect(regexp.MustCompile(`slate-init: no node config found`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	r = testnode.Run(t, m, bootTimeout)
	if h, f := r.Get("HOSTNAME"), r.Get("FILES"); h != "slate" || f != "" {
		t.Errorf("with no config: hostname %q, files %q; want the image's defaults", h, f)
	}
}

// TestConfigDriveAndCmdline: the same config through a config drive and
// through the kernel command line gives the same result.
func TestConfigDriveAndCmdline(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)

	drive := filepath.Join(t.TempDir(), "config.img")
	testnode.Cmd(t, "mkfs.vfat", "-n", "SLATE-CONFI", "-C", drive, "4096")
	cfgFile := filepath.Join(t.TempDir(), "slate.yaml")
	os.WriteFile(cfgFile, []byte(nodeConfig("drive")), 0o644)
	testnode.Cmd(t, "mcopy", "-i", drive, cfgFile, "::/slate.yaml")
	m := testnode.Boot(t, d.Disk, probe+testnode.ThenPoweroff, func(c *vm.Config) {
		c.Disks = append(c.Disks, vm.Disk{Path: drive, Format: "raw"})
	})
	if _, err := m.Expect(regexp.MustCompile(`slate-init: config from config-drive .*applied`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	checkApplied(t, testnode.Run(t, m, bootTimeout), "drive")

	// The command line: a data: URL in slot A's boot entry.
	raw := filepath.Join(t.TempDir(), "cmdline.raw")
	testnode.Cmd(t, "cp", "--sparse=always", d.Disk, raw)
	esp := d.Plan.Part(boot.NumESP)
	img := fmt.Sprintf("%s@@%d", raw, esp.Start)
	entry := testnode.Cmd(t, "mtype", "-i", img, "::/loader/entries/slate-a.conf")
	url := boot.ArgConfig + "=data:;base64," + base64.StdEncoding.EncodeToString([]byte(nodeConfig("cmd")))
	entry = strings.Replace(entry, "\noptions ", "\noptions "+url+" ", 1)
	local := filepath.Join(t.TempDir(), "slate-a.conf")
	os.WriteFile(local, []byte(entry), 0o644)
	testnode.Cmd(t, "mcopy", "-o", "-i", img, local, "::/loader/entries/slate-a.conf")
	m2 := testnode.Boot(t, raw, probe+testnode.ThenPoweroff, nil)
	if _, err := m2.Expect(regexp.MustCompile(`slate-init: config from cmdline .*applied`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	checkApplied(t, testnode.Run(t, m2, bootTimeout), "cmd")
}

// TestBadConfigsApplyNothing: an invalid config, one that writes under /usr
// and one that writes through a symlink out of /etc each apply nothing, say
// why on the console naming the field, and the node boots on defaults.
// breakGlass marks the node tainted.
func TestBadConfigsApplyNothing(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	valid := nodeConfig("bad")
	cases := []struct {
		name, config, field string
	}{
		{"unknown field", strings.Replace(valid, "hostname:", "hostnme:", 1), "hostnme"},
		{"outside /etc", strings.Replace(valid, "/etc/slate-test/bad.txt", "/usr/lib/slate-test.txt", 1), `files\[0\]\.path`},
		// The image's /etc/os-release is a symlink to ../usr/lib/os-release.
		{"symlink escape", strings.Replace(valid, "/etc/slate-test/bad.txt", "/etc/os-release", 1), `files\[0\]\.path`},
	}

	m := testnode.Boot(t, d.Disk, probe+testnode.ThenReboot, func(c *vm.Config) {
		c.FwCfgStrings[fwCfgConfig] = cases[0].config
	})
	for i, tc := range cases {
		if i > 0 {
			if err := m.SetFwCfgString(fwCfgConfig, tc.config, false); err != nil {
				t.Fatal(err)
			}
			if err := m.Boot(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		mt, err := m.Expect(regexp.MustCompile(`slate-init: config from fw_cfg .*invalid.*nothing applied: .*`+tc.field), bootTimeout)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		t.Logf("%s: %s", tc.name, mt.Line)
		r := testnode.Run(t, m, bootTimeout)
		if h, f := r.Get("HOSTNAME"), r.Get("FILES"); h != "slate" || f != "" {
			t.Errorf("%s: hostname %q, files %q: something was applied", tc.name, h, f)
		}
		if rec := testnode.Record(t, r); rec.Config == nil || rec.Config.Applied || rec.Config.Error == "" || len(rec.Config.SHA256) != 64 {
			t.Errorf("%s: record's config: %+v", tc.name, rec.Config)
		}
		if _, err := m.WaitExit(vm.ShutdownTimeout); err != nil {
			t.Fatal(err)
		}
	}

	// breakGlass: applied, and the node is marked tainted.
	glass := valid + "access:\n  breakGlass: true\n  rootPasswordHash: \"$6$salt$0123456789abcdef\"\n"
	if err := m.SetFwCfgString(fwCfgConfig, glass, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect(regexp.MustCompile(`slate-init: .*tainted`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	r := testnode.Run(t, m, bootTimeout)
	checkApplied(t, r, "bad")
	if rec := testnode.Record(t, r); rec.Config == nil || !rec.Config.Tainted {
		t.Errorf("breakGlass: record's config: %+v", rec.Config)
	}
}
