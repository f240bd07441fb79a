// Package history keeps what happened on past boots on the state partition
// (/var/lib/slate), where a rolled-back node can still read it: one record
// per boot (slot, generation, health result) with the journal of a bad one,
// and one directory per rollback with its cause and the console and
// journal of the boots that failed.
//
// Layout under Store.Dir:
//
//	boots/<boot id>/boot.json      Boot; the newest MaxBoots are kept
//	boots/<boot id>/journal.txt    journal of a boot that was found bad
//	rollbacks/<gen>-<slot>/        one per slot generation that ran out of tries
//	    rollback.json              Rollback
//	    console.txt                kernel log the failed boots left in pstore
//	    journal.txt                journals of the failed boots
//	    pstore/                    the pstore records themselves, moved here
//
// Every file is written to a temporary name, fsynced and renamed, and a
// rollback directory is assembled under <name>.partial and renamed whole,
// so a power cut leaves either the old state or the new one.
package history

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/fsync"
)

// DefaultDir is the store on a node: the state partition is /var.
const DefaultDir = "/var/lib/slate"

// How much is kept.
const (
	MaxBoots     = 20
	MaxRollbacks = 10
	// MaxJournal caps a kept journal; the end of a failed boot's log is
	// the part that explains it, so the start is cut.
	MaxJournal = 4 << 20
)

// Store is the history kept under Dir.
type Store struct {
	Dir string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Open returns the store under dir (DefaultDir on a node). Directories are
// created on the first write.
func Open(dir string) *Store { return &Store{Dir: dir} }

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Result is a boot's health outcome.
type Result string

const (
	// ResultChecking: the health check started and has not finished. A boot
	// that stays checking ended (crash, hang, power cut) during the check.
	ResultChecking Result = "checking"
	ResultGood     Result = "good"
	ResultBad      Result = "bad"
)

// Boot is one boot's record, boots/<id>/boot.json.
type Boot struct {
	// ID is the kernel's boot id as journald writes it (32 hex digits).
	ID         string    `json:"id"`
	Slot       boot.Slot `json:"slot"`
	Version    string    `json:"version"`
	Generation int       `json:"generation"`
	// Entry is the boot entry's file name as systemd-boot left it for
	// this boot (slate-b+2-1.conf: the boot spent a try).
	Entry     string    `json:"entry"`
	Counting  bool      `json:"counting"`
	TriesLeft int       `json:"triesLeft"`
	Started   time.Time `json:"started"`
	Result    Result    `json:"result"`
	Reason    string    `json:"reason,omitempty"`
	Finished  time.Time `json:"finished,omitzero"`
}

const (
	bootsDir     = "boots"
	bootFile     = "boot.json"
	journalFile  = "journal.txt"
	consoleFile  = "console.txt"
	rollbackFile = "rollback.json"
	pstoreDir    = "pstore"
)

var bootIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// NormalizeBootID accepts a boot id with or without dashes, in either case,
// and returns journald's form: 32 lowercase hex digits.
func NormalizeBootID(id string) (string, error) {
	n := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(id), "-", ""))
	if !bootIDRe.MatchString(n) {
		return "", fmt.Errorf("boot id %q is not 32 hex digits", id)
	}
	return n, nil
}

func (s *Store) bootDir(id string) string { return filepath.Join(s.Dir, bootsDir, id) }

// BeginBoot records that the health check of boot b started: b is stored
// with result ResultChecking. A record of the same boot (the check run again) is
// replaced. Older boots beyond MaxBoots are removed.
func (s *Store) BeginBoot(b Boot) error {
	id, err := NormalizeBootID(b.ID)
	if err != nil {
		return err
	}
	b.ID = id
	b.Result = ResultChecking
	b.Reason = ""
	b.Finished = time.Time{}
	if b.Started.IsZero() {
		b.Started = s.now()
	}
	if err := s.writeBoot(&b); err != nil {
		return err
	}
	return s.pruneBoots(id)
}

