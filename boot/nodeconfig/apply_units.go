package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
)

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

// The agent's units Apply enables when the config asks for what they do
// (builder/nodefiles installs them, without enabling them).
const (
	// ExtensionFetchUnit fetches the config's extension references.
	ExtensionFetchUnit = "slate-sysext-fetch.service"
	// LogshipUnit ships the journal to logging.collector.
	LogshipUnit = "slate-logship.service"
	// MetricsUnit serves or writes the metrics.
	MetricsUnit = "slate-metrics.service"
)

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
	// The agent's optional units are enabled only on nodes whose config
	// asks for what they do: extension references are fetched once the
	// network is up, so no other node waits for network-online.target; the
	// journal is shipped, metrics served. An image without the unit (not
	// built by slate, or by an older one) has nothing to enable.
	for _, agent := range []struct {
		unit, field string
		want        bool
	}{
		{ExtensionFetchUnit, "extensions", slices.ContainsFunc(c.Extensions, IsExtensionRef)},
		{LogshipUnit, "logging.collector", c.Logging.Collector != ""},
		{MetricsUnit, "metrics", c.Metrics.Listen != "" || c.Metrics.Textfile != ""},
	} {
		if !agent.want {
			continue
		}
		name, _ := parseUnitName(agent.unit)
		if _, _, err := p.findUnit(name, agent.unit); err == nil {
			if err := p.enable(agent.field, agent.unit, true, map[string]bool{}); err != nil {
				return err
			}
			a.Enabled = append(a.Enabled, agent.unit)
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
