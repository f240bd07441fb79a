package run

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/initramfs/init/configsrc"
	"github.com/slate-os/slate/initramfs/init/klog"
)

// src is a fake config source.
type src struct {
	name string
	data string
	err  error
}

func (s src) Name() string { return s.name }
func (s src) Fetch(ctx context.Context) ([]byte, error) {
	if s.err != nil {
		configsrc.EnvFrom(ctx).Location = "loc-" + s.name
		return nil, s.err
	}
	if s.data == "" {
		return nil, configsrc.ErrNotFound
	}
	configsrc.EnvFrom(ctx).Location = "loc-" + s.name
	return []byte(s.data), nil
}

// testRoot is a tiny image tree: /etc with passwd, group and shadow, /run,
// /usr with a zone file.
func testRoot(t *testing.T) string {
	root := t.TempDir()
	for _, d := range []string{"etc/systemd/system", "run", "usr/share/zoneinfo", "usr/lib/systemd/system"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/shadow"), []byte("root:*:19000:0:99999:7:::\n"), 0o640)
	os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("image-default\n"), 0o644)
	os.WriteFile(filepath.Join(root, "usr/share/zoneinfo/UTC"), []byte("TZif2"), 0o644)
	return root
}

// snapshot lists a tree's paths with their contents (symlink targets).
func snapshot(t *testing.T, root string) map[string]string {
	m := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			m[rel] = "-> " + l
		case d.IsDir():
			m[rel] = "dir"
		default:
			b, _ := os.ReadFile(p)
			m[rel] = string(b)
		}
		return nil
	})
	return m
}

