package build

import (
	"archive/tar"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/slate-os/slate/sysext"
)

// walkDir passes the tree under root to f as tar entries, in lexical order
// (filepath.WalkDir's), so the same tree gives the same stream: modes kept
// (setuid, setgid and sticky bits too), owner 0:0, every mtime modTime,
// symbolic links as they are, files with several names as hard links.
// Extended attributes are not read. Device nodes, sockets and named pipes
// are refused; what is outside /usr and /opt is not descended into.
func walkDir(root string, modTime time.Time, f *filter) error {
	links := map[[2]uint64]string{} // (dev, inode) -> first name
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil // the root's attributes are tar2sqfs's defaults
		}
		rel = filepath.ToSlash(rel)
		if sysext.CheckPath(rel) != nil {
			f.refuse(rel)
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: rel, Mode: tarMode(fi.Mode()), ModTime: modTime, Format: tar.FormatPAX}
		switch t := fi.Mode().Type(); {
		case t == 0:
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := links[key]; ok {
					h.Typeflag, h.Linkname = tar.TypeLink, first
					return f.add(h, nil)
				}
				links[key] = rel
			}
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
			r, err := os.Open(p)
			if err != nil {
				return err
			}
			defer r.Close()
			return f.add(h, r)
		case t&fs.ModeDir != 0:
			h.Typeflag = tar.TypeDir
		case t&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case t&fs.ModeDevice != 0:
			h.Typeflag = tar.TypeBlock
			if t&fs.ModeCharDevice != 0 {
				h.Typeflag = tar.TypeChar
			}
		default:
			return fmt.Errorf("/%s: a %s; an extension holds only directories, files and symbolic links", rel, kind(t))
		}
		return f.add(h, nil)
	})
}

func tarMode(m fs.FileMode) int64 {
	n := int64(m.Perm())
	for _, b := range []struct {
		fs  fs.FileMode
		tar int64
	}{{fs.ModeSetuid, 0o4000}, {fs.ModeSetgid, 0o2000}, {fs.ModeSticky, 0o1000}} {
		if m&b.fs != 0 {
			n |= b.tar
		}
	}
	return n
}

func kind(t fs.FileMode) string {
	switch {
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file (" + t.String() + ")"
}
