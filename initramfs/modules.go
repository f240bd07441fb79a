package initramfs

// The module closure, computed from depmod's files as modprobe would: the
// initramfs has no modprobe, so a module the kernel would later ask for
// (request_module runs modprobe) must be in the load list from the start.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"path"
	"strings"
)

// compressedExts are the module suffixes depmod knows, longest first.
var compressedExts = []string{".ko.zst", ".ko.xz", ".ko.gz", ".ko"}

func stripCompression(rel string) string {
	for _, ext := range compressedExts[:3] {
		if strings.HasSuffix(rel, ext) {
			return strings.TrimSuffix(rel, ext) + ".ko"
		}
	}
	return rel
}

// NormalizeModuleName maps a module name or path to the kernel's form:
// base name without .ko and compression suffix, '-' as '_'.
func NormalizeModuleName(s string) string {
	s = path.Base(s)
	for _, ext := range compressedExts {
		if strings.HasSuffix(s, ext) {
			s = strings.TrimSuffix(s, ext)
			break
		}
	}
	return strings.ReplaceAll(s, "-", "_")
}

func moduleName(rel string) string { return NormalizeModuleName(rel) }

// normalizeAlias is kmod's alias_normalize: '-' becomes '_' except inside
// a bracket expression; an unmatched bracket makes the alias invalid.
// fnmatch's "[!" becomes path.Match's "[^".
func normalizeAlias(s string) (string, bool) {
	b := []byte(s)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '-':
			b[i] = '_'
		case ']':
			return "", false
		case '[':
			j := bytes.IndexByte(b[i:], ']')
			if j < 0 {
				return "", false
			}
			if i+1 < len(b) && b[i+1] == '!' {
				b[i+1] = '^'
			}
			i += j
		}
	}
	return string(b), true
}

// modFiles are depmod's files for one kernel release; only dep is needed.
type modFiles struct {
	dep, builtin, builtinModinfo, softdep, weakdep, alias []byte
}

type alias struct {
	pattern string // normalized; a glob when glob is set
	glob    bool
	module  string
}

func (a alias) match(name string) bool {
	if !a.glob {
		return a.pattern == name
	}
	ok, err := path.Match(a.pattern, name)
	return ok && err == nil
}

func newAlias(pattern, module string) (alias, bool) {
	p, ok := normalizeAlias(pattern)
	return alias{pattern: p, glob: strings.ContainsAny(p, "*?["), module: NormalizeModuleName(module)}, ok
}

// softdeps are one module's soft (pre:, post:) and weak dependencies, as
// names to resolve.
type softdeps struct{ pre, post, weak []string }

type modDB struct {
	byName         map[string]string   // name -> relPath (first in modules.dep wins, as for modprobe)
	deps           map[string][]string // relPath -> dependency relPaths
	builtin        map[string]bool
	aliases        []alias // modules.alias, in its order (modprobe -a loads all matches)
	builtinAliases []alias // the built-in modules' aliases (modules.builtin.modinfo)
	soft           map[string]*softdeps
}

