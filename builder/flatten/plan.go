package flatten

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// The two passes. The first reads every layer, bottom first, and applies it
// to a tree of names as an extractor applies it to a directory: whiteouts
// and opaque markers first, then the entries in order, so the last of a name
// wins. Hard links share their target's inode, so a link keeps its file when
// the target's name is later whited out or replaced. The tree that remains
// is the root; each of its paths is emitted by the entry that made it, in
// the second pass (bottom first again, so a file always comes before the
// links to it).

type ref struct{ layer, index int32 }

var implicit = ref{-1, -1} // a directory no entry made (tar2sqfs gives it defaults)

type node struct {
	kids map[string]*node // non-nil for a directory
	ref  ref
	ino  *inode // non-directories
}

type inode struct {
	origin ref
	name   string // the origin entry's name
	typ    byte
	size   int64
	alive  bool   // the origin entry's own path still names it
	first  string // else the first (sorted) path that does
}

// action is what the second pass does with one entry.
type action struct {
	index int32
	name  string // emitted under this name
	entry string // the entry's own name, as the first pass read it
	typ   byte
	size  int64
	link  string // emitted as a hard link to this
}

type tree struct {
	root  *node
	label string // the layer being applied, for errors
}

func (f *flattener) plan(ctx context.Context) error {
	t := &tree{root: &node{kids: map[string]*node{}, ref: implicit}}
	b := f.newBudget()
	f.sizes = make([]int64, len(f.layers))
	for k, src := range f.layers {
		s, err := f.open(src, b, true)
		if err != nil {
			return err
		}
		recs, idx, err := readRecs(ctx, s)
		if err == nil {
			err = s.finish()
		}
		s.close()
		if err != nil {
			return err
		}
		f.sizes[k] = s.unc.n
		t.label = src.label
		if err := t.apply(int32(k), recs, idx); err != nil {
			return &flatErr{err}
		}
	}
	f.plans, f.empty = t.actions(len(f.layers))
	return nil
}

// readRecs reads a layer's entries; idx[i] is recs[i]'s position in the tar.
func readRecs(ctx context.Context, s *stream) ([]rec, []int32, error) {
	var recs []rec
	var idx []int32
	for i := int32(0); ; i++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		h, err := s.next()
		if err == io.EOF {
			return recs, idx, nil
		}
		if err != nil {
			return nil, nil, err
		}
		r, err := classify(h)
		if err != nil {
			return nil, nil, s.entryErr(err)
		}
		if err := s.unc.budget.declare(r.size); err != nil {
			return nil, nil, s.fail(err)
		}
		if r.kind != kSkip {
			recs, idx = append(recs, r), append(idx, i)
		}
	}
}

func (t *tree) errorf(name, format string, args ...any) error {
	return fmt.Errorf("%s: /%s: %s", t.label, name, fmt.Sprintf(format, args...))
}

// apply applies one layer: its whiteouts and opaque markers first, to what
// the layers below made, then its entries in order.
func (t *tree) apply(k int32, recs []rec, idx []int32) error {
	for _, r := range recs {
		switch r.kind {
		case kWhiteout:
			parent, err := t.find(path.Dir(r.name), path.Join(path.Dir(r.name), whPrefix+path.Base(r.name)), true)
			if err != nil {
				return err
			}
			if parent != nil {
				delete(parent.kids, path.Base(r.name))
			}
		case kOpaque:
			dir, err := t.find(r.name, r.name+"/"+whOpaque, true)
			if err != nil {
				return err
			}
			if dir != nil {
				dir.kids = map[string]*node{}
			}
		}
	}
	for i, r := range recs {
		if r.kind == kEntry {
			if err := t.put(r, ref{k, idx[i]}); err != nil {
				return err
			}
		}
	}
	return nil
}

// find is the directory at p; nil if nothing is there. A non-directory on
// the way (or at p) is an error for the entry named what; for a whiteout
// (nothing under a file to hide) only a symbolic link is, which an
// extractor would follow to hide what the whiteout does not name.
func (t *tree) find(p, what string, whiteout bool) (*node, error) {
	n := t.root
	if p == "." {
		return n, nil
	}
	parts := strings.Split(p, "/")
	for i, c := range parts {
		next := n.kids[c]
		if next == nil {
			return nil, nil
		}
		if next.kids == nil {
			if whiteout && next.ino.typ != tar.TypeSymlink {
				return nil, nil
			}
			return nil, t.errorf(what, "/%s is not a directory", strings.Join(parts[:i+1], "/"))
		}
		n = next
	}
	return n, nil
}

// lookup is whatever is at p, nil if nothing; a non-directory on the way is
// an error for the entry named what.
func (t *tree) lookup(p, what string) (*node, error) {
	dir, err := t.find(path.Dir(p), what, false)
	if err != nil || dir == nil {
		return nil, err
	}
	return dir.kids[path.Base(p)], nil
}

