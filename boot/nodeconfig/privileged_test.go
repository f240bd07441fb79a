package nodeconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/internal/strictyaml"
)

// Every class of path that grants login or privilege is refused without
// breakGlass, whichever way the config writes it (a file, a directory, a
// link), with an error naming the field and the path; with breakGlass it
// is accepted and applied.
func TestPrivilegedPathsNeedBreakGlass(t *testing.T) {
	for _, tc := range []struct {
		class string
		path  string
	}{
		{"user database", "/etc/passwd"},
		{"password database", "/etc/shadow"},
		{"group database", "/etc/group"},
		{"group passwords", "/etc/gshadow"},
		{"subordinate ids", "/etc/subuid"},
		{"subordinate gids", "/etc/subgid"},
		{"userdb", "/etc/userdb/admin.user"},
		{"userdb in /run", "/run/userdb/admin.user"},
		{"nsswitch", "/etc/nsswitch.conf"},
		{"sudoers", "/etc/sudoers"},
		{"sudoers drop-in", "/etc/sudoers.d/admin"},
		{"sudo plugins", "/etc/sudo.conf"},
		{"sudo timestamps", "/run/sudo/ts/admin"},
		{"doas", "/etc/doas.conf"},
		{"polkit", "/etc/polkit-1/rules.d/10-admin.rules"},
		{"polkit in /run", "/run/polkit-1/rules.d/10-admin.rules"},
		{"dbus policy", "/etc/dbus-1/system.d/evil.conf"},
		{"pam.conf", "/etc/pam.conf"},
		{"pam.d", "/etc/pam.d/sshd"},
		{"pam settings", "/etc/security/access.conf"},
		{"pam capabilities", "/etc/security/capability.conf"},
		{"securetty", "/etc/securetty"},
		{"sshd config", "/etc/ssh/sshd_config"},
		{"sshd drop-in", "/etc/ssh/sshd_config.d/10-root.conf"},
		{"ssh authorized keys dir", "/etc/ssh/authorized_keys.d/root"},
		{"authorized_keys anywhere", "/etc/app/authorized_keys"},
		{"authorized_keys2", "/run/keys/authorized_keys2"},
		{"authorized principals", "/etc/app/authorized_principals"},
		{".ssh directory", "/etc/skel/.ssh/config"},
		{"hosts.equiv", "/etc/hosts.equiv"},
		{"shosts.equiv", "/etc/shosts.equiv"},
		{".rhosts", "/etc/skel/.rhosts"},
	} {
		t.Run(tc.class, func(t *testing.T) {
			for _, w := range []struct{ field, doc string }{
				{"files[0].path", "files:\n  - path: " + tc.path + "\n    overwrite: true\n"},
				{"directories[0].path", "directories:\n  - path: " + tc.path + "\n"},
				{"links[0].path", "links:\n  - path: " + tc.path + "\n    target: /run/x\n    overwrite: true\n"},
			} {
				_, err := Parse([]byte(head + w.doc))
				var fe *strictyaml.FieldError
				if !errors.As(err, &fe) || fe.Path != w.field || !strings.Contains(fe.Msg, tc.path+" grants login or privilege") ||
					!strings.Contains(fe.Msg, "needs access.breakGlass: true") || fe.Line != 4 {
					t.Errorf("%s without breakGlass: got %v", w.field, err)
				}
				if _, err := Parse([]byte(head + "access:\n  breakGlass: true\n" + w.doc)); err != nil {
					t.Errorf("%s with breakGlass: %v", w.field, err)
				}
			}
		})
	}
}

// Paths near the privileged ones, and sshd's host keys, need nothing.
func TestUnprivilegedPaths(t *testing.T) {
	for _, p := range []string{
		"/etc/passwd.d/x", "/etc/sudoers.dist", "/etc/motd", "/etc/app/app.conf", "/etc/login.defs",
		"/etc/ssh_known", "/etc/systemd/system/x.service.d/10.conf", "/run/app/sshd",
		"/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub", "/etc/ssh/ssh_host_rsa_key-cert.pub",
	} {
		if w := privileged(p); w != "" {
			t.Errorf("%s: privileged (%s)", p, w)
		}
	}
	for _, p := range []string{"/etc/ssh/ssh_host_key_evil", "/etc/ssh/ssh_host__key", "/etc/ssh/x/ssh_host_rsa_key", "/etc/ssh"} {
		if privileged(p) == "" {
			t.Errorf("%s: not privileged", p)
		}
	}
}

