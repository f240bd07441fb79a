package flatten

import (
	"archive/tar"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// kind says what a layer's tar entry means for the root.
type kind uint8

const (
	kEntry    kind = iota // a file, directory, link or device to put in the root
	kWhiteout             // .wh.NAME: hides NAME (and what is under it) in lower layers
	kOpaque               // DIR/.wh..wh..opq: hides what lower layers have under DIR
	kSkip                 // metadata that is no entry (a PAX global header, AUFS's .wh..wh.*)
)

const (
	whPrefix  = ".wh."
	whMeta    = ".wh..wh."
	whOpaque  = ".wh..wh..opq"
	sparseKey = "GNU.sparse."
)

// rec is an entry as the layer rules read it.
type rec struct {
	kind kind
	// name is the normalized path: "usr/bin/x", "." for the root. For a
	// whiteout, the path it hides; for an opaque marker, its directory.
	name string
	typ  byte   // entries: the tar type (TypeReg for TypeRegA)
	size int64  // regular files: the declared size; 0 otherwise
	link string // hard links: the normalized target
}

// normalize makes an entry name relative to the root as the image-spec's
// layer rules read it: path.Clean, then leading "/" stripped ("./usr/x",
// "/usr/x" and "usr//x/" are all "usr/x"; the root is "."). A name that still
// climbs out of the root ("../x", "a/../../x") is an error.
func normalize(name string) (string, error) {
	n := strings.TrimLeft(path.Clean(name), "/")
	if n == "" {
		n = "."
	}
	if n == ".." || strings.HasPrefix(n, "../") {
		return "", errors.New("the name climbs out of the root")
	}
	return n, nil
}

// classify reads one header by the OCI image-layer rules (image-spec
// layer.md). Its errors name the entry; the caller adds the layer.
func classify(h *tar.Header) (rec, error) {
	if h.Typeflag == tar.TypeXGlobalHeader {
		// A PAX global header (git archive writes a comment in one) is
		// metadata, not an entry; no layer tool relies on its defaults.
		return rec{kind: kSkip}, nil
	}
	name, err := normalize(h.Name)
	if err != nil {
		return rec{}, fmt.Errorf("%q: %w", h.Name, err)
	}
	if h.Typeflag == tar.TypeGNUSparse || hasSparseRecords(h) {
		// Refused rather than expanded: the image spec says sparse files
		// SHOULD NOT be used, no image builder writes them, and one small
		// layer could declare terabytes of holes.
		return rec{}, fmt.Errorf("/%s: a sparse file (GNU or PAX sparse entry, %d bytes declared): the OCI image spec says layers should not use them; rebuild the layer without --sparse", name, h.Size)
	}
	parts := strings.Split(name, "/")
	for i, c := range parts {
		last := i == len(parts)-1
		switch {
		case last && c == whOpaque:
			return rec{kind: kOpaque, name: path.Dir(name)}, nil
		case strings.HasPrefix(c, whMeta):
			// AUFS's own bookkeeping (.wh..wh.aufs, .wh..wh.plnk/,
			// .wh..wh.orph/), found in images built on AUFS: never part of
			// the root, as Docker and containerd skip it.
			return rec{kind: kSkip}, nil
		case strings.HasPrefix(c, whPrefix) && !last:
			return rec{}, fmt.Errorf("/%s: %s is a whiteout name used as a directory", name, c)
		case strings.HasPrefix(c, whPrefix):
			target := strings.TrimPrefix(c, whPrefix)
			if target == "" || target == "." || target == ".." {
				return rec{}, fmt.Errorf("/%s: a whiteout that names no file", name)
			}
			return rec{kind: kWhiteout, name: path.Join(path.Dir(name), target)}, nil
		}
	}
	r := rec{kind: kEntry, name: name, typ: h.Typeflag}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // the reader turns TypeRegA into TypeReg; a hand-made header may not
		r.typ = tar.TypeReg
		if h.Size < 0 {
			return rec{}, fmt.Errorf("/%s: negative size", name)
		}
		r.size = h.Size
	case tar.TypeDir:
	case tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// A symbolic link's target is data: it may point anywhere, the
		// kernel resolves it on the node, inside the node's root.
	case tar.TypeLink:
		target, err := normalize(h.Linkname)
		if err != nil {
			return rec{}, fmt.Errorf("/%s: hard link to %q: %w", name, h.Linkname, err)
		}
		if target == "." {
			return rec{}, fmt.Errorf("/%s: hard link to the root directory", name)
		}
		r.link = target
	default:
		return rec{}, fmt.Errorf("/%s: tar entry type %q is not a file, directory, link or device", name, h.Typeflag)
	}
	if name == "." && r.typ != tar.TypeDir {
		return rec{}, fmt.Errorf("%q: the root must be a directory", h.Name)
	}
	return r, nil
}

func hasSparseRecords(h *tar.Header) bool {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, sparseKey) {
			return true
		}
	}
	return false
}

// ancestors calls f with each proper ancestor of a normalized name, the
// nearest first, ending with the root "."; it stops when f returns false.
func ancestors(name string, f func(string) bool) {
	if name == "." {
		return
	}
	for {
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			f(".")
			return
		}
		name = name[:i]
		if !f(name) {
			return
		}
	}
}

// header is the header an entry is emitted with: h under name, in PAX
// (no length limits), without what squashfs ignores anyway.
func header(h *tar.Header, name string) *tar.Header {
	out := *h
	out.Name = name
	out.Format = tar.FormatPAX
	out.AccessTime, out.ChangeTime = time.Time{}, time.Time{}
	if out.Typeflag == tar.TypeRegA { //nolint:staticcheck
		out.Typeflag = tar.TypeReg
	}
	if out.Typeflag != tar.TypeReg {
		out.Size = 0
	}
	if out.Typeflag != tar.TypeSymlink && out.Typeflag != tar.TypeLink {
		out.Linkname = ""
	}
	return &out
}
