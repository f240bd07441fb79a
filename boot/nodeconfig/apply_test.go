package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/slate-os/slate/internal/strictyaml"
)

var asRoot = os.Geteuid() == 0

func TestMain(m *testing.M) {
	if !asRoot {
		// Without root, files stay the test user's: ownership is not checked.
		chown = func(string, int, int) error { return nil }
	}
	os.Exit(m.Run())
}

const testSHA512 = "$6$saltsalt$JcVDtuB6d1BHhCd5RPBh8g8xX/1CbY8EU2PN0MTaj2/Mypw4P./C6dN4j0HALhzBDTocyW1Jm.gYaTPjFGCV40"

// newTree makes a small target root: accounts, time zones, units in
// /usr/lib with [Install] sections, units the image enables, and symlinks
// that lead out of /etc.
func newTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	file := func(p, data string, mode os.FileMode) {
		t.Helper()
		h := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(h), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(h, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(h, mode); err != nil {
			t.Fatal(err)
		}
	}
	link := func(p, target string) {
		t.Helper()
		h := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(h), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, h); err != nil {
			t.Fatal(err)
		}
	}
	dir := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1001::/home/app:/bin/sh\nsystemd-network:x:998:998::/:/usr/sbin/nologin\n", 0o644)
	file("etc/group", "root:x:0:\nshadow:x:42:\napp:x:1001:\nstaff:x:50:app\nsystemd-network:x:998:\n", 0o644)
	file("etc/shadow", "root:*:19000:0:99999:7:::\napp:!:19000:0:99999:7:::\n", 0o640)
	if asRoot {
		if err := os.Chown(filepath.Join(root, "etc/shadow"), 0, 42); err != nil {
			t.Fatal(err)
		}
	}
	file("etc/hostname", "image\n", 0o644)
	file("etc/existing.conf", "old\n", 0o644)
	file("etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\n", 0o644)
	file("usr/share/zoneinfo/Etc/UTC", "TZif2 utc", 0o644)
	link("usr/share/zoneinfo/UTC", "Etc/UTC")
	file("usr/share/zoneinfo/Europe/Paris", "TZif2 paris", 0o644)
	file("usr/share/zoneinfo/zone.tab", "# not a zone\n", 0o644)
	link("etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
	file("usr/lib/os-release", "ID=debian\n", 0o644)
	link("etc/os-release", "../usr/lib/os-release")
	link("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")

	const lib = "usr/lib/systemd/system/"
	file(lib+"demo.service", "[Unit]\nDescription=demo\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nRequiredBy=boot-complete.target\nAlias=demo-alias.service\nAlso=demo.socket\n", 0o644)
	file(lib+"demo.socket", "[Socket]\nListenStream=1234\n[Install]\nWantedBy=sockets.target\n", 0o644)
	file(lib+"static.service", "[Service]\nExecStart=/bin/true\n", 0o644)
	file(lib+"img.service", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nAlias=img-alias.service\n", 0o644)
	file(lib+"serial-getty@.service", "[Service]\nExecStart=/sbin/agetty %I\n[Install]\nWantedBy=getty.target\nDefaultInstance=ttyS0\n", 0o644)
	file(lib+"masked.service", "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n", 0o644)
	link("etc/systemd/system/masked.service", "/dev/null")
	link("etc/systemd/system/multi-user.target.wants/img.service", "/usr/lib/systemd/system/img.service")
	link("etc/systemd/system/img-alias.service", "/usr/lib/systemd/system/img.service")
	link("etc/systemd/system/getty.target.wants/serial-getty@ttyS1.service", "/usr/lib/systemd/system/serial-getty@.service")
	link("etc/systemd/system/getty.target.wants/serial-getty@ttyS2.service", "/usr/lib/systemd/system/serial-getty@.service")
	link("etc/systemd/system/getty.target.wants/getty@tty1.service", "/usr/lib/systemd/system/getty@.service")

	// Traps: links that lead out of /etc and /run, and one that stays in.
	link("etc/foo", "/usr/lib/foo")
	link("etc/libdir", "../usr/lib")
	link("etc/up", "../../../../../..")
	link("etc/loop", "loop")
	link("etc/sub", "sub2")
	dir("etc/sub2")
	dir("run")
	return root
}

// snapshot describes every entry under root: type, mode, owner, and
// contents or link target (directories' times are left out).
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			desc += fmt.Sprintf(" ino=%d %q", st.Ino, data)
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "gone: "+k+" "+v)
		} else if v != w {
			d = append(d, "changed: "+k+" "+v+" => "+w)
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "new: "+k+" "+v)
		}
	}
	sort.Strings(d)
	return d
}

