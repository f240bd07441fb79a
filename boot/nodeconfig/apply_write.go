package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
)

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
