// Package status gathers what `slate status` shows: the running slot, both
// slots as the ESP has them, the last rollback and its kept logs, the
// init's last failure (kept on the state partition by the init, see
// record.InitFailure), the node config in force, whether the node is
// tainted (a config used access.breakGlass since it was imaged: see
// record.Taint), this boot's health result, its system extensions
// (agent/extensions' report) and the last update check (agent/upgrade's
// LastCheck). `slate metrics` exports the same Status.
package status

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/node"
	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/agent/upgrade"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
)

// Status is `slate status --json`.
type Status struct {
	Running      Running           `json:"running"`
	Slots        []Slot            `json:"slots"`
	LastRollback *history.Rollback `json:"lastRollback,omitempty"`
	// LastInitFailure is the newest failure of the init kept on the state
	// partition (a boot that failed before systemd started).
	LastInitFailure *InitFailure   `json:"lastInitFailure,omitempty"`
	Config          *record.Config `json:"config,omitempty"`
	// Tainted is true when the node booted with a node config that used
	// access.breakGlass, on this boot or any since it was imaged: the init
	// keeps the taint on the state partition (record.TaintFile) until the
	// node is re-imaged. Taint says since when and by which config;
	// TaintError why the kept taint could not be read (the node counts as
	// tainted then).
	Tainted    bool          `json:"tainted"`
	Taint      *record.Taint `json:"taint,omitempty"`
	TaintError string        `json:"taintError,omitempty"`
	// Health is this boot's assessment; nil before slate-health ran.
	Health *history.Boot `json:"health,omitempty"`
	// Update is where upgrades come from, by the node config; the caller
	// fills it (Gather reads no config).
	Update *Update `json:"update,omitempty"`
	// LastUpdateCheck is what the last `slate upgrade` found and did (kept
	// on the state partition); nil when none ran since the node was
	// imaged. LastUpdateCheckError says why the record could not be read.
	LastUpdateCheck      *upgrade.LastCheck `json:"lastUpdateCheck,omitempty"`
	LastUpdateCheckError string             `json:"lastUpdateCheckError,omitempty"`
	// SystemdBoot is the boot loader on the ESP and the one that booted.
	SystemdBoot *SystemdBoot `json:"systemdBoot,omitempty"`
	// SecureBoot is the firmware's Secure Boot state and the running
	// unified kernel image's signer.
	SecureBoot *SecureBoot `json:"secureBoot,omitempty"`
	// Extensions is what slate-sysext.service did this boot: each node
	// config extensions entry merged (name, version, digest) or refused or
	// missing (why). ExtensionsError says why there is no report when one
	// is expected. The caller fills both (Gather reads no config).
	Extensions      *extensions.Report `json:"extensions,omitempty"`
	ExtensionsError string             `json:"extensionsError,omitempty"`
}

// Update is the update policy in force (see agent/upgrade, Policy): whom
// `slate upgrade` trusts, and from where.
type Update struct {
	// Source is the node config's update.source.
	Source string `json:"source,omitempty"`
	// Policy is PolicySigned, PolicyUnsigned or PolicyRefused.
	Policy string `json:"policy"`
	// Keys are the trusted keys: the image's, then those the node config adds.
	Keys []UpdateKey `json:"keys,omitempty"`
	// AllowUnsigned names what allows unsigned artifacts: "image" (its
	// spec's update.allowUnsigned), "node config" (update.allowUnsigned).
	AllowUnsigned []string `json:"allowUnsigned,omitempty"`
	// Error says why every upgrade is refused (PolicyRefused).
	Error string `json:"error,omitempty"`
	// NotBefore is the running image's creation time (its image.json): an
	// artifact created before it is a downgrade, refused unless asked for.
	NotBefore time.Time `json:"notBefore,omitzero"`
}

