// Package metrics exports the node's state as Prometheus metrics: what
// `slate status --json` shows (agent/status: the running slot, both slots,
// this boot's health, the last rollback, the taint, the last update check,
// the node config, the extensions), with the count of rollbacks the state
// partition records. `slate metrics serve` serves them on the node
// config's metrics.listen and writes them to metrics.textfile for
// node_exporter's textfile collector (serve.go); `slate metrics` prints them.
//
// Every name starts with slate_. Values that describe (a version, a cause,
// a digest) are labels of an _info gauge whose value is 1, as Prometheus
// does for build information; a state the node does not know (no health
// check yet, no rollback ever) is a metric left out, not a zero, except
// where zero is the truth (slate_tainted 0, slate_rollbacks_total 0).
package metrics

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/agent/status"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/internal/clip"
)

// MaxCause bounds the rollback cause in slate_last_rollback_info: a label
// is for recognizing the cause, `slate status` has all of it.
const MaxCause = 200

// HealthPending is slate_health_result's result before slate-health.service
// recorded anything for this boot.
const HealthPending = "pending"

// The metric families, with their help and type.
var defs = map[string]def{
	"slate_info": {gauge, "The running slot, its image's version, generation and kernel, and the systemd-boot that started this boot; always 1."},
	"slate_slot_state": {gauge, "Each slot's state by its boot entry (good, trying: on trial, bad: out of tries, empty) " +
		"and the version it holds; always 1."},
	"slate_slot_tries_left":                 {gauge, "Boots a slot whose entry counts tries (on trial, or bad) has left to be found good."},
	"slate_slot_generation":                 {gauge, "Each slot's generation: the image written last has the highest; empty slots are left out."},
	"slate_boot_counted":                    {gauge, "1 when systemd-boot counted this boot: the running slot is on trial."},
	"slate_health_good":                     {gauge, "1 when this boot's health check found it good."},
	"slate_health_result":                   {gauge, "This boot's health check result: good, bad, checking (running, or it never finished) or pending (not run yet); always 1."},
	"slate_rollbacks_total":                 {counter, fmt.Sprintf("Rollbacks recorded on the state partition since the node was imaged (the newest %d are kept, so it stops at %d).", history.MaxRollbacks, history.MaxRollbacks)},
	"slate_last_rollback_timestamp_seconds": {gauge, "When the last rollback was noticed, in Unix seconds."},
	"slate_last_rollback_info": {gauge, fmt.Sprintf("The last rollback: the slot and version that failed, the slot and version the node went back to, "+
		"and why (cut to %d bytes); always 1.", MaxCause)},
	"slate_tainted": {gauge, "1 when the node is tainted: it booted with access.breakGlass or someone logged in interactively since it was imaged " +
		"(only re-imaging clears it)."},
	"slate_tainted_since_timestamp_seconds":     {gauge, "When the node was first tainted, in Unix seconds."},
	"slate_logins_total":                        {counter, "Interactive logins recorded on the node since it was imaged."},
	"slate_last_login_timestamp_seconds":        {gauge, "When the last interactive login recorded happened, in Unix seconds."},
	"slate_update_last_check_timestamp_seconds": {gauge, "When slate upgrade last ran, in Unix seconds."},
	"slate_update_last_check_success":           {gauge, "1 when the last slate upgrade upgraded the node or found it up to date; 0 when it refused the artifact or failed."},
	"slate_update_last_check_info": {gauge, "The last slate upgrade: its result (upgraded, up-to-date, refused, error) and the version it was offered; " +
		"always 1."},
	"slate_config_applied":    {gauge, "1 when this boot's node config was applied (whole); 0 when it was refused, or there was none (slate_config_info's source=\"none\")."},
	"slate_config_info":       {gauge, "This boot's node config: its source and the SHA-256 of its bytes; always 1."},
	"slate_extensions_merged": {gauge, "System extensions merged this boot."},
	"slate_scrape_error":      {gauge, "1 when part of the node's state could not be read for these metrics (slate metrics serve logs why)."},
}

// Snapshot is the node's state at one scrape.
type Snapshot struct {
	// Status is what `slate status` gathers; nil when nothing is known. Its
	// running slot is empty when only the state partition could be read
	// (see Gather): the slot, health and config metrics are left out then.
	Status *status.Status
	// Rollbacks is the count of rollback records (history.Store.Rollbacks);
	// -1 when they could not be read.
	Rollbacks int
	// Errors say what could not be read; any sets slate_scrape_error.
	Errors []string
}

