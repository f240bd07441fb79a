// Package slots reads and changes what a mounted ESP says about the two root
// slots: their boot entries (loader/entries/slate-<slot>[+left[-done]].conf,
// counted down by systemd-boot) and their files under slate/<slot>/ (kernel,
// initramfs, release.json); and the systemd-boot binaries an upgrade keeps
// current (loader.go).
//
// Every write is made crash-safe for vfat, which has no journal: the new
// content goes to a temporary name in the same directory, is fsynced,
// renamed over the final name, and the directory is fsynced. The temporary
// names (.slate-tmp-*.tmp) do not end in .conf, so systemd-boot never reads a
// half-written entry; leftovers of an interrupted write are removed by the
// next write into that directory.
package slots

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/fsync"
)

// State is what the ESP says about a slot's image.
type State string

const (
	// Good: the entry has no boot counter; the image booted and passed
	// its health check (or was written by the builder).
	Good State = "good"
	// Trying: the entry counts boots and has tries left.
	Trying State = "trying"
	// Bad: the entry counts boots and has none left; systemd-boot sorts it
	// last, so the other slot boots.
	Bad State = "bad"
	// Empty: the slot has no entry; it cannot boot.
	Empty State = "empty"
)

// Info is one slot as the ESP shows it.
type Info struct {
	Slot       boot.Slot     `json:"slot"`
	State      State         `json:"state"`
	EntryFile  string        `json:"entry,omitempty"`
	Entry      *boot.Entry   `json:"-"`
	Generation int           `json:"generation,omitempty"`
	Counting   bool          `json:"counting"`
	TriesLeft  int           `json:"triesLeft"`
	TriesDone  int           `json:"triesDone"`
	Release    *boot.Release `json:"release,omitempty"`
	// Problems are inconsistencies worth showing: two entries for one
	// slot, a missing kernel, an unreadable release.json...
	Problems []string `json:"problems,omitempty"`
}

// ESP is a mounted EFI system partition.
type ESP struct {
	Dir string
}

// Open returns the ESP mounted at dir. Nothing is read until a method is
// called.
func Open(dir string) *ESP { return &ESP{Dir: dir} }

// tmpPrefix and tmpSuffix make the temporary name of a file being written.
// The suffix keeps systemd-boot (which reads only *.conf) away from it.
const (
	tmpPrefix = ".slate-tmp-"
	tmpSuffix = ".tmp"
)

func (e *ESP) path(rel string) string { return filepath.Join(e.Dir, filepath.FromSlash(rel)) }

// entriesDir returns loader/entries, failing when it does not exist: a slate
// ESP always has it, so its absence means the ESP is not mounted at Dir, and
// writing there would put entries where no boot loader looks.
func (e *ESP) entriesDir() (string, error) {
	dir := e.path(boot.EntriesDir)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%s: no %s directory: is the ESP mounted there?", e.Dir, boot.EntriesDir)
	case err != nil:
		return "", err
	case !fi.IsDir():
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return dir, nil
}

// entryFile is one slate entry found in loader/entries.
type entryFile struct {
	name  string
	entry *boot.Entry // nil when the file does not parse
	err   error
}

