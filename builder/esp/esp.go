// Package esp builds the EFI system partition (FAT32) of a slate disk and
// reads one back for `slate inspect`.
//
// The filesystem is written by go-diskfs (filesystem/fat32), then a small
// post-pass over the written bytes (fixup.go) corrects what go-diskfs v1.9.4
// gets wrong and stamps every timestamp and the volume ID from Options, so
// that the result is clean for `fsck.fat -n` and byte-for-byte reproducible:
// the same files and Options give the same bytes on any day, at any offset.
package esp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// File is one file to put on the ESP.
type File struct {
	// Path is slash-separated without a leading slash, e.g.
	// "EFI/BOOT/BOOTX64.EFI", "loader/entries/slate-a.conf", "slate/a/vmlinuz".
	// Directories are created as needed. Names are matched case-insensitively,
	// as FAT does, so two paths that differ only in case are an error.
	Path string
	// Size is the exact number of bytes Open yields.
	Size int64
	// Open returns the contents. It is called once, while the file is
	// written, so a large kernel is streamed rather than held in memory.
	Open func() (io.ReadCloser, error)
}

// Options shape the filesystem.
type Options struct {
	// Size of the filesystem in bytes (a multiple of 512), e.g. 256 MiB.
	Size int64
	// Label is the volume label, at most 11 upper-case 8.3 characters, e.g.
	// "ESP". Empty means "NO NAME".
	Label string
	// VolumeID is the volume serial number; the caller derives it from the
	// image digest so that it is reproducible.
	VolumeID uint32
	// ModTime is stamped into every directory entry as its creation,
	// modification and access time. FAT stores local time without a zone;
	// ModTime is written in UTC, in FAT's two-second steps (the creation time
	// keeps FAT's extra 10 ms field), clamped to FAT's range
	// 1980-01-01..2107-12-31: the zero time and a SOURCE_DATE_EPOCH of 0
	// both become 1980-01-01 00:00:00.
	ModTime time.Time
}

// sectorSize is the logical sector size of the ESPs written here.
const sectorSize = 512

// copyChunk is how much of a file is handed to go-diskfs per Write call.
// go-diskfs rewrites both FATs and the parent directory on every Write, so
// small writes are slow; 4 MiB keeps a 10 MB kernel to three calls.
const copyChunk = 4 << 20

// maxFileSize is the largest file FAT32 can hold.
const maxFileSize = 1<<32 - 1

// Write builds a FAT32 filesystem of opt.Size bytes from files into dst at
// [offset, offset+opt.Size), leaving the rest of dst alone. dst is either a
// standalone ESP image (offset 0) or the whole disk image with offset at the
// start of the ESP partition; it is extended if shorter.
//
// dst is an *os.File rather than an io.WriterAt because go-diskfs needs a
// backend it can read back while it writes (it re-reads directories and
// clusters) and addresses the filesystem by a start offset itself, so the
// whole disk plus the partition's offset is exactly what it wants, with no
// section adapter; the post-pass reads and rewrites the same bytes; and a
// file lets Write zero the region by punching a hole, so the image stays
// sparse and leftover bytes from an earlier build cannot leak into this one.
//
// Files are laid out in a fixed order (directories first, then files, each
// sorted by path), so the order of files does not change the result. If Write
// fails, the contents of the region are undefined.
func Write(dst *os.File, offset int64, files []File, opt Options) error {
	if err := build(dst, offset, files, opt); err != nil {
		return err
	}
	return fixup(dst, offset, opt)
}