// FinishBoot records the health check's result (ResultGood or ResultBad) and reason.
func (s *Store) FinishBoot(id string, result Result, reason string) error {
	if result != ResultGood && result != ResultBad {
		return fmt.Errorf("boot result %q: want %q or %q", result, ResultGood, ResultBad)
	}
	b, err := s.Boot(id)
	if err != nil {
		return err
	}
	b.Result, b.Reason, b.Finished = result, reason, s.now()
	return s.writeBoot(b)
}

// SaveJournal keeps a boot's journal (the output of Journal.BootLog) next
// to its record; only the last MaxJournal bytes.
func (s *Store) SaveJournal(id string, journal []byte) error {
	id, err := NormalizeBootID(id)
	if err != nil {
		return err
	}
	dir := s.bootDir(id)
	if _, err := os.Stat(filepath.Join(dir, bootFile)); err != nil {
		return fmt.Errorf("journal of boot %s: no boot record: %w", id, err)
	}
	return fsync.WriteFile(filepath.Join(dir, journalFile), capTail(journal, MaxJournal), 0o644)
}

// Boot reads a boot's record.
func (s *Store) Boot(id string) (*Boot, error) {
	id, err := NormalizeBootID(id)
	if err != nil {
		return nil, err
	}
	return readBoot(filepath.Join(s.bootDir(id), bootFile))
}

// Boots returns every boot record, oldest first. Unreadable records are
// skipped: history must not stop a health check.
func (s *Store) Boots() ([]*Boot, error) {
	ents, err := os.ReadDir(filepath.Join(s.Dir, bootsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var boots []*Boot
	for _, e := range ents {
		if !e.IsDir() || !bootIDRe.MatchString(e.Name()) {
			continue
		}
		b, err := readBoot(filepath.Join(s.Dir, bootsDir, e.Name(), bootFile))
		if err != nil {
			continue
		}
		boots = append(boots, b)
	}
	sortBoots(boots)
	return boots, nil
}

func sortBoots(boots []*Boot) {
	slices.SortStableFunc(boots, func(a, b *Boot) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

func readBoot(path string) (*Boot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var b Boot
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &b, nil
}

func (s *Store) writeBoot(b *Boot) error {
	dir := s.bootDir(b.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return fsync.WriteFile(filepath.Join(dir, bootFile), append(data, '\n'), 0o644)
}

// pruneBoots removes the oldest boot directories beyond MaxBoots, never
// keep's. A directory without a readable record counts as oldest.
func (s *Store) pruneBoots(keep string) error {
	root := filepath.Join(s.Dir, bootsDir)
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	type dir struct {
		name    string
		started time.Time
	}
	var dirs []dir
	for _, e := range ents {
		if !e.IsDir() || e.Name() == keep {
			continue
		}
		d := dir{name: e.Name()}
		if b, err := readBoot(filepath.Join(root, e.Name(), bootFile)); err == nil {
			d.started = b.Started
		}
		dirs = append(dirs, d)
	}
	if len(dirs) < MaxBoots {
		return nil
	}
	slices.SortFunc(dirs, func(a, b dir) int {
		if c := a.started.Compare(b.started); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	var errs []error
	for _, d := range dirs[:len(dirs)-(MaxBoots-1)] {
		if err := os.RemoveAll(filepath.Join(root, d.name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// capTail returns the last max bytes of b, from a line start, after a note
// of what was cut.
func capTail(b []byte, max int) []byte { return keepTail(b, len(b), max) }

// keepTail is capTail for b, the end of a log of total bytes.
func keepTail(b []byte, total, max int) []byte {
	if total <= max && len(b) == total {
		return b
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	if i := bytes.IndexByte(b[:min(len(b), 4096)], '\n'); i >= 0 {
		b = b[i+1:]
	}
	note := fmt.Sprintf("[slate: the first %d bytes of this log were cut]\n", total-len(b))
	return append([]byte(note), b...)
}
