package nodefiles

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/testimage"
)

type got struct {
	hdr  *tar.Header
	body []byte
}

// testImage is the image info and keys the tests' layers carry.
var testImage = Image{
	Info:       boot.ImageInfo{Version: "1.4.1", Source: "sha256:abc", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	UpdateKeys: [][]byte{[]byte("-----BEGIN PUBLIC KEY-----\none\n-----END PUBLIC KEY-----\n"), []byte("-----BEGIN PUBLIC KEY-----\ntwo\n-----END PUBLIC KEY-----\n")},
}

func readLayer(t *testing.T, agent string, mtime time.Time) ([]string, map[string]got, []byte) {
	t.Helper()
	l, err := Layer(agent, mtime, testImage)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	files := map[string]got{}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		name := strings.TrimSuffix(h.Name, "/")
		order = append(order, name)
		files[name] = got{h, body}
	}
	return order, files, raw
}

func TestLayer(t *testing.T) {
	agent := testimage.StaticBinary(t)
	agentBytes, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	order, files, _ := readLayer(t, agent, mtime)

	want := []struct {
		name string
		typ  byte
		mode int64
		body string
		link string
	}{
		{"usr", tar.TypeDir, 0o755, "", ""},
		{"usr/bin", tar.TypeDir, 0o755, "", ""},
		{"usr/bin/slate", tar.TypeReg, 0o755, string(agentBytes), ""},
		{"usr/lib", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/slate", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/slate/image.json", tar.TypeReg, 0o644, string(testImage.Info.Marshal()), ""},
		{"usr/lib/slate/update-keys", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/slate/update-keys/01.pub", tar.TypeReg, 0o644, string(testImage.UpdateKeys[0]), ""},
		{"usr/lib/slate/update-keys/02.pub", tar.TypeReg, 0o644, string(testImage.UpdateKeys[1]), ""},
		{"usr/lib/systemd", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/systemd/system", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/systemd/system/boot-complete.target.requires", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/systemd/system/boot-complete.target.requires/slate-health.service", tar.TypeSymlink, 0o777, "", "../slate-health.service"},
		{"usr/lib/systemd/system/multi-user.target.wants", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/systemd/system/multi-user.target.wants/slate-access.service", tar.TypeSymlink, 0o777, "", "../slate-access.service"},
		{"usr/lib/systemd/system/multi-user.target.wants/slate-health.service", tar.TypeSymlink, 0o777, "", "../slate-health.service"},
		{"usr/lib/systemd/system/multi-user.target.wants/slate-platform-ready.service", tar.TypeSymlink, 0o777, "", "../slate-platform-ready.service"},
		{"usr/lib/systemd/system/slate-access.service", tar.TypeReg, 0o644, AccessService, ""},
		{"usr/lib/systemd/system/slate-health.service", tar.TypeReg, 0o644, HealthService, ""},
		{"usr/lib/systemd/system/slate-logship.service", tar.TypeReg, 0o644, LogshipService, ""},
		{"usr/lib/systemd/system/slate-metrics.service", tar.TypeReg, 0o644, MetricsService, ""},
		{"usr/lib/systemd/system/slate-platform-ready.service", tar.TypeReg, 0o644, PlatformReadyService, ""},
		{"usr/lib/systemd/system/slate-sysext-fetch.service", tar.TypeReg, 0o644, SysextFetchService, ""},
		{"usr/lib/systemd/system/slate-sysext.service", tar.TypeReg, 0o644, SysextService, ""},
		{"usr/lib/systemd/system/slate-upgrade.service", tar.TypeReg, 0o644, UpgradeService, ""},
		{"usr/lib/systemd/system/slate-upgrade.timer", tar.TypeReg, 0o644, UpgradeTimerUnit, ""},
		{"usr/lib/systemd/system/sysinit.target.wants", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/systemd/system/sysinit.target.wants/slate-sysext.service", tar.TypeSymlink, 0o777, "", "../slate-sysext.service"},
		{"usr/lib/systemd/system/systemd-bless-boot.service.d", tar.TypeDir, 0o755, "", ""},
		{"usr/lib/systemd/system/systemd-bless-boot.service.d/50-slate.conf", tar.TypeReg, 0o644, BlessBootConf, ""},
	}
	if len(order) != len(want) {
		t.Fatalf("layer entries:\n%s", strings.Join(order, "\n"))
	}
	for i, w := range want {
		if order[i] != w.name {
			t.Errorf("entry %d is %s, want %s (sorted, parents first)", i, order[i], w.name)
			continue
		}
		g := files[w.name]
		h := g.hdr
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link {
			t.Errorf("%s: type %c mode %o link %q, want %c %o %q", w.name, h.Typeflag, h.Mode, h.Linkname, w.typ, w.mode, w.link)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d (%s:%s), want 0:0", w.name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", w.name, h.ModTime, mtime)
		}
		if string(g.body) != w.body {
			t.Errorf("%s: body differs (%d bytes, want %d)", w.name, len(g.body), len(w.body))
		}
	}
	// The symlinks resolve to the unit, relative to their own directory.
	for _, link := range []string{HealthRequires, HealthWants} {
		if got := filepath.Join(filepath.Dir(link), files[link].hdr.Linkname); got != HealthUnit {
			t.Errorf("%s points at %s, want %s", link, got, HealthUnit)
		}
	}
	for link, unit := range map[string]string{SysextWants: SysextUnit, PlatformWants: PlatformUnit} {
		if got := filepath.Join(filepath.Dir(link), files[link].hdr.Linkname); got != unit {
			t.Errorf("%s points at %s, want %s", link, got, unit)
		}
	}
	// Extensions are activated early, as systemd-sysext.service is, and
	// before it; fetched once the network is up, before the health check.
	for _, line := range []string{"DefaultDependencies=no", "After=local-fs.target",
		"Before=systemd-sysext.service sysinit.target systemd-tmpfiles-setup.service",
		"Type=oneshot", "RemainAfterExit=yes", "ExecStart=/usr/bin/slate sysext activate", "StandardOutput=journal+console"} {
		if !strings.Contains(SysextService, "\n"+line+"\n") {
			t.Errorf("slate-sysext.service lacks %q", line)
		}
	}
	for _, line := range []string{"After=network-online.target slate-sysext.service", "Wants=network-online.target", "Before=slate-health.service",
		"Type=oneshot", "ExecStart=-/usr/bin/slate sysext fetch"} {
		if !strings.Contains(SysextFetchService, "\n"+line+"\n") {
			t.Errorf("slate-sysext-fetch.service lacks %q", line)
		}
	}
	// Azure is told the node booted once the network is up, and never
	// because of this unit: no Wants=, no failure.
	for _, line := range []string{"ConditionPathExists=/run/slate/platform.json", "After=network-online.target",
		"Type=oneshot", "ExecStart=-/usr/bin/slate platform ready", "StandardOutput=journal+console"} {
		if !strings.Contains(PlatformReadyService, "\n"+line+"\n") {
			t.Errorf("slate-platform-ready.service lacks %q", line)
		}
	}
	if strings.Contains(PlatformReadyService, "\nWants=") || strings.Contains(PlatformReadyService, "\nRequires=") ||
		strings.Contains(PlatformReadyService, "\n[Install]\n") {
		t.Error("slate-platform-ready.service pulls units in, or has [Install]: it is enabled by the image's link only")
	}
	if strings.Contains(SysextService, "\n[Install]\n") {
		t.Error("slate-sysext.service has [Install]: it is enabled by the image's link, and cannot be disabled")
	}
	// The fetch unit is enabled per boot by the node config's Apply, only
	// when the config names a reference.
	if !strings.Contains(SysextFetchService, "\n[Install]\nWantedBy=multi-user.target\n") {
		t.Error("slate-sysext-fetch.service lacks [Install] WantedBy=multi-user.target, which Apply enables it by")
	}
	// The unit and drop-in as the plan has them: the lines systemd acts on.
	for _, line := range []string{"Before=boot-complete.target", "ExecStart=/usr/bin/slate health", "FailureAction=reboot",
		"After=multi-user.target basic.target systemd-pstore.service systemd-journal-flush.service", "TimeoutStartSec=20min"} {
		if !strings.Contains(HealthService, "\n"+line+"\n") {
			t.Errorf("slate-health.service lacks %q", line)
		}
	}
	// Updates wait for the boot's verdict, and for its blessing; the timer
	// is off until a node config enables it.
	for _, line := range []string{"Requires=boot-complete.target", "After=boot-complete.target systemd-bless-boot.service network-online.target",
		"ExecStart=/usr/bin/slate upgrade"} {
		if !strings.Contains(UpgradeService, "\n"+line+"\n") {
			t.Errorf("slate-upgrade.service lacks %q", line)
		}
	}
	if !strings.Contains(UpgradeTimerUnit, "\n[Install]\nWantedBy=timers.target\n") {
		t.Error("slate-upgrade.timer cannot be enabled by a node config: no [Install]")
	}
	for _, line := range []string{"Environment=SYSTEMD_ESP_PATH=/run/slate/esp", "ExecStartPre=/usr/bin/slate esp mount"} {
		if !strings.Contains(BlessBootConf, "\n"+line+"\n") {
			t.Errorf("50-slate.conf lacks %q", line)
		}
	}
}

func TestLayerIsReproducible(t *testing.T) {
	agent := testimage.StaticBinary(t)
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 999, time.FixedZone("x", 3600))
	_, _, a := readLayer(t, agent, mtime)
	_, _, b := readLayer(t, agent, mtime.UTC())
	if !bytes.Equal(a, b) {
		t.Error("two layers of the same agent and time differ")
	}
	l1, _ := Layer(agent, mtime, testImage)
	l2, _ := Layer(agent, mtime, testImage)
	d1, err1 := l1.Digest()
	d2, err2 := l2.Digest()
	if err1 != nil || err2 != nil || d1 != d2 {
		t.Errorf("digests %v %v (%v %v)", d1, d2, err1, err2)
	}
	_, _, c := readLayer(t, agent, mtime.Add(time.Hour))
	if bytes.Equal(a, c) {
		t.Error("the modification time does not reach the layer")
	}
	// No keys: no update-keys directory.
	l3, err := Layer(agent, mtime, Image{Info: testImage.Info})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := l3.Uncompressed()
	defer rc.Close()
	for tr := tar.NewReader(rc); ; {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if strings.Contains(h.Name, "update-keys") {
			t.Errorf("a layer without keys has %s", h.Name)
		}
	}
}

func TestCheckAgentRefuses(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "slate.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755)
	truncated := filepath.Join(dir, "truncated")
	os.WriteFile(truncated, []byte("\x7fELF\x02\x01\x01"), 0o755)
	for _, tc := range []struct{ path, want string }{
		// A dynamic executable (Debian's coreutils are).
		{"/bin/true", "agent binary /bin/true is dynamically linked (interpreter /lib64/ld-linux-x86-64.so.2)"},
		{script, "agent binary " + script + " is not an ELF executable"},
		{truncated, "agent binary " + truncated + " is not an ELF executable"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		if tc.path == "/bin/true" {
			if _, err := os.Stat(tc.path); err != nil {
				t.Log("no /bin/true here")
				continue
			}
		}
		err := CheckAgent(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckAgent(%s) = %v, want %q", tc.path, err, tc.want)
			continue
		}
		if tc.path != filepath.Join(dir, "missing") && !strings.Contains(err.Error(), "CGO_ENABLED=0") {
			t.Errorf("CheckAgent(%s) = %v: does not say how to build a usable agent", tc.path, err)
		}
		if _, err := Layer(tc.path, time.Time{}, Image{}); err == nil {
			t.Errorf("Layer(%s) accepted it", tc.path)
		}
	}
	if err := CheckAgent(testimage.StaticBinary(t)); err != nil {
		t.Errorf("the static agent is refused: %v", err)
	}
}

// systemd-analyze verify, where it is installed, loads the layer's units
// among the host's own (which have systemd-sysext.service, sysinit.target,
// network-online.target) and builds the boot transaction: a bad line or an
// ordering cycle through sysinit.target fails it.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze here")
	}
	const host = "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(host, "sysinit.target")); err != nil {
		t.Skipf("no systemd units in %s", host)
	}
	root := t.TempDir()
	unitDir := filepath.Join(root, UnitDir)
	if err := os.CopyFS(unitDir, os.DirFS(host)); err != nil {
		t.Skipf("copying the host's units: %v", err)
	}
	_, files, _ := readLayer(t, testimage.StaticBinary(t), time.Unix(0, 0))
	for name, f := range files {
		p := filepath.Join(root, name)
		switch f.hdr.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.Remove(p)
			if err := os.Symlink(f.hdr.Linkname, p); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, f.body, os.FileMode(f.hdr.Mode)); err != nil {
				t.Fatal(err)
			}
		}
	}
	units := []string{"slate-sysext.service", "slate-sysext-fetch.service", "slate-health.service", "slate-upgrade.service", "slate-platform-ready.service", "default.target"}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no", "--root=" + root}, units...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=debug", "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		var problems []string
		for _, l := range strings.Split(string(out), "\n") {
			low := strings.ToLower(l)
			if strings.Contains(l, "slate") && (strings.Contains(low, "cycle") || strings.Contains(low, "deleted") || strings.Contains(low, "fail") ||
				strings.Contains(low, "invalid") || strings.Contains(low, "error") || strings.Contains(low, "not ") || strings.Contains(low, "ignoring")) {
				problems = append(problems, l)
			}
		}
		t.Fatalf("systemd-analyze verify: %v\n%s", err, strings.Join(problems, "\n"))
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "ordering cycle") || (strings.Contains(l, "slate") && strings.Contains(strings.ToLower(l), "deleted")) {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	for _, u := range []string{"slate-sysext.service", "slate-sysext-fetch.service", "slate-health.service", "slate-platform-ready.service"} {
		if !strings.Contains(string(out), u+": Installed new job "+u+"/start") {
			t.Errorf("the boot transaction does not start %s", u)
		}
	}
}
