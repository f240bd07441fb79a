// Package slatetest_test runs `slate test`, the command users prove their
// own images with, end to end on a pair of images made from the reference
// image: every scenario must pass from v1 to v2, and an upgrade to a v2
// whose app fails must be reported as failed, not passed.
//
// The images are the reference image plus a version marker and an app unit
// the node config requires for a good boot, as a user's image would carry
// its service; nothing of slate's test harness is in them (the runner comes
// with slate test's node config).
package slatetest_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/nodetest"
	"github.com/slate-os/slate/qemu-tests/testnode"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testnode.Cleanup()
	os.Exit(code)
}

const app = "hello-app.service"

// appLayer is the user's own layer: a version marker and an app unit,
// enabled in the image.
func appLayer(version, execStart string) []testimage.Entry {
	unit := "[Unit]\nDescription=the user's app\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=" + execStart +
		"\n[Install]\nWantedBy=multi-user.target\n"
	return []testimage.Entry{
		testimage.Dir("usr/share/hello"),
		testimage.File("usr/share/hello/version", version+"\n"),
		testimage.Dir("usr/lib/systemd/system"),
		testimage.File("usr/lib/systemd/system/"+app, unit),
		testimage.Dir("usr/lib/systemd/system/multi-user.target.wants"),
		{Name: "usr/lib/systemd/system/multi-user.target.wants/" + app, Type: tar.TypeSymlink, Link: "../" + app},
	}
}

// The user's node config: the app is required for a good boot, and a few
// settings the config scenario checks on the node.
const nodeConfig = `apiVersion: slate.dev/v1alpha1
kind: NodeConfig
hostname: hello-1
files:
  - path: /etc/hello/hello.conf
    contents:
      text: "greeting=hello\n"
links:
  - path: /etc/hello/current
    target: /usr/share/hello/version
health:
  requiredUnits: [hello-app.service]
  timeout: 3m
`

// The user's own check: the app ran and the config reached it.
const check = `systemctl is-active hello-app.service
grep -q greeting=hello /etc/hello/hello.conf
echo "hello version $(cat /usr/share/hello/version)"
`

func sizes(s *spec.Spec) { s.Disk.SlotSize = 1 << 30 }

var variants = map[string]testnode.Variant{
	"v1":        {Name: "st-v1", Version: "1.0", NoRunner: true, Disk: true, Tweak: sizes, Entries: appLayer("1.0", "/bin/true")},
	"v2":        {Name: "st-v2", Version: "1.1", NoRunner: true, Tweak: sizes, Entries: appLayer("1.1", "/bin/true")},
	"v2-broken": {Name: "st-v2-broken", Version: "1.1-broken", NoRunner: true, Tweak: sizes, Entries: appLayer("1.1-broken", "/bin/false")},
}

// slateTest runs the slate binary's test command and decodes its --json
// report and --junit file.
func slateTest(t *testing.T, to string, args ...string) (*nodetest.Report, *junit, error) {
	t.Helper()
	v1 := testnode.BuildVariant(t, variants["v1"])
	v2 := testnode.BuildVariant(t, variants[to])
	dir := t.TempDir()
	cfg, chk := filepath.Join(dir, "node.yaml"), filepath.Join(dir, "hello-check.sh")
	os.WriteFile(cfg, []byte(nodeConfig), 0o644)
	os.WriteFile(chk, []byte(check), 0o644)
	logs := filepath.Join(dir, "logs")
	if d := os.Getenv("SLATE_TEST_LOGS"); d != "" {
		logs = filepath.Join(d, t.Name())
	}
	xmlPath := filepath.Join(dir, "report.xml")
	args = append([]string{"test", "--from", v1.Disk, "--to", v2.Artifact, "--config", cfg, "--check", chk,
		"--junit", xmlPath, "--json", "--logs", logs}, args...)
	cmd := exec.CommandContext(t.Context(), testimage.AgentBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	runErr := cmd.Run()
	t.Logf("slate %s: %s, %s\nstderr:\n%s", strings.Join(args, " "), runErr, time.Since(start).Round(time.Second), stderr.String())
	var rep nodetest.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("slate test --json: %v\n%s", err, stdout.String())
	}
	for _, r := range rep.Results {
		t.Logf("%s", r.Line())
		for _, n := range r.Notes {
			t.Logf("\t%s", n)
		}
		for _, b := range r.Boots {
			t.Logf("\tboot %d: slot %s (%s), %s after %.0fs", b.N, b.Slot, b.Version, b.Ended, b.Seconds)
		}
	}
	var j junit
	if b, err := os.ReadFile(xmlPath); err != nil {
		t.Errorf("--junit: %v", err)
	} else if err := xml.Unmarshal(b, &j); err != nil {
		t.Errorf("--junit: %v\n%s", err, b)
	}
	return &rep, &j, runErr
}

type junit struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Suites   []struct {
		Cases []struct {
			Name    string `xml:"name,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
			} `xml:"failure"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// TestSlateTest: every scenario passes from v1 to v2, and the report says
// so in JSON and JUnit.
func TestSlateTest(t *testing.T) {
	testnode.Reference(t)
	rep, j, err := slateTest(t, "v2", "--parallel", "2")
	if err != nil {
		t.Errorf("slate test failed: %v", err)
	}
	if !rep.Passed || len(rep.Results) != len(nodetest.Scenarios()) {
		t.Errorf("report: passed %v, %d results; want all %d scenarios passed", rep.Passed, len(rep.Results), len(nodetest.Scenarios()))
	}
	for _, r := range rep.Results {
		if r.Status != nodetest.Pass {
			t.Errorf("%s: %s: %s", r.Scenario, r.Status, r.Reason)
		}
		if r.Log == "" {
			t.Errorf("%s: no console log kept", r.Scenario)
		}
		for _, l := range strings.Fields(r.Log) {
			if _, err := os.Stat(l); err != nil {
				t.Errorf("%s: console log: %v", r.Scenario, err)
			}
		}
	}
	if j.Tests != len(nodetest.Scenarios()) || j.Failures != 0 {
		t.Errorf("JUnit: %d tests, %d failures; want %d and none", j.Tests, j.Failures, len(nodetest.Scenarios()))
	}
}

// TestSlateTestBrokenV2: v2's app fails, so its boot after the upgrade
// is unhealthy; slate test must fail the upgrade scenario and say why.
func TestSlateTestBrokenV2(t *testing.T) {
	testnode.Reference(t)
	rep, j, err := slateTest(t, "v2-broken", "--scenario", "upgrade")
	if err == nil {
		t.Error("slate test passed an upgrade to an image whose app fails")
	}
	if rep.Passed || len(rep.Results) != 1 || rep.Results[0].Status != nodetest.Fail {
		t.Fatalf("report: %+v; want the upgrade scenario failed", rep)
	}
	if r := rep.Results[0].Reason; !strings.Contains(r, "slot b (1.1-broken): NOT healthy") || !strings.Contains(r, app) {
		t.Errorf("the failure's reason %q does not name the slot b boot and %s", r, app)
	}
	if j.Failures != 1 || len(j.Suites) != 1 || j.Suites[0].Cases[0].Failure == nil {
		t.Errorf("JUnit: %+v; want the upgrade case failed", j)
	}
}
