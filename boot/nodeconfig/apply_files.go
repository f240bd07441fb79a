package nodeconfig

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"syscall"
)

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

func (p *planner) planRemove(field, np, real string) error {
	if !inBounds(real) {
		return fe(field, "%s resolves to %s, outside /etc and /run", np, real)
	}
	return p.add(&op{kind: opRemove, field: field, path: real}, np)
}