// build is everything Write does before the post-pass: the filesystem as
// go-diskfs writes it. Tests call it alone to show the faults fixup repairs.
func build(dst *os.File, offset int64, files []File, opt Options) error {
	if offset < 0 || offset%sectorSize != 0 {
		return fmt.Errorf("esp: offset %d is not a non-negative multiple of %d", offset, sectorSize)
	}
	if opt.Size <= 0 || opt.Size%sectorSize != 0 {
		return fmt.Errorf("esp: size %d is not a positive multiple of %d", opt.Size, sectorSize)
	}
	if opt.Size > fat32.Fat32MaxSize {
		return fmt.Errorf("esp: size %d is larger than FAT32 allows (%d)", opt.Size, fat32.Fat32MaxSize)
	}
	label, err := checkLabel(opt.Label)
	if err != nil {
		return err
	}
	t, err := plan(files)
	if err != nil {
		return err
	}

	if err := zeroRegion(dst, offset, opt.Size); err != nil {
		return fmt.Errorf("esp: clearing %d bytes at offset %d: %w", opt.Size, offset, err)
	}
	// reproducible=true keeps go-diskfs from deriving a volume serial from
	// the clock; the timestamps it still takes from the clock are replaced
	// by fixup.
	fs, err := fat32.Create(file.New(dst, false), opt.Size, offset, sectorSize, label, true)
	if err != nil {
		return fmt.Errorf("esp: creating FAT32 of %d bytes: %w", opt.Size, err)
	}

	// Check that the files fit before writing any of them: go-diskfs sizes
	// its FAT for more clusters than the data area holds and would allocate
	// past the end of the filesystem, into whatever follows it on the disk.
	l, err := readLayout(dst, offset, opt.Size)
	if err != nil {
		return fmt.Errorf("esp: an ESP of %s: %w", human(opt.Size), err)
	}
	if need, have := t.clusters(l.clusterBytes()), int64(l.clusterCount); need > have {
		return fmt.Errorf("esp: the ESP is too small: its %d files and %d directories need %s "+
			"(%d clusters of %d bytes) but an ESP of %s holds %s (%d clusters); make the ESP larger",
			len(t.files), len(t.dirs)+1, human(need*l.clusterBytes()), need, l.clusterBytes(),
			human(opt.Size), human(have*l.clusterBytes()), have)
	}

	for _, d := range t.dirs {
		if err := fs.Mkdir("/" + d); err != nil {
			return fmt.Errorf("esp: mkdir %s: %w", d, err)
		}
	}
	buf := make([]byte, min(copyChunk, t.largest))
	for _, f := range t.files {
		if err := writeFile(fs, f, buf); err != nil {
			return fmt.Errorf("esp: %s: %w", f.Path, err)
		}
	}
	return nil
}

// writeFile copies one file into the filesystem, checking that its reader
// yields exactly f.Size bytes.
func writeFile(fs *fat32.FileSystem, f File, buf []byte) error {
	out, err := fs.OpenFile("/"+f.Path, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	defer out.Close()
	in, err := f.Open()
	if err != nil {
		return err
	}
	defer in.Close()
	for left := f.Size; left > 0; {
		n := min(int64(len(buf)), left)
		got, err := io.ReadFull(in, buf[:n])
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("contents are shorter than its size %d (ended after %d bytes)",
					f.Size, f.Size-left+int64(got))
			}
			return err
		}
		if _, err := out.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	var one [1]byte
	if n, _ := io.ReadFull(in, one[:]); n > 0 {
		return fmt.Errorf("contents are longer than its size %d", f.Size)
	}
	return in.Close()
}

// tree is the validated, ordered plan of what goes on the ESP.
type tree struct {
	dirs    []string            // every directory, sorted; parents before children
	files   []File              // sorted by path
	entries map[string][]string // directory ("" is the root) -> names in it
	largest int64               // size of the largest file, at least 1
}

// plan validates files and puts them in the order they are written.
func plan(files []File) (*tree, error) {
	t := &tree{entries: map[string][]string{"": nil}, largest: 1}
	kinds := map[string]string{} // upper-cased path -> "file" or "directory"
	names := map[string]string{} // upper-cased path -> path as given
	claim := func(p, kind string) error {
		k := strings.ToUpper(p)
		if old, ok := kinds[k]; ok {
			if old == "directory" && kind == "directory" && names[k] == p {
				return nil
			}
			return fmt.Errorf("esp: %s %q clashes with %s %q (FAT names ignore case)", kind, p, old, names[k])
		}
		kinds[k], names[k] = kind, p
		parent, base := path.Split(p)
		parent = strings.TrimSuffix(parent, "/")
		t.entries[parent] = append(t.entries[parent], base)
		if kind == "directory" {
			t.dirs = append(t.dirs, p)
			t.entries[p] = nil
		}
		return nil
	}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		if err := checkPath(f.Path); err != nil {
			return nil, err
		}
		if f.Size < 0 || f.Size > maxFileSize {
			return nil, fmt.Errorf("esp: %s: size %d is outside FAT32's 0..%d", f.Path, f.Size, int64(maxFileSize))
		}
		if f.Open == nil {
			return nil, fmt.Errorf("esp: %s: no Open function", f.Path)
		}
		parts := strings.Split(f.Path, "/")
		for i := 1; i < len(parts); i++ {
			if err := claim(strings.Join(parts[:i], "/"), "directory"); err != nil {
				return nil, err
			}
		}
		if err := claim(f.Path, "file"); err != nil {
			return nil, err
		}
		t.files = append(t.files, f)
		t.largest = max(t.largest, f.Size)
	}
	sort.Strings(t.dirs)
	return t, nil
}

