package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/fsync"
)

// Rollback is rollbacks/<generation>-<slot>/rollback.json: a slot
// generation ran out of tries and the node went back to the other slot.
type Rollback struct {
	Time           time.Time `json:"time"` // when it was noticed
	FromSlot       boot.Slot `json:"fromSlot"`
	FromVersion    string    `json:"fromVersion"`
	FromGeneration int       `json:"fromGeneration"`
	ToSlot         boot.Slot `json:"toSlot"`
	ToVersion      string    `json:"toVersion"`
	// Cause is "health check failed: <reason>", "kernel panic: Kernel
	// panic - not syncing: ...", "the health check of <version> did not
	// finish (boot <id>)" or "no boot of <version> reached the health check".
	Cause string `json:"cause"`
	// Boots are the recorded boots of the failed generation, oldest first.
	Boots []string `json:"boots"`
	// Files are the kept files, relative to Dir.
	Files []string `json:"files"`

	// Dir is the rollback's directory; set when read, not stored.
	Dir string `json:"dir,omitempty"`
	// ConsoleTail is the end of console.txt, else of journal.txt; set by
	// LastRollback, not stored.
	ConsoleTail string `json:"consoleTail,omitempty"`
}

// ConsoleTailLines is how much of the kept log LastRollback shows.
const ConsoleTailLines = 20

const rollbacksDir = "rollbacks"

// Journal gives a boot's journal.
type Journal interface {
	BootLog(ctx context.Context, bootID string) ([]byte, error)
}

// Journalctl reads the persistent journal with journalctl.
type Journalctl struct {
	// Path is the journalctl binary; "journalctl" (from PATH) when empty.
	Path string
}

// BootLog implements Journal: `journalctl -b <id> -o short-monotonic
// --no-pager`, its last MaxJournal bytes.
func (j Journalctl) BootLog(ctx context.Context, bootID string) ([]byte, error) {
	id, err := NormalizeBootID(bootID)
	if err != nil {
		return nil, err
	}
	path := j.Path
	if path == "" {
		path = "journalctl"
	}
	out := &tailWriter{max: MaxJournal}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "-b", id, "-o", "short-monotonic", "--no-pager")
	cmd.Stdout, cmd.Stderr = out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("journalctl -b %s: %w: %s", id, err, strings.TrimSpace(stderr.String()))
	}
	return out.bytes(), nil
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	max   int
	buf   []byte
	total int
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.total += len(p)
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailWriter) bytes() []byte { return keepTail(t.buf, t.total, t.max) }

var _ io.Writer = (*tailWriter)(nil)

// DefaultSources are a node's: systemd-pstore's archive and the pstore
// filesystem, and the persistent journal.
func DefaultSources() Sources {
	return Sources{PstoreDirs: DefaultPstoreDirs, Journal: Journalctl{}}
}

// JournalTimeout bounds the reading of one boot's journal by NoteRollbacks.
const JournalTimeout = time.Minute

// Sources are where the logs of failed boots are found.
type Sources struct {
	// PstoreDirs are searched, recursively, for pstore dmesg records;
	// DefaultPstoreDirs when nil.
	PstoreDirs []string
	// Journal gives the journal of a failed boot that has no journal.txt
	// (its health check did not finish); nil: none.
	Journal Journal
}

// NoteRollbacks records a rollback for every slot other than running that
// the ESP shows Bad (counting, no tries left) whose generation has none
// yet, and returns the new ones. It is idempotent: a generation already
// recorded is left alone. A record is made even when some logs cannot be
// gathered; the errors are joined.
func (s *Store) NoteRollbacks(infos map[boot.Slot]*slots.Info, running boot.Slot, src Sources) ([]*Rollback, error) {
	if src.PstoreDirs == nil {
		src.PstoreDirs = DefaultPstoreDirs
	}
	var made []*Rollback
	var errs []error
	for _, sl := range boot.Slots {
		info := infos[sl]
		if sl == running || info == nil || info.State != slots.Bad {
			continue
		}
		gen := info.Generation
		if gen == 0 && info.Entry != nil {
			gen = info.Entry.Generation
		}
		name := fmt.Sprintf("%d-%s", gen, sl)
		if _, err := os.Stat(filepath.Join(s.Dir, rollbacksDir, name)); err == nil {
			continue
		}
		r, err := s.record(name, info, gen, infos[running], running, src)
		if err != nil {
			errs = append(errs, fmt.Errorf("rollback from slot %s (generation %d): %w", sl, gen, err))
		}
		if r != nil {
			made = append(made, r)
		}
	}
	if len(made) > 0 {
		if err := s.pruneRollbacks(); err != nil {
			errs = append(errs, err)
		}
	}
	return made, errors.Join(errs...)
}

