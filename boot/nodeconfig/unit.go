package nodeconfig

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/slate-os/slate/internal/clip"
)

var unitTypes = map[string]bool{
	"service": true, "socket": true, "target": true, "device": true, "mount": true, "automount": true,
	"swap": true, "timer": true, "path": true, "slice": true, "scope": true,
}

const unitNameMax = 255

// unitName is a parsed unit name: prefix@instance.type.
type unitName struct {
	prefix   string // before @ (or the whole name without the suffix)
	instance string // after @; empty for a template or a plain unit
	at       bool   // has an @: a template (instance == "") or an instance
	typ      string
}

func (u unitName) template() bool { return u.at && u.instance == "" }

// templateName is prefix@.type, for an instance.
func (u unitName) templateName() string { return u.prefix + "@." + u.typ }

// parseUnitName follows systemd's unit_name_is_valid.
func parseUnitName(s string) (unitName, error) {
	if s == "" {
		return unitName{}, fmt.Errorf("missing")
	}
	if len(s) > unitNameMax {
		return unitName{}, fmt.Errorf("%s is longer than %d characters", q(s), unitNameMax)
	}
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 || !unitTypes[s[dot+1:]] {
		return unitName{}, fmt.Errorf("%s is not a unit name: it needs a type suffix such as .service, .socket, .timer, .target, .mount, .path", q(s))
	}
	u := unitName{typ: s[dot+1:]}
	body := s[:dot]
	for i := 0; i < len(body); i++ {
		c := body[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":-_.\\@", c) >= 0
		if !ok {
			return unitName{}, fmt.Errorf("%s is not a unit name: %q is not allowed (use letters, digits and : - _ . \\ @)", q(s), string(rune(c)))
		}
	}
	if at := strings.IndexByte(body, '@'); at >= 0 {
		if at == 0 {
			return unitName{}, fmt.Errorf("%s is not a unit name: nothing before @", q(s))
		}
		u.at, u.prefix, u.instance = true, body[:at], body[at+1:]
	} else {
		u.prefix = body
	}
	return u, nil
}

