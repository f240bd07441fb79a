package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CopyStats counts what CopyTree did.
type CopyStats struct {
	Dirs, Files, Symlinks, Hardlinks, Devices int
	// Skipped are entries that already existed in the destination (kept as they are).
	Skipped int
	Bytes   int64
	// XattrErrors counts extended attributes the destination refused.
	XattrErrors int
}

func (s CopyStats) String() string {
	return fmt.Sprintf("%d dirs, %d files (%d bytes), %d symlinks, %d hard links, %d special files; %d kept as they were",
		s.Dirs, s.Files, s.Bytes, s.Symlinks, s.Hardlinks, s.Devices, s.Skipped)
}

// CopyTree copies the tree at src into dst (an existing directory) the way
// the image's /var must land on a new state filesystem: owners, modes
// (setuid, sticky), symlinks, hard links, device nodes and FIFOs, extended
// attributes (ACLs, file capabilities, SELinux labels) and times are kept.
// Sockets are skipped. Entries that already exist in dst are left alone, so
// a copy cut short by a power loss can simply run again.
func CopyTree(src, dst string) (CopyStats, error) {
	var st CopyStats
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	type dirMeta struct {
		path string
		info *unix.Stat_t
		src  string
	}
	var dirs []dirMeta

	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		if rel == "." {
			// dst exists: give it src's owner and mode if we made it fresh.
			dirs = append(dirs, dirMeta{target, &s, p})
			return nil
		}
		if _, err := os.Lstat(target); err == nil {
			if d.IsDir() {
				if fi, _ := os.Stat(target); fi != nil && fi.IsDir() {
					return nil // merge into the existing directory
				}
				st.Skipped++
				return fs.SkipDir
			}
			st.Skipped++
			return nil
		}

		switch s.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirMeta{target, &s, p})
			st.Dirs++
			return nil // metadata after the children are in
		case unix.S_IFREG:
			if s.Nlink > 1 {
				key := inode{uint64(s.Dev), s.Ino}
				if first, ok := links[key]; ok {
					if err := os.Link(first, target); err != nil {
						return err
					}
					st.Hardlinks++
					return nil
				}
				links[key] = target
			}
			n, err := copyFile(p, target)
			if err != nil {
				return err
			}
			st.Files++
			st.Bytes += n
		case unix.S_IFLNK:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
			st.Symlinks++
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
			if err := unix.Mknod(target, s.Mode, int(s.Rdev)); err != nil {
				return &fs.PathError{Op: "mknod", Path: target, Err: err}
			}
			st.Devices++
		default: // sockets: they belong to a running process, not to an image
			return nil
		}
		return applyMeta(p, target, &s, &st)
	})
	if err != nil {
		return st, err
	}
	// Directories last, deepest first: their times must not be disturbed by
	// the entries created inside them, and a read-only mode must not stop
	// the copy.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := applyMeta(dirs[i].src, dirs[i].path, dirs[i].info, &st); err != nil {
			return st, err
		}
	}
	return st, nil
}

func copyFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if err != nil {
		out.Close()
		return n, fmt.Errorf("copying %s: %w", src, err)
	}
	return n, out.Close()
}

// applyMeta gives dst src's owner, mode, extended attributes and times.
// Order matters: chown clears setuid bits, so chmod comes after it, and
// security.capability is dropped by chown, so xattrs come after both.
func applyMeta(src, dst string, s *unix.Stat_t, st *CopyStats) error {
	isLink := s.Mode&unix.S_IFMT == unix.S_IFLNK
	if err := unix.Lchown(dst, int(s.Uid), int(s.Gid)); err != nil {
		return &fs.PathError{Op: "lchown", Path: dst, Err: err}
	}
	if !isLink {
		if err := unix.Chmod(dst, s.Mode&0o7777); err != nil {
			return &fs.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	if err := copyXattrs(src, dst); err != nil {
		st.XattrErrors++
	}
	ts := []unix.Timespec{s.Atim, s.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "utimes", Path: dst, Err: err}
	}
	return nil
}

func copyXattrs(src, dst string) error {
	size, err := unix.Llistxattr(src, nil)
	if err != nil || size == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return err
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(src, buf)
	if err != nil {
		return err
	}
	var firstErr error
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		n, err := unix.Lgetxattr(src, name, nil)
		if err != nil {
			firstErr = errors.Join(firstErr, err)
			continue
		}
		val := make([]byte, n)
		if n > 0 {
			if n, err = unix.Lgetxattr(src, name, val); err != nil {
				firstErr = errors.Join(firstErr, err)
				continue
			}
			val = val[:n]
		}
		if err := unix.Lsetxattr(dst, name, val, 0); err != nil {
			firstErr = errors.Join(firstErr, fmt.Errorf("%s on %s: %w", name, dst, err))
		}
	}
	return firstErr
}