// clusters is the number of clusters go-diskfs allocates for t, counted the
// way it allocates them: every directory takes whole clusters for its 32-byte
// entries ("." and ".." in subdirectories, the volume label in the root, and
// for each name its 8.3 entry plus its long-name entries), and every file
// takes at least one cluster, even an empty one (fixup frees that one later).
func (t *tree) clusters(clusterBytes int64) int64 {
	n := int64(0)
	for dir, names := range t.entries {
		slots := int64(2)
		if dir == "" {
			slots = 1
		}
		for _, name := range names {
			slots += 1 + int64(lfnSlots(name))
		}
		n += max(1, ceilDiv(slots*32, clusterBytes))
	}
	for _, f := range t.files {
		n += max(1, ceilDiv(f.Size, clusterBytes))
	}
	return n
}

// checkPath accepts slash-separated relative paths whose names FAT and
// go-diskfs both handle: printable ASCII without FAT's reserved characters,
// not starting with a dot or a space, and not ending with one (Windows and
// Linux strip those, and go-diskfs gives a name with a leading dot an empty
// 8.3 name).
func checkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("esp: bad path %q: want a relative slash-separated path like EFI/BOOT/BOOTX64.EFI", p)
	}
	for _, name := range strings.Split(p, "/") {
		switch {
		case name == "":
			return fmt.Errorf("esp: bad path %q: empty name", p)
		case len(name) > 255:
			return fmt.Errorf("esp: bad path %q: name longer than 255 characters", p)
		case name[0] == '.' || name[0] == ' ' || name[len(name)-1] == '.' || name[len(name)-1] == ' ':
			return fmt.Errorf("esp: bad path %q: name %q starts or ends with a dot or space", p, name)
		}
		for _, c := range []byte(name) {
			if c < 0x20 || c > 0x7e || strings.IndexByte(`"*/:<>?\|`, c) >= 0 {
				return fmt.Errorf("esp: bad path %q: character %q is not allowed in FAT names", p, c)
			}
		}
	}
	return nil
}

// checkLabel returns the label as go-diskfs wants it.
func checkLabel(label string) (string, error) {
	if label == "" {
		return "NO NAME", nil
	}
	if len(label) > 11 {
		return "", fmt.Errorf("esp: label %q is longer than 11 characters", label)
	}
	for _, c := range []byte(label) {
		if c != ' ' && !isShortNameChar(c) {
			return "", fmt.Errorf("esp: label %q: character %q is not allowed (use upper case, digits and 8.3 punctuation)", label, c)
		}
	}
	return label, nil
}

// isShortNameChar reports whether c may appear in an 8.3 name as is; this is
// the set go-diskfs keeps unchanged (it upper-cases or replaces the rest).
func isShortNameChar(c byte) bool {
	return 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'()-@^_`{}~", c) >= 0
}

// lfnSlots is how many long-name entries go-diskfs writes before the 8.3
// entry of name: none when name already is a valid upper-case 8.3 name, else
// one per 13 characters (mirrors convertLfnSfn in go-diskfs's fat12 package).
func lfnSlots(name string) int {
	base, ext := name, ""
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		base, ext = name[:i], name[i+1:]
	}
	short := len(base) <= 8 && len(ext) <= 3
	for _, c := range []byte(base + ext) {
		short = short && isShortNameChar(c)
	}
	if short {
		return 0
	}
	return (len(name) + 12) / 13
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// human formats a byte count for error messages.
func human(n int64) string {
	return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
}
