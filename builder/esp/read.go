package esp

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// FS is an ESP opened for reading.
type FS struct {
	fs *fat32.FileSystem
	l  *layout
}

// Open opens the FAT32 filesystem at [offset, offset+size) of f for reading.
// f stays the caller's to close; FS holds nothing else.
func Open(f *os.File, offset, size int64) (*FS, error) {
	l, err := readLayout(f, offset, size)
	if err != nil {
		return nil, fmt.Errorf("esp: at offset %d: %w", offset, err)
	}
	fs, err := fat32.Read(file.New(f, true), size, offset, l.bytesPerSector)
	if err != nil {
		return nil, fmt.Errorf("esp: at offset %d: %w", offset, err)
	}
	return &FS{fs: fs, l: l}, nil
}

// Label is the volume label in the boot sector, without trailing spaces.
func (e *FS) Label() string { return strings.TrimRight(e.l.label, " ") }

// VolumeID is the volume serial number.
func (e *FS) VolumeID() uint32 { return e.l.volumeID }

// ReadDir lists the directory at p ("" or "/" for the root; a leading slash
// is optional), sorted, by long name where there is one. Subdirectories end
// in "/", so "loader/" is a directory and "loader.conf" a file.
func (e *FS) ReadDir(p string) ([]string, error) {
	ents, err := e.fs.ReadDir(clean(p))
	if err != nil {
		return nil, fmt.Errorf("esp: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, d := range ents {
		n := d.Name()
		if d.IsDir() {
			n += "/"
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// ReadFile returns the contents of the file at p. Names match
// case-insensitively, as on any FAT filesystem.
func (e *FS) ReadFile(p string) ([]byte, error) {
	p = clean(p)
	fi, err := e.stat(p)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("esp: %s is a directory", p)
	}
	// go-diskfs fails to open an empty file whose start cluster is 0 (as it
	// should be, and as Write leaves it): it looks the cluster up first.
	if fi.Size() == 0 {
		return []byte{}, nil
	}
	f, err := e.fs.OpenFile(p, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("esp: %s: %w", p, err)
	}
	defer f.Close()
	b := make([]byte, fi.Size())
	// One Read for the whole file: go-diskfs walks the cluster chain on
	// every call.
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("esp: %s: %w", p, err)
	}
	return b, nil
}

// stat finds p by a case-insensitive match of its long or 8.3 name in its
// parent, as FAT names match (go-diskfs's own Stat compares case-sensitively).
func (e *FS) stat(p string) (fs.FileInfo, error) {
	dir, base := path.Split(p)
	ents, err := e.fs.ReadDir(clean(dir))
	if err != nil {
		return nil, fmt.Errorf("esp: %s: %w", p, err)
	}
	for _, d := range ents {
		fi, err := d.Info()
		if err != nil {
			return nil, fmt.Errorf("esp: %s: %w", p, err)
		}
		short, _ := fi.(interface{ ShortName() string })
		if strings.EqualFold(d.Name(), base) || short != nil && strings.EqualFold(short.ShortName(), base) {
			return fi, nil
		}
	}
	return nil, fmt.Errorf("esp: %s: %w", p, fs.ErrNotExist)
}

// clean turns an ESP path into the form go-diskfs expects: relative, with
// "." for the root.
func clean(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return "."
	}
	return p
}