func parseModules(f modFiles) (*modDB, error) {
	db := &modDB{byName: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}, soft: map[string]*softdeps{}}
	err := eachLine(f.dep, func(n int, line string) error {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("modules.dep line %d: no ':' in %q", n, line)
		}
		mod = strings.TrimSpace(mod)
		if _, dup := db.deps[mod]; dup {
			return nil
		}
		db.deps[mod] = strings.Fields(rest)
		name := NormalizeModuleName(mod)
		if _, seen := db.byName[name]; !seen {
			db.byName[name] = mod
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	eachLine(f.builtin, func(_ int, line string) error {
		db.builtin[NormalizeModuleName(line)] = true
		return nil
	})
	eachLine(f.alias, func(_ int, line string) error {
		if w := strings.Fields(line); len(w) == 3 && w[0] == "alias" {
			if a, ok := newAlias(w[1], w[2]); ok {
				db.aliases = append(db.aliases, a)
			}
		}
		return nil
	})
	// modules.builtin.modinfo: NUL-terminated "module.key=value" records.
	for _, rec := range bytes.Split(f.builtinModinfo, []byte{0}) {
		mod, val, ok := strings.Cut(string(rec), ".alias=")
		if ok && !strings.Contains(mod, "=") {
			if a, ok := newAlias(val, mod); ok {
				db.builtinAliases = append(db.builtinAliases, a)
			}
		}
	}
	// modprobe reads modules.softdep and modules.weakdep as configuration:
	// either may hold either kind of line.
	for _, data := range [][]byte{f.softdep, f.weakdep} {
		eachLine(data, func(_ int, line string) error {
			w := strings.Fields(line)
			if len(w) < 3 || (w[0] != "softdep" && w[0] != "weakdep") {
				return nil
			}
			name := NormalizeModuleName(w[1])
			sd := db.soft[name]
			if sd == nil {
				sd = &softdeps{}
				db.soft[name] = sd
			}
			if w[0] == "weakdep" {
				sd.weak = append(sd.weak, w[2:]...)
				return nil
			}
			// Names before the first "pre:" or "post:" are ignored, as
			// modprobe ignores them ("softdep cifs gcm"). Every line counts,
			// where modprobe takes only a module's first: one more
			// module is harmless, a missing algorithm is not.
			var into *[]string
			for _, t := range w[2:] {
				switch {
				case t == "pre:":
					into = &sd.pre
				case t == "post:":
					into = &sd.post
				case into != nil:
					*into = append(*into, t)
				}
			}
			return nil
		})
	}
	return db, nil
}

func eachLine(data []byte, f func(n int, line string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := f(n, line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// resolve finds what a name stands for, in modprobe's order: a module of
// that name; else every module with a matching alias; else a built-in
// module of that name or alias (builtin: nothing to load).
func (db *modDB) resolve(name string) (rels []string, builtin bool) {
	n := NormalizeModuleName(name)
	if rel, ok := db.byName[n]; ok {
		return []string{rel}, false
	}
	a, valid := normalizeAlias(name)
	if valid {
		seen := map[string]bool{}
		for _, al := range db.aliases {
			if rel, ok := db.byName[al.module]; ok && !seen[rel] && al.match(a) {
				seen[rel] = true
				rels = append(rels, rel)
			}
		}
		if len(rels) > 0 {
			return rels, false
		}
	}
	if db.builtin[n] {
		return nil, true
	}
	for _, al := range db.builtinAliases {
		if valid && al.match(a) {
			return nil, true
		}
	}
	return nil, false
}

// plan is the closure: what to load, in order, and what was not loaded.
type plan struct {
	order      []string // relPaths
	builtin    []string // wanted names the kernel has built in
	skipped    []string // optional names the kernel lacks
	unresolved []string // "ext4 pre: crypto-foo"
}

type modNode struct {
	rel       string
	hard      []string // modules.dep's list
	pre, post []string // soft dependencies, resolved; post holds weak ones too
}

// closure resolves the wanted modules and orders what they need: every
// module after its hard dependencies and pre: soft dependencies, before
// its post: and weak ones. A missing required module fails, naming the
// kernel; soft dependencies that resolve to nothing are only reported, as
// modprobe ignores them.
func (db *modDB) closure(kver string, wanted []Module) (*plan, error) {
	p := &plan{}
	nodes := map[string]*modNode{}
	var all []*modNode // in discovery order, for a deterministic order
	seenUnresolved := map[string]bool{}
	var add func(rel string, chain []string) error
	add = func(rel string, chain []string) error {
		if nodes[rel] != nil {
			return nil // done, or being added: mutual soft dependencies stop here
		}
		deps, ok := db.deps[rel]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) is not in modules.dep", rel, strings.Join(chain, " -> "))
		}
		n := &modNode{rel: rel, hard: deps}
		nodes[rel] = n
		all = append(all, n)
		chain = append(chain[:len(chain):len(chain)], rel)
		for _, d := range deps {
			if err := add(d, chain); err != nil {
				return err
			}
		}
		name := NormalizeModuleName(rel)
		sd := db.soft[name]
		if sd == nil {
			return nil
		}
		for _, k := range []struct {
			label string
			names []string
			into  *[]string
		}{{"pre:", sd.pre, &n.pre}, {"post:", sd.post, &n.post}, {"weakdep", sd.weak, &n.post}} {
			for _, s := range k.names {
				rels, builtin := db.resolve(s)
				if len(rels) == 0 && !builtin {
					if u := name + " " + k.label + " " + s; !seenUnresolved[u] {
						seenUnresolved[u] = true
						p.unresolved = append(p.unresolved, u)
					}
				}
				for _, r := range rels {
					*k.into = append(*k.into, r)
					if err := add(r, chain); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}

	required := map[string]*Module{}
	for i, m := range wanted {
		if k := NormalizeModuleName(m.Name); !m.Optional && required[k] == nil {
			required[k] = &wanted[i]
		}
	}
	var roots []string
	var missing []error
	seen := map[string]bool{}
	for _, m := range wanted {
		key := NormalizeModuleName(m.Name)
		if m.Name == "" || seen[key] {
			continue
		}
		seen[key] = true
		rels, builtin := db.resolve(m.Name)
		switch {
		case len(rels) > 0:
			for _, r := range rels {
				if err := add(r, nil); err != nil {
					return nil, fmt.Errorf("kernel %s: %w", kver, err)
				}
				roots = append(roots, r)
			}
		case builtin:
			p.builtin = append(p.builtin, key)
		case required[key] == nil:
			p.skipped = append(p.skipped, m.Name)
		default:
			why := required[key].Why
			if why == "" {
				why = "it is required"
			}
			missing = append(missing, fmt.Errorf("kernel %s has no %s (neither built in nor a module): %s", kver, m.Name, why))
		}
	}
	if len(missing) > 0 {
		return nil, errors.Join(missing...)
	}
	order, err := orderModules(all, roots)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", kver, err)
	}
	p.order = order
	return p, nil
}

// orderModules sorts the closure depth-first from the roots, every module
// after its predecessors: hard dependencies (in modules.dep's reverse
// order, as modprobe loads them), pre: soft dependencies, and the modules
// that name it as post: or weak. A cycle broken by no soft edge is an
// error (depmod never writes one); a cycle through a soft edge drops that
// edge and starts again, so soft dependencies never loop or fail.
func orderModules(all []*modNode, roots []string) ([]string, error) {
	// A soft edge's owner is the module whose soft dependency it is, by
	// discovery order: of two soft edges in a cycle, the later owner's
	// gives way, as modprobe, which never revisits a module it is already
	// loading, lets it.
	type pred struct {
		rel   string
		soft  bool
		owner int
	}
	preds := map[string][]pred{}
	for i, n := range all {
		for _, s := range n.pre {
			preds[n.rel] = append(preds[n.rel], pred{s, true, i})
		}
		for j := len(n.hard) - 1; j >= 0; j-- {
			preds[n.rel] = append(preds[n.rel], pred{n.hard[j], false, 0})
		}
	}
	for i, n := range all {
		for _, s := range n.post {
			preds[s] = append(preds[s], pred{n.rel, true, i})
		}
	}
	post := map[string][]string{}
	for _, n := range all {
		post[n.rel] = n.post
	}

	type edge struct{ from, to string }
	dropped := map[edge]bool{}
	for {
		const (
			visiting = 1
			done     = 2
		)
		state := map[string]int{}
		var order, pending []string
		type frame struct {
			rel string
			in  pred // the edge from this frame's module to the one below it
		}
		var stack []frame
		var visit func(rel string, in pred) (*edge, error)
		visit = func(rel string, in pred) (*edge, error) {
			state[rel] = visiting
			stack = append(stack, frame{rel, in})
			for _, p := range preds[rel] {
				if dropped[edge{p.rel, rel}] {
					continue
				}
				switch state[p.rel] {
				case done:
					continue
				case visiting:
					// The cycle: p.rel -> rel (this edge) and the frames
					// above p.rel's on the stack. Drop a soft edge of it.
					i := len(stack) - 1
					for stack[i].rel != p.rel {
						i--
					}
					var cut *edge
					owner := -1
					if p.soft {
						cut, owner = &edge{p.rel, rel}, p.owner
					}
					for j := len(stack) - 1; j > i; j-- {
						if f := stack[j]; f.in.soft && f.in.owner > owner {
							cut, owner = &edge{f.rel, stack[j-1].rel}, f.in.owner
						}
					}
					if cut != nil {
						return cut, nil
					}
					var names []string
					for _, f := range stack[i:] {
						names = append(names, f.rel)
					}
					return nil, fmt.Errorf("dependency cycle: %s needs %s", strings.Join(names, " needs "), p.rel)
				}
				if e, err := visit(p.rel, p); e != nil || err != nil {
					return e, err
				}
			}
			stack = stack[:len(stack)-1]
			state[rel] = done
			order = append(order, rel)
			// Post and weak dependencies come after, each visited from
			// the top: visited from here, this module's predecessors
			// still on the stack would look like a cycle.
			pending = append(pending, post[rel]...)
			return nil, nil
		}
		// Each root, then what it brought in as post: or weak, then any
		// module left (none: every module is reached one way or the other).
		var cut *edge
		var err error
		next := append([]string{}, roots...)
		for _, n := range all {
			next = append(next, n.rel)
		}
		for _, rel := range next {
			for todo := []string{rel}; len(todo) > 0; todo = todo[1:] {
				if state[todo[0]] == 0 {
					if cut, err = visit(todo[0], pred{}); err != nil {
						return nil, err
					}
					if cut != nil {
						break
					}
				}
				todo = append(todo, pending...)
				pending = pending[:0]
			}
			if cut != nil {
				break
			}
		}
		if cut == nil {
			return order, nil
		}
		dropped[*cut] = true
	}
}
