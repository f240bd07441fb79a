// Package testnode builds test disks from the reference image and boots them
// under QEMU with a script to run inside the guest.
//
// The test image is the reference image plus one layer: a systemd unit that,
// once the node is up, runs the shell script handed to QEMU as the fw_cfg
// entry opt/slate/test and prints its output on the serial console between
// markers. So every scenario is a script, not a new image.
package testnode

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/builder"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/vm"
	"github.com/slate-os/slate/vm/vmtest"
)

// FwCfgTest is the fw_cfg entry that carries a test's script.
const FwCfgTest = "opt/slate/test"

// Markers the runner prints around a script's output.
const (
	Begin = "SLATE-TEST-BEGIN"
	End   = "SLATE-TEST-END"
)

const runner = `#!/bin/sh
# Runs the script QEMU hands over as fw_cfg opt/slate/test.
f=/sys/firmware/qemu_fw_cfg/by_name/opt/slate/test/raw
modprobe qemu_fw_cfg 2>/dev/null
i=0
while [ ! -e $f ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
if [ ! -e $f ]; then echo "SLATE-TEST-NONE"; exit 0; fi
cp $f /run/slate-test.sh
# Kernel messages off the console (they stay in the journal): printk writes
# to the serial port directly and can land in the middle of a script's
# line, such as a long base64 record.
dmesg -n 1 2>/dev/null
echo "SLATE-TEST-BEGIN"
sh /run/slate-test.sh 2>&1
echo "SLATE-TEST-END $?"
# A script asks for a reboot or poweroff through this file, so that the end
# marker is printed before systemd stops the runner.
if [ -f /run/slate-test.after ]; then systemctl --no-block "$(cat /run/slate-test.after)"; fi
`

const unit = `[Unit]
Description=slate QEMU test runner
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/slate-test-runner
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
`

// WithRunner adds the test runner layer to an image.
func WithRunner(img v1.Image) (v1.Image, error) {
	l, err := testimage.Layer([]testimage.Entry{
		testimage.Dir("usr/local"), testimage.Dir("usr/local/sbin"),
		{Name: "usr/local/sbin/slate-test-runner", Mode: 0o755, Body: runner},
		testimage.Dir("etc/systemd/system/multi-user.target.wants"),
		testimage.File("etc/systemd/system/slate-test.service", unit),
		{Name: "etc/systemd/system/multi-user.target.wants/slate-test.service", Type: '2', Link: "/etc/systemd/system/slate-test.service"},
		// The login prompt on ttyS0 hangs up the terminal when it starts
		// (vhangup), which cut the runner's output mid-line: no getty there.
		{Name: "etc/systemd/system/serial-getty@ttyS0.service", Type: '2', Link: "/dev/null"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, l)
}

// ModuleRoot is the repository's root, found from this file.
func ModuleRoot() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(f)))
}

// Reference opens the reference image: $SLATE_REFERENCE, else build/reference.
// It skips the test when neither is there and SLATE_REFERENCE is unset, and
// fails when SLATE_REFERENCE names something missing (as in make test and CI).
func Reference(tb testing.TB) v1.Image {
	tb.Helper()
	if testing.Short() {
		tb.Skip("QEMU tests do not run with -short")
	}
	vmtest.SkipIfUnavailable(tb)
	p := os.Getenv("SLATE_REFERENCE")
	if p == "" {
		p = filepath.Join(ModuleRoot(), "build", "reference")
		if _, err := os.Stat(filepath.Join(p, "index.json")); err != nil {
			tb.Skip("no reference image: run make reference-image (or make test)")
		}
	}
	img, err := source.Open("oci:"+p, source.Options{})
	if err != nil {
		tb.Fatalf("reference image: %v", err)
	}
	return img
}

// MatrixImages are the reference matrix: images as a user's debootstrap
// leaves them, each built by `make reference-matrix` from
// qemu-tests/reference/variants/NAME.
var MatrixImages = []string{"bookworm-generic", "bookworm-cloud", "trixie"}

// Matrix opens the reference matrix's image name from $SLATE_MATRIX/NAME
// (else build/matrix/NAME). Like Reference, it skips the test when the
// image is not there and SLATE_MATRIX is unset, and fails when
// SLATE_MATRIX is set (as in make test and CI) but the image is missing.
func Matrix(tb testing.TB, name string) v1.Image {
	tb.Helper()
	Reference(tb) // the same reasons to skip
	dir := os.Getenv("SLATE_MATRIX")
	p := filepath.Join(dir, name)
	if dir == "" {
		p = filepath.Join(ModuleRoot(), "build", "matrix", name)
		if _, err := os.Stat(filepath.Join(p, "index.json")); err != nil {
			tb.Skipf("no %s image of the reference matrix: run make reference-matrix (or make test)", name)
		}
	}
	img, err := source.Open("oci:"+p, source.Options{})
	if err != nil {
		tb.Fatalf("reference matrix image %s: %v", name, err)
	}
	return img
}

