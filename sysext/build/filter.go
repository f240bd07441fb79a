package build

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/slate-os/slate/builder/squashfs"
	"github.com/slate-os/slate/sysext"
)

// releaseDir is where an extension's extension-release lives.
const releaseDir = "usr/lib/extension-release.d"

// maxRelease bounds an extension-release file read into memory.
const maxRelease = 64 << 10

// maxListed is how many paths outside /usr and /opt an error lists.
const maxListed = 8

// filter passes a source's entries to tar2sqfs, checking each: only /usr
// and /opt (sysext.CheckPath), no device nodes, no extended attributes
// squashfs cannot hold. It finds the source's extension-release files, and
// at the end keeps the one that names the extension or writes it.
type filter struct {
	b       *builder
	tw      *tar.Writer
	modTime time.Time // the written extension-release's

	outside  []*outside
	more     int // outside entries not listed
	devices  []string
	releases map[string][]byte // extension-release.NAME files: NAME -> content
	badRel   []string          // extension-release.* entries that are not regular files
	kinds    map[string]byte   // the type of usr, usr/lib and releaseDir, when present

	// The outcome, once finish returned nil.
	name    string
	release sysext.Release
	kept    bool
	entries int
	dropped int
}

// outside is a path outside /usr and /opt, with what was under it.
type outside struct {
	path  string
	under int
}

func (b *builder) newFilter(modTime time.Time) *filter {
	return &filter{b: b, modTime: modTime, releases: map[string][]byte{}, kinds: map[string]byte{}}
}

// clean makes a tar name relative to the root: "./usr/x" -> "usr/x".
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// copyTar filters a tar stream (a flattened image) to its end.
func (f *filter) copyTar(r io.Reader) error { return eachEntry(r, f.add) }

// eachEntry calls fn for every entry of the tar stream r, then reads what
// follows the trailer: flatten's consumers read the stream to its end.
func eachEntry(r io.Reader, fn func(*tar.Header, io.Reader) error) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			_, err = io.Copy(io.Discard, r)
			return err
		}
		if err != nil {
			return err
		}
		if err := fn(h, tr); err != nil {
			return err
		}
	}
}

// refuse records p (relative) as outside /usr and /opt, and says so.
func (f *filter) refuse(p string) {
	for _, o := range f.outside {
		if strings.HasPrefix(p, o.path+"/") {
			o.under++
			return
		}
	}
	if len(f.outside) == maxListed {
		f.more++
		return
	}
	f.outside = append(f.outside, &outside{path: p})
}

// add checks one entry and passes it on; body is its data (regular files).
func (f *filter) add(h *tar.Header, body io.Reader) error {
	p := clean(h.Name)
	if err := sysext.CheckPath(p); err != nil {
		f.refuse(p)
		return nil
	}
	switch h.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		f.devices = append(f.devices, "/"+p)
		return nil
	case tar.TypeXGlobalHeader:
		return nil
	}
	if p == "" && h.Typeflag != tar.TypeDir {
		return fmt.Errorf("the root is not a directory (entry %q)", h.Name)
	}
	switch p {
	case "usr", "usr/lib", releaseDir:
		f.kinds[p] = h.Typeflag
	}
	if dir, base := path.Split(p); dir == releaseDir+"/" && strings.HasPrefix(base, "extension-release.") {
		name := strings.TrimPrefix(base, "extension-release.")
		if h.Typeflag != tar.TypeReg {
			f.badRel = append(f.badRel, "/"+p)
		} else {
			b, err := io.ReadAll(io.LimitReader(body, maxRelease+1))
			if err != nil {
				return fmt.Errorf("/%s: %w", p, err)
			}
			if len(b) > maxRelease {
				return fmt.Errorf("/%s: more than %d bytes: not an extension-release", p, maxRelease)
			}
			f.releases[name], body = b, bytes.NewReader(b)
		}
	}
	f.dropped += squashfs.DropXattrs(h)
	if err := f.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("/%s: %w", p, err)
	}
	f.entries++
	if h.Typeflag == tar.TypeReg && body != nil {
		if _, err := io.CopyN(f.tw, body, h.Size); err != nil {
			return fmt.Errorf("/%s: %w", p, err)
		}
	}
	return nil
}

