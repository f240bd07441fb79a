package extensions

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/fsync"
	"github.com/slate-os/slate/internal/jsonduration"
	"github.com/slate-os/slate/sysext"
)

// ReportPath is where activation writes its Report: on /run, so it
// describes this boot only.
const ReportPath = boot.RunDir + "/extensions.json"

// State is what became of one node-config entry.
type State string

// States of an entry.
const (
	// Merged: verified, mounted at /run/extensions/NAME, and merged into
	// /usr by systemd-sysext.
	Merged State = "merged"
	// Refused: candidates exist, but none could be used (wrong release,
	// bad signature, a changed image, systemd-sysext did not merge it);
	// Reason says why for each.
	Refused State = "refused"
	// Missing: no store holds an extension by that name or reference.
	Missing State = "missing"
)

// Where an extension came from.
const (
	// FromImage is the image's store (ImageDir): trusted as the root is.
	FromImage = "image"
	// FromNode is the node's store (NodeDir): signature checked at every boot.
	FromNode = "node"
)

// Report is /run/slate/extensions.json: what activation did this boot.
//
//	{
//	  "time": "2026-05-01T10:00:00Z",   // when activation ran (UTC)
//	  "took": "1.25s",                  // how long it took
//	  "host": {"id": "debian", "versionID": "12"},  // the running os-release
//	  "architecture": "x86-64",
//	  "systemdSysext": "/usr/bin/systemd-sysext",    // "" when the image has none
//	  "notes": ["/var/lib/extensions holds ...: hidden ..."],
//	  "entries": [{
//	    "entry": "tools",               // the node config's extensions entry
//	    "name": "tools", "version": "1.0", "digest": "sha256:...",
//	    "release": "ID=debian VERSION_ID=12",  // its extension-release
//	    "from": "image",                // image | node
//	    "signedBy": "sha256:0123456789abcdef",  // node store: the key that signed it
//	    "state": "merged",              // merged | refused | missing
//	    "reason": "...",                // refused, missing: why
//	    "path": "/run/extensions/tools",
//	    "device": "/dev/mapper/slate-ext-tools"
//	  }],
//	  "error": "..."                    // activation could not run at all
//	}
type Report struct {
	Time time.Time `json:"time"`
	// Took is a string in JSON ("1.25s", see internal/jsonduration).
	Took jsonduration.Duration `json:"took"`
	// Host is the running OS's release (/etc/os-release, or
	// /usr/lib/os-release), the one every extension is matched against.
	Host         sysext.Release `json:"host"`
	Architecture string         `json:"architecture,omitempty"`
	// SystemdSysext is the systemd-sysext that merged; empty when the
	// image has none (nothing is merged then).
	SystemdSysext string `json:"systemdSysext,omitempty"`
	// Notes are what activation did besides the entries (hiding
	// /var/lib/extensions, tearing down extensions no longer named,
	// systemd-sysext's output when it failed).
	Notes   []string `json:"notes,omitempty"`
	Entries []Entry  `json:"entries"`
	// Error says why activation could not run at all (the node config or
	// the os-release unreadable); the entries are then refused or absent.
	Error string `json:"error,omitempty"`
}

// Entry is one node-config extensions entry and what became of it.
type Entry struct {
	// Entry is the node config's entry: a name or a registry reference.
	Entry string `json:"entry"`
	// Name, Version, Digest (the artifact's manifest digest) and Release
	// describe the extension taken, or, when refused, the newest candidate.
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	Digest  string `json:"digest,omitempty"`
	Release string `json:"release,omitempty"`
	// From is FromImage or FromNode.
	From string `json:"from,omitempty"`
	// SignedBy is the key that signed a node-store extension (its ID).
	SignedBy string `json:"signedBy,omitempty"`
	State    State  `json:"state"`
	// Reason says why an entry is refused or missing; for a merged one,
	// why the candidates before it were passed over, if any were.
	Reason string `json:"reason,omitempty"`
	// Path is the mount point systemd-sysext merged; Device the dm-verity
	// device under it.
	Path   string `json:"path,omitempty"`
	Device string `json:"device,omitempty"`
	// RootHash is the verity root hash the device checks; a later
	// activation keeps a device whose extension did not change.
	RootHash string `json:"rootHash,omitempty"`
}

// ErrNoReport is returned, wrapped, by ReadReport when there is no report:
// activation did not run this boot.
var ErrNoReport = errors.New("extensions were not activated this boot")

