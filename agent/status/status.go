// Package status gathers what `slate status` shows: the running slot, both
// slots as the ESP has them, the last rollback and its kept logs, the
// init's last failure (kept on the state partition by the init, see
// record.InitFailure), the node config in force and this boot's health
// result.
package status

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/node"
	"github.com/slate-os/slate/agent/slots"
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
	Tainted         bool           `json:"tainted"`
	// Health is this boot's assessment; nil before slate-health ran.
	Health *history.Boot `json:"health,omitempty"`
	// Update is where upgrades come from, by the node config; the caller
	// fills it (Gather reads no config).
	Update *Update `json:"update,omitempty"`
	// SystemdBoot is the boot loader on the ESP and the one that booted.
	SystemdBoot *SystemdBoot `json:"systemdBoot,omitempty"`
}

// Update is the node config's update policy.
type Update struct {
	Source string `json:"source,omitempty"`
	// Key is the signature.KeyID of update.publicKey: only artifacts it
	// signed are installed. Empty: unsigned ones are.
	Key string `json:"key,omitempty"`
	// KeyError says why update.publicKey cannot be used: every upgrade is
	// refused then.
	KeyError string `json:"keyError,omitempty"`
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
	// systemd-boot sets LoaderBootCountPath only on a counted boot.
	if sel, _ := n.LoaderVar("LoaderBootCountPath"); sel != "" {
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
	return st, nil
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
		fmt.Fprintln(w)
	}
	if u := st.Update; u != nil {
		fmt.Fprintf(w, "updates: from %s, ", orDash(u.Source))
		switch {
		case u.KeyError != "":
			fmt.Fprintf(w, "none installed: %s\n", u.KeyError) // the error names update.publicKey
		case u.Key != "":
			fmt.Fprintf(w, "signed by key %s only\n", u.Key)
		default:
			fmt.Fprintln(w, "unsigned accepted (no update.publicKey)")
		}
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