func readFile(t *testing.T, root, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkFile(t *testing.T, root, p, data string, mode os.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, p))
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if !fi.Mode().IsRegular() {
		t.Errorf("%s: %v, want a regular file", p, fi.Mode())
		return
	}
	if got := readFile(t, root, p); got != data {
		t.Errorf("%s: %q, want %q", p, got, data)
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
	}
	checkOwner(t, fi, p, uid, gid)
}

func checkOwner(t *testing.T, fi fs.FileInfo, p string, uid, gid int) {
	t.Helper()
	if !asRoot {
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
	}
}

func checkDir(t *testing.T, root, p string, mode os.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, p))
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if !fi.IsDir() || fi.Mode().Perm() != mode {
		t.Errorf("%s: %v, want a directory %v", p, fi.Mode(), mode)
	}
	checkOwner(t, fi, p, uid, gid)
}

func checkLink(t *testing.T, root, p, target string) {
	t.Helper()
	got, err := os.Readlink(filepath.Join(root, p))
	if err != nil {
		t.Errorf("%s: %v", p, err)
	} else if got != target {
		t.Errorf("%s -> %s, want -> %s", p, got, target)
	}
}

func checkGone(t *testing.T, root, p string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: still there (%v)", p, err)
	}
}

const fullConfig = head + `
hostname: node-1
timezone: Europe/Paris
directories:
  - path: /etc/app
    mode: "0750"
    owner: root:app
  - path: /etc/ssh
    mode: "0700"
files:
  - path: /etc/app/app.conf
    mode: "0640"
    owner: app
    contents: {text: "level=debug\n"}
  - path: /etc/existing.conf
    overwrite: true
    contents: {base64: bmV3Cg==}
  - path: /run/app/state
    owner: "1234"
    mode: "0600"
  - path: /etc/app/staff
    owner: "1000:staff"
    mode: 0o2750
    contents: {text: "#!/bin/sh\n"}
  - path: /etc/sub/inner.conf
    contents: {text: "x"}
  - path: /etc/resolv.conf
    overwrite: true
    contents: {text: "nameserver 10.0.2.3\n"}
links:
  - path: /etc/motd
    target: /run/motd
systemd:
  units:
    - name: hello.service
      contents: |
        [Unit]
        Description=hello
        [Service]
        Type=oneshot
        ExecStart=/bin/echo SLATE-HELLO
        [Install]
        WantedBy=multi-user.target
      dropins:
        - name: 10-env.conf
          contents: "[Service]\nEnvironment=A=1\n"
      enabled: true
    - name: demo.service
      enabled: true
    - name: img.service
      enabled: false
    - name: serial-getty@.service
      enabled: false
    - name: apt-daily.timer
      masked: true
    - name: static.service
      dropins: [{name: 50-nice.conf, contents: "[Service]\nNice=5\n"}]
sysctl:
  net.ipv4.ip_forward: 1
  kernel.panic: "10"
kernelModules: [br_netfilter, overlay]
network:
  - name: 10-en.network
    contents: "[Match]\nName=en*\n[Network]\nDHCP=yes\n"
extensions: [docker]
update: {source: "10.0.2.2:5000/slate/node:2", insecure: true}
health: {requiredUnits: [hello.service], timeout: 2m}
access:
  breakGlass: true
  rootPasswordHash: "` + testSHA512 + `"
  sshAuthorizedKeys: ["` + testEd25519 + `"]
`

