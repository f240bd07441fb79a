package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// maxSymlinks is the kernel's limit on symlinks followed in one lookup.
const maxSymlinks = 40

// tree is the target system's root. Paths given to its methods are node
// paths: absolute, as the booted node will see them.
type tree struct {
	root string
}

func (t tree) host(p string) string { return t.root + p }

// escapeError is a path that leads, through a symlink, outside /etc and /run.
type escapeError struct {
	link string // the symlink, a node path
	to   string // where it leads
}

func (e *escapeError) Error() string {
	return fmt.Sprintf("%s leads to %s, outside /etc and /run", e.link, e.to)
}

// checkpoint marks, in the list of path components still to walk, the point
// where a symlink's target has been walked: the place it leads to. NUL can
// not appear in a path.
const checkpoint = "\x00"

// resolve walks p inside the tree the way the kernel would with the tree's
// root as "/": a symlink's absolute target starts again at the tree's root,
// ".." never climbs above it. Every symlink on the way is followed, the last
// component's too when followLast is set. Once a component is missing, the
// rest is taken as written. When bounded, a symlink that leads outside /etc
// and /run is refused with an *escapeError.
//
// It returns the resolved node path and, if it exists, its Lstat.
func (t tree) resolve(p string, followLast, bounded bool) (string, fs.FileInfo, error) {
	type item struct{ name, link string } // link: the symlink a checkpoint closes
	var todo []item                       // a stack: the next component is last
	push := func(p string, link string) {
		if link != "" {
			todo = append(todo, item{checkpoint, link})
		}
		parts := strings.Split(p, "/")
		for i := len(parts) - 1; i >= 0; i-- {
			if parts[i] != "" && parts[i] != "." {
				todo = append(todo, item{name: parts[i]})
			}
		}
	}
	// last reports whether no path component follows in todo.
	last := func() bool {
		for _, it := range todo {
			if it.name != checkpoint {
				return false
			}
		}
		return true
	}
	push(p, "")
	cur := "/"
	var (
		missing bool
		links   int
	)
	for len(todo) > 0 {
		it := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if it.name == checkpoint {
			if bounded && !inBounds(cur) {
				return "", nil, &escapeError{link: it.link, to: cur}
			}
			continue
		}
		if it.name == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, it.name)
		if missing {
			cur = next
			continue
		}
		st, err := os.Lstat(t.host(next))
		if errors.Is(err, fs.ErrNotExist) {
			missing, cur = true, next
			continue
		}
		if err != nil {
			return "", nil, err
		}
		isLast := last()
		if st.Mode()&fs.ModeSymlink != 0 && (!isLast || followLast) {
			links++
			if links > maxSymlinks {
				return "", nil, &fs.PathError{Op: "resolve", Path: p, Err: syscall.ELOOP}
			}
			target, err := os.Readlink(t.host(next))
			if err != nil {
				return "", nil, err
			}
			if strings.HasPrefix(target, "/") {
				cur = "/"
			}
			push(target, next)
			continue
		}
		if !isLast && !st.IsDir() {
			return "", nil, &fs.PathError{Op: "resolve", Path: next, Err: syscall.ENOTDIR}
		}
		cur = next
	}
	var fi fs.FileInfo
	if !missing {
		st, err := os.Lstat(t.host(cur))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", nil, err
		}
		fi = st
	}
	if bounded && !inBounds(cur) {
		return "", nil, &escapeError{link: p, to: cur}
	}
	return cur, fi, nil
}

// readFile reads a node path, following symlinks inside the tree.
func (t tree) readFile(p string) ([]byte, error) {
	real, fi, err := t.resolve(p, true, false)
	if err != nil {
		return nil, err
	}
	if fi == nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: p, Err: errors.New("not a regular file")}
	}
	return os.ReadFile(t.host(real))
}