// entries lists the slate entries in loader/entries, by slot. Files whose
// names are not slate entry names are ignored.
func (e *ESP) entries() (map[boot.Slot][]entryFile, error) {
	dir, err := e.entriesDir()
	if err != nil {
		return nil, err
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[boot.Slot][]entryFile{}
	for _, de := range des {
		id, ok := boot.ParseEntryName(de.Name())
		if !ok || !de.Type().IsRegular() {
			continue
		}
		ef := entryFile{name: de.Name()}
		data, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err == nil {
			ef.entry, err = boot.ParseEntry(de.Name(), data)
		}
		ef.err = err
		out[id.Slot] = append(out[id.Slot], ef)
	}
	return out, nil
}

// Read reports both slots; a slot without an entry is Empty. When a slot has
// two entries (which must never happen, see ARCHITECTURE.md), the one with the
// highest generation is reported, with a problem naming both.
func (e *ESP) Read() (map[boot.Slot]*Info, error) {
	all, err := e.entries()
	if err != nil {
		return nil, err
	}
	out := map[boot.Slot]*Info{}
	for _, s := range boot.Slots {
		out[s] = e.readSlot(s, all[s])
	}
	return out, nil
}

func (e *ESP) readSlot(s boot.Slot, files []entryFile) *Info {
	in := &Info{Slot: s, State: Empty}
	problem := func(format string, args ...any) { in.Problems = append(in.Problems, fmt.Sprintf(format, args...)) }

	var best *entryFile
	var names []string
	for i, f := range files {
		names = append(names, f.name)
		if f.err != nil {
			problem("%s/%s: %v", boot.EntriesDir, f.name, f.err)
			continue
		}
		if best == nil || f.entry.Generation > best.entry.Generation {
			best = &files[i]
		}
	}
	if len(files) > 1 {
		problem("slot %s has %d boot entries (%s); there must be one", s, len(files), strings.Join(names, ", "))
	}

	rel, relErr := e.readRelease(s)
	switch {
	case errors.Is(relErr, fs.ErrNotExist):
	case relErr != nil:
		problem("%s: %v", path.Join(s.ESPDir(), boot.ReleaseName), relErr)
	case rel.Slot != s:
		problem("%s: says slot %q", path.Join(s.ESPDir(), boot.ReleaseName), rel.Slot)
	}

	if best == nil {
		// Files without an entry are what an interrupted upgrade leaves;
		// they are harmless (nothing boots them) and the next upgrade
		// replaces them.
		if des, _ := os.ReadDir(e.path(s.ESPDir())); len(des) > 0 && len(files) == 0 {
			problem("%s holds files but the slot has no boot entry (an interrupted upgrade?)", s.ESPDir())
		}
		return in
	}

	en := best.entry
	in.EntryFile, in.Entry = best.name, en
	in.Generation, in.Counting, in.TriesLeft, in.TriesDone = en.Generation, en.Counting, en.Left, en.Done
	switch {
	case !en.Counting:
		in.State = Good
	case en.Left > 0:
		in.State = Trying
	default:
		in.State = Bad
	}
	if relErr == nil {
		in.Release = rel
	} else if errors.Is(relErr, fs.ErrNotExist) {
		problem("%s: missing", path.Join(s.ESPDir(), boot.ReleaseName))
	}

	for what, p := range map[string]string{"kernel": en.Linux, "initramfs": en.Initrd, "UKI": en.EFI} {
		if p == "" {
			if what == "initramfs" && en.EFI == "" {
				problem("%s: no initrd line", best.name)
			}
			continue
		}
		if _, err := os.Stat(e.path(strings.TrimPrefix(p, "/"))); err != nil {
			problem("%s: %s %s: %v", best.name, what, p, statReason(err))
		}
	}
	if rel != nil && relErr == nil {
		if rh := boot.CmdlineValue(en.Options, boot.ArgRootHash); rh != rel.RootHash {
			problem("%s has %s=%s, but %s says %s", best.name, boot.ArgRootHash, rh, path.Join(s.ESPDir(), boot.ReleaseName), rel.RootHash)
		}
		if en.Version != rel.Version {
			problem("%s has %s=%s, but %s says %s", best.name, boot.ArgVersion, en.Version, path.Join(s.ESPDir(), boot.ReleaseName), rel.Version)
		}
	}
	slices.Sort(in.Problems)
	return in
}

func statReason(err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "missing"
	}
	return err.Error()
}

func (e *ESP) readRelease(s boot.Slot) (*boot.Release, error) {
	data, err := os.ReadFile(e.path(path.Join(s.ESPDir(), boot.ReleaseName)))
	if err != nil {
		return nil, err
	}
	r, err := boot.ParseRelease(data)
	if err != nil {
		// ParseRelease names the file; the caller names the directory.
		return nil, errors.New(strings.TrimPrefix(err.Error(), boot.ReleaseName+": "))
	}
	return r, nil
}

// NextGeneration is one more than the highest generation of any entry, so
// an entry written with it boots first. It fails if an entry cannot be
// parsed: its generation might be the highest.
func (e *ESP) NextGeneration() (int, error) {
	all, err := e.entries()
	if err != nil {
		return 0, err
	}
	top := 0
	for _, files := range all {
		for _, f := range files {
			if f.err != nil {
				return 0, fmt.Errorf("%s/%s: %w (its generation is unknown)", boot.EntriesDir, f.name, f.err)
			}
			top = max(top, f.entry.Generation)
		}
	}
	return top + 1, nil
}

// Retire removes every entry of s, so the slot cannot boot while its files
// are replaced.
func (e *ESP) Retire(s boot.Slot) error {
	return e.removeEntries(s, "")
}