func slotVersion(info *slots.Info) string {
	if info == nil {
		return ""
	}
	if info.Release != nil && info.Release.Version != "" {
		return info.Release.Version
	}
	if info.Entry != nil {
		return info.Entry.Version
	}
	return ""
}

// record assembles rollbacks/<name>.partial and renames it to
// rollbacks/<name>. A .partial left by an interrupted run is reused: the
// pstore records already moved into it are kept.
func (s *Store) record(name string, from *slots.Info, gen int, to *slots.Info, running boot.Slot, src Sources) (*Rollback, error) {
	root := filepath.Join(s.Dir, rollbacksDir)
	final := filepath.Join(root, name)
	stage := final + ".partial"
	if err := os.MkdirAll(filepath.Join(stage, pstoreDir), 0o755); err != nil {
		return nil, err
	}
	r := &Rollback{
		Time:           s.now(),
		FromSlot:       from.Slot,
		FromVersion:    slotVersion(from),
		FromGeneration: gen,
		ToSlot:         running,
		ToVersion:      slotVersion(to),
		Boots:          []string{},
	}
	if r.FromSlot == "" {
		r.FromSlot = running.Other()
	}
	var errs []error

	// Console: the kernel logs pstore kept of dumps since the slot was
	// written (all of them when its release does not say when).
	var since time.Time
	if from.Release != nil {
		since = from.Release.Written
	}
	if err := collectPstore(src.PstoreDirs, filepath.Join(stage, pstoreDir), since); err != nil {
		errs = append(errs, err)
	}
	console, err := consoleText(filepath.Join(stage, pstoreDir))
	if err != nil {
		errs = append(errs, err)
	}
	if len(console) > 0 {
		if err := fsync.WriteFile(filepath.Join(stage, consoleFile), console, 0o644); err != nil {
			return nil, err
		}
	}

	// Journal: the failed generation's recorded boots.
	all, err := s.Boots()
	if err != nil {
		errs = append(errs, err)
	}
	var boots []*Boot
	for _, b := range all {
		if b.Slot == r.FromSlot && b.Generation == gen {
			boots = append(boots, b)
			r.Boots = append(r.Boots, b.ID)
		}
	}
	var journal bytes.Buffer
	for _, b := range boots {
		fmt.Fprintf(&journal, "==== boot %s: %s %s, started %s, health %s", b.ID, b.Version, b.Entry, b.Started.Format(time.RFC3339), b.Result)
		if b.Reason != "" {
			fmt.Fprintf(&journal, ": %s", b.Reason)
		}
		journal.WriteString(" ====\n")
		data, err := os.ReadFile(filepath.Join(s.bootDir(b.ID), journalFile))
		if errors.Is(err, fs.ErrNotExist) && src.Journal != nil {
			ctx, cancel := context.WithTimeout(context.Background(), JournalTimeout)
			data, err = src.Journal.BootLog(ctx, b.ID)
			cancel()
		}
		switch {
		case err != nil:
			fmt.Fprintf(&journal, "[slate: no journal: %v]\n", err)
		case data == nil:
			journal.WriteString("[slate: no journal kept]\n")
		default:
			data = capTail(data, MaxJournal)
			journal.Write(data)
			if len(data) > 0 && data[len(data)-1] != '\n' {
				journal.WriteByte('\n')
			}
		}
	}
	if journal.Len() > 0 {
		if err := fsync.WriteFile(filepath.Join(stage, journalFile), journal.Bytes(), 0o644); err != nil {
			return nil, err
		}
	}

	r.Cause = cause(boots, console, r.FromVersion)

	if r.Files, err = listFiles(stage); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := fsync.WriteFile(filepath.Join(stage, rollbackFile), append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := fsync.Path(filepath.Join(stage, pstoreDir)); err != nil {
		return nil, err
	}
	if err := os.Rename(stage, final); err != nil {
		return nil, err
	}
	if err := fsync.Path(root); err != nil {
		return nil, err
	}
	r.Dir = final
	// Logs that could not be gathered are worth saying, not worth losing
	// the record for.
	return r, errors.Join(errs...)
}

// cause says why the generation failed, from the most telling evidence: a
// health check that said bad, a kernel panic, a health check that never
// finished, nothing at all.
func cause(boots []*Boot, console []byte, version string) string {
	for i := len(boots) - 1; i >= 0; i-- {
		if boots[i].Result == ResultBad {
			return "health check failed: " + boots[i].Reason
		}
	}
	if line := panicLine(console); line != "" {
		return "kernel panic: " + line
	}
	for i := len(boots) - 1; i >= 0; i-- {
		if boots[i].Result == ResultChecking {
			return fmt.Sprintf("the health check of %s did not finish (boot %s)", version, boots[i].ID)
		}
	}
	return fmt.Sprintf("no boot of %s reached the health check", version)
}

func listFiles(dir string) ([]string, error) {
	files := []string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	slices.Sort(files)
	return files, err
}

// RollbackDir is the directory that keeps r's files.
func (s *Store) RollbackDir(r *Rollback) string {
	if r.Dir != "" {
		return r.Dir
	}
	return filepath.Join(s.Dir, rollbacksDir, fmt.Sprintf("%d-%s", r.FromGeneration, r.FromSlot))
}

// Rollbacks returns every recorded rollback, oldest first.
func (s *Store) Rollbacks() ([]*Rollback, error) {
	root := filepath.Join(s.Dir, rollbacksDir)
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rs []*Rollback
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".partial") {
			continue
		}
		dir := filepath.Join(root, e.Name())
		data, err := os.ReadFile(filepath.Join(dir, rollbackFile))
		if err != nil {
			continue
		}
		var r Rollback
		if err := json.Unmarshal(data, &r); err != nil {
			continue
		}
		r.Dir = dir
		rs = append(rs, &r)
	}
	slices.SortStableFunc(rs, func(a, b *Rollback) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return a.FromGeneration - b.FromGeneration
	})
	return rs, nil
}