func (t *tree) put(r rec, at ref) error {
	if r.name == "." {
		t.root.ref = at
		return nil
	}
	parent := t.root
	parts := strings.Split(r.name, "/")
	for i, c := range parts[:len(parts)-1] {
		next := parent.kids[c]
		switch {
		case next == nil:
			next = &node{kids: map[string]*node{}, ref: implicit}
			parent.kids[c] = next
		case next.kids == nil:
			return t.errorf(r.name, "/%s is not a directory", strings.Join(parts[:i+1], "/"))
		}
		parent = next
	}
	base := parts[len(parts)-1]
	switch r.typ {
	case tar.TypeDir:
		if old := parent.kids[base]; old != nil && old.kids != nil {
			old.ref = at // a directory over a directory: its attributes only
			return nil
		}
		parent.kids[base] = &node{kids: map[string]*node{}, ref: at}
	case tar.TypeLink:
		// What the link's path held goes first, as in extraction: a link to
		// itself, or to something under it, links to nothing.
		delete(parent.kids, base)
		target, err := t.lookup(r.link, r.name)
		switch {
		case err != nil:
			return err
		case target == nil:
			return t.errorf(r.name, "hard link to /%s, which does not exist", r.link)
		case target.kids != nil:
			return t.errorf(r.name, "hard link to /%s, a directory", r.link)
		}
		parent.kids[base] = &node{ref: at, ino: target.ino}
	default:
		parent.kids[base] = &node{ref: at, ino: &inode{origin: at, name: r.name, typ: r.typ, size: r.size}}
	}
	return nil
}

// actions turns the final tree into what each layer's entries emit, and
// the directories no entry gives that nothing is under.
func (t *tree) actions(layers int) ([][]action, []string) {
	var empty []string
	out := make([][]action, layers)
	add := func(at ref, a action) {
		a.index = at.index
		out[at.layer] = append(out[at.layer], a)
	}
	walk(t.root, ".", func(n *node, p string) {
		if n.kids == nil {
			if n.ref == n.ino.origin {
				n.ino.alive = true
			} else if n.ino.first == "" {
				n.ino.first = p
			}
		}
	})
	walk(t.root, ".", func(n *node, p string) {
		switch {
		case n.kids != nil:
			if n.ref != implicit {
				add(n.ref, action{name: p, entry: p, typ: tar.TypeDir})
			} else if len(n.kids) == 0 && p != "." {
				empty = append(empty, p)
			}
		case n.ref == n.ino.origin:
			add(n.ref, action{name: p, entry: p, typ: n.ino.typ, size: n.ino.size})
		case !n.ino.alive && p == n.ino.first:
			// The file's own name is gone: its data goes under this link's.
			add(n.ino.origin, action{name: p, entry: n.ino.name, typ: n.ino.typ, size: n.ino.size})
		default:
			primary := n.ino.name
			if !n.ino.alive {
				primary = n.ino.first
			}
			add(n.ref, action{name: p, entry: p, typ: tar.TypeLink, link: primary})
		}
	})
	for _, acts := range out {
		sort.Slice(acts, func(i, j int) bool { return acts[i].index < acts[j].index })
	}
	return out, empty
}

// walk visits n and all under it, names sorted.
func walk(n *node, p string, f func(*node, string)) {
	f(n, p)
	if n.kids == nil {
		return
	}
	names := make([]string, 0, len(n.kids))
	for c := range n.kids {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		child := p + "/" + c
		if p == "." {
			child = c
		}
		walk(n.kids[c], child, f)
	}
}

var errChanged = errors.New("the layer differs from its first reading")

// emitPlan is the second pass: each layer again, bottom first, checked
// again, its entries emitted as the plan says. Each layer may expand to
// what it did in the first pass, no more.
func (f *flattener) emitPlan(ctx context.Context, tw *tar.Writer) error {
	for k, src := range f.layers {
		b := &budget{limit: f.sizes[k], over: func(*budget, string) error { return errChanged }}
		s, err := f.open(src, b, false)
		if err != nil {
			return err
		}
		err = emitLayer(ctx, s, f.plans[k], tw)
		if err == nil {
			err = s.finish()
		}
		s.close()
		if err != nil {
			return err
		}
	}
	return f.emitDirs(tw, f.empty)
}

func emitLayer(ctx context.Context, s *stream, acts []action, tw *tar.Writer) error {
	ai := 0
	for i := int32(0); ; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := s.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if ai == len(acts) || acts[ai].index != i {
			continue
		}
		a := acts[ai]
		ai++
		r, err := classify(h)
		if err != nil || r.kind != kEntry || r.name != a.entry || r.typ != a.typ || r.size != a.size {
			return s.fail(errChanged)
		}
		hh := header(h, a.name)
		if a.link != "" {
			hh.Linkname = a.link
		}
		if err := tw.WriteHeader(hh); err != nil {
			return err
		}
		if hh.Typeflag == tar.TypeReg {
			if err := s.copyData(tw); err != nil {
				return err
			}
		}
	}
	if ai != len(acts) {
		return s.fail(errChanged)
	}
	return nil
}