// removeEntries removes every entry of s except the one named keep, and
// stale temporary files, then syncs the directory.
func (e *ESP) removeEntries(s boot.Slot, keep string) error {
	dir, err := e.entriesDir()
	if err != nil {
		return err
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range des {
		id, ok := boot.ParseEntryName(de.Name())
		if (ok && id.Slot == s && de.Name() != keep) || isTemp(de.Name()) {
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil {
				return fmt.Errorf("retiring slot %s: %w", s, err)
			}
		}
	}
	return fsync.Path(dir)
}

// RemoveFiles removes everything under slate/<s>/ (kernel, initramfs,
// release.json, leftovers); the directory itself stays.
func (e *ESP) RemoveFiles(s boot.Slot) error {
	dir := e.path(s.ESPDir())
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, de := range des {
		if err := os.RemoveAll(filepath.Join(dir, de.Name())); err != nil {
			return fmt.Errorf("removing the files of slot %s: %w", s, err)
		}
	}
	return fsync.Path(dir)
}

// WriteFile writes rel (a slash-separated path under the ESP, such as
// slate/b/vmlinuz) from r, crash-safely: rel keeps its old content, or is
// absent, until r has been read to its end without error and the new
// content is on disk. It returns the bytes written. Parent directories are
// created as needed.
func (e *ESP) WriteFile(rel string, r io.Reader) (int64, error) {
	if _, err := e.entriesDir(); err != nil {
		return 0, err
	}
	if !filepath.IsLocal(filepath.FromSlash(rel)) {
		return 0, fmt.Errorf("ESP path %q is not a relative path inside the ESP", rel)
	}
	dst := e.path(rel)
	dir := filepath.Dir(dst)
	if err := e.mkdirAll(dir); err != nil {
		return 0, err
	}
	n, err := writeAtomic(dir, filepath.Base(dst), r)
	if err != nil {
		return n, fmt.Errorf("writing %s on the ESP: %w", rel, err)
	}
	return n, nil
}

// mkdirAll creates dir and its missing parents, syncing each parent so the
// new directory survives a power cut.
func (e *ESP) mkdirAll(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := e.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return fsync.Path(filepath.Dir(dir))
}

// writeAtomic writes name in dir through a temporary file (fsync.WriteFrom:
// write, fsync, rename, fsync dir). Stale temporary files in dir are
// removed first.
func writeAtomic(dir, name string, r io.Reader) (n int64, err error) {
	if err := removeTemps(dir); err != nil {
		return 0, err
	}
	return fsync.WriteFrom(filepath.Join(dir, name), filepath.Join(dir, tmpPrefix+name+tmpSuffix), r, 0o644)
}

func isTemp(name string) bool {
	return strings.HasPrefix(name, tmpPrefix) && strings.HasSuffix(name, tmpSuffix)
}

// removeTemps removes temporary files an interrupted write left in dir.
func removeTemps(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range des {
		if isTemp(de.Name()) {
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteEntry writes en as loader/entries/<en.FileName()> crash-safely, then
// removes every other entry of en.Slot, so the slot never has two entries
// (bless-boot does nothing when it finds two, systemd/systemd#33504) and
// never none (the old one goes only once the new one is on disk).
func (e *ESP) WriteEntry(en boot.Entry) error {
	if _, err := boot.ParseSlot(string(en.Slot)); err != nil {
		return fmt.Errorf("boot entry: %w", err)
	}
	dir, err := e.entriesDir()
	if err != nil {
		return err
	}
	name := en.FileName()
	if _, err := writeAtomic(dir, name, strings.NewReader(string(en.Marshal()))); err != nil {
		return fmt.Errorf("writing %s/%s: %w", boot.EntriesDir, name, err)
	}
	return e.removeEntries(en.Slot, name)
}

// WriteRelease writes slate/<slot>/release.json.
func (e *ESP) WriteRelease(r boot.Release) error {
	if _, err := boot.ParseSlot(string(r.Slot)); err != nil {
		return fmt.Errorf("release.json: %w", err)
	}
	_, err := e.WriteFile(path.Join(r.Slot.ESPDir(), boot.ReleaseName), bytes.NewReader(r.Marshal()))
	return err
}

// Promote makes s boot next (a rollback): its entry is rewritten with the
// next generation and no boot counter, as s is known good. It refuses a
// slot that is empty, known bad, or still on trial. Whether s is the
// running slot is the caller's check.
func (e *ESP) Promote(s boot.Slot) (*boot.Entry, error) {
	slots, err := e.Read()
	if err != nil {
		return nil, err
	}
	in := slots[s]
	switch in.State {
	case Empty:
		return nil, fmt.Errorf("slot %s holds no image", s)
	case Bad:
		return nil, fmt.Errorf("slot %s is known bad: its image %s ran out of boot tries", s, in.version())
	case Trying:
		return nil, fmt.Errorf("slot %s has not been marked good yet (%s: %d tries left)", s, in.EntryFile, in.TriesLeft)
	}
	// A first entry whose kernel is gone would stop systemd-boot at an
	// error instead of booting anything.
	for _, p := range []string{in.Entry.Linux, in.Entry.Initrd, in.Entry.EFI} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(e.path(strings.TrimPrefix(p, "/"))); err != nil {
			return nil, fmt.Errorf("slot %s cannot boot: %s is %s", s, p, statReason(err))
		}
	}
	gen, err := e.NextGeneration()
	if err != nil {
		return nil, err
	}
	en := *in.Entry
	en.Generation, en.Counting, en.Left, en.Done = gen, false, 0, 0
	if err := e.WriteEntry(en); err != nil {
		return nil, err
	}
	return &en, nil
}

// version names a slot's image for messages.
func (in *Info) version() string {
	switch {
	case in.Release != nil && in.Release.Version != "":
		return in.Release.Version
	case in.Entry != nil && in.Entry.Version != "":
		return in.Entry.Version
	}
	return "(unknown version)"
}

// Bless marks s good by dropping its boot counter from the entry's name,
// as systemd-bless-boot does (slate-b+2-1.conf becomes slate-b.conf). It is
// the fallback for images without systemd-bless-boot. An entry that is
// already good is left alone.
func (e *ESP) Bless(s boot.Slot) error {
	slots, err := e.Read()
	if err != nil {
		return err
	}
	in := slots[s]
	if in.State == Empty {
		return fmt.Errorf("slot %s has no boot entry to bless", s)
	}
	dir, err := e.entriesDir()
	if err != nil {
		return err
	}
	good := *in.Entry
	good.Counting, good.Left, good.Done = false, 0, 0
	if in.Counting {
		// rename(2) keeps the entry's content and is the one step that
		// flips its name; vfat applies it as one directory update.
		if err := os.Rename(filepath.Join(dir, in.EntryFile), filepath.Join(dir, good.FileName())); err != nil {
			return fmt.Errorf("blessing slot %s: %w", s, err)
		}
	}
	return e.removeEntries(s, good.FileName())
}

// Free is the space left on the ESP for an unprivileged writer, in bytes.
func (e *ESP) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(e.Dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", e.Dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// Sync flushes the whole ESP filesystem (syncfs).
func (e *ESP) Sync() error {
	d, err := os.Open(e.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", e.Dir, err)
	}
	return nil
}

// Count spends one try of s, as systemd-boot does before booting a counted
// entry (slate-b+3.conf becomes slate-b+2-1.conf). It is for a boot the
// loader should have counted and did not (systemd-boot has had releases
// that skipped counting, systemd/systemd#40405): without it a bad image
// would be retried forever. It refuses an entry that is not counting or has
// no try left.
func (e *ESP) Count(s boot.Slot) (*boot.Entry, error) {
	slots, err := e.Read()
	if err != nil {
		return nil, err
	}
	in := slots[s]
	if !in.Counting {
		return nil, fmt.Errorf("slot %s is not on trial (%s)", s, orNone(in.EntryFile))
	}
	if in.TriesLeft == 0 {
		return nil, fmt.Errorf("slot %s has no try left (%s)", s, in.EntryFile)
	}
	dir, err := e.entriesDir()
	if err != nil {
		return nil, err
	}
	next := *in.Entry
	next.Left, next.Done = in.TriesLeft-1, in.TriesDone+1
	if err := os.Rename(filepath.Join(dir, in.EntryFile), filepath.Join(dir, next.FileName())); err != nil {
		return nil, fmt.Errorf("counting a try of slot %s: %w", s, err)
	}
	if err := fsync.Path(dir); err != nil {
		return nil, err
	}
	return &next, e.removeEntries(s, next.FileName())
}

func orNone(s string) string {
	if s == "" {
		return "no entry"
	}
	return s
}