const validConfig = `apiVersion: slate.dev/v1alpha1
kind: NodeConfig
hostname: node-1
files:
  - path: /etc/motd
    contents:
      text: "hello from the config\n"
systemd:
  units:
    - name: marker.service
      enabled: true
      contents: |
        [Unit]
        Description=marker
        [Service]
        Type=oneshot
        ExecStart=/bin/echo SLATE-MARKER
        [Install]
        WantedBy=multi-user.target
`

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestConfigureApplied(t *testing.T) {
	root := testRoot(t)
	prepared, undone := 0, 0
	prepare := func() (func(), error) { prepared++; return func() { undone++ }, nil }
	ctx := configsrc.WithEnv(context.Background(), &configsrc.Env{})
	rc, lines := configure(ctx, []configsrc.Source{src{name: "cmdline"}, src{name: "fw_cfg", data: validConfig}, src{name: "config-drive", data: "not asked"}}, root, prepare)

	if rc.Source != "fw_cfg" || rc.Location != "loc-fw_cfg" || rc.SHA256 != sha(validConfig) || rc.Size != len(validConfig) ||
		!rc.Applied || rc.Failed != "" || rc.Error != "" || rc.Tainted || rc.Hostname != "node-1" {
		t.Errorf("record: %+v", rc)
	}
	for _, f := range []string{"/etc/hostname", "/etc/motd", "/etc/systemd/system/marker.service",
		"/etc/systemd/system/multi-user.target.wants/marker.service", nodeconfig.RecordPath} {
		if !contains(rc.Files, f) {
			t.Errorf("record files lack %s: %q", f, rc.Files)
		}
	}
	if prepared != 1 || undone != 1 {
		t.Errorf("prepare called %d times, undone %d", prepared, undone)
	}
	want := "config from fw_cfg (sha256 " + sha(validConfig) + ") applied: hostname node-1, " + plural(len(rc.Files), "file") + ", 1 unit"
	if len(lines) != 1 || lines[0].level != klog.LevelInfo || lines[0].msg != want {
		t.Errorf("lines: %+v\nwant %q", lines, want)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(b) != "node-1\n" {
		t.Errorf("/etc/hostname = %q", b)
	}
	if l, err := os.Readlink(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/marker.service")); err != nil || !strings.HasSuffix(l, "marker.service") {
		t.Errorf("unit not enabled: %q %v", l, err)
	}
}

func TestConfigureNone(t *testing.T) {
	root := testRoot(t)
	before := snapshot(t, root)
	prepare := func() (func(), error) { t.Error("prepare called with no config"); return func() {}, nil }
	rc, lines := configure(context.Background(), []configsrc.Source{src{name: "cmdline"}, src{name: "fw_cfg"}}, root, prepare)
	if !reflect.DeepEqual(rc, record.Config{Source: record.ConfigNone}) {
		t.Errorf("record: %+v", rc)
	}
	if len(lines) != 1 || lines[0].level != klog.LevelInfo ||
		lines[0].msg != "no node config found (looked in cmdline, fw_cfg): booting with the image's defaults" {
		t.Errorf("lines: %+v", lines)
	}
	if !reflect.DeepEqual(before, snapshot(t, root)) {
		t.Error("the tree changed")
	}
}

func TestConfigureRefused(t *testing.T) {
	const usr = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: node-2\nfiles:\n  - path: /usr/x\n    contents:\n      text: x\n"
	const unknown = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostnme: node-2\n"
	const escape = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: node-2\nfiles:\n  - path: /etc/evil/x\n    contents:\n      text: x\n"
	for _, tc := range []struct {
		name      string
		source    src
		failed    string
		linePre   string // the line up to the error
		errSubstr string
	}{
		{"path outside /etc and /run", src{name: "fw_cfg", data: usr}, record.ConfigFailedParse,
			"config from fw_cfg (sha256 " + sha(usr) + ") is invalid, nothing applied: ", "files[0].path"},
		{"unknown field", src{name: "config-drive", data: unknown}, record.ConfigFailedParse,
			"config from config-drive (sha256 " + sha(unknown) + ") is invalid, nothing applied: ", "hostnme"},
		{"through a symlink out of /etc", src{name: "cmdline", data: escape}, record.ConfigFailedApply,
			"config from cmdline (sha256 " + sha(escape) + ") is invalid for this image, nothing applied: ", "files[0].path"},
		{"unreadable", src{name: "cmdline", err: errors.New(`slate.config=: "x" is not a data: URL`)}, record.ConfigFailedRead,
			"config from cmdline could not be read, nothing applied: ", `slate.config=: "x" is not a data: URL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := testRoot(t)
			os.Symlink("../usr/lib", filepath.Join(root, "etc/evil"))
			before := snapshot(t, root)
			rc, lines := configure(context.Background(), []configsrc.Source{tc.source, src{name: "later", data: validConfig}}, root, nil)
			if rc.Source != tc.source.name || rc.Location != "loc-"+tc.source.name || rc.Applied || rc.Tainted || rc.Failed != tc.failed ||
				!strings.Contains(rc.Error, tc.errSubstr) || len(rc.Files) != 0 || rc.Hostname != "" {
				t.Errorf("record: %+v", rc)
			}
			if (rc.SHA256 == "") != (tc.failed == record.ConfigFailedRead) {
				t.Errorf("sha256 %q", rc.SHA256)
			}
			if len(lines) != 1 || lines[0].level != klog.LevelErr || lines[0].msg != tc.linePre+rc.Error || strings.Contains(lines[0].msg, "\n") {
				t.Errorf("lines: %+v", lines)
			}
			t.Logf("console: slate-init: %s", lines[0].msg)
			if !reflect.DeepEqual(before, snapshot(t, root)) {
				t.Error("the tree changed")
			}
		})
	}
	// prepare failing is an apply failure.
	root := testRoot(t)
	rc, lines := configure(context.Background(), []configsrc.Source{src{name: "fw_cfg", data: validConfig}}, root,
		func() (func(), error) { return nil, errors.New("binding /run: no such file") })
	if rc.Applied || rc.Failed != record.ConfigFailedApply || rc.Error != "binding /run: no such file" || len(lines) != 1 {
		t.Errorf("prepare failure: %+v %+v", rc, lines)
	}
}

func TestConfigureTainted(t *testing.T) {
	root := testRoot(t)
	cfg := "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\naccess:\n  breakGlass: true\n  sshAuthorizedKeys:\n" +
		"    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test\n"
	rc, lines := configure(context.Background(), []configsrc.Source{src{name: "fw_cfg", data: cfg}}, root, nil)
	if !rc.Applied || !rc.Tainted || rc.Hostname != "" {
		t.Fatalf("record: %+v; lines %+v", rc, lines)
	}
	if len(lines) != 2 || lines[1].level != klog.LevelWarning ||
		lines[1].msg != "warning: this node is tainted: its config sets access.breakGlass (kept in /var/lib/slate/tainted: the node stays tainted until it is re-imaged)" {
		t.Errorf("lines: %+v", lines)
	}
	if !strings.HasPrefix(lines[0].msg, "config from fw_cfg (sha256 "+sha(cfg)+") applied: ") || strings.Contains(lines[0].msg, "hostname") || strings.Contains(lines[0].msg, "unit") {
		t.Errorf("applied line: %q", lines[0].msg)
	}
}

// The init's limit on a config's size is the parser's.
func TestConfigMaxSize(t *testing.T) {
	if configsrc.MaxSize != nodeconfig.MaxSize {
		t.Errorf("configsrc.MaxSize %d != nodeconfig.MaxSize %d", configsrc.MaxSize, nodeconfig.MaxSize)
	}
}

func contains(list []string, s string) bool {
	sorted := append([]string(nil), list...)
	sort.Strings(sorted)
	i := sort.SearchStrings(sorted, s)
	return i < len(sorted) && sorted[i] == s
}

const glassConfig = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\naccess:\n  breakGlass: true\n  sshAuthorizedKeys:\n" +
	"    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test\n"

// A breakGlass config taints the node on its state partition (root/var),
// and a later boot with a clean config finds it tainted still.
func TestConfigureTaintKept(t *testing.T) {
	root := testRoot(t)
	taintPath := filepath.Join(root, record.TaintFile)
	rc, _ := configure(context.Background(), []configsrc.Source{src{name: "fw_cfg", data: glassConfig}}, root, nil)
	if !rc.Applied || !rc.Tainted {
		t.Fatalf("record: %+v", rc)
	}
	taint, err := record.ReadTaint(taintPath)
	if err != nil || taint == nil || taint.ConfigSHA256 != sha(glassConfig) || taint.Source != "fw_cfg" || taint.Boots != 1 || taint.Since.IsZero() {
		t.Fatalf("taint: %+v %v", taint, err)
	}
	got, lines := nodeTaint(root, rc)
	if got == nil || !reflect.DeepEqual(*got, *taint) || len(lines) != 0 { // configure's own line said it
		t.Errorf("breakGlass boot: %+v %+v", got, lines)
	}

	// Reboot with a clean config: applied, the node still tainted.
	rc, _ = configure(context.Background(), []configsrc.Source{src{name: "fw_cfg", data: validConfig}}, root, nil)
	if !rc.Applied || rc.Tainted {
		t.Fatalf("clean config: %+v", rc)
	}
	got, lines = nodeTaint(root, rc)
	if got == nil || !reflect.DeepEqual(*got, *taint) {
		t.Errorf("clean boot: taint %+v, want %+v", got, taint)
	}
	if len(lines) != 1 || lines[0].level != klog.LevelWarning || !strings.HasPrefix(lines[0].msg, "warning: this node is tainted since ") ||
		!strings.Contains(lines[0].msg, "by config sha256:"+sha(glassConfig)[:12]+"… from fw_cfg (access.breakGlass): it stays so until it is re-imaged") {
		t.Errorf("clean boot lines: %+v", lines)
	}
	// An invalid config changes nothing of it either.
	configure(context.Background(), []configsrc.Source{src{name: "fw_cfg", data: "kind: x\n"}}, root, nil)
	if got, _ := record.ReadTaint(taintPath); got == nil || !reflect.DeepEqual(*got, *taint) {
		t.Errorf("after an invalid config: %+v", got)
	}
	// Another breakGlass boot keeps the first taint and counts.
	configure(context.Background(), []configsrc.Source{src{name: "cmdline", data: glassConfig + "hostname: again\n"}}, root, nil)
	if got, _ := record.ReadTaint(taintPath); got == nil || got.Since != taint.Since || got.ConfigSHA256 != taint.ConfigSHA256 ||
		got.Boots != 2 || got.LastConfigSHA256 != sha(glassConfig+"hostname: again\n") {
		t.Errorf("second breakGlass boot: %+v", got)
	}

	// A node never tainted: nothing.
	if got, lines := nodeTaint(testRoot(t), record.Config{Source: "fw_cfg", Applied: true}); got != nil || len(lines) != 0 {
		t.Errorf("clean node: %+v %+v", got, lines)
	}
}

// A breakGlass config whose taint cannot be recorded is not applied.
func TestConfigureTaintUnrecordable(t *testing.T) {
	root := testRoot(t)
	os.WriteFile(filepath.Join(root, "var"), []byte("not a directory"), 0o644) // no state partition to write to
	before := snapshot(t, root)
	rc, lines := configure(context.Background(), []configsrc.Source{src{name: "fw_cfg", data: glassConfig}}, root, nil)
	if rc.Applied || rc.Tainted || rc.Failed != record.ConfigFailedApply || !strings.Contains(rc.Error, "access.breakGlass: recording the taint in /var/lib/slate/tainted") {
		t.Errorf("record: %+v", rc)
	}
	if len(lines) != 1 || !strings.Contains(lines[0].msg, "could not be applied, nothing applied: access.breakGlass: recording the taint") {
		t.Errorf("lines: %+v", lines)
	}
	if !reflect.DeepEqual(before, snapshot(t, root)) {
		t.Error("the tree changed")
	}
	// Unreadable taint record: the node counts as tainted, and says so.
	root = testRoot(t)
	os.MkdirAll(filepath.Join(root, record.TaintFile), 0o755) // a directory: unreadable as a file
	if got, lines := nodeTaint(root, record.Config{}); got != nil || len(lines) != 1 || !strings.Contains(lines[0].msg, "this node is tainted: its taint record is unreadable") {
		t.Errorf("unreadable: %+v %+v", got, lines)
	}
}

// A 4 MiB invalid config gives one short console line that names the field
// and the problem, and a short error in the record.
func TestConfigureHugeInvalid(t *testing.T) {
	huge := "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: " + strings.Repeat("a", 4<<20) + "\n"
	rc, lines := configure(context.Background(), []configsrc.Source{src{name: "fw_cfg", data: huge}}, testRoot(t), nil)
	if rc.Applied || rc.Failed != record.ConfigFailedParse || len(rc.Error) > MaxConfigError || rc.Size != len(huge) {
		t.Errorf("record: failed %q, %d-byte error", rc.Failed, len(rc.Error))
	}
	if len(lines) != 1 {
		t.Fatalf("%d lines", len(lines))
	}
	l := klog.Prefix + lines[0].msg
	if len(l) > klog.MaxLine || klog.Cap(lines[0].msg) != lines[0].msg ||
		!strings.Contains(l, "is invalid, nothing applied: hostname (line 3): \"aaaa") || !strings.Contains(l, "bytes more) is longer than 64 characters") {
		t.Errorf("console line, %d bytes: %s", len(l), l)
	}
	t.Logf("%d bytes: %s", len(l), l)
}
