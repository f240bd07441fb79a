package nodeconfig

// What a config may write only with access.breakGlass: the paths that grant
// login or privilege, and set-user-ID or set-group-ID files. A node config
// is root-equivalent anyway (its units run as root: that is what they are
// for), so this is no sandbox; it keeps the declarative ways to let someone
// in (a password, a key, a sudoers line, a PAM or sshd setting) behind the
// one field that taints the node, so that they are never silent.
//
// Validate checks the paths as the config writes them; Apply checks them
// again as they resolve in the image (a path through an image's symlink
// into, say, /etc/sudoers.d is refused the same way). configs/node/README.md
// lists the paths and says why.

import (
	"path"
	"slices"
	"strings"
)

// privilegedPath is a node path that grants login or privilege: it and
// everything below it.
type privilegedPath struct {
	path string
	what string // what it is, for the error
}

// privilegedPaths are the paths, by what they grant.
var privilegedPaths = []privilegedPath{
	// Accounts: who exists, with which password, in which groups.
	{"/etc/passwd", "the user database"},
	{"/etc/shadow", "the password database"},
	{"/etc/group", "the group database"},
	{"/etc/gshadow", "the group password database"},
	{"/etc/subuid", "subordinate user ids"},
	{"/etc/subgid", "subordinate group ids"},
	{"/etc/userdb", "systemd's user and group records"},
	{"/run/userdb", "systemd's user and group records"},
	{"/etc/nsswitch.conf", "where users, groups and passwords come from"},
	// Privilege: who may act as root.
	{"/etc/sudoers", "sudo's rules"},
	{"/etc/sudoers.d", "sudo's rules"},
	{"/etc/sudo.conf", "sudo's plugins and their rules files"},
	{"/run/sudo", "sudo's timestamps"},
	{"/etc/doas.conf", "doas's rules"},
	{"/etc/polkit-1", "polkit's rules"},
	{"/run/polkit-1", "polkit's rules"},
	{"/etc/dbus-1", "the D-Bus policy: who may own and call system services"},
	// Authentication: how one logs in.
	{"/etc/pam.conf", "PAM's configuration"},
	{"/etc/pam.d", "PAM's configuration"},
	{"/etc/security", "PAM modules' settings (access, limits, capabilities)"},
	{"/etc/securetty", "the terminals root may log in on"},
	{"/etc/ssh", "sshd's configuration and keys"},
	{"/etc/hosts.equiv", "hosts trusted to log in without a password"},
	{"/etc/shosts.equiv", "hosts trusted to log in without a password"},
}

// privileged says what a node path grants, "" for nothing: one of
// privilegedPaths (but not the host keys in /etc/ssh), any .ssh directory
// and anything below it, any authorized_keys or authorized_principals file
// (or directory, such as authorized_keys.d) wherever it is.
func privileged(p string) string {
	for _, pp := range privilegedPaths {
		if p == pp.path || strings.HasPrefix(p, pp.path+"/") {
			if pp.path == "/etc/ssh" && hostKey(p) {
				break
			}
			if p == pp.path {
				return pp.what
			}
			return pp.what + ": " + pp.path
		}
	}
	for _, c := range strings.Split(p, "/") {
		switch {
		case c == ".ssh":
			return "an SSH directory: .ssh"
		case strings.HasPrefix(c, "authorized_keys"), strings.HasPrefix(c, "authorized_principals"):
			return "SSH authorized keys: " + c
		case c == ".rhosts" || c == ".shosts":
			return "hosts trusted to log in without a password: " + c
		}
	}
	return ""
}

// hostKey is true for sshd's host keys, /etc/ssh/ssh_host_*_key, their
// .pub and -cert.pub: they prove the node's identity to clients and let
// no one in, and a config that keeps a node's host keys stable across
// re-imaging should not need breakGlass.
func hostKey(p string) bool {
	if path.Dir(p) != "/etc/ssh" {
		return false
	}
	b := path.Base(p)
	for _, suf := range []string{"_key", "_key.pub", "_key-cert.pub"} {
		if name, ok := strings.CutSuffix(b, suf); ok {
			return strings.HasPrefix(name, "ssh_host_") && len(name) > len("ssh_host_") && !strings.ContainsAny(name, "/")
		}
	}
	return false
}

// needsBreakGlass is the error for a field that writes p without breakGlass.
func needsBreakGlass(field, p, what string) error {
	return fe(field, "%s grants login or privilege (%s): needs access.breakGlass: true", p, what)
}

// setID is the mode bits that need breakGlass on a file.
const setID = 0o6000

// checkPrivileged refuses, without breakGlass, a files, directories or
// links entry at a path that grants login or privilege, and a file with a
// set-user-ID or set-group-ID bit (it grants its owner's or group's
// privilege to whoever runs it; /etc is not mounted nosuid). Set-group-ID
// on a directory only makes new files inherit its group: it is fine.
func (c *Config) checkPrivileged() error {
	if c.Access.BreakGlass {
		return nil
	}
	for i, f := range c.Files {
		p := idx("files", i)
		if w := privileged(f.Path); w != "" {
			return needsBreakGlass(p+".path", f.Path, w)
		}
		if f.Mode != nil && *f.Mode&setID != 0 {
			return fe(p+".mode", "%s on %s is set-user-ID or set-group-ID, which grants the file's owner's or group's privilege to whoever runs it: needs access.breakGlass: true", *f.Mode, f.Path)
		}
	}
	for i, d := range c.Directories {
		if w := privileged(d.Path); w != "" {
			return needsBreakGlass(idx("directories", i)+".path", d.Path, w)
		}
	}
	for i, l := range c.Links {
		if w := privileged(l.Path); w != "" {
			return needsBreakGlass(idx("links", i)+".path", l.Path, w)
		}
	}
	return nil
}

// checkPrivileged refuses, without breakGlass, any planned write that
// lands, once resolved in the image, on a path that grants login or
// privilege: a config path through an image's symlink into /etc/sudoers.d
// is refused as the same path written directly is.
func (p *planner) checkPrivileged(breakGlass bool) error {
	if breakGlass {
		return nil
	}
	for _, o := range append(append([]*op{}, p.mkdirs...), p.ops...) {
		if w := privileged(o.path); w != "" {
			return fe(o.field, "writes %s, which grants login or privilege (%s): needs access.breakGlass: true", o.path, w)
		}
	}
	return nil
}

// WithoutAccess is c as it applies once its break-glass has expired
// (Access.Expired): no access fields, and none of the files, directories
// and links that only breakGlass allows, so that the rest of the config
// still applies. A write that reaches a guarded path through an image's
// symlink is still refused by Apply, which then applies nothing.
func (c *Config) WithoutAccess() *Config {
	d := *c
	d.Access = Access{}
	d.Files = slices.DeleteFunc(slices.Clone(c.Files), func(f File) bool {
		return privileged(f.Path) != "" || f.Mode != nil && *f.Mode&setID != 0
	})
	d.Directories = slices.DeleteFunc(slices.Clone(c.Directories), func(x Directory) bool { return privileged(x.Path) != "" })
	d.Links = slices.DeleteFunc(slices.Clone(c.Links), func(l Link) bool { return privileged(l.Path) != "" })
	return &d
}