// A plain file name for drop-ins and networkd files.
func checkFileName(s string, suffixes ...string) error {
	if s == "" {
		return fmt.Errorf("missing")
	}
	if len(s) > 255 {
		return fmt.Errorf("%s is longer than 255 characters", q(s))
	}
	if s[0] == '.' {
		return fmt.Errorf("%s starts with a dot (hidden files are ignored)", q(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.@:+", c) >= 0
		if !ok {
			return fmt.Errorf("%s is not a plain file name: %q is not allowed (use letters, digits and - _ . @ : +)", q(s), string(rune(c)))
		}
	}
	for _, suf := range suffixes {
		if strings.HasSuffix(s, suf) && len(s) > len(suf) {
			return nil
		}
	}
	return fmt.Errorf("%s must end in %s", q(s), strings.Join(suffixes, ", "))
}

// iniEntry is one key=value assignment of a systemd-style file.
type iniEntry struct {
	section, key, value string
	line                int
}

// parseINI checks the syntax of a unit file, drop-in or networkd file the
// way systemd reads it (comments, [Section] headers, Key=Value, lines
// continued with a trailing backslash) and returns its assignments.
func parseINI(text string) ([]iniEntry, error) {
	if !utf8.ValidString(text) {
		return nil, fmt.Errorf("is not valid UTF-8")
	}
	if strings.IndexByte(text, 0) >= 0 {
		return nil, fmt.Errorf("contains a NUL byte")
	}
	type logical struct {
		text string
		line int
	}
	var (
		lines []logical
		cont  *logical
	)
	for i, raw := range strings.Split(text, "\n") {
		l := strings.TrimSpace(raw)
		comment := strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";")
		if cont != nil {
			if comment {
				continue // comments inside a continued value are dropped
			}
			if more, ok := strings.CutSuffix(l, "\\"); ok {
				cont.text += " " + more
				continue
			}
			cont.text += " " + l
			lines = append(lines, *cont)
			cont = nil
			continue
		}
		if l == "" || comment {
			continue
		}
		if more, ok := strings.CutSuffix(l, "\\"); ok && !strings.HasPrefix(l, "[") {
			cont = &logical{more, i + 1}
			continue
		}
		lines = append(lines, logical{l, i + 1})
	}
	if cont != nil {
		lines = append(lines, *cont)
	}
	var (
		out     []iniEntry
		section string
	)
	for _, l := range lines {
		if strings.HasPrefix(l.text, "[") {
			name, ok := strings.CutSuffix(l.text[1:], "]")
			if !ok || name == "" || strings.ContainsAny(name, "[]") {
				return nil, fmt.Errorf("line %d: %s is not a [Section] header", l.line, q(l.text))
			}
			section = name
			continue
		}
		k, v, ok := strings.Cut(l.text, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("line %d: %s is not Key=Value", l.line, q(l.text))
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: %s= comes before any [Section]", l.line, clip.String(k, clip.QuoteMax))
		}
		out = append(out, iniEntry{section, k, strings.TrimSpace(v), l.line})
	}
	return out, nil
}

// install is a unit's [Install] section, specifiers expanded.
type install struct {
	wantedBy, requiredBy, upheldBy, alias, also []string
	defaultInstance                             string
}

func (in install) empty() bool {
	return len(in.wantedBy)+len(in.requiredBy)+len(in.upheldBy)+len(in.alias)+len(in.also) == 0
}

// parseInstall reads the [Install] section of a unit file for the unit
// called name (an instance name for an instance; the template's name when
// enabling a template through DefaultInstance=).
func parseInstall(text string, name unitName) (install, error) {
	entries, err := parseINI(text)
	if err != nil {
		return install{}, err
	}
	var in install
	// DefaultInstance= first: %i in a template's other keys expands to it.
	for _, e := range entries {
		if e.section == "Install" && e.key == "DefaultInstance" {
			in.defaultInstance = e.value
		}
	}
	inst := name.instance
	if name.template() {
		inst = in.defaultInstance
	}
	for _, e := range entries {
		if e.section != "Install" {
			continue
		}
		var list *[]string
		switch e.key {
		case "WantedBy":
			list = &in.wantedBy
		case "RequiredBy":
			list = &in.requiredBy
		case "UpheldBy":
			list = &in.upheldBy
		case "Alias":
			list = &in.alias
		case "Also":
			list = &in.also
		default:
			continue
		}
		if e.value == "" { // an empty assignment resets the list
			*list = nil
			continue
		}
		for _, w := range strings.Fields(e.value) {
			x, err := expandSpecifiers(w, name, inst)
			if err != nil {
				return install{}, fmt.Errorf("line %d: %s=%s: %v", e.line, e.key, clip.String(w, clip.QuoteMax), err)
			}
			if _, err := parseUnitName(x); err != nil {
				return install{}, fmt.Errorf("line %d: %s=: %v", e.line, e.key, err)
			}
			*list = append(*list, x)
		}
	}
	if in.defaultInstance != "" {
		if _, err := parseUnitName(name.prefix + "@" + in.defaultInstance + "." + name.typ); err != nil {
			return install{}, fmt.Errorf("DefaultInstance=%s: %v", clip.String(in.defaultInstance, clip.QuoteMax), err)
		}
	}
	for _, a := range in.alias {
		if u, _ := parseUnitName(a); u.typ != name.typ {
			return install{}, fmt.Errorf("Alias=%s: an alias must have the unit's type (.%s)", a, name.typ)
		}
	}
	return in, nil
}

// expandSpecifiers expands the specifiers [Install] sections use for unit
// names: %n %N %p %i %j %%.
func expandSpecifiers(s string, name unitName, inst string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	full := name.prefix
	if name.at {
		full += "@" + inst
	}
	full += "." + name.typ
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", fmt.Errorf("ends in a lone %%")
		}
		i++
		switch s[i] {
		case '%':
			b.WriteByte('%')
		case 'n':
			b.WriteString(full)
		case 'N':
			b.WriteString(strings.TrimSuffix(full, "."+name.typ))
		case 'p':
			b.WriteString(name.prefix)
		case 'i':
			b.WriteString(inst)
		case 'j':
			p := name.prefix
			if k := strings.LastIndexByte(p, '-'); k >= 0 {
				p = p[k+1:]
			}
			b.WriteString(p)
		default:
			return "", fmt.Errorf("specifier %%%c is not supported here", s[i])
		}
	}
	return b.String(), nil
}