// Update policies.
const (
	// PolicySigned installs only artifacts signed by one of the keys.
	PolicySigned = "signed"
	// PolicyUnsigned installs unsigned artifacts too (development).
	PolicyUnsigned = "unsigned-allowed"
	// PolicyRefused refuses every upgrade: no key is trusted and unsigned
	// artifacts are not allowed, or the policy cannot be read.
	PolicyRefused = "refused"
)

// UpdateKey is a trusted key.
type UpdateKey struct {
	// ID is sha256:<16 hex> of the key's PKIX form.
	ID string `json:"id"`
	// From is "image" or "node config"; Where the key's file in the image
	// or the config's field.
	From  string `json:"from"`
	Where string `json:"where"`
}

// InitFailure is a boot that failed in the init.
type InitFailure struct {
	record.InitFailure
	// BeforeThisBoot is true when the boot(s) just before this one failed
	// so (the init moved the failure to the state partition on this boot).
	BeforeThisBoot bool `json:"beforeThisBoot"`
}

// Running is the booted slot.
type Running struct {
	Slot    boot.Slot `json:"slot"`
	Version string    `json:"version"`
	Entry   string    `json:"entry,omitempty"`
	// Counted is true when systemd-boot counted this boot: the slot is on trial.
	Counted bool   `json:"counted"`
	BootID  string `json:"bootId,omitempty"`
}

// Slot is one slot.
type Slot struct {
	slots.Info
	Running bool `json:"running"`
}

// Gather reads the node's state. Parts that cannot be read are left out
// rather than failing the whole status: status is what one runs when
// something is wrong.
func Gather(n *node.Node, esp *slots.ESP, store *history.Store) (*Status, error) {
	info, err := esp.Read()
	if err != nil {
		return nil, fmt.Errorf("ESP: %w", err)
	}
	st := &Status{Running: Running{Slot: n.Running, Version: n.Record.Version}, Config: n.Record.Config}
	if n.Record.Config != nil {
		st.Tainted = n.Record.Config.Tainted
	}
	st.Taint, st.TaintError = nodeTaint(filepath.Join(store.Dir, record.TaintFileName), n.Record.Taint)
	if st.Taint != nil || st.TaintError != "" {
		st.Tainted = true
	}
	// systemd-boot sets LoaderBootCountPath only on a counted boot.
	if sel, _ := n.CountPath(); sel != "" {
		st.Running.Counted = true
		st.Running.Entry = sel[strings.LastIndexAny(sel, `\/`)+1:]
	} else if in := info[n.Running]; in != nil {
		st.Running.Entry = in.EntryFile
	}
	for _, s := range boot.Slots {
		st.Slots = append(st.Slots, Slot{Info: *info[s], Running: s == n.Running})
	}
	loaderInfo, _ := n.LoaderVar("LoaderInfo")
	st.SystemdBoot = systemdBoot(esp, loaderInfo)
	st.SecureBoot = secureBootStatus(n.EFIVars(), esp, info[n.Running])
	if id, err := node.BootID(); err == nil {
		st.Running.BootID = id
		if b, err := store.Boot(id); err == nil {
			st.Health = b
		}
	}
	if rb, err := store.LastRollback(); err == nil && rb != nil {
		st.LastRollback = rb
	}
	st.LastInitFailure = lastInitFailure(filepath.Join(store.Dir, record.InitFailureDirName), n.Record.PreviousFailure)
	st.LastUpdateCheck, st.LastUpdateCheckError = LastUpdateCheck(store.Dir)
	return st, nil
}

// LastUpdateCheck reads the last update check kept in the agent's
// directory dir: nil when there is none, and why when it is unreadable.
func LastUpdateCheck(dir string) (*upgrade.LastCheck, string) {
	c, err := upgrade.ReadLastCheck(filepath.Join(dir, upgrade.LastCheckFileName))
	if err != nil {
		return nil, err.Error()
	}
	return c, ""
}