func TestApplyEverything(t *testing.T) {
	root := newTree(t)
	before := snapshot(t, root)
	c := mustParse(t, fullConfig)
	a, err := c.Apply(root)
	if err != nil {
		t.Fatal(err)
	}
	const sys = "etc/systemd/system/"

	checkFile(t, root, "etc/hostname", "node-1\n", 0o644, 0, 0)
	checkLink(t, root, "etc/localtime", "../usr/share/zoneinfo/Europe/Paris")
	checkFile(t, root, "etc/timezone", "Europe/Paris\n", 0o644, 0, 0)

	checkDir(t, root, "etc/app", 0o750, 0, 1001)
	checkDir(t, root, "etc/ssh", 0o700, 0, 0) // existing: mode given, applied
	checkFile(t, root, "etc/app/app.conf", "level=debug\n", 0o640, 1000, 1001)
	checkFile(t, root, "etc/existing.conf", "new\n", 0o644, 0, 0)
	checkDir(t, root, "run/app", 0o755, 0, 0)
	checkFile(t, root, "run/app/state", "", 0o600, 1234, 0)
	checkFile(t, root, "etc/app/staff", "#!/bin/sh\n", 0o750|fs.ModeSetgid, 1000, 50)
	checkFile(t, root, "etc/sub2/inner.conf", "x", 0o644, 0, 0)
	checkLink(t, root, "etc/sub", "sub2")
	checkFile(t, root, "etc/resolv.conf", "nameserver 10.0.2.3\n", 0o644, 0, 0)
	checkLink(t, root, "etc/motd", "/run/motd")

	checkFile(t, root, sys+"hello.service", c.Systemd.Units[0].Contents, 0o644, 0, 0)
	checkFile(t, root, sys+"hello.service.d/10-env.conf", "[Service]\nEnvironment=A=1\n", 0o644, 0, 0)
	checkLink(t, root, sys+"multi-user.target.wants/hello.service", "/etc/systemd/system/hello.service")
	checkLink(t, root, sys+"multi-user.target.wants/demo.service", "/usr/lib/systemd/system/demo.service")
	checkLink(t, root, sys+"boot-complete.target.requires/demo.service", "/usr/lib/systemd/system/demo.service")
	checkLink(t, root, sys+"demo-alias.service", "/usr/lib/systemd/system/demo.service")
	checkLink(t, root, sys+"sockets.target.wants/demo.socket", "/usr/lib/systemd/system/demo.socket") // Also=
	checkGone(t, root, sys+"multi-user.target.wants/img.service")
	checkGone(t, root, sys+"img-alias.service")
	checkGone(t, root, sys+"getty.target.wants/serial-getty@ttyS1.service")
	checkGone(t, root, sys+"getty.target.wants/serial-getty@ttyS2.service")
	checkLink(t, root, sys+"getty.target.wants/getty@tty1.service", "/usr/lib/systemd/system/getty@.service") // another template
	checkLink(t, root, sys+"apt-daily.timer", "/dev/null")
	checkFile(t, root, sys+"static.service.d/50-nice.conf", "[Service]\nNice=5\n", 0o644, 0, 0)

	checkFile(t, root, "etc/sysctl.d/90-slate.conf",
		"# Written by slate at boot from the node config (sysctl).\nkernel.panic = 10\nnet.ipv4.ip_forward = 1\n", 0o644, 0, 0)
	checkFile(t, root, "etc/modules-load.d/slate.conf",
		"# Written by slate at boot from the node config (kernelModules).\nbr_netfilter\noverlay\n", 0o644, 0, 0)
	checkFile(t, root, "etc/systemd/network/10-en.network", "[Match]\nName=en*\n[Network]\nDHCP=yes\n", 0o644, 0, 0)

	shadow := readFile(t, root, "etc/shadow")
	lines := strings.Split(shadow, "\n")
	if f := strings.Split(lines[0], ":"); len(lines) != 3 || f[0] != "root" || f[1] != testSHA512 || f[2] == "19000" || f[3] != "0" || f[4] != "99999" {
		t.Errorf("shadow:\n%s", shadow)
	}
	if lines[1] != "app:!:19000:0:99999:7:::" {
		t.Errorf("shadow's other lines changed:\n%s", shadow)
	}
	checkFile(t, root, "etc/shadow", shadow, 0o640, 0, 42)
	checkFile(t, root, "etc/ssh/authorized_keys.d/root",
		"# Written by slate at boot from the node config (access.breakGlass).\n"+testEd25519+"\n", 0o600, 0, 0)
	if conf := readFile(t, root, "etc/ssh/sshd_config.d/60-slate-breakglass.conf"); !strings.Contains(conf, "\nAuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 /etc/ssh/authorized_keys.d/%u\n") {
		t.Errorf("sshd drop-in:\n%s", conf)
	}

	// The record: 0600, and it parses back to the config.
	fi, err := os.Stat(filepath.Join(root, "run/slate/config.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record: %v %v", fi, err)
	}
	rec, err := Load(filepath.Join(root, "run/slate/config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rec, c) {
		t.Errorf("record differs:\n%+v\n%+v", rec, c)
	}

	if !a.Tainted || a.Hostname != "node-1" || a.Timezone != "Europe/Paris" {
		t.Errorf("applied: %+v", a)
	}
	if !reflect.DeepEqual(a.Enabled, []string{"hello.service", "demo.service"}) || !reflect.DeepEqual(a.Disabled, []string{"img.service", "serial-getty@.service"}) ||
		!reflect.DeepEqual(a.Masked, []string{"apt-daily.timer"}) {
		t.Errorf("units: %v %v %v", a.Enabled, a.Disabled, a.Masked)
	}
	wantRemoved := []string{
		"/etc/systemd/system/getty.target.wants/serial-getty@ttyS1.service",
		"/etc/systemd/system/getty.target.wants/serial-getty@ttyS2.service",
		"/etc/systemd/system/img-alias.service",
		"/etc/systemd/system/multi-user.target.wants/img.service",
	}
	removed := append([]string{}, a.Removed...)
	sort.Strings(removed)
	if !reflect.DeepEqual(removed, wantRemoved) {
		t.Errorf("removed: %v", a.Removed)
	}

	// Applied.Files lists exactly what changed in the tree, all of it
	// under /etc and /run; nothing else changed.
	after := snapshot(t, root)
	listed := map[string]bool{}
	for _, f := range a.Files {
		if !inBounds(f) {
			t.Errorf("applied outside /etc and /run: %s", f)
		}
		listed[strings.TrimPrefix(f, "/")] = true
	}
	for _, d := range diffSnapshots(before, after) {
		kind, rest, _ := strings.Cut(d, ": ")
		p, _, _ := strings.Cut(rest, " ")
		if !strings.HasPrefix(p, "etc/") && !strings.HasPrefix(p, "run/") {
			t.Errorf("changed outside /etc and /run: %s", d)
		}
		if strings.Contains(p, ".slate-") {
			t.Errorf("left behind: %s", d)
		}
		switch kind {
		case "gone":
			if !contains(a.Removed, "/"+p) {
				t.Errorf("removed but not in Applied.Removed: %s", d)
			}
		default:
			if !listed[p] && p != "etc" && p != "run" && !strings.HasSuffix(d, "-> ../usr/share/zoneinfo/Europe/Paris") {
				// A directory's mode only changes when listed; parents
				// gain entries, which the snapshot does not show.
				t.Errorf("changed but not in Applied.Files: %s", d)
			}
		}
	}
	for f := range listed {
		if _, ok := after[f]; !ok {
			t.Errorf("Applied.Files lists %s, which is not there", f)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestApplyUnitForms(t *testing.T) {
	root := newTree(t)
	c := mustParse(t, head+`
systemd:
  units:
    - name: serial-getty@.service
      enabled: true
    - name: serial-getty@ttyS5.service
      enabled: true
    - name: own@.service
      contents: "[Service]\nExecStart=/bin/true %i\n[Install]\nWantedBy=multi-user.target %p-%i.target\nDefaultInstance=one\n"
      enabled: true
    - name: masked.service
      enabled: false
    - name: demo.service
      masked: true
      enabled: false
`)
	if _, err := c.Apply(root); err != nil {
		t.Fatal(err)
	}
	const sys = "etc/systemd/system/"
	checkLink(t, root, sys+"getty.target.wants/serial-getty@ttyS0.service", "/usr/lib/systemd/system/serial-getty@.service")
	checkLink(t, root, sys+"getty.target.wants/serial-getty@ttyS5.service", "/usr/lib/systemd/system/serial-getty@.service")
	// enabled: true on a template does not touch its other instances
	checkLink(t, root, sys+"getty.target.wants/serial-getty@ttyS1.service", "/usr/lib/systemd/system/serial-getty@.service")
	checkLink(t, root, sys+"multi-user.target.wants/own@one.service", "/etc/systemd/system/own@.service")
	checkLink(t, root, sys+"own-one.target.wants/own@one.service", "/etc/systemd/system/own@.service")
	checkLink(t, root, sys+"demo.service", "/dev/null")
	checkLink(t, root, sys+"masked.service", "/dev/null") // disabling a masked unit leaves the mask
}

// A config that names an extension reference enables the agent's fetch
// unit, where the image has it; one with names only does not.
func TestApplyExtensionFetch(t *testing.T) {
	const sys = "etc/systemd/system/"
	fetch := "[Unit]\nAfter=network-online.target\n[Service]\nExecStart=/usr/bin/slate sysext fetch\n[Install]\nWantedBy=multi-user.target\n"
	for _, c := range []struct {
		ext      string
		withUnit bool
		wantLink bool
	}{
		{"[registry.example/ext/tools:1]", true, true},
		{"[tools]", true, false},
		{"[registry.example/ext/tools:1]", false, false},
	} {
		root := newTree(t)
		if c.withUnit {
			if err := os.WriteFile(filepath.Join(root, "usr/lib/systemd/system", ExtensionFetchUnit), []byte(fetch), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cfg := mustParse(t, head+"extensions: "+c.ext+"\n")
		if _, err := cfg.Apply(root); err != nil {
			t.Fatal(err)
		}
		link := sys + "multi-user.target.wants/" + ExtensionFetchUnit
		if c.wantLink {
			checkLink(t, root, link, "/usr/lib/systemd/system/"+ExtensionFetchUnit)
		} else {
			checkGone(t, root, link)
		}
	}
}

// Configs that parse but that the tree refuses: Apply writes nothing and
// names the field.
func TestApplyRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		prep      func(t *testing.T, root string)
		path, msg string
	}{
		{name: "symlink out", doc: "files:\n  - path: /etc/foo\n    overwrite: true\n",
			path: "files[0].path", msg: "/etc/foo resolves through a symlink to /usr/lib/foo, outside /etc and /run"},
		{name: "symlink out on the way", doc: "files:\n  - path: /etc/a\n  - path: /etc/libdir/x\n",
			path: "files[1].path", msg: "/etc/libdir/x resolves through the symlink /etc/libdir to /usr/lib, outside /etc and /run"},
		{name: "image link to /usr", doc: "files:\n  - path: /etc/os-release\n    overwrite: true\n",
			path: "files[0].path", msg: "/etc/os-release resolves through a symlink to /usr/lib/os-release"},
		{name: "dotdot link to the root", doc: "files:\n  - path: /etc/up/etc/x\n",
			path: "files[0].path", msg: "through the symlink /etc/up to /, outside"},
		{name: "symlink out for a link", doc: "links:\n  - path: /etc/libdir/l\n    target: /etc/x\n",
			path: "links[0].path", msg: "through the symlink /etc/libdir to /usr/lib"},
		{name: "symlink out for a directory", doc: "directories:\n  - path: /etc/libdir/d\n",
			path: "directories[0].path", msg: "through the symlink /etc/libdir to /usr/lib"},
		{name: "symlink loop", doc: "files:\n  - path: /etc/loop/x\n",
			path: "files[0].path", msg: "too many levels of symbolic links"},
		{name: "under a file", doc: "files:\n  - path: /etc/existing.conf/x\n",
			path: "files[0].path", msg: "/etc/existing.conf is not a directory"},
		{name: "exists", doc: "files:\n  - path: /etc/existing.conf\n",
			path: "files[0].path", msg: "/etc/existing.conf already exists in the image: set overwrite: true"},
		{name: "link exists", doc: "links:\n  - path: /etc/existing.conf\n    target: x\n",
			path: "links[0].path", msg: "already exists"},
		{name: "over a directory", doc: "files:\n  - path: /etc/systemd/system\n    overwrite: true\n",
			path: "files[0].path", msg: "/etc/systemd/system is a directory"},
		{name: "directory over a file", doc: "directories:\n  - path: /etc/existing.conf\n",
			path: "directories[0].path", msg: "is not a directory"},
		{name: "unknown user", doc: "files:\n  - path: /etc/x\n    owner: nobody\n",
			path: "files[0].owner", msg: `user "nobody" is not in the image's /etc/passwd`},
		{name: "unknown group", doc: "directories:\n  - path: /etc/x\n    owner: app:wheel\n",
			path: "directories[0].owner", msg: `group "wheel" is not in the image's /etc/group`},
		{name: "no passwd", doc: "files:\n  - path: /etc/x\n    owner: app\n",
			prep: func(t *testing.T, root string) { os.Remove(filepath.Join(root, "etc/passwd")) },
			path: "files[0].owner", msg: "the image has no /etc/passwd"},
		{name: "unknown timezone", doc: "timezone: Mars/Olympus_Mons\n",
			path: "timezone", msg: "Mars/Olympus_Mons is not a time zone of this image"},
		{name: "timezone directory", doc: "timezone: Europe\n",
			path: "timezone", msg: "is not a file"},
		{name: "timezone not tzif", doc: "timezone: zone.tab\n",
			path: "timezone", msg: "no TZif header"},
		{name: "enable missing unit", doc: "systemd:\n  units:\n    - name: nothere.service\n      enabled: true\n",
			path: "systemd.units[0].enabled", msg: "nothere.service is not in the image"},
		{name: "enable static unit", doc: "systemd:\n  units:\n    - name: static.service\n      enabled: true\n",
			path: "systemd.units[0].enabled", msg: "nothing to enable"},
		{name: "enable unit masked in image", doc: "systemd:\n  units:\n    - name: masked.service\n      enabled: true\n",
			path: "systemd.units[0].enabled", msg: "masked in the image"},
		{name: "enable template without instance", doc: "systemd:\n  units:\n    - name: x@.service\n      enabled: true\n",
			prep: func(t *testing.T, root string) {
				os.WriteFile(filepath.Join(root, "usr/lib/systemd/system/x@.service"), []byte("[Install]\nWantedBy=multi-user.target\n"), 0o644)
			},
			path: "systemd.units[0].enabled", msg: "is a template"},
		{name: "enable bad install in image", doc: "systemd:\n  units:\n    - name: bad.service\n      enabled: true\n",
			prep: func(t *testing.T, root string) {
				os.WriteFile(filepath.Join(root, "usr/lib/systemd/system/bad.service"), []byte("[Install]\nWantedBy=multi-user\n"), 0o644)
			},
			path: "systemd.units[0].enabled", msg: "/usr/lib/systemd/system/bad.service: [Install]"},
		{name: "enable link escapes", doc: "systemd:\n  units:\n    - name: demo.service\n      enabled: true\n",
			prep: func(t *testing.T, root string) {
				os.Symlink("/usr/lib/systemd/system/sockets.target.wants", filepath.Join(root, "etc/systemd/system/sockets.target.wants"))
			},
			path: "systemd.units[0].enabled", msg: "through the symlink /etc/systemd/system/sockets.target.wants to /usr/lib/systemd/system/sockets.target.wants"},
		{name: "disable through escaping wants dir", doc: "systemd:\n  units:\n    - name: demo.service\n      enabled: false\n",
			prep: func(t *testing.T, root string) {
				os.Symlink("/usr/lib/systemd/system/sockets.target.wants", filepath.Join(root, "etc/systemd/system/sockets.target.wants"))
			},
			path: "systemd.units[0].enabled", msg: "outside /etc and /run"},
		{name: "enable link clashes with a file", doc: "files:\n  - path: /etc/systemd/system/multi-user.target.wants/demo.service\nsystemd:\n  units:\n    - name: demo.service\n      enabled: true\n",
			path: "systemd.units[0].enabled", msg: "also written by files[0].path"},
		{name: "unit dir escapes", doc: "systemd:\n  units:\n    - name: a.service\n      contents: \"[Service]\\nExecStart=/bin/true\\n\"\n",
			prep: func(t *testing.T, root string) {
				os.RemoveAll(filepath.Join(root, "etc/systemd/system"))
				os.Symlink("../../usr/lib/systemd/system", filepath.Join(root, "etc/systemd/system"))
			},
			path: "systemd.units[0].contents", msg: "through the symlink /etc/systemd/system to /usr/lib/systemd/system"},
		{name: "shadow without root", doc: "access:\n  breakGlass: true\n  rootPasswordHash: \"" + testSHA512 + "\"\n",
			prep: func(t *testing.T, root string) {
				os.WriteFile(filepath.Join(root, "etc/shadow"), []byte("app:!:1::::::\n"), 0o640)
			},
			path: "access.rootPasswordHash", msg: "no line for root"},
		{name: "no shadow", doc: "access:\n  breakGlass: true\n  rootPasswordHash: \"" + testSHA512 + "\"\n",
			prep: func(t *testing.T, root string) { os.Remove(filepath.Join(root, "etc/shadow")) },
			path: "access.rootPasswordHash", msg: "no regular file /etc/shadow"},
		{name: "shadow links out", doc: "access:\n  breakGlass: true\n  rootPasswordHash: \"" + testSHA512 + "\"\n",
			prep: func(t *testing.T, root string) {
				os.Remove(filepath.Join(root, "etc/shadow"))
				os.Symlink("/usr/lib/os-release", filepath.Join(root, "etc/shadow"))
			},
			path: "access.rootPasswordHash", msg: "/etc/shadow resolves through a symlink to /usr/lib/os-release"},
		{name: "paths meet through a symlink", doc: "files:\n  - path: /etc/sub/x\n  - path: /etc/sub2/x\n",
			path: "files[1].path", msg: "/etc/sub2/x is also written by files[0].path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newTree(t)
			if tc.prep != nil {
				tc.prep(t, root)
			}
			before := snapshot(t, root)
			c := mustParse(t, head+tc.doc)
			a, err := c.Apply(root)
			if err == nil {
				t.Fatalf("applied: %+v", a)
			}
			var fe *strictyaml.FieldError
			if !errors.As(err, &fe) || fe.Path != tc.path || !strings.Contains(fe.Msg, tc.msg) {
				t.Errorf("got %v\nwant %s: ...%s...", err, tc.path, tc.msg)
			}
			if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
				t.Errorf("a refused config changed the tree:\n%s", strings.Join(d, "\n"))
			}
			// The init can point at the line in the document.
			if err := WithLine([]byte(head+tc.doc), err); !errors.As(err, &fe) || fe.Line < 3 {
				t.Errorf("no line added: %v", err)
			}
		})
	}
}

// A Config built in Go is validated by Apply too.
func TestApplyValidates(t *testing.T) {
	root := newTree(t)
	before := snapshot(t, root)
	c := &Config{APIVersion: APIVersion, Kind: Kind, Hostname: "ok",
		Files: []File{{Path: "/etc/x"}, {Path: "/usr/lib/x"}}}
	_, err := c.Apply(root)
	if err == nil || !strings.Contains(err.Error(), "files[1].path: /usr/lib/x is outside /etc and /run") {
		t.Errorf("got %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Errorf("changed:\n%s", strings.Join(d, "\n"))
	}
	if _, err := (&Config{APIVersion: APIVersion, Kind: Kind}).Apply(filepath.Join(root, "none")); err == nil {
		t.Error("applied to a missing root")
	}
}

// Every op of the full config fails in turn: each time the tree must be
// exactly as before (same files, modes, owners, contents, inodes).
func TestApplyRollback(t *testing.T) {
	c := mustParse(t, fullConfig)
	var n int
	beforeOp = func(i int, o *op) error { n++; return nil }
	if _, err := c.Apply(newTree(t)); err != nil {
		t.Fatal(err)
	}
	beforeOp = nil
	if n < 30 {
		t.Fatalf("only %d ops", n)
	}
	defer func() { beforeOp = nil }()
	for k := 0; k < n; k++ {
		root := newTree(t)
		before := snapshot(t, root)
		var failed *op
		beforeOp = func(i int, o *op) error {
			if i == k {
				failed = o
				return errors.New("injected failure")
			}
			return nil
		}
		_, err := c.Apply(root)
		if err == nil || !strings.Contains(err.Error(), "injected failure; nothing was applied") {
			t.Fatalf("op %d: %v", k, err)
		}
		field := failed.field
		if field == "" {
			field = "document" // the record
		}
		if !strings.HasPrefix(err.Error(), field+": writing "+failed.path) {
			t.Errorf("op %d: error does not name the field and path: %v", k, err)
		}
		if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
			t.Errorf("failing at op %d (%s %s) left changes:\n%s", k, failed.field, failed.path, strings.Join(d, "\n"))
		}
	}
}

// A real failure of the file system mid-way: something takes the place of a
// directory Apply is about to make.
func TestApplyRollbackRealFailure(t *testing.T) {
	root := newTree(t)
	before := snapshot(t, root)
	blocker := filepath.Join(root, "etc/sysctl.d")
	defer func() { beforeOp = nil }()
	beforeOp = func(i int, o *op) error {
		if o.kind == opMkdir && o.path == "/etc/sysctl.d" {
			return os.WriteFile(blocker, []byte("in the way"), 0o644)
		}
		return nil
	}
	_, err := mustParse(t, fullConfig).Apply(root)
	if err == nil || !strings.Contains(err.Error(), "file exists") {
		t.Fatalf("got %v", err)
	}
	os.Remove(blocker)
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Errorf("left changes:\n%s", strings.Join(d, "\n"))
	}
}

// When the undo itself fails, the error says so.
func TestApplyRollbackFailureReported(t *testing.T) {
	root := newTree(t)
	defer func() { beforeOp = nil }()
	beforeOp = func(i int, o *op) error {
		if o.path == RecordPath {
			// Something else puts a file into a directory Apply made.
			os.WriteFile(filepath.Join(root, "etc/sysctl.d/stray.conf"), nil, 0o644)
			return errors.New("injected failure")
		}
		return nil
	}
	_, err := mustParse(t, fullConfig).Apply(root)
	if err == nil || !strings.Contains(err.Error(), "injected failure; undoing the writes before it failed too") ||
		!strings.Contains(err.Error(), "sysctl.d") {
		t.Fatalf("got %v", err)
	}
}

// Without root, a directory made read-only mid-way fails the next write
// into it: here one that Apply made itself, so that it can still remove it.
func TestApplyRollbackReadOnlyDir(t *testing.T) {
	if asRoot {
		t.Skip("root writes into read-only directories; TestApplyRollbackRealFailure covers a real failure")
	}
	root := newTree(t)
	before := snapshot(t, root)
	ro := filepath.Join(root, "etc/systemd/system/hello.service.d")
	defer func() { beforeOp = nil }()
	beforeOp = func(i int, o *op) error {
		if o.kind == opWrite && o.field == "systemd.units[0].dropins[0].name" {
			return os.Chmod(ro, 0o555)
		}
		return nil
	}
	_, err := mustParse(t, fullConfig).Apply(root)
	if err == nil || !strings.Contains(err.Error(), "permission denied; nothing was applied") {
		t.Fatalf("got %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Errorf("left changes:\n%s", strings.Join(d, "\n"))
	}
}

func TestResolve(t *testing.T) {
	root := newTree(t)
	tr := tree{root: root}
	for _, tc := range []struct {
		p                   string
		followLast, bounded bool
		want, err           string
	}{
		{"/etc/sub/x", true, true, "/etc/sub2/x", ""},
		{"/etc/sub", false, true, "/etc/sub", ""},
		{"/etc/sub", true, true, "/etc/sub2", ""},
		{"/etc/resolv.conf", true, true, "/run/systemd/resolve/stub-resolv.conf", ""},
		{"/etc/localtime", true, false, "/usr/share/zoneinfo/Etc/UTC", ""},
		{"/etc/localtime", false, true, "/etc/localtime", ""},
		{"/etc/localtime", true, true, "", "/etc/localtime leads to /usr/share/zoneinfo/Etc/UTC"},
		{"/usr/share/zoneinfo/UTC", true, false, "/usr/share/zoneinfo/Etc/UTC", ""},
		{"/etc/up/usr/lib", true, false, "/usr/lib", ""},
		{"/etc/libdir/../../etc/x", true, true, "", "/etc/libdir leads to /usr/lib"},
		{"/etc/missing/../x", true, true, "/etc/x", ""},
		{"/etc/loop", true, true, "", "too many levels"},
		{"/etc/existing.conf/x", true, true, "", "not a directory"},
	} {
		got, _, err := tr.resolve(tc.p, tc.followLast, tc.bounded)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("resolve(%s, %v, %v) = %s, %v; want error %q", tc.p, tc.followLast, tc.bounded, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("resolve(%s, %v, %v) = %s, %v; want %s", tc.p, tc.followLast, tc.bounded, got, err, tc.want)
		}
	}
}