var (
	diskMu sync.Mutex
	disks  = map[string]*builder.Result{}
)

// Disk builds (once per process and name) a raw test disk with the runner,
// from the reference image, with tweak applied to the spec.
func Disk(tb testing.TB, name string, tweak func(*spec.Spec)) *builder.Result {
	tb.Helper()
	diskMu.Lock()
	defer diskMu.Unlock()
	if r, ok := disks[name]; ok {
		return r
	}
	img, err := WithRunner(Reference(tb))
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("slate-qemu-tests-%d", os.Getpid()))
	os.MkdirAll(dir, 0o755)
	s := spec.Spec{APIVersion: spec.APIVersion, Kind: spec.Kind, Source: "reference+runner", Version: "test",
		Outputs: spec.Outputs{Disk: filepath.Join(dir, name+".raw"), Artifact: filepath.Join(dir, name+".oci")}}
	if tweak != nil {
		tweak(&s)
	}
	start := time.Now()
	r, err := builder.Build(context.Background(), builder.Options{Spec: s, Image: img, AgentBinary: testimage.AgentBinary(tb)})
	if err != nil {
		tb.Fatalf("building test disk %s: %v", name, err)
	}
	tb.Logf("built test disk %s in %.1fs (root %d MiB, initramfs %d KiB)", name, time.Since(start).Seconds(), r.RootSize>>20, r.InitramfsSize>>10)
	disks[name] = r
	return r
}

// Cleanup removes the test disks; call it from TestMain.
func Cleanup() {
	os.RemoveAll(filepath.Join(os.TempDir(), fmt.Sprintf("slate-qemu-tests-%d", os.Getpid())))
}

// Boot starts a VM on disk (never modified: it runs on an overlay) with
// script as its test; the VM exits when the guest reboots or powers off.
func Boot(tb testing.TB, disk, script string, tweak func(*vm.Config)) *vm.Machine {
	tb.Helper()
	cfg := vm.Config{Disk: disk, DiskFormat: "raw", FwCfgStrings: map[string]string{FwCfgTest: script}}
	if tweak != nil {
		tweak(&cfg)
	}
	return vmtest.Start(tb, cfg)
}

// Then are script endings: the runner reboots or powers off after the end marker.
const (
	ThenReboot   = "\necho reboot > /run/slate-test.after\n"
	ThenPoweroff = "\necho poweroff > /run/slate-test.after\n"
)

// Result is what a script printed between the markers.
type Result struct {
	Lines []string
	Code  string
}

// Get returns the value of the first "KEY=value" line.
func (r *Result) Get(key string) string {
	for _, l := range r.Lines {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

var endRe = regexp.MustCompile(`SLATE-TEST-END (\d+)`)

// Run waits for the script of the current boot to finish and returns its output.
func Run(tb testing.TB, m *vm.Machine, timeout time.Duration) *Result {
	tb.Helper()
	if _, err := m.Expect(Begin, timeout); err != nil {
		tb.Fatalf("the test script did not start: %v", err)
	}
	return Started(tb, m)
}

// Started reads a script's output to its end, once the caller has seen
// the Begin marker.
func Started(tb testing.TB, m *vm.Machine) *Result {
	tb.Helper()
	r := &Result{}
	for {
		mt, err := m.Expect(regexp.MustCompile(`.*`), vm.Scale(60*time.Second))
		if err != nil {
			tb.Fatalf("the test script did not end: %v", err)
		}
		if sm := endRe.FindStringSubmatch(mt.Line); sm != nil {
			r.Code = sm[1]
			return r
		}
		r.Lines = append(r.Lines, strings.TrimSpace(mt.Line))
	}
}

// Record decodes the boot record a script printed as RECORD=<base64>
// (base64, since the record holds backslashes, initrd=\slate\a\..., that the
// guest's echo would eat).
func Record(tb testing.TB, r *Result) record.Record {
	tb.Helper()
	var rec record.Record
	raw, err := base64.StdEncoding.DecodeString(r.Get("RECORD"))
	if err != nil {
		tb.Fatalf("/run/slate/boot.json: %v: %q", err, r.Get("RECORD"))
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		tb.Fatalf("/run/slate/boot.json: %v", err)
	}
	return rec
}

// PrintRecord is the script line that prints the boot record for Record.
const PrintRecord = `echo "RECORD=$(base64 -w0 /run/slate/boot.json)"` + "\n"

// Cmd runs a host command and fails the test with its output if it fails.
func Cmd(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