// nodeTaint is the taint kept at path; the boot record's (fromRecord, as
// the init found it) stands in when the file is gone. An unreadable file
// is an error: the node counts as tainted.
func nodeTaint(path string, fromRecord *record.Taint) (*record.Taint, string) {
	t, err := record.ReadTaint(path)
	if err != nil {
		return fromRecord, err.Error()
	}
	if t == nil {
		t = fromRecord
	}
	return t, ""
}

// lastInitFailure is the newest failure kept in dir; prev is the one this
// boot's init moved there (the boot record's), which stands in when the
// init could not write it.
func lastInitFailure(dir string, prev *record.InitFailure) *InitFailure {
	f, _ := record.ReadLastInitFailure(dir) // unreadable: left out, as the rest
	if f == nil && prev != nil {
		f = prev
	}
	if f == nil {
		return nil
	}
	return &InitFailure{InitFailure: *f, BeforeThisBoot: prev != nil && prev.Same(*f)}
}

// WriteText prints the status for people.
func (st *Status) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "running: slot %s (%s)", st.Running.Slot, orDash(st.Running.Version))
	for _, s := range st.Slots {
		if s.Running && s.State == slots.Trying {
			fmt.Fprintf(w, ", on trial (%d tries left)", s.TriesLeft)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tSTATE\tVERSION\tGENERATION\tTRIES LEFT\tROOT HASH\tARTIFACT\tSIGNED BY")
	for _, s := range st.Slots {
		mark := " "
		if s.Running {
			mark = "*"
		}
		version, hash, art, signer := "-", "-", "-", "-"
		if r := s.Release; r != nil {
			version, hash = r.Version, short(r.RootHash, 16)
			art = "built in"
			if r.Artifact != "" {
				art = short(r.Artifact, 19)
			}
			if r.SignedBy != "" {
				signer = r.SignedBy
			}
		} else if s.Entry != nil && s.Entry.Version != "" {
			version = s.Entry.Version
		}
		gen, tries := "-", "-"
		if s.State != slots.Empty {
			gen = fmt.Sprint(s.Generation)
		}
		if s.Counting {
			tries = fmt.Sprint(s.TriesLeft)
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", mark, s.Slot, s.State, version, gen, tries, hash, art, signer)
		for _, p := range s.Problems {
			fmt.Fprintf(tw, " \t!\t%s\n", p)
		}
	}
	tw.Flush()
	if sb := st.SystemdBoot; sb != nil {
		sb.writeText(w)
	}
	if sb := st.SecureBoot; sb != nil {
		sb.writeText(w)
	}
	if h := st.Health; h != nil {
		fmt.Fprintf(w, "health of this boot: %s", h.Result)
		if h.Reason != "" {
			fmt.Fprintf(w, ": %s", h.Reason)
		}
		fmt.Fprintln(w)
	}
	if c := st.Config; c != nil {
		fmt.Fprintf(w, "config: %s", c.Source)
		if c.SHA256 != "" {
			fmt.Fprintf(w, " sha256:%s", short(c.SHA256, 12))
		}
		switch {
		case c.Applied:
			fmt.Fprint(w, ", applied")
		case c.Error != "":
			fmt.Fprintf(w, ", NOT applied: %s", c.Error)
		}
		if c.Tainted {
			fmt.Fprint(w, ", tainted (breakGlass)")
		}
		if c.AccessExpired != nil {
			fmt.Fprintf(w, ", without its access: break-glass expired at %s", c.AccessExpired.UTC().Format("2006-01-02 15:04:05Z"))
		}
		fmt.Fprintln(w)
	}
	switch {
	case st.Taint != nil:
		why := "" // a login taints a node as well as a breakGlass config
		if st.Taint.ConfigSHA256 != "" {
			why = " (access.breakGlass)"
		}
		fmt.Fprintf(w, "TAINTED %s%s: until the node is re-imaged\n", st.Taint, why)
	case st.TaintError != "":
		fmt.Fprintf(w, "TAINTED (access.breakGlass): the taint record is unreadable: %s\n", st.TaintError)
	case st.Tainted:
		fmt.Fprintln(w, "TAINTED by this boot's config (access.breakGlass)")
	}
	if st.Taint != nil && st.TaintError != "" {
		fmt.Fprintf(w, "  the taint record is unreadable: %s\n", st.TaintError)
	}
	if u := st.Update; u != nil {
		u.writeText(w)
	}
	if c := st.LastUpdateCheck; c != nil {
		fmt.Fprintf(w, "last update check: %s %s", c.Time.UTC().Format("2006-01-02 15:04:05Z"), c.Result)
		if c.Version != "" {
			fmt.Fprintf(w, ", offered %s", c.Version)
		}
		if c.Ref != "" {
			fmt.Fprintf(w, " (%s)", c.Ref)
		}
		if c.Error != "" {
			fmt.Fprintf(w, ": %s", c.Error)
		}
		fmt.Fprintln(w)
	}
	if st.LastUpdateCheckError != "" {
		fmt.Fprintf(w, "last update check: unreadable: %s\n", st.LastUpdateCheckError)
	}
	if r := st.Extensions; r != nil && (len(r.Entries) > 0 || len(r.Notes) > 0 || r.Error != "") {
		r.WriteText(w)
	}
	if st.ExtensionsError != "" {
		fmt.Fprintf(w, "extensions: NOT activated: %s\n", st.ExtensionsError)
	}
	if f := st.LastInitFailure; f != nil {
		fmt.Fprintf(w, "last init failure: %s %s\n", f.Time.Format("2006-01-02 15:04:05Z"), f.InitFailure)
		switch {
		case f.BeforeThisBoot && f.Count > 1:
			fmt.Fprintf(w, "  the %d boots before this one failed so\n", f.Count)
		case f.BeforeThisBoot:
			fmt.Fprintln(w, "  the boot before this one failed so")
		}
	}
	if rb := st.LastRollback; rb != nil {
		fmt.Fprintf(w, "last rollback: %s slot %s (%s, generation %d) -> slot %s (%s)\n  cause: %s\n",
			rb.Time.Format("2006-01-02 15:04:05Z"), rb.FromSlot, rb.FromVersion, rb.FromGeneration, rb.ToSlot, rb.ToVersion, rb.Cause)
		// pstore keeps a panic as many small records: count them, list the rest.
		records := 0
		for _, f := range rb.Files {
			if strings.HasPrefix(f, "pstore/") {
				records++
				continue
			}
			fmt.Fprintf(w, "  kept: %s\n", filepath.Join(rb.Dir, f))
		}
		if records > 0 {
			fmt.Fprintf(w, "  kept: %s (%d pstore records)\n", filepath.Join(rb.Dir, "pstore"), records)
		}
		if rb.ConsoleTail != "" {
			fmt.Fprintln(w, "  last lines of the failed boot:")
			for _, l := range strings.Split(strings.TrimRight(rb.ConsoleTail, "\n"), "\n") {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
	return nil
}

func (u *Update) writeText(w io.Writer) {
	fmt.Fprintf(w, "updates: from %s: ", orDash(u.Source))
	switch u.Policy {
	case PolicyRefused:
		fmt.Fprintf(w, "every upgrade REFUSED: %s\n", u.Error)
	case PolicyUnsigned:
		fmt.Fprintf(w, "UNSIGNED artifacts accepted (update.allowUnsigned in the %s)\n", strings.Join(u.AllowUnsigned, " and the "))
	default:
		fmt.Fprintln(w, "only artifacts signed by a trusted key")
	}
	for _, k := range u.Keys {
		fmt.Fprintf(w, "  trusted key %s  %s (%s)\n", k.ID, k.From, k.Where)
	}
	if !u.NotBefore.IsZero() {
		fmt.Fprintf(w, "  no downgrade: artifacts created before %s (the running image) are refused\n", u.NotBefore.UTC().Format("2006-01-02 15:04:05Z"))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