// ReadReport reads the report at path. A missing file is ErrNoReport,
// naming the path and the unit that writes it.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s (slate-sysext.service did not run, or is not in this image)", ErrNoReport, path)
	}
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// FetchResultsPath is where slate sysext fetch keeps the results of its
// last run, on /run: activation explains an entry no store has by them
// (refused unsigned, no build for this release) instead of "not fetched".
const FetchResultsPath = boot.RunDir + "/extensions-fetch.json"

// WriteFetchResults writes the results of a fetch to path atomically.
func WriteFetchResults(path string, rs []FetchResult) error {
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return fsync.WriteFile(path, append(b, '\n'), 0o644)
}

// readFetchResults reads the last fetch's results by entry; none (no
// fetch ran this boot, or an unreadable file) is an empty map.
func readFetchResults(path string) map[string]FetchResult {
	out := map[string]FetchResult{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	var rs []FetchResult
	if json.Unmarshal(b, &rs) == nil {
		for _, r := range rs {
			out[r.Entry] = r
		}
	}
	return out
}

// Write writes the report to path atomically.
func (r *Report) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return fsync.WriteFile(path, append(b, '\n'), 0o644)
}

// Find is the entry that took the extension named name, or else the first
// entry that names it (by its entry or its extension's name); nil when
// none does.
func (r *Report) Find(name string) *Entry {
	var first *Entry
	for i := range r.Entries {
		e := &r.Entries[i]
		if e.Name != name && e.Entry != name {
			continue
		}
		if e.State == Merged {
			return e
		}
		if first == nil {
			first = e
		}
	}
	return first
}

// Unmerged says, for each of names (health.requiredExtensions) that r does
// not show merged, why: one string per name, in names' order.
func (r *Report) Unmerged(names []string) []string {
	var out []string
	for _, n := range names {
		e := r.Find(n)
		switch {
		case e == nil && r.Error != "":
			out = append(out, fmt.Sprintf("%s (activation failed: %s)", n, r.Error))
		case e == nil:
			out = append(out, fmt.Sprintf("%s (not in the node config's extensions)", n))
		case e.State != Merged:
			out = append(out, fmt.Sprintf("%s (%s: %s)", n, e.State, e.Reason))
		}
	}
	return out
}

// Line is the entry's console line, without the "slate-sysext: " prefix:
// "tools 1.0 (sha256:abcdef012345…) merged", "gpu refused: it is for ...".
func (e Entry) Line() string {
	var b strings.Builder
	b.WriteString(e.Entry)
	if e.Name != "" && e.Name != e.Entry {
		fmt.Fprintf(&b, " (%s)", e.Name)
	}
	if e.State == Merged {
		fmt.Fprintf(&b, " %s (%s) merged", e.Version, digestShort(e.Digest))
		if e.From == FromNode {
			b.WriteString(" from the node's store")
			if e.SignedBy != "" {
				fmt.Fprintf(&b, ", signed by %s", e.SignedBy)
			}
		}
		if e.Reason != "" {
			fmt.Fprintf(&b, " (passed over: %s)", e.Reason)
		}
		return b.String()
	}
	fmt.Fprintf(&b, " %s: %s", e.State, e.Reason)
	return b.String()
}

// WriteText prints the report for `slate status`.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "extensions (for %s, activated %s in %s):\n", r.Host, r.Time.UTC().Format("2006-01-02 15:04:05Z"), r.Took)
	if r.Error != "" {
		fmt.Fprintf(w, "  activation FAILED: %s\n", r.Error)
	}
	if len(r.Entries) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ENTRY\tNAME\tVERSION\tDIGEST\tSTATE")
		for _, e := range r.Entries {
			state := string(e.State)
			if e.State == Merged {
				state += map[string]string{FromImage: " from the image", FromNode: " from the node's store"}[e.From]
				if e.SignedBy != "" {
					state += ", signed by " + e.SignedBy
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.Entry, dashIfEmpty(e.Name), dashIfEmpty(e.Version), dashIfEmpty(digestShort(e.Digest)), state)
		}
		tw.Flush()
		// Reasons after the table: they are long, and would break its columns.
		for _, e := range r.Entries {
			if e.Reason != "" && e.State != Merged {
				fmt.Fprintf(w, "  ! %s %s: %s\n", e.Entry, e.State, e.Reason)
			}
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// Merged lists the names of the merged extensions, sorted.
func (r *Report) Merged() []string {
	var out []string
	for _, e := range r.Entries {
		if e.State == Merged {
			out = append(out, e.Name)
		}
	}
	slices.Sort(out)
	return out
}

// digestShort is sha256: and 12 hex digits.
func digestShort(d string) string {
	if len(d) <= len("sha256:")+12 {
		return d
	}
	return d[:len("sha256:")+12] + "…"
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
