package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/slate-os/slate/internal/fsync"
)

// InitFailure is a fatal error of the init, kept across reboots: first in
// an EFI variable of slate's (written by the failing init, see package
// initramfs/init/failpolicy), then, once a boot gets the state partition
// mounted, as a file under InitFailureDir, which `slate status` reads.
type InitFailure struct {
	// Slot is the slot that failed ("a", "b"; "" when the command line
	// named none).
	Slot string `json:"slot"`
	// Step is the init's step that failed (state, modules, ...).
	Step string `json:"step"`
	// Error is the failure, on one line, cut to a few hundred bytes.
	Error string `json:"error"`
	// Count is how many boots of Slot in a row failed in the init, this
	// one included.
	Count int `json:"count"`
	// Counted is true when the boot was on trial (systemd-boot's counter):
	// its reboot spent a try.
	Counted bool `json:"counted"`
	// Rebooted is false when the init stopped and waited instead of
	// rebooting.
	Rebooted bool `json:"rebooted"`
	// Time is when it failed, by the machine's clock.
	Time time.Time `json:"time"`
}

// Same is true when f and g are the same kept failure.
func (f InitFailure) Same(g InitFailure) bool {
	return f.Slot == g.Slot && f.Step == g.Step && f.Error == g.Error && f.Count == g.Count &&
		f.Counted == g.Counted && f.Rebooted == g.Rebooted && f.Time.Equal(g.Time)
}

// String is the failure on one line: "slot a, step state: ...".
func (f InitFailure) String() string {
	slot := f.Slot
	if slot == "" {
		slot = "?"
	}
	s := fmt.Sprintf("slot %s, step %s: %s", slot, f.Step, f.Error)
	if f.Count > 1 {
		s += fmt.Sprintf(" (%d boots in a row)", f.Count)
	}
	if !f.Rebooted {
		s += " (the init stopped: it did not reboot)"
	}
	return s
}

// Where the init keeps the failures it moved out of the EFI variable: one
// file each, NNNNNN.json (a sequence number: the clock of a machine that
// fails to boot may be wrong), the newest KeepInitFailures of them.
const (
	// InitFailureDir is the directory on the node; the state partition is
	// /var.
	InitFailureDir = "/var/lib/slate/" + InitFailureDirName
	// InitFailureDirName is its name under the agent's /var/lib/slate.
	InitFailureDirName = "init-failures"
	KeepInitFailures   = 10
)

// initFailureFiles lists dir's kept failures, oldest first, by sequence
// number.
func initFailureFiles(dir string) ([]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var seqs []int
	for _, e := range ents {
		num, ok := strings.CutSuffix(e.Name(), ".json")
		if n, err := strconv.Atoi(num); ok && err == nil && n >= 0 && len(num) >= 6 && !e.IsDir() {
			seqs = append(seqs, n)
		}
	}
	sort.Ints(seqs)
	return seqs, nil
}

func initFailureName(seq int) string { return fmt.Sprintf("%06d.json", seq) }

// ReadLastInitFailure returns the newest failure kept in dir, nil when
// there is none.
func ReadLastInitFailure(dir string) (*InitFailure, error) {
	seqs, err := initFailureFiles(dir)
	if errors.Is(err, fs.ErrNotExist) || err == nil && len(seqs) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, initFailureName(seqs[len(seqs)-1]))
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var f InitFailure
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &f, nil
}

// WriteInitFailure keeps f in dir as the newest failure (durably: written,
// fsynced, renamed, directory fsynced) and removes all but the newest keep.
// A failure the same as the newest kept one is not written again (the init
// could not delete the EFI variable after moving it). It returns the
// file's path.
func WriteInitFailure(dir string, f InitFailure, keep int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	seqs, err := initFailureFiles(dir)
	if err != nil {
		return "", err
	}
	next := 1
	if len(seqs) > 0 {
		last := seqs[len(seqs)-1]
		if prev, err := ReadLastInitFailure(dir); err == nil && prev != nil && prev.Same(f) {
			return filepath.Join(dir, initFailureName(last)), nil
		}
		next = last + 1
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, initFailureName(next))
	if err := fsync.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		return "", err
	}
	seqs = append(seqs, next)
	pruned := false
	for len(seqs) > keep && keep > 0 {
		os.Remove(filepath.Join(dir, initFailureName(seqs[0])))
		seqs = seqs[1:]
		pruned = true
	}
	if pruned {
		if err := fsync.Path(dir); err != nil {
			return "", err
		}
	}
	return p, nil
}