// LastRollback returns the newest rollback with its ConsoleTail, or nil if
// there is none.
func (s *Store) LastRollback() (*Rollback, error) {
	rs, err := s.Rollbacks()
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	r := rs[len(rs)-1]
	for _, f := range []string{consoleFile, journalFile} {
		data, err := os.ReadFile(filepath.Join(r.Dir, f))
		if err == nil && len(bytes.TrimSpace(data)) > 0 {
			r.ConsoleTail = tailLines(data, ConsoleTailLines)
			break
		}
	}
	return r, nil
}

// tailLines is the last n lines of a kept log; for a kernel panic, the n
// lines that end with the last panic line: what led to it, not the stack
// trace after it.
func tailLines(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "Kernel panic - not syncing") && !strings.Contains(lines[i], "---[ end") {
			lines = lines[:i+1]
			break
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// pruneRollbacks keeps the MaxRollbacks newest rollback directories, by
// generation.
func (s *Store) pruneRollbacks() error {
	root := filepath.Join(s.Dir, rollbacksDir)
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	type dir struct {
		name string
		gen  int
	}
	var dirs []dir
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".partial") {
			continue
		}
		g, _, _ := strings.Cut(e.Name(), "-")
		n, _ := strconv.Atoi(g)
		dirs = append(dirs, dir{e.Name(), n})
	}
	if len(dirs) <= MaxRollbacks {
		return nil
	}
	slices.SortFunc(dirs, func(a, b dir) int {
		if a.gen != b.gen {
			return a.gen - b.gen
		}
		return strings.Compare(a.name, b.name)
	})
	var errs []error
	for _, d := range dirs[:len(dirs)-MaxRollbacks] {
		if err := os.RemoveAll(filepath.Join(root, d.name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
