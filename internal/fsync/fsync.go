// Package fsync flushes files and directories to disk: a rename is durable
// only once the directory that holds it is synced. WriteFile and WriteFrom
// are the one way slate replaces a file crash-safely (temporary file,
// fsync, rename, fsync of the directory). The package is stdlib-only: the
// init links it.
package fsync

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Path fsyncs a file or a directory, naming it in the error.
func Path(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// WriteJSON writes v as indented JSON (and a newline) to path with
// WriteFile, mode 0644, creating path's directory: slate's records on the
// state partition (the taint, the last update check).
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return WriteFile(path, append(b, '\n'), 0o644)
}

// WriteFile writes data to path atomically and durably: to a hidden
// temporary file in path's directory (.<name>.tmp-<random>), fsynced,
// renamed over path, and the directory fsynced. path is left as it was, or
// absent, until the new content is on disk; on an error the temporary file
// is removed. The file gets mode exactly (the umask does not apply).
func WriteFile(path string, data []byte, mode os.FileMode) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	_, err = write(f, path, mode, func(w io.Writer) (int64, error) {
		n, err := w.Write(data)
		return int64(n), err
	})
	return err
}

// WriteFrom writes what r yields to path through the temporary file tmp,
// which must be in path's directory and is replaced if it exists: r is
// copied in writes of 1 MiB (on FAT every write updates the allocation
// table), the file fsynced, renamed over path and the directory fsynced.
// path is left as it was, or absent, until r has been read to its end
// without error and the new content is on disk; on an error tmp is
// removed. It returns the bytes written. The file is created with mode,
// less the umask, and not chmodded: a FAT filesystem's modes are fixed when
// it is mounted. The caller picks tmp so that it can recognize and remove
// the temporary files a power cut leaves (and so that a boot loader, say,
// never reads them).
func WriteFrom(path, tmp string, r io.Reader, mode os.FileMode) (int64, error) {
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return 0, err
	}
	return write(f, path, 0, func(w io.Writer) (int64, error) {
		return io.CopyBuffer(onlyWriter{w}, r, make([]byte, 1<<20))
	})
}

// onlyWriter hides *os.File's ReadFrom, so io.CopyBuffer uses the buffer
// instead of copy_file_range/sendfile paths that ignore it.
type onlyWriter struct{ io.Writer }

// write fills the temporary file f with fill, chmods it to mode (unless
// 0), fsyncs it, renames it to path and fsyncs path's directory. f is
// closed, and removed on an error.
func write(f *os.File, path string, mode os.FileMode, fill func(io.Writer) (int64, error)) (n int64, err error) {
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if n, err = fill(f); err != nil {
		return n, err
	}
	if mode != 0 {
		if err = f.Chmod(mode); err != nil {
			return n, err
		}
	}
	if err = f.Sync(); err != nil {
		return n, err
	}
	if err = f.Close(); err != nil {
		return n, err
	}
	if err = os.Rename(tmp, path); err != nil {
		return n, err
	}
	return n, Path(filepath.Dir(path))
}
