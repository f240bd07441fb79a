// Package health decides whether this boot is good: the boot target is
// reached, every unit the node config requires is active, no unit has
// failed, and every extension it requires is merged. `slate health` runs it from slate-health.service, before
// boot-complete.target; a bad verdict on a counted boot reboots, so the try
// is spent and systemd-boot's counting can roll back.
//
// The unit that runs Check must be ordered After= the Target. A target is
// ordered after every unit it Wants= (systemd's default target dependencies)
// unless that unit is ordered before it, so a check that is only
// WantedBy=multi-user.target would wait for multi-user.target while
// multi-user.target waits for the check, until the timeout.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/internal/jsonduration"
)

// Systemd is the little of systemd's manager API the check needs.
type Systemd interface {
	// UnitState returns a unit's ActiveState ("active", "failed",
	// "inactive", "activating"...) and SubState ("running", "dead"...).
	// A unit that cannot load (not found, masked) is a *LoadError.
	UnitState(ctx context.Context, name string) (active, sub string, err error)
	// FailedUnits lists the units in the failed state.
	FailedUnits(ctx context.Context) ([]string, error)
	// Reboot asks systemd to reboot the machine.
	Reboot(ctx context.Context) error
}

// LoadError is a unit that systemd could not load, so it can never become
// active: a typo in the node config, a unit missing from the image, a
// masked unit.
type LoadError struct {
	Unit      string
	LoadState string // "not-found", "masked", "bad-setting", "error"
}

func (e *LoadError) Error() string { return fmt.Sprintf("unit %s is %s", e.Unit, e.LoadState) }

// Conn is a connection to systemd over its private socket. It needs no
// D-Bus daemon, so the check works on images without one.
type Conn struct {
	c *sddbus.Conn
}

// Connect opens systemd's private socket (/run/systemd/private; root only).
func Connect(ctx context.Context) (*Conn, error) {
	c, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd (/run/systemd/private): %w", err)
	}
	return &Conn{c: c}, nil
}

// Close closes the connection.
func (c *Conn) Close() { c.c.Close() }

// UnitState implements Systemd. ListUnitsByNames answers for units that
// are not loaded too, with their load state, instead of failing.
func (c *Conn) UnitState(ctx context.Context, name string) (string, string, error) {
	st, err := c.c.ListUnitsByNamesContext(ctx, []string{name})
	if err != nil {
		return "", "", fmt.Errorf("state of %s: %w", name, err)
	}
	if len(st) != 1 {
		return "", "", fmt.Errorf("state of %s: systemd returned %d units", name, len(st))
	}
	u := st[0]
	switch u.LoadState {
	case "loaded":
	case "not-found", "masked", "bad-setting", "error":
		return "", "", &LoadError{Unit: name, LoadState: u.LoadState}
	}
	return u.ActiveState, u.SubState, nil
}

// FailedUnits implements Systemd.
func (c *Conn) FailedUnits(ctx context.Context) ([]string, error) {
	st, err := c.c.ListUnitsFilteredContext(ctx, []string{"failed"})
	if err != nil {
		return nil, fmt.Errorf("list failed units: %w", err)
	}
	var names []string
	for _, u := range st {
		names = append(names, u.Name)
	}
	slices.Sort(names)
	return names, nil
}

// Reboot implements Systemd: it starts reboot.target the way `systemctl
// reboot` does, in a mode no later job can cancel.
func (c *Conn) Reboot(ctx context.Context) error {
	if _, err := c.c.StartUnitContext(ctx, "reboot.target", "replace-irreversibly", nil); err != nil {
		return fmt.Errorf("start reboot.target: %w", err)
	}
	return nil
}

// Defaults for Check's zero fields.
const (
	DefaultTarget  = "multi-user.target"
	DefaultTimeout = 5 * time.Minute
	DefaultPoll    = time.Second
)

// Check is what makes a boot good.
type Check struct {
	// RequiredUnits must be active (node config health.requiredUnits).
	RequiredUnits []string
	// Target must be active; DefaultTarget when empty.
	Target string
	// Timeout is how long to wait for Target and RequiredUnits;
	// DefaultTimeout when zero (node config health.timeout).
	Timeout time.Duration
	// Poll is the time between looks; DefaultPoll when zero.
	Poll time.Duration
	// RequiredExtensions must be merged (node config
	// health.requiredExtensions, by extension name), as the report of
	// slate-sysext.service says; Extensions reads that report
	// (extensions.ReadReport of extensions.ReportPath when nil). A missing
	// report is a bad boot: activation did not run. They are judged once
	// nothing else is waiting: slate-sysext-fetch.service, which may still
	// bring one, is done before multi-user.target.
	RequiredExtensions []string
	Extensions         func() (*extensions.Report, error)
}

// Verdict is the check's outcome.
type Verdict struct {
	Good bool `json:"good"`
	// Reason says why, naming units.
	Reason string        `json:"reason"`
	Waited time.Duration `json:"waited"`
	// Failed are the failed units (required ones included); Waiting the
	// units not active yet when the check gave up, as "name (active/sub)".
	Failed  []string `json:"failed,omitempty"`
	Waiting []string `json:"waiting,omitempty"`
}

