package history

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/slate-os/slate/internal/fsync"
)

// DefaultPstoreDirs are where a crashed kernel's log is found on the next
// boot: systemd-pstore.service moves the records out of the pstore
// filesystem (freeing the EFI variables they live in) into
// /var/lib/systemd/pstore/, flat or in subdirectories depending on the
// systemd version; whatever it left is still in /sys/fs/pstore.
var DefaultPstoreDirs = []string{"/var/lib/systemd/pstore", "/sys/fs/pstore"}

// A kernel that panics or oopses dumps the end of its log through
// kmsg_dump into each pstore backend, in chunks the backend can hold (about
// 1 KiB for an EFI variable). pstore_dump writes the newest chunk first as
// Part1, the one before it as Part2, and so on, each starting with a header
// line "<reason>#<dump count of this boot> Part<n>". The pstore filesystem
// names a record dmesg-<backend>-<record id>[.enc.z] (.enc.z: compressed
// and the kernel could not decompress it). The EFI backend ("efi", since
// Linux 6.1 "efi_pstore") makes the id ((seconds*100)+part)*1000+count, so
// it carries the dump's time.

// pstorePart is one dmesg record.
type pstorePart struct {
	name    string // file name, dmesg-<backend>-<id>[.enc.z]
	path    string
	backend string
	id      uint64
	time    time.Time
	reason  string // "Panic", "Oops", ... from the header; "" without one
	count   int
	part    int
	text    []byte // content after the header
	encoded bool   // .enc.z: not text
}

var (
	partNameRe   = regexp.MustCompile(`^dmesg-(.+)-(\d+)(\.enc\.z)?$`)
	partHeaderRe = regexp.MustCompile(`^([A-Za-z]+)#(\d+) Part(\d+)\n`)
)

// isDmesgRecord tells whether a file name is a pstore dmesg record.
func isDmesgRecord(name string) bool { return partNameRe.MatchString(name) }

// parsePart names a record's backend, id and time. The content is read by
// readPart.
func parsePart(path string, mtime time.Time) (*pstorePart, bool) {
	name := filepath.Base(path)
	m := partNameRe.FindStringSubmatch(name)
	if m == nil {
		return nil, false
	}
	p := &pstorePart{name: name, path: path, backend: m[1], encoded: m[3] != "", time: mtime.UTC()}
	p.id, _ = strconv.ParseUint(m[2], 10, 64)
	if p.backend == "efi" || p.backend == "efi_pstore" {
		if secs := p.id / 100000; secs > 0 {
			p.time = time.Unix(int64(secs), 0).UTC()
		}
		p.part = int(p.id / 1000 % 100)
		p.count = int(p.id % 1000)
	}
	return p, true
}

// readPart reads the record's content and its header.
func readPart(p *pstorePart) error {
	data, err := os.ReadFile(p.path)
	if err != nil {
		return err
	}
	if p.encoded {
		return nil
	}
	if m := partHeaderRe.FindSubmatch(data); m != nil {
		p.reason = string(m[1])
		p.count, _ = strconv.Atoi(string(m[2]))
		p.part, _ = strconv.Atoi(string(m[3]))
		data = data[len(m[0]):]
	}
	p.text = data
	return nil
}

// pstoreDump is one kmsg dump: its parts, newest (Part1) first.
type pstoreDump struct {
	parts []*pstorePart
}

// groupDumps puts the parts of each dump together, oldest dump first. The
// parts of one dump have the same backend and count and the numbers 1, 2,
// 3... and are written within moments; counts restart at 1 on every boot,
// so parts with the same backend and count are split where the numbers do
// not follow on or time jumps.
func groupDumps(parts []*pstorePart) []*pstoreDump {
	type key struct {
		backend string
		count   int
	}
	byKey := map[key][]*pstorePart{}
	for _, p := range parts {
		k := key{p.backend, p.count}
		byKey[k] = append(byKey[k], p)
	}
	var dumps []*pstoreDump
	for _, ps := range byKey {
		slices.SortFunc(ps, func(a, b *pstorePart) int {
			if c := a.time.Truncate(time.Second).Compare(b.time.Truncate(time.Second)); c != 0 {
				return c
			}
			if a.part != b.part {
				return a.part - b.part
			}
			return strings.Compare(a.path, b.path)
		})
		var cur *pstoreDump
		for _, p := range ps {
			if cur != nil {
				last := cur.parts[len(cur.parts)-1]
				if p.part > 0 && p.part == last.part+1 && p.time.Sub(last.time) < 10*time.Second {
					cur.parts = append(cur.parts, p)
					continue
				}
			}
			cur = &pstoreDump{parts: []*pstorePart{p}}
			dumps = append(dumps, cur)
		}
	}
	slices.SortFunc(dumps, func(a, b *pstoreDump) int {
		if c := a.parts[0].time.Compare(b.parts[0].time); c != 0 {
			return c
		}
		return strings.Compare(a.parts[0].path, b.parts[0].path)
	})
	return dumps
}