// finish checks what the whole stream held, settles the name and the
// release, and writes the extension-release when the source has none.
func (f *filter) finish() error {
	if err := f.outsideError(); err != nil {
		return err
	}
	if len(f.devices) > 0 {
		return fmt.Errorf("%s: device nodes; an extension holds none (systemd-sysext would merge them into /usr)", list(f.devices))
	}
	if len(f.badRel) > 0 {
		return fmt.Errorf("%s: an extension-release must be a regular file", list(f.badRel))
	}
	names := make([]string, 0, len(f.releases))
	for n := range f.releases {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) > 1 {
		paths := make([]string, len(names))
		for i, n := range names {
			paths[i] = "/" + sysext.ReleasePath(n)
		}
		return fmt.Errorf("the source carries %d extension-release files (%s); an extension has one, named after it", len(names), strings.Join(paths, ", "))
	}
	name := f.b.opt.Name
	switch {
	case name == "" && len(names) == 1:
		name = names[0]
		if err := sysext.CheckName(name); err != nil {
			return fmt.Errorf("/%s: %w", sysext.ReleasePath(name), err)
		}
	case name == "":
		return fmt.Errorf("no extension name: give --name (the source carries no /%s to take it from)", sysext.ReleasePath("NAME"))
	case len(names) == 1 && names[0] != name:
		return fmt.Errorf("the source carries /%s, but the extension is named %s (--name): systemd-sysext reads only /%s; rename one or the other",
			sysext.ReleasePath(names[0]), name, sysext.ReleasePath(name))
	}
	f.name = name

	if len(names) == 1 {
		return f.keep(name, f.releases[name])
	}
	if f.b.target == nil {
		return fmt.Errorf("the source has no /%s: give --for IMAGE (the OS image it is for) or --id with --version-id or --sysext-level", sysext.ReleasePath(name))
	}
	for _, d := range []string{"usr", "usr/lib", releaseDir} {
		if k, ok := f.kinds[d]; ok && k != tar.TypeDir {
			return fmt.Errorf("/%s is %s in the source, not a directory; the extension-release goes under it", d, typeName(k))
		}
	}
	f.release = *f.b.target
	if f.release.Architecture == "" {
		f.release.Architecture = sysext.SystemdArch // what slate builds
	}
	body := f.release.File()
	h := &tar.Header{Typeflag: tar.TypeReg, Name: sysext.ReleasePath(name), Mode: 0o644, Size: int64(len(body)),
		ModTime: f.modTime, Format: tar.FormatPAX}
	if err := f.tw.WriteHeader(h); err != nil {
		return err
	}
	f.entries++
	_, err := f.tw.Write(body)
	return err
}

// keep takes the source's own extension-release, which must agree with
// the target when one was given.
func (f *filter) keep(name string, data []byte) error {
	at := "/" + sysext.ReleasePath(name)
	rel, _, err := sysext.ParseRelease(data)
	if err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	if rel.ID == "" {
		return fmt.Errorf("%s: no ID= (systemd-sysext merges no extension without one; _any matches every OS)", at)
	}
	if p := problems(sysext.Config{Release: rel}, "config.release."); len(p) > 0 {
		return fmt.Errorf("%s: %s", at, strings.Join(p, "; "))
	}
	f.release, f.kept = rel, true
	switch {
	case f.b.host != nil:
		if err := sysext.Match(rel, *f.b.host, sysext.SystemdArch); err != nil {
			return fmt.Errorf("%s (%s) is not for %s (%s): %v", at, rel, f.b.opt.For, f.b.host, err)
		}
	case f.b.given:
		t := *f.b.target
		for _, c := range []struct{ key, given, kept string }{
			{"ID", t.ID, rel.ID}, {"VERSION_ID", t.VersionID, rel.VersionID}, {"SYSEXT_LEVEL", t.SysextLevel, rel.SysextLevel},
			{"ARCHITECTURE", t.Architecture, rel.Architecture}, {"SYSEXT_SCOPE", t.Scope, rel.Scope},
		} {
			if c.given != "" && c.given != c.kept {
				return fmt.Errorf("%s has %s=%s, but %s was given; leave the field out to keep the file's", at, c.key, orNone(c.kept), c.given)
			}
		}
	}
	return nil
}

func (f *filter) outsideError() error {
	if len(f.outside) == 0 {
		return nil
	}
	if len(f.outside) == 1 && f.outside[0].under == 0 {
		return sysext.CheckPath(f.outside[0].path)
	}
	var parts []string
	for _, o := range f.outside {
		s := "/" + o.path
		switch {
		case o.under == 1:
			s += " (and 1 entry under it)"
		case o.under > 1:
			s += fmt.Sprintf(" (and %d entries under it)", o.under)
		}
		parts = append(parts, s)
	}
	if f.more > 0 {
		parts = append(parts, fmt.Sprintf("and %d more", f.more))
	}
	return fmt.Errorf("outside /usr and /opt: %s; an extension holds only /usr and /opt (systemd-sysext merges nothing else): move them or leave them out",
		strings.Join(parts, ", "))
}

func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "a symbolic link"
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeReg:
		return "a file"
	}
	return fmt.Sprintf("of tar type %q", string(rune(t)))
}

// list names up to maxListed paths.
func list(paths []string) string {
	if len(paths) > maxListed {
		return strings.Join(paths[:maxListed], ", ") + fmt.Sprintf(" and %d more", len(paths)-maxListed)
	}
	return strings.Join(paths, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
