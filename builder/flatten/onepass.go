package flatten

import (
	"archive/tar"
	"context"
	"io"
)

// The one pass reads the layers top first, as mutate.Extract did: a path an
// upper layer decided (emitted, or whited out) hides what lower layers have
// there. It emits an entry as soon as it is read, so it must never need to
// take one back; it gives up (errBail) on anything that could make it, and
// the two passes (plan.go) handle the image. It may give up more often than
// needed, never less.

type decision struct {
	layer int32
	dir   bool
}

type topDown struct {
	// What the layers read so far (this one and those above) did.
	decided map[string]decision // emitted paths, and by which layer
	under   map[string]bool     // proper ancestors of every path named (entries, whiteouts, opaque markers)
	whited  map[string]bool     // paths whited out: hidden, with all under them, in lower layers
	opaque  map[string]bool     // directories whose lower contents are hidden
	implied map[string]bool     // directories entries imply (as parents) that survive the layers above
	full    map[string]bool     // ancestors of emitted entries

	// The layer being read.
	k       int32
	here    map[string]byte // its entries so far, by type
	emitted map[string]bool // those emitted
	wh, opq []string        // applied to the layers below, once it is read
}

func (f *flattener) onePass(ctx context.Context, tw *tar.Writer) error {
	t := &topDown{decided: map[string]decision{}, under: map[string]bool{}, whited: map[string]bool{}, opaque: map[string]bool{},
		implied: map[string]bool{}, full: map[string]bool{}}
	b := f.newBudget()
	for i := len(f.layers) - 1; i >= 0; i-- {
		s, err := f.open(f.layers[i], b, true)
		if err != nil {
			return err
		}
		err = t.layer(ctx, s, tw)
		if err == errBail {
			// Copy the rest of the blob, so that the two passes need not
			// fetch it again; a blob that fails its digest fails now.
			if serr := s.spool(); serr != nil {
				err = serr
			}
		}
		s.close()
		if err != nil {
			return err
		}
	}
	var empty []string
	for p := range t.implied {
		if _, explicit := t.decided[p]; !explicit && !t.full[p] {
			empty = append(empty, p)
		}
	}
	return f.emitDirs(tw, empty)
}

func (t *topDown) layer(ctx context.Context, s *stream, tw *tar.Writer) error {
	t.k = int32(s.src.pos)
	t.here, t.emitted, t.wh, t.opq = map[string]byte{}, map[string]bool{}, nil, nil
	for {
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
		r, err := classify(h)
		if err != nil {
			return s.entryErr(err)
		}
		if err := s.unc.budget.declare(r.size); err != nil {
			return s.fail(err)
		}
		emit, err := t.entry(r)
		if err != nil || !emit {
			if err != nil {
				return err
			}
			continue
		}
		hh := header(h, r.name)
		if r.typ == tar.TypeLink {
			hh.Linkname = r.link
		}
		if err := tw.WriteHeader(hh); err != nil {
			return err
		}
		if r.typ == tar.TypeReg {
			if err := s.copyData(tw); err != nil {
				return err
			}
		}
	}
	if err := s.finish(); err != nil {
		return err
	}
	for _, w := range t.wh {
		t.whited[w] = true
	}
	for _, d := range t.opq {
		t.opaque[d] = true
	}
	return nil
}

// entry says whether r goes into the stream now.
func (t *topDown) entry(r rec) (bool, error) {
	switch r.kind {
	case kSkip:
		return false, nil
	case kWhiteout:
		t.wh = append(t.wh, r.name)
		return false, t.addUnder(r.name, false)
	case kOpaque:
		t.opq = append(t.opq, r.name)
		return false, t.addUnder(r.name, true)
	}
	if _, dup := t.here[r.name]; dup {
		return false, errBail // the last must win: the first may be out already
	}
	if r.typ == tar.TypeLink {
		// Only to an earlier entry of this layer that is a file: anything
		// else may need the target's data under the link's name.
		if tt, ok := t.here[r.link]; !ok || tt == tar.TypeDir || tt == tar.TypeLink {
			return false, errBail
		}
	}
	t.here[r.name] = r.typ
	if err := t.addUnder(r.name, false); err != nil {
		return false, err
	}
	if r.typ != tar.TypeDir && t.under[r.name] {
		return false, errBail // a non-directory where some layer has entries under it
	}
	t.imply(r.name)
	if t.hidden(r.name) {
		return false, nil
	}
	if r.typ == tar.TypeLink && !t.emitted[r.link] {
		return false, errBail // the target is hidden: its data must go under this name
	}
	t.emitted[r.name] = true
	t.decided[r.name] = decision{t.k, r.typ == tar.TypeDir}
	ancestors(r.name, func(p string) bool {
		if t.full[p] {
			return false
		}
		t.full[p] = true
		return true
	})
	return true, nil
}

// imply notes the directories an entry makes as its parents, as far as the
// layers above leave them.
func (t *topDown) imply(name string) {
	var chain []string
	ancestors(name, func(p string) bool {
		if p != "." {
			chain = append(chain, p)
		}
		return true
	})
	gone := t.opaque["."]
	for i := len(chain) - 1; i >= 0; i-- {
		p := chain[i]
		d, ok := t.decided[p]
		gone = gone || t.whited[p] || ok && !d.dir && d.layer != t.k
		if gone {
			return
		}
		if !ok {
			t.implied[p] = true
		}
		gone = t.opaque[p]
	}
}

// addUnder notes that the layer names something under each ancestor of
// name (and under name itself, with self); one that is a non-directory of
// this layer means the order within the layer matters.
func (t *topDown) addUnder(name string, self bool) error {
	bail := false
	note := func(p string) bool {
		if tt, ok := t.here[p]; ok && tt != tar.TypeDir {
			bail = true
			return false
		}
		t.under[p] = true
		return true
	}
	if self && !note(name) {
		return errBail
	}
	ancestors(name, note)
	if bail {
		return errBail
	}
	return nil
}

// hidden says whether an upper layer hides the path: it decided it, whited
// it or an ancestor out, made an ancestor opaque, or put a non-directory at
// an ancestor.
func (t *topDown) hidden(name string) bool {
	if d, ok := t.decided[name]; ok && d.layer != t.k {
		return true
	}
	if t.whited[name] {
		return true
	}
	hid := false
	ancestors(name, func(p string) bool {
		if d, ok := t.decided[p]; t.whited[p] || t.opaque[p] || ok && !d.dir {
			hid = true
			return false
		}
		return true
	})
	return hid
}
