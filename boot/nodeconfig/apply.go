package nodeconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
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

type opKind int

const (
	opMkdir   opKind = iota // create a directory
	opAttr                  // set an existing directory's mode or owner
	opWrite                 // create or replace a regular file
	opSymlink               // create or replace a symlink
	opRemove                // remove a symlink
)

func (k opKind) entry() entryKind {
	switch k {
	case opMkdir, opAttr:
		return kindDir
	case opSymlink:
		return kindLink
	case opRemove:
		return kindRemove
	}
	return kindFile
}

// op is one planned change, at a resolved node path.
type op struct {
	kind     opKind
	field    string
	path     string
	data     []byte
	target   string
	mode     Mode
	setMode  bool
	uid, gid int
	setOwner bool

	// undo state
	done    bool
	backup  string // host path of the replaced file, kept until commit
	oldMode Mode
	oldUID  int
	oldGID  int
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

// pathErr words an error resolving a node path for a field.
func pathErr(field, np string, err error) error {
	var esc *escapeError
	if errors.As(err, &esc) {
		if esc.link == np {
			return fe(field, "%s resolves through a symlink to %s, outside /etc and /run", np, esc.to)
		}
		return fe(field, "%s resolves through the symlink %s to %s, outside /etc and /run", np, esc.link, esc.to)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(pe.Err, syscall.ENOTDIR) {
		return fe(field, "%s: %s is not a directory", np, pe.Path)
	}
	if errors.As(err, &pe) && errors.Is(pe.Err, syscall.ELOOP) {
		return fe(field, "%s: too many levels of symbolic links", np)
	}
	return fe(field, "%s: %v", np, err)
}

// target resolves where a write to node path np lands: the parent resolved
// through every symlink, the last component as is. With followLast, a
// symlink at np itself must also stay within /etc and /run (it is then
// replaced, never written through). It plans the missing parents.
func (p *planner) target(field, np string, followLast bool) (string, fs.FileInfo, error) {
	if followLast {
		if _, _, err := p.t.resolve(np, true, true); err != nil {
			return "", nil, pathErr(field, np, err)
		}
	}
	dir, dfi, err := p.t.resolve(path.Dir(np), true, true)
	if err != nil {
		return "", nil, pathErr(field, np, err)
	}
	if dfi != nil && !dfi.IsDir() {
		return "", nil, fe(field, "%s: %s is not a directory", np, dir)
	}
	real := path.Join(dir, path.Base(np))
	if !inBounds(real) || real == "/etc" || real == "/run" {
		return "", nil, fe(field, "%s resolves to %s, outside /etc and /run", np, real)
	}
	fi, err := os.Lstat(p.t.host(real))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", nil, fe(field, "%s: %v", np, err)
	}
	if err := p.ensureDir(field, dir); err != nil {
		return "", nil, err
	}
	return real, fi, nil
}

// ensureDir plans the directories missing on the way to dir, 0755 root:root.
func (p *planner) ensureDir(field, dir string) error {
	var missing []string
	for d := dir; ; d = path.Dir(d) {
		if p.dirs[d] != nil {
			break
		}
		if o := p.byPath[d]; o != nil {
			return fe(field, "%s must be a directory, but %s makes it %s", d, o.field, o.kind.entry())
		}
		fi, err := os.Lstat(p.t.host(d))
		if err == nil {
			if !fi.IsDir() {
				return fe(field, "%s is not a directory", d)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fe(field, "%v", err)
		}
		if d == "/" {
			return fe(field, "the target root is missing")
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		o := &op{kind: opMkdir, field: field, path: missing[i], mode: DefaultDirMode, setMode: true, setOwner: true}
		p.dirs[o.path] = o
		p.mkdirs = append(p.mkdirs, o)
	}
	return nil
}

func (p *planner) add(o *op, np string) error {
	if prev := p.byPath[o.path]; prev != nil {
		if prev.kind == o.kind && o.kind == opSymlink && prev.target == o.target {
			return nil // the same link, asked for twice (Also=)
		}
		if prev.kind == opRemove && o.kind == opRemove {
			return nil
		}
		return fe(o.field, "%s is also written by %s", o.path, prev.field)
	}
	if prev := p.dirs[o.path]; prev != nil {
		return fe(o.field, "%s is also made a directory by %s", o.path, prev.field)
	}
	p.byPath[o.path] = o
	if np != "" {
		p.byNode[np] = o
		p.entries = append(p.entries, entry{np, o.kind.entry(), o.field})
	}
	p.ops = append(p.ops, o)
	return nil
}

// planWrite plans a regular file. user: a files entry, whose path must not
// even pass through a symlink that leads out, and which replaces an
// existing file only with overwrite.
func (p *planner) planWrite(field, np string, data []byte, mode Mode, uid, gid int, overwrite, user bool) error {
	real, err := p.replaceable(field, np, overwrite, user)
	if err != nil {
		return err
	}
	return p.add(&op{kind: opWrite, field: field, path: real, data: data, mode: mode, setMode: true, uid: uid, gid: gid, setOwner: true}, np)
}

// replaceable resolves np for a new file or link: what the image has there
// may be replaced only when it is not a directory and overwrite is set.
func (p *planner) replaceable(field, np string, overwrite, user bool) (string, error) {
	real, fi, err := p.target(field, np, user)
	if err != nil {
		return "", err
	}
	if fi != nil {
		if fi.IsDir() {
			return "", fe(field, "%s is a directory in the image", np)
		}
		if !overwrite {
			return "", fe(field, "%s already exists in the image: set overwrite: true to replace it", np)
		}
	}
	return real, nil
}

// planGenerated plans a file the config's fields generate: root-owned,
// replacing what the image has there.
func (p *planner) planGenerated(field, np string, data []byte, mode Mode) error {
	return p.planWrite(field, np, data, mode, 0, 0, true, false)
}

func (p *planner) planLink(field, np, target string, overwrite, user bool) error {
	real, err := p.replaceable(field, np, overwrite, user)
	if err != nil {
		return err
	}
	return p.add(&op{kind: opSymlink, field: field, path: real, target: target, setOwner: true}, np)
}

func (p *planner) planDirectory(field string, d Directory) error {
	pf := field + ".path"
	uid, gid, err := p.acct.lookup(d.Owner)
	if err != nil {
		return fe(field+".owner", "%v", err)
	}
	real, fi, err := p.t.resolve(d.Path, true, true)
	if err != nil {
		return pathErr(pf, d.Path, err)
	}
	if fi != nil {
		if !fi.IsDir() {
			return fe(pf, "%s exists in the image and is not a directory", d.Path)
		}
		if d.Mode == nil && d.Owner == "" {
			p.entries = append(p.entries, entry{d.Path, kindDir, pf})
			return nil
		}
		if prev := p.dirs[real]; prev != nil {
			return fe(pf, "%s is also %s", d.Path, prev.field)
		}
		o := &op{kind: opAttr, field: pf, path: real, uid: uid, gid: gid, setOwner: d.Owner != "", setMode: d.Mode != nil}
		if d.Mode != nil {
			o.mode = *d.Mode
		}
		p.dirs[real] = o
		p.ops = append(p.ops, o)
		p.entries = append(p.entries, entry{d.Path, kindDir, pf})
		return nil
	}
	if prev := p.dirs[real]; prev != nil {
		return fe(pf, "%s is also %s", d.Path, prev.field)
	}
	if err := p.ensureDir(pf, path.Dir(real)); err != nil {
		return err
	}
	mode := DefaultDirMode
	if d.Mode != nil {
		mode = *d.Mode
	}
	o := &op{kind: opMkdir, field: pf, path: real, mode: mode, setMode: true, uid: uid, gid: gid, setOwner: true}
	p.dirs[real] = o
	p.mkdirs = append(p.mkdirs, o)
	p.entries = append(p.entries, entry{d.Path, kindDir, pf})
	return nil
}

func (p *planner) planTimezone(tz string) error {
	zone := zoneinfoDir + "/" + tz
	real, fi, err := p.t.resolve(zone, true, false)
	if err != nil || fi == nil {
		return fe("timezone", "%s is not a time zone of this image (no %s)", tz, zone)
	}
	if !fi.Mode().IsRegular() {
		return fe("timezone", "%s is not a time zone of this image (%s is not a file)", tz, zone)
	}
	f, err := os.Open(p.t.host(real))
	if err != nil {
		return fe("timezone", "%v", err)
	}
	magic := make([]byte, 4)
	_, err = f.Read(magic)
	f.Close()
	if err != nil || string(magic) != "TZif" {
		return fe("timezone", "%s is not a time zone file (no TZif header)", zone)
	}
	// A relative link, as timedatectl makes it.
	if err := p.planLink("timezone", pathLocaltime, ".."+zone, true, false); err != nil {
		return err
	}
	return p.planGenerated("timezone", pathTimezone, []byte(tz+"\n"), 0o644)
}

// unitSearchPath is where a unit file the config does not give is looked
// up, in systemd's order (less /run: it is empty when the init applies).
var unitSearchPath = []string{unitDir, "/usr/lib/systemd/system", "/lib/systemd/system"}

// findUnit returns the text of the unit file for name and the node path a
// link to it should point at: the config's own file first, then the tree's.
func (p *planner) findUnit(name unitName, s string) (text, at string, err error) {
	names := []string{s}
	if name.at && !name.template() {
		names = append(names, name.templateName())
	}
	for _, n := range names {
		if o := p.byNode[unitDir+"/"+n]; o != nil {
			if o.kind == opSymlink && o.target == "/dev/null" {
				return "", "", fmt.Errorf("%s is masked by this config", s)
			}
			if o.kind == opWrite {
				return string(o.data), unitDir + "/" + n, nil
			}
		}
		for _, dir := range unitSearchPath {
			np := dir + "/" + n
			real, fi, err := p.t.resolve(np, true, false)
			if err == nil && real == "/dev/null" {
				return "", "", fmt.Errorf("%s is masked in the image (%s is a link to /dev/null)", s, np)
			}
			if err != nil || fi == nil || !fi.Mode().IsRegular() {
				continue
			}
			data, err := os.ReadFile(p.t.host(real))
			if err != nil {
				return "", "", err
			}
			return string(data), np, nil
		}
	}
	return "", "", fs.ErrNotExist
}

func (p *planner) planUnits(c *Config, a *Applied) error {
	contents := map[string]string{}
	for _, u := range c.Systemd.Units {
		if u.Contents != "" {
			contents[u.Name] = u.Contents
		}
	}
	for i, u := range c.Systemd.Units {
		field := idx("systemd.units", i)
		if u.Masked {
			if err := p.planLink(field+".masked", unitDir+"/"+u.Name, "/dev/null", true, false); err != nil {
				return err
			}
			a.Masked = append(a.Masked, u.Name)
		}
		if u.Contents != "" {
			if err := p.planGenerated(field+".contents", unitDir+"/"+u.Name, []byte(u.Contents), 0o644); err != nil {
				return err
			}
		}
		for j, d := range u.Dropins {
			df := idx(field+".dropins", j) + ".name"
			if err := p.planGenerated(df, unitDir+"/"+u.Name+".d/"+d.Name, []byte(d.Contents), 0o644); err != nil {
				return err
			}
		}
	}
	// Enable and disable once every unit file the config writes is planned.
	for i, u := range c.Systemd.Units {
		if u.Enabled == nil {
			continue
		}
		field := idx("systemd.units", i) + ".enabled"
		if *u.Enabled {
			if err := p.enable(field, u.Name, true, map[string]bool{}); err != nil {
				return err
			}
			a.Enabled = append(a.Enabled, u.Name)
		} else {
			if err := p.disable(field, u.Name, map[string]bool{}); err != nil {
				return err
			}
			a.Disabled = append(a.Disabled, u.Name)
		}
	}
	return nil
}

// enable plans the links `systemctl enable` would make, in /etc. top: the
// unit the config names; units reached through Also= may have no [Install].
func (p *planner) enable(field, s string, top bool, seen map[string]bool) error {
	if seen[s] {
		return nil
	}
	seen[s] = true
	name, err := parseUnitName(s)
	if err != nil {
		return fe(field, "%v", err)
	}
	text, at, err := p.findUnit(name, s)
	if errors.Is(err, fs.ErrNotExist) {
		return fe(field, "%s is not in the image (looked in %s) and the config gives no contents for it",
			s, strings.Join(unitSearchPath, ", "))
	}
	if err != nil {
		return fe(field, "%v", err)
	}
	in, err := parseInstall(text, name)
	if err != nil {
		return fe(field, "%s: [Install]: %v", at, err)
	}
	if err := enableable(s, name, in); err != nil {
		if !top && in.empty() {
			return nil
		}
		return fe(field, "%v", err)
	}
	link := s
	if name.template() {
		link = name.prefix + "@" + in.defaultInstance + "." + name.typ
	}
	for _, l := range []struct {
		suffix string
		units  []string
	}{{".wants", in.wantedBy}, {".requires", in.requiredBy}, {".upholds", in.upheldBy}} {
		for _, t := range l.units {
			if err := p.planLink(field, unitDir+"/"+t+l.suffix+"/"+link, at, true, false); err != nil {
				return err
			}
		}
	}
	for _, al := range in.alias {
		if err := p.planLink(field, unitDir+"/"+al, at, true, false); err != nil {
			return err
		}
	}
	for _, also := range in.also {
		if err := p.enable(field, also, false, seen); err != nil {
			return err
		}
	}
	return nil
}

// disable plans removing what `systemctl disable` removes from /etc: the
// unit's links in *.wants, *.requires and *.upholds (every instance's, for
// a template), its Alias= links, and the same for its Also= units.
func (p *planner) disable(field, s string, seen map[string]bool) error {
	if seen[s] {
		return nil
	}
	seen[s] = true
	name, err := parseUnitName(s)
	if err != nil {
		return fe(field, "%v", err)
	}
	match := func(n string) bool {
		if n == s {
			return true
		}
		return name.template() && strings.HasPrefix(n, name.prefix+"@") && strings.HasSuffix(n, "."+name.typ)
	}
	sys, fi, err := p.t.resolve(unitDir, true, true)
	if err != nil {
		return pathErr(field, unitDir, err)
	}
	if fi != nil && fi.IsDir() {
		ents, err := os.ReadDir(p.t.host(sys))
		if err != nil {
			return fe(field, "%v", err)
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".wants") && !strings.HasSuffix(e.Name(), ".requires") && !strings.HasSuffix(e.Name(), ".upholds") {
				continue
			}
			np := unitDir + "/" + e.Name()
			dir, dfi, err := p.t.resolve(np, true, true)
			if err != nil {
				return pathErr(field, np, err)
			}
			if dfi == nil || !dfi.IsDir() {
				continue
			}
			links, err := os.ReadDir(p.t.host(dir))
			if err != nil {
				return fe(field, "%v", err)
			}
			for _, l := range links {
				if l.Type()&fs.ModeSymlink != 0 && match(l.Name()) {
					if err := p.planRemove(field, np+"/"+l.Name(), dir+"/"+l.Name()); err != nil {
						return err
					}
				}
			}
		}
	}
	text, _, err := p.findUnit(name, s)
	if err != nil {
		return nil // nothing more to learn: the links found are gone
	}
	in, err := parseInstall(text, name)
	if err != nil {
		return nil
	}
	for _, al := range in.alias {
		np := unitDir + "/" + al
		real, fi, err := p.t.resolve(np, false, true)
		if err != nil {
			return pathErr(field, np, err)
		}
		if fi != nil && fi.Mode()&fs.ModeSymlink != 0 {
			if err := p.planRemove(field, np, real); err != nil {
				return err
			}
		}
	}
	for _, also := range in.also {
		if err := p.disable(field, also, seen); err != nil {
			return err
		}
	}
	return nil
}

func (p *planner) planRemove(field, np, real string) error {
	if !inBounds(real) {
		return fe(field, "%s resolves to %s, outside /etc and /run", np, real)
	}
	return p.add(&op{kind: opRemove, field: field, path: real}, np)
}

func (p *planner) planAccess(a Access) error {
	if a.RootPasswordHash != "" {
		const field = "access.rootPasswordHash"
		real, fi, err := p.target(field, pathShadow, true)
		if err != nil {
			return err
		}
		if fi == nil || !fi.Mode().IsRegular() {
			return fe(field, "the image has no regular file %s", pathShadow)
		}
		old, err := os.ReadFile(p.t.host(real))
		if err != nil {
			return fe(field, "%v", err)
		}
		data, err := setRootPassword(old, a.RootPasswordHash, time.Now())
		if err != nil {
			return fe(field, "%v", err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		o := &op{kind: opWrite, field: field, path: real, data: data, mode: modeFromFileMode(fi.Mode()), setMode: true,
			uid: int(st.Uid), gid: int(st.Gid), setOwner: true}
		if err := p.add(o, pathShadow); err != nil {
			return err
		}
	}
	if len(a.SSHAuthorizedKeys) > 0 {
		const field = "access.sshAuthorizedKeys"
		keys := "# Written by slate at boot from the node config (access.breakGlass).\n" + strings.Join(a.SSHAuthorizedKeys, "\n") + "\n"
		if err := p.planWrite(field, pathAuthorizedKeys, []byte(keys), 0o600, 0, 0, true, false); err != nil {
			return err
		}
		conf := "# Written by slate at boot from the node config (access.breakGlass).\n" +
			"AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 " + path.Dir(pathAuthorizedKeys) + "/%u\n"
		if err := p.planGenerated(field, pathSSHDConfig, []byte(conf), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// exec runs the plan: directories first, parents before children, then
// the rest in order. On failure it undoes what it did, last first.
func (p *planner) exec(a *Applied) error {
	sort.SliceStable(p.mkdirs, func(i, j int) bool { return p.mkdirs[i].path < p.mkdirs[j].path })
	all := append(append([]*op{}, p.mkdirs...), p.ops...)
	var failed error
	var at *op
	for i, o := range all {
		if beforeOp != nil {
			if err := beforeOp(i, o); err != nil {
				failed, at = err, o
				break
			}
		}
		if err := o.do(p.t); err != nil {
			failed, at = err, o
			break
		}
	}
	if failed != nil {
		var undo []error
		for i := len(all) - 1; i >= 0; i-- {
			if err := all[i].undo(p.t); err != nil {
				undo = append(undo, err)
			}
		}
		msg := fmt.Sprintf("writing %s: %v; nothing was applied", at.path, failed)
		if len(undo) > 0 {
			msg = fmt.Sprintf("writing %s: %v; undoing the writes before it failed too: %v", at.path, failed, errors.Join(undo...))
		}
		return fe(at.field, "%s", msg)
	}
	for _, o := range all {
		o.commit()
		switch o.kind {
		case opRemove:
			a.Removed = append(a.Removed, o.path)
		default:
			a.Files = append(a.Files, o.path)
		}
	}
	return nil
}

var sideSeq atomic.Int64

// sideName is a free name for a temporary or backup file beside hostPath.
func sideName(hostPath, what string) string {
	dir := filepath.Dir(hostPath)
	for {
		n := filepath.Join(dir, ".slate-"+what+"-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatInt(sideSeq.Add(1), 10))
		if _, err := os.Lstat(n); errors.Is(err, fs.ErrNotExist) {
			return n
		}
	}
}

func (o *op) do(t tree) error {
	host := t.host(o.path)
	switch o.kind {
	case opMkdir:
		if err := os.Mkdir(host, 0o700); err != nil {
			return err
		}
		o.done = true
		return setAttr(host, o)
	case opAttr:
		fi, err := os.Lstat(host)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		o.oldMode, o.oldUID, o.oldGID = modeFromFileMode(fi.Mode()), int(st.Uid), int(st.Gid)
		o.done = true
		return setAttr(host, o)
	case opWrite, opSymlink:
		tmp := sideName(host, "new")
		if err := o.create(tmp); err != nil {
			os.Remove(tmp)
			return err
		}
		if _, err := os.Lstat(host); err == nil {
			bak := sideName(host, "old")
			if err := os.Rename(host, bak); err != nil {
				os.Remove(tmp)
				return err
			}
			o.backup = bak
		}
		if err := os.Rename(tmp, host); err != nil {
			os.Remove(tmp)
			if o.backup != "" {
				os.Rename(o.backup, host)
				o.backup = ""
			}
			return err
		}
		o.done = true
		return nil
	case opRemove:
		bak := sideName(host, "old")
		if err := os.Rename(host, bak); err != nil {
			return err
		}
		o.backup, o.done = bak, true
		return nil
	}
	return fmt.Errorf("unknown op %d", o.kind)
}

func (o *op) create(tmp string) error {
	if o.kind == opSymlink {
		if err := os.Symlink(o.target, tmp); err != nil {
			return err
		}
		return chown(tmp, o.uid, o.gid)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(o.data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return setAttr(tmp, o)
}

// setAttr sets owner then mode: chown clears the set-id bits.
func setAttr(host string, o *op) error {
	if o.setOwner {
		if err := chown(host, o.uid, o.gid); err != nil {
			return err
		}
	}
	if o.setMode {
		return os.Chmod(host, o.mode.FileMode())
	}
	return nil
}

func (o *op) undo(t tree) error {
	if !o.done {
		return nil
	}
	host := t.host(o.path)
	o.done = false
	switch o.kind {
	case opMkdir:
		return os.Remove(host)
	case opAttr:
		err := chown(host, o.oldUID, o.oldGID)
		return errors.Join(err, os.Chmod(host, o.oldMode.FileMode()))
	case opWrite, opSymlink:
		if o.backup != "" {
			err := os.Rename(o.backup, host)
			o.backup = ""
			return err
		}
		return os.Remove(host)
	case opRemove:
		err := os.Rename(o.backup, host)
		o.backup = ""
		return err
	}
	return nil
}

// commit drops the backup of what the op replaced.
func (o *op) commit() {
	if o.backup != "" {
		os.Remove(o.backup)
		o.backup = ""
	}
}