// A set-user-ID or set-group-ID file needs breakGlass; a set-group-ID
// directory does not.
func TestSetIDNeedsBreakGlass(t *testing.T) {
	for _, mode := range []string{`"04755"`, `"02755"`, `"06711"`, `"07777"`} {
		_, err := Parse([]byte(head + "files:\n  - path: /etc/app/tool\n    mode: " + mode + "\n"))
		var fe *strictyaml.FieldError
		if !errors.As(err, &fe) || fe.Path != "files[0].mode" || !strings.Contains(fe.Msg, "on /etc/app/tool is set-user-ID or set-group-ID") ||
			!strings.Contains(fe.Msg, "needs access.breakGlass: true") {
			t.Errorf("mode %s without breakGlass: %v", mode, err)
		}
		if _, err := Parse([]byte(head + "access: {breakGlass: true}\nfiles:\n  - path: /etc/app/tool\n    mode: " + mode + "\n")); err != nil {
			t.Errorf("mode %s with breakGlass: %v", mode, err)
		}
	}
	mustParse(t, head+"files:\n  - path: /etc/app/tool\n    mode: \"01755\"\ndirectories:\n  - path: /etc/app/shared\n    mode: \"02775\"\n")
}

// Apply checks the paths as they resolve in the image: a path that looks
// harmless but leads through an image's symlink into a privileged place is
// refused without breakGlass, and nothing is written.
func TestApplyPrivilegedThroughSymlink(t *testing.T) {
	root := newTree(t)
	if err := os.MkdirAll(filepath.Join(root, "etc/sudoers.d"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sudoers.d", filepath.Join(root, "etc/admin-rules")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, root)
	doc := head + "files:\n  - path: /etc/admin-rules/admin\n    contents: {text: \"admin ALL=(ALL) NOPASSWD: ALL\\n\"}\n"
	c := mustParse(t, doc)
	_, err := c.Apply(root)
	var fe *strictyaml.FieldError
	if !errors.As(err, &fe) || fe.Path != "files[0].path" || !strings.Contains(fe.Msg, "writes /etc/sudoers.d/admin, which grants login or privilege (sudo's rules: /etc/sudoers.d)") {
		t.Fatalf("got %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Errorf("a refused config changed the tree:\n%s", strings.Join(d, "\n"))
	}

	// With breakGlass it is written, and the node is tainted.
	c = mustParse(t, head+"access: {breakGlass: true}\n"+doc[len(head):])
	a, err := c.Apply(root)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Tainted {
		t.Error("not tainted")
	}
	if got := readFile(t, root, "etc/sudoers.d/admin"); got != "admin ALL=(ALL) NOPASSWD: ALL\n" {
		t.Errorf("sudoers.d/admin: %q", got)
	}
}

// With breakGlass, files at privileged paths are applied like any other.
func TestApplyPrivilegedWithBreakGlass(t *testing.T) {
	root := newTree(t)
	c := mustParse(t, head+`access:
  breakGlass: true
files:
  - path: /etc/sudoers.d/admin
    mode: "0440"
    contents: {text: "admin ALL=(ALL) ALL\n"}
  - path: /etc/ssh/sshd_config.d/10-root.conf
    contents: {text: "PermitRootLogin prohibit-password\n"}
  - path: /etc/shadow
    overwrite: true
    mode: "0640"
    contents: {text: "root:*:19000:0:99999:7:::\n"}
`)
	a, err := c.Apply(root)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Tainted {
		t.Error("not tainted")
	}
	checkFile(t, root, "etc/sudoers.d/admin", "admin ALL=(ALL) ALL\n", 0o440, 0, 0)
	checkFile(t, root, "etc/ssh/sshd_config.d/10-root.conf", "PermitRootLogin prohibit-password\n", 0o644, 0, 0)
}

// ApplyWith's hook runs after the checks and before the first write; its
// error applies nothing.
func TestApplyWithBeforeWrite(t *testing.T) {
	root := newTree(t)
	before := snapshot(t, root)
	c := mustParse(t, head+"access: {breakGlass: true}\nhostname: node-9\n")
	called := 0
	_, err := c.ApplyWith(root, func(a *Applied) error {
		called++
		if !a.Tainted || a.Hostname != "node-9" || len(a.Files) != 0 {
			t.Errorf("hook given %+v", a)
		}
		if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
			t.Errorf("written before the hook:\n%s", strings.Join(d, "\n"))
		}
		return errors.New("no room for the taint")
	})
	if called != 1 || err == nil || err.Error() != "no room for the taint" {
		t.Errorf("called %d, err %v", called, err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); len(d) > 0 {
		t.Errorf("the hook's error applied something:\n%s", strings.Join(d, "\n"))
	}
	// A config the checks refuse never reaches the hook.
	c = mustParse(t, head+"files:\n  - path: /etc/existing.conf\n")
	if _, err := c.ApplyWith(root, func(*Applied) error { t.Error("hook called"); return nil }); err == nil {
		t.Error("applied")
	}
}