// MarshalJSON writes Waited as a string ("3.2s", see internal/jsonduration).
func (v Verdict) MarshalJSON() ([]byte, error) {
	type plain Verdict
	return json.Marshal(struct {
		plain
		Waited jsonduration.Duration `json:"waited"`
	}{plain(v), jsonduration.Duration(v.Waited)})
}

// Run looks at systemd every Poll until the boot is good, a unit failed
// (bad at once: waiting will not mend it), the timeout passed or ctx ended.
// D-Bus errors are retried until the timeout; the last one is in the reason.
func (c Check) Run(ctx context.Context, sd Systemd) Verdict {
	target := c.Target
	if target == "" {
		target = DefaultTarget
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	poll := c.Poll
	if poll <= 0 {
		poll = DefaultPoll
	}
	start := time.Now()
	deadline := start.Add(timeout)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		if ctx.Err() != nil {
			return Verdict{Reason: "check interrupted: " + context.Cause(ctx).Error(), Waited: time.Since(start)}
		}
		v, done := c.look(ctx, sd, target)
		v.Waited = time.Since(start)
		if done {
			return v.Verdict
		}
		if ctx.Err() != nil {
			continue // reported at the top
		}
		left := time.Until(deadline)
		if left <= 0 {
			what := strings.Join(v.Waiting, ", ")
			if what == "" {
				what = "the list of failed units" // only FailedUnits kept failing
			}
			v.Reason = fmt.Sprintf("timed out after %s waiting for %s", timeout, what)
			if v.lastErr != "" {
				v.Reason += "; last error: " + v.lastErr
			}
			if v.unmerged != "" {
				v.Reason += "; " + v.unmerged
			}
			return v.Verdict
		}
		timer.Reset(min(poll, left))
	}
}

// lookResult is a verdict, the last D-Bus error seen, if any, and the
// required extensions not merged.
type lookResult struct {
	Verdict
	lastErr  string
	unmerged string
}

// look is one look at systemd. done is true when the verdict is final.
func (c Check) look(ctx context.Context, sd Systemd, target string) (lookResult, bool) {
	var r lookResult
	var errs []string
	failed, err := sd.FailedUnits(ctx)
	if err != nil {
		errs = append(errs, err.Error())
	}
	var missing []string
	for _, u := range append([]string{target}, c.RequiredUnits...) {
		active, sub, err := sd.UnitState(ctx, u)
		var le *LoadError
		switch {
		case errors.As(err, &le):
			missing = append(missing, fmt.Sprintf("%s (%s)", u, le.LoadState))
		case err != nil:
			errs = append(errs, err.Error())
			r.Waiting = append(r.Waiting, u+" (state unknown)")
		case active == "active":
		case active == "failed":
			if !slices.Contains(failed, u) {
				failed = append(failed, u)
			}
		default:
			r.Waiting = append(r.Waiting, fmt.Sprintf("%s (%s/%s)", u, active, sub))
		}
	}
	r.Failed = failed
	r.unmerged = c.extensions()
	if len(missing) > 0 || len(failed) > 0 {
		var parts []string
		if len(missing) > 0 {
			parts = append(parts, "required units cannot load: "+strings.Join(missing, ", "))
		}
		if len(failed) > 0 {
			names := make([]string, len(failed))
			for i, u := range failed {
				names[i] = u
				if u == target || slices.Contains(c.RequiredUnits, u) {
					names[i] += " (required)"
				}
			}
			parts = append(parts, "failed units: "+strings.Join(names, ", "))
		}
		if r.unmerged != "" {
			parts = append(parts, r.unmerged)
		}
		r.Reason = strings.Join(parts, "; ")
		return r, true
	}
	if len(r.Waiting) == 0 && len(errs) == 0 && r.unmerged != "" {
		r.Reason = r.unmerged
		return r, true
	}
	if len(r.Waiting) == 0 && len(errs) == 0 {
		r.Good = true
		r.Reason = fmt.Sprintf("%s active, %d required units active, no failed units", target, len(c.RequiredUnits))
		if n := len(c.RequiredExtensions); n > 0 {
			r.Reason += fmt.Sprintf(", %d required extensions merged", n)
		}
		return r, true
	}
	if len(errs) > 0 {
		r.lastErr = errs[len(errs)-1]
	}
	return r, false
}

// extensions says which required extensions are not merged, and why; ""
// when they all are (or none is required).
func (c Check) extensions() string {
	if len(c.RequiredExtensions) == 0 {
		return ""
	}
	read := c.Extensions
	if read == nil {
		read = func() (*extensions.Report, error) { return extensions.ReadReport(extensions.ReportPath) }
	}
	rep, err := read()
	if err != nil {
		return fmt.Sprintf("required extensions %s: not activated: %v", strings.Join(c.RequiredExtensions, ", "), err)
	}
	if bad := rep.Unmerged(c.RequiredExtensions); len(bad) > 0 {
		return "required extensions not merged: " + strings.Join(bad, "; ")
	}
	return ""
}