// Gather makes the snapshot of one scrape from what `slate status` gathered
// (st, or gatherErr when the node or its ESP could not be read) and from
// the agent's records under store.Dir: the rollbacks are counted there, and
// when st is nil the taint, the last rollback and the last update check are
// read from there alone, so a node whose ESP cannot be read still says
// whether it is tainted.
func Gather(st *status.Status, gatherErr error, store *history.Store) *Snapshot {
	s := &Snapshot{Status: st, Rollbacks: -1}
	if gatherErr != nil {
		s.Errors = append(s.Errors, fmt.Sprintf("node status: %v", gatherErr))
	}
	if st == nil {
		st = &status.Status{}
		t, err := record.ReadTaint(filepath.Join(store.Dir, record.TaintFileName))
		if err != nil {
			st.TaintError = err.Error()
		}
		st.Taint, st.Tainted = t, t != nil || err != nil
		st.LastRollback, _ = store.LastRollback() // unreadable: counted below
		st.LastUpdateCheck, st.LastUpdateCheckError = status.LastUpdateCheck(store.Dir)
		s.Status = st
	}
	if rs, err := store.Rollbacks(); err != nil {
		s.Errors = append(s.Errors, fmt.Sprintf("rollbacks: %v", err))
	} else {
		s.Rollbacks = len(rs)
	}
	// A damaged taint record is shown (tainted, with no time); a damaged
	// update check would be invisible.
	if e := st.LastUpdateCheckError; e != "" {
		s.Errors = append(s.Errors, "last update check: "+e)
	}
	return s
}

// Err is the snapshot's errors joined; nil when everything was read.
func (s *Snapshot) Err() error {
	var errs []error
	for _, e := range s.Errors {
		errs = append(errs, errors.New(e))
	}
	return errors.Join(errs...)
}

// Format renders the snapshot in the text exposition format, families
// sorted by name and samples by labels.
func Format(s *Snapshot) []byte {
	f := families{}
	if st := s.Status; st != nil {
		addStatus(f, st)
	}
	if s.Rollbacks >= 0 {
		f.add("slate_rollbacks_total", float64(s.Rollbacks))
	}
	f.add("slate_scrape_error", boolValue(len(s.Errors) > 0))
	return f.write()
}

func addStatus(f families, st *status.Status) {
	if r := st.Running; r.Slot != "" {
		var gen, kernel, loader string
		for _, s := range st.Slots {
			if s.Running {
				gen = strconv.Itoa(s.Generation)
				if s.Release != nil {
					kernel = s.Release.KernelRelease
				}
			}
		}
		if st.SystemdBoot != nil {
			loader = st.SystemdBoot.Booted
		}
		f.add("slate_info", 1, "slot", string(r.Slot), "version", r.Version, "generation", gen, "kernel", kernel, "systemd_boot", loader)
		f.add("slate_boot_counted", boolValue(r.Counted))
		result := HealthPending
		if h := st.Health; h != nil && h.Result != "" {
			result = string(h.Result)
		}
		f.add("slate_health_good", boolValue(result == string(history.ResultGood)))
		f.add("slate_health_result", 1, "result", result)
	}
	for _, s := range st.Slots {
		slot := string(s.Slot)
		f.add("slate_slot_state", 1, "slot", slot, "state", string(s.State), "version", slotVersion(&s.Info))
		if s.State != slots.Empty {
			f.add("slate_slot_generation", float64(s.Generation), "slot", slot)
		}
		if s.Counting {
			f.add("slate_slot_tries_left", float64(s.TriesLeft), "slot", slot)
		}
	}
	if rb := st.LastRollback; rb != nil {
		f.addTime("slate_last_rollback_timestamp_seconds", rb.Time)
		f.add("slate_last_rollback_info", 1, "from_slot", string(rb.FromSlot), "from_version", rb.FromVersion,
			"to_slot", string(rb.ToSlot), "to_version", rb.ToVersion, "cause", clip.String(rb.Cause, MaxCause))
	}

	f.add("slate_tainted", boolValue(st.Tainted))
	if t := st.Taint; t != nil {
		f.addTime("slate_tainted_since_timestamp_seconds", t.Since)
	}
	if st.TaintError == "" { // unreadable: the logins are unknown
		logins := 0
		if t := st.Taint; t != nil {
			logins = max(t.LoginsTotal, len(t.Logins))
			if len(t.Logins) > 0 {
				f.addTime("slate_last_login_timestamp_seconds", t.Logins[len(t.Logins)-1].Time)
			}
		}
		f.add("slate_logins_total", float64(logins))
	}

	if c := st.LastUpdateCheck; c != nil {
		f.addTime("slate_update_last_check_timestamp_seconds", c.Time)
		f.add("slate_update_last_check_success", boolValue(c.Success()))
		f.add("slate_update_last_check_info", 1, "result", c.Result, "version", c.Version)
	}

	if c := st.Config; c != nil {
		f.add("slate_config_applied", boolValue(c.Applied))
		f.add("slate_config_info", 1, "source", c.Source, "sha256", c.SHA256)
	}

	if st.Extensions != nil || st.ExtensionsError != "" {
		merged := 0
		if r := st.Extensions; r != nil {
			for _, e := range r.Entries {
				if e.State == extensions.Merged {
					merged++
				}
			}
		}
		f.add("slate_extensions_merged", float64(merged))
	}
}

// slotVersion is the version a slot holds: its release's, else its entry's.
func slotVersion(s *slots.Info) string {
	if s.Release != nil && s.Release.Version != "" {
		return s.Release.Version
	}
	if s.Entry != nil {
		return s.Entry.Version
	}
	return ""
}
