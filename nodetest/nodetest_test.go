package nodetest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/signature"
)

const userConfig = `apiVersion: slate.dev/v1alpha1
kind: NodeConfig
hostname: web-1
files:
  - path: /etc/app/app.conf
    contents:
      text: "port=80\n"
systemd:
  units:
    - name: app.service
      enabled: true
      contents: |
        [Service]
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
`

func TestTestConfig(t *testing.T) {
	user, err := nodeconfig.Parse([]byte(userConfig))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pem, _ := signature.MarshalPublicKey(k.Public())
	key := string(pem)
	b, err := testConfig(user, configOpts{source: "10.0.2.2:5000/slate-test/node:v2", key: key, breakV2: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := nodeconfig.Parse(b)
	if err != nil {
		t.Fatalf("the test config does not parse: %v\n%s", err, b)
	}
	if c.Hostname != "web-1" || len(c.Files) != 2 || c.Files[0].Path != "/etc/app/app.conf" || c.Files[1].Path != runnerPath {
		t.Errorf("the user's settings or the runner are missing: %+v", c)
	}
	if !hasUnit(c, runnerUnit) || !hasUnit(c, "app.service") || !hasUnit(c, brokenUnit) || !hasUnit(c, "systemd-networkd.service") {
		t.Errorf("units: %+v", c.Systemd.Units)
	}
	if c.Update.Source != "10.0.2.2:5000/slate-test/node:v2" || !c.Update.Insecure || len(c.Update.PublicKeys) != 1 {
		t.Errorf("update: %+v", c.Update)
	}
	if len(c.Health.RequiredUnits) != 1 || c.Health.RequiredUnits[0] != brokenUnit {
		t.Errorf("health: %+v", c.Health)
	}
	if len(c.Network) != 1 {
		t.Errorf("network: %+v", c.Network)
	}
	// The user's own network wins.
	user.Network = []nodeconfig.NetworkFile{{Name: "10-own.network", Contents: "[Match]\nName=*\n"}}
	b, _ = testConfig(user, configOpts{source: "x:1/y:z", key: key})
	c, _ = nodeconfig.Parse(b)
	if len(c.Network) != 1 || c.Network[0].Name != "10-own.network" || hasUnit(c, "systemd-networkd.service") {
		t.Errorf("the user's network was not left alone: %+v", c.Network)
	}

	// No user config; and the invalid one.
	if b, err := testConfig(nil, configOpts{}); err != nil {
		t.Fatal(err)
	} else if c, err := nodeconfig.Parse(b); err != nil || c.Update.Source != "" {
		t.Errorf("without a user config: %v %+v", err, c)
	}
	b, err = testConfig(nil, configOpts{invalid: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodeconfig.Parse(b); err == nil || !strings.Contains(err.Error(), "files[1].path") {
		t.Errorf("the invalid config: %v, want an error on files[1].path", err)
	}
}

func TestParseScript(t *testing.T) {
	lines := []string{"[  OK  ] Started foo", "SLATE-TEST-BEGIN", "HEALTH=active", "A=1=2", "SLATE-TEST-END 0", "after"}
	r := parseScript(lines)
	if r == nil || !r.Ended || r.Code != "0" || r.Get("HEALTH") != "active" || r.Get("A") != "1=2" || len(r.Lines) != 2 {
		t.Errorf("parseScript = %+v", r)
	}
	if r := parseScript(lines[:3]); r == nil || r.Ended {
		t.Errorf("an unended script: %+v", r)
	}
	if r := parseScript(lines[:1]); r != nil {
		t.Errorf("no runner: %+v", r)
	}
}

func TestConfigProblems(t *testing.T) {
	c, err := nodeconfig.Parse([]byte(userConfig))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256Hex([]byte("port=80\n"))
	good := &scriptResult{Lines: []string{"HOSTNAME=web-1", "FILE-0=" + sum, "UNIT-0=enabled"}}
	if p := configProblems(c, good); len(p) != 0 {
		t.Errorf("problems on a node that applied the config: %q", p)
	}
	bad := &scriptResult{Lines: []string{"HOSTNAME=localhost", "FILE-0=sha256sum: /etc/app/app.conf: No such file", "UNIT-0=disabled"}}
	if p := configProblems(c, bad); len(p) != 3 {
		t.Errorf("problems = %q, want the hostname, the file and the unit", p)
	}
	if !strings.Contains(configScript(c), "'/etc/app/app.conf'") {
		t.Errorf("configScript does not quote paths:\n%s", configScript(c))
	}
}

func TestReports(t *testing.T) {
	rep := &Report{From: "v1.raw", Seconds: 300, Results: []Result{
		{Scenario: "boot", Status: Pass, Seconds: 80, Notes: []string{"slot a"}, Boots: []BootSummary{{N: 1, Slot: "a", Version: "1", Ended: "guest-reset", Seconds: 40, Runner: true}}},
		{Scenario: "upgrade", Status: Fail, Seconds: 200, Reason: "boot 2: slot b (2): health check bad: app.service failed\nmore"},
		{Scenario: "tamper", Status: Skip, Reason: "needs V2 (--to)"},
	}}
	var x bytes.Buffer
	if err := rep.WriteJUnit(&x); err != nil {
		t.Fatal(err)
	}
	var s junitSuites
	if err := xml.Unmarshal(x.Bytes(), &s); err != nil {
		t.Fatalf("%v\n%s", err, x.String())
	}
	if s.Tests != 3 || s.Failures != 1 || s.Skipped != 1 || len(s.Suites) != 1 || len(s.Suites[0].Cases) != 3 {
		t.Errorf("junit counts: %+v", s)
	}
	if f := s.Suites[0].Cases[1].Failure; f == nil || f.Message != "boot 2: slot b (2): health check bad: app.service failed" || !strings.Contains(f.Body, "more") {
		t.Errorf("failure: %+v", f)
	}
	var txt bytes.Buffer
	rep.WriteText(&txt)
	for _, want := range []string{"PASS boot", "FAIL upgrade", "SKIP tamper", "slate test FAILED in 5m0s"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, txt.String())
		}
	}
}

func TestQemuDisk(t *testing.T) {
	if _, err := exec.LookPath("qemu-io"); err != nil {
		t.Skip("no qemu-io")
	}
	p := filepath.Join(t.TempDir(), "d.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", p, "1M").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x61 512 40", p).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	b := make([]byte, 40)
	if _, err := qemuDisk(p).ReadAt(b, 500); err != nil {
		t.Fatal(err)
	}
	if want := append(make([]byte, 12), bytes.Repeat([]byte{'a'}, 28)...); !bytes.Equal(b, want) {
		t.Errorf("read %q, want %q", b, want)
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, err := Run(t.Context(), Options{From: Image{Disk: filepath.Join(dir, "none.raw")}, Dir: dir}); err == nil || !strings.Contains(err.Error(), "none.raw") {
		t.Errorf("a missing disk: %v", err)
	}
	disk := filepath.Join(dir, "v1.raw")
	os.WriteFile(disk, []byte("x"), 0o644)
	_, err := Run(t.Context(), Options{From: Image{Disk: disk}, Dir: dir, Config: []byte("apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostnme: x\n"), ConfigName: "node.yaml"})
	if err == nil || !strings.Contains(err.Error(), "node.yaml") || !strings.Contains(err.Error(), "hostnme") {
		t.Errorf("a config with a typo: %v", err)
	}
	if _, err := Run(t.Context(), Options{From: Image{Disk: disk}, Dir: dir, Scenarios: []string{"bot"}}); err == nil || !strings.Contains(err.Error(), `"bot"`) {
		t.Errorf("an unknown scenario: %v", err)
	}
}