var syslogPrefixRe = regexp.MustCompile(`(?m)^<\d+>`)

// text renders the dump oldest line first: the parts from the highest
// number down to Part1, without their headers or syslog priorities.
func (d *pstoreDump) text() []byte {
	first := d.parts[0]
	var b bytes.Buffer
	reason := first.reason
	if reason == "" {
		reason = "dump"
	}
	fmt.Fprintf(&b, "==== %s#%d at %s (pstore %s, %d part(s)) ====\n",
		reason, first.count, first.time.Format(time.RFC3339), first.backend, len(d.parts))
	for i := len(d.parts) - 1; i >= 0; i-- {
		p := d.parts[i]
		if p.encoded {
			fmt.Fprintf(&b, "[slate: %s is compressed and the kernel could not decode it; kept as is]\n", p.name)
			continue
		}
		t := syslogPrefixRe.ReplaceAll(p.text, nil)
		b.Write(t)
		if len(t) > 0 && t[len(t)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// consoleText renders every dump in dir (recursively), oldest first.
func consoleText(dir string) ([]byte, error) {
	var parts []*pstorePart
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		p, ok := parsePart(path, info.ModTime())
		if !ok {
			return nil
		}
		if err := readPart(p); err != nil {
			return err
		}
		parts = append(parts, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, d := range groupDumps(parts) {
		out = append(out, d.text()...)
	}
	return out, nil
}

// panicLine returns the last "Kernel panic - not syncing" line of a console
// text, from those words on; "" if there is none. The kernel repeats the
// message in a closing "---[ end Kernel panic - not syncing: ... ]---"
// line, which is not the one.
func panicLine(console []byte) string {
	const marker = "Kernel panic - not syncing"
	found := ""
	for line := range bytes.Lines(console) {
		i := bytes.Index(line, []byte(marker))
		if i < 0 || bytes.Contains(line[:i], []byte("---[ end ")) {
			continue
		}
		found = strings.TrimSpace(string(line[i:]))
	}
	return found
}

// collectPstore moves the dmesg records of dumps made at or after since
// (all when since is zero) from the pstore directories into dst. A record is
// renamed when it can be; otherwise (the pstore filesystem, another
// filesystem) copied, synced, then removed: removing a record from
// /sys/fs/pstore erases it from NVRAM. A directory of systemd's archive left
// without records loses the dmesg.txt systemd assembled from them (the
// records are kept) and is removed when empty.
func collectPstore(srcDirs []string, dst string, since time.Time) error {
	var errs []error
	for _, root := range srcDirs {
		root = filepath.Clean(root)
		var dirs []string // those records were taken from, below root
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				errs = append(errs, err)
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			p, ok := parsePart(path, info.ModTime())
			if !ok || (!since.IsZero() && p.time.Before(since)) {
				return nil
			}
			if err := moveFile(path, filepath.Join(dst, p.name)); err != nil {
				errs = append(errs, fmt.Errorf("keep pstore record %s: %w", path, err))
			}
			for dir := filepath.Dir(path); dir != root && strings.HasPrefix(dir, root); dir = filepath.Dir(dir) {
				if !slices.Contains(dirs, dir) {
					dirs = append(dirs, dir)
				}
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
		// Deepest first, so a parent is empty by the time it is looked at.
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, dir := range dirs {
			tidyArchiveDir(dir)
		}
	}
	return errors.Join(errs...)
}

// tidyArchiveDir removes systemd's dmesg.txt from a directory that holds no
// dmesg record any more, then the directory if it is empty.
func tidyArchiveDir(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if isDmesgRecord(e.Name()) || e.IsDir() {
			return
		}
	}
	if len(ents) == 1 && ents[0].Name() == "dmesg.txt" {
		os.Remove(filepath.Join(dir, "dmesg.txt"))
	}
	os.Remove(dir) // fails, harmlessly, unless empty
}

// moveFile moves src to dst crash-safely: dst is complete and synced before
// src goes. A dst that exists with the same content (an interrupted earlier
// move) only makes src go.
func moveFile(src, dst string) error {
	if old, err := os.ReadFile(dst); err == nil {
		cur, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if !bytes.Equal(old, cur) {
			dst = uniqueName(dst)
		} else {
			return os.Remove(src)
		}
	}
	if err := os.Rename(src, dst); err == nil {
		if err := fsync.Path(filepath.Dir(dst)); err != nil {
			return err
		}
		return fsync.Path(filepath.Dir(src))
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := fsync.WriteFile(dst, data, 0o644); err != nil {
		return err
	}
	return os.Remove(src)
}

func uniqueName(path string) string {
	for i := 2; ; i++ {
		p := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return p
		}
	}
}
