package nodeconfig

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Applied is what Apply did.
type Applied struct {
	// Hostname and Timezone are the ones set, if any.
	Hostname string `json:"hostname,omitempty"`
	Timezone string `json:"timezone,omitempty"`
	// Files are the node paths (as the booted node sees them: relative to
	// the root Apply was given, with a leading slash) of every file,
	// directory and symlink Apply created, replaced or changed, in the order
	// it wrote them. Paths through symlinks are given resolved.
	Files []string `json:"files"`
	// Removed are the node paths of symlinks removed (disabled units).
	Removed []string `json:"removed,omitempty"`
	// Enabled, Disabled and Masked are the units so changed, by name.
	Enabled  []string `json:"enabled,omitempty"`
	Disabled []string `json:"disabled,omitempty"`
	Masked   []string `json:"masked,omitempty"`
	// Tainted is true when the config used access.breakGlass.
	Tainted bool `json:"tainted"`
}

// Apply writes the config into the target system whose root is root (in
// the init, /sysroot: its /etc an overlay on tmpfs, its /run a fresh tmpfs).
// It writes nothing outside root/etc and root/run.
//
// All or nothing: it validates the config, then plans every write and
// checks it against the tree (paths and the symlinks on them, existing
// files, owners, the time zone, units' [Install] sections) before it writes
// anything. If a write fails, it undoes every write before it (replaced
// files are kept aside until the end and put back) and returns the error.
func (c *Config) Apply(root string) (*Applied, error) { return c.ApplyWith(root, nil) }

// ApplyWith is Apply with beforeWrite (when not nil) run once every write
// is planned and checked, before the first: it is given what Apply is about
// to do, and an error from it applies nothing. The init records there that
// a breakGlass config taints the node, before the config can take effect.
func (c *Config) ApplyWith(root string, beforeWrite func(*Applied) error) (*Applied, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("target root: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("target root %s is not a directory", abs)
	}
	p := &planner{
		t:      tree{root: strings.TrimSuffix(abs, "/")},
		dirs:   map[string]*op{},
		byPath: map[string]*op{},
		byNode: map[string]*op{},
	}
	p.acct = &accounts{t: p.t}
	a := &Applied{Hostname: c.Hostname, Timezone: c.Timezone, Tainted: c.Access.BreakGlass}
	if err := p.plan(c, a); err != nil {
		return nil, err
	}
	if beforeWrite != nil {
		if err := beforeWrite(a); err != nil {
			return nil, err
		}
	}
	if err := p.exec(a); err != nil {
		return nil, err
	}
	return a, nil
}

// planner turns a config into ops, checking each against the tree.
type planner struct {
	t       tree
	acct    *accounts
	mkdirs  []*op
	ops     []*op
	dirs    map[string]*op // mkdir and attr ops by resolved path
	byPath  map[string]*op // other ops by resolved path
	byNode  map[string]*op // writes by the node path asked for
	entries []entry        // node paths asked for, for checkConflicts
}

// Hooks for tests: chown is replaced when the tests do not run as root;
// beforeOp can fail the i'th op to test the rollback.
var (
	chown    = os.Lchown
	beforeOp func(i int, o *op) error
)

func (p *planner) plan(c *Config, a *Applied) error {
	for i, d := range c.Directories {
		if err := p.planDirectory(idx("directories", i), d); err != nil {
			return err
		}
	}
	for i, f := range c.Files {
		field := idx("files", i)
		data, err := f.Contents.Data()
		if err != nil {
			return fe(field+".contents", "%v", err)
		}
		uid, gid, err := p.acct.lookup(f.Owner)
		if err != nil {
			return fe(field+".owner", "%v", err)
		}
		mode := DefaultFileMode
		if f.Mode != nil {
			mode = *f.Mode
		}
		if err := p.planWrite(field+".path", f.Path, data, mode, uid, gid, f.Overwrite, true); err != nil {
			return err
		}
	}
	for i, l := range c.Links {
		if err := p.planLink(idx("links", i)+".path", l.Path, l.Target, l.Overwrite, true); err != nil {
			return err
		}
	}
	if c.Hostname != "" {
		if err := p.planGenerated("hostname", pathHostname, []byte(c.Hostname+"\n"), 0o644); err != nil {
			return err
		}
	}
	if c.Timezone != "" {
		if err := p.planTimezone(c.Timezone); err != nil {
			return err
		}
	}
	if err := p.planUnits(c, a); err != nil {
		return err
	}
	if len(c.Sysctl) > 0 {
		keys := make([]string, 0, len(c.Sysctl))
		for k := range c.Sysctl {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b bytes.Buffer
		b.WriteString("# Written by slate at boot from the node config (sysctl).\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "%s = %s\n", k, strings.TrimSpace(string(c.Sysctl[k])))
		}
		if err := p.planGenerated("sysctl", pathSysctl, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if len(c.KernelModules) > 0 {
		data := "# Written by slate at boot from the node config (kernelModules).\n" + strings.Join(c.KernelModules, "\n") + "\n"
		if err := p.planGenerated("kernelModules", pathModules, []byte(data), 0o644); err != nil {
			return err
		}
	}
	for i, n := range c.Network {
		if err := p.planGenerated(idx("network", i)+".name", networkDir+"/"+n.Name, []byte(n.Contents), 0o644); err != nil {
			return err
		}
	}
	if err := p.planAccess(c.Access); err != nil {
		return err
	}
	record, err := c.JSON()
	if err != nil {
		return err
	}
	if err := p.planGenerated("", RecordPath, record, 0o600); err != nil {
		return err
	}

	// Clashes only the tree shows: enablement links, removals, and paths
	// that meet through symlinks.
	if err := checkConflicts(p.entries); err != nil {
		return err
	}
	var real []entry
	for _, o := range append(append([]*op{}, p.mkdirs...), p.ops...) {
		real = append(real, entry{o.path, o.kind.entry(), o.field})
	}
	if err := checkConflicts(real); err != nil {
		return err
	}
	if err := p.checkPrivileged(c.Access.BreakGlass); err != nil {
		return err
	}
	for _, o := range append(append([]*op{}, p.mkdirs...), p.ops...) {
		// Belt and braces: the checks above make this unreachable.
		if !inBounds(o.path) || (o.kind != opMkdir && (o.path == "/etc" || o.path == "/run")) {
			return fmt.Errorf("nodeconfig: internal error: %s would write %s", o.field, o.path)
		}
	}
	return nil
}
