package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSystemd serves unit states that change over the looks: states[unit]
// is a list of "active/sub" per look, the last one repeating.
type fakeSystemd struct {
	mu       sync.Mutex
	looks    map[string]int
	states   map[string][]string
	failed   []string
	missing  map[string]string // unit -> load state
	listErr  error
	rebooted bool
}

func newFake(states map[string][]string) *fakeSystemd {
	return &fakeSystemd{looks: map[string]int{}, states: states, missing: map[string]string{}}
}

func (f *fakeSystemd) UnitState(ctx context.Context, name string) (string, string, error) {
	if err := ctx.Err(); err != nil {
		return "", "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if ls, ok := f.missing[name]; ok {
		return "", "", &LoadError{Unit: name, LoadState: ls}
	}
	seq := f.states[name]
	if len(seq) == 0 {
		return "inactive", "dead", nil
	}
	i := min(f.looks[name], len(seq)-1)
	f.looks[name]++
	active, sub, _ := strings.Cut(seq[i], "/")
	return active, sub, nil
}

func (f *fakeSystemd) FailedUnits(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	return slices.Clone(f.failed), nil
}

func (f *fakeSystemd) Reboot(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rebooted = true
	return nil
}

func (f *fakeSystemd) lookCount(unit string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.looks[unit]
}

const poll = 5 * time.Millisecond

func TestGoodAfterWaiting(t *testing.T) {
	sd := newFake(map[string][]string{
		"multi-user.target": {"inactive/dead", "activating/start", "active/active"},
		"web.service":       {"activating/start", "activating/start", "activating/start", "active/running"},
	})
	v := Check{RequiredUnits: []string{"web.service"}, Timeout: 2 * time.Second, Poll: poll}.Run(context.Background(), sd)
	if !v.Good {
		t.Fatalf("verdict %+v, want good", v)
	}
	if got := sd.lookCount("web.service"); got != 4 {
		t.Errorf("web.service looked at %d times, want 4 (waits until active)", got)
	}
	if v.Waited < 3*poll {
		t.Errorf("waited %s, want at least 3 polls", v.Waited)
	}
	if !strings.Contains(v.Reason, "multi-user.target active") || !strings.Contains(v.Reason, "1 required units active") {
		t.Errorf("reason %q", v.Reason)
	}
	if sd.rebooted {
		t.Error("Run rebooted; that is the caller's decision")
	}
}

func TestDefaultTarget(t *testing.T) {
	sd := newFake(map[string][]string{"multi-user.target": {"active/active"}})
	v := Check{Poll: poll, Timeout: time.Second}.Run(context.Background(), sd)
	if !v.Good || sd.lookCount("multi-user.target") != 1 {
		t.Fatalf("verdict %+v after %d looks", v, sd.lookCount("multi-user.target"))
	}
}

func TestRequiredUnitFailedIsBadAtOnce(t *testing.T) {
	sd := newFake(map[string][]string{
		"multi-user.target": {"active/active"},
		"web.service":       {"failed/failed"},
	})
	sd.failed = []string{"web.service"}
	start := time.Now()
	v := Check{RequiredUnits: []string{"web.service"}, Timeout: 10 * time.Second, Poll: poll}.Run(context.Background(), sd)
	if v.Good {
		t.Fatal("good with a failed required unit")
	}
	if time.Since(start) > time.Second {
		t.Errorf("took %s: a failed unit must not wait for the timeout", time.Since(start))
	}
	if !strings.Contains(v.Reason, "web.service (required)") || !slices.Equal(v.Failed, []string{"web.service"}) {
		t.Errorf("verdict %+v: reason must name the required unit", v)
	}
}

// A required unit systemd shows failed but does not list (a race between
// the two calls) is still a failure.
func TestRequiredUnitFailedNotListed(t *testing.T) {
	sd := newFake(map[string][]string{
		"multi-user.target": {"active/active"},
		"db.service":        {"failed/failed"},
	})
	v := Check{RequiredUnits: []string{"db.service"}, Timeout: 10 * time.Second, Poll: poll}.Run(context.Background(), sd)
	if v.Good || !slices.Equal(v.Failed, []string{"db.service"}) || !strings.Contains(v.Reason, "db.service (required)") {
		t.Fatalf("verdict %+v", v)
	}
}

func TestUnrelatedUnitFailed(t *testing.T) {
	sd := newFake(map[string][]string{
		"multi-user.target": {"active/active"},
		"web.service":       {"active/running"},
	})
	sd.failed = []string{"cron.service", "logrotate.service"}
	v := Check{RequiredUnits: []string{"web.service"}, Timeout: 10 * time.Second, Poll: poll}.Run(context.Background(), sd)
	if v.Good {
		t.Fatal("good with failed units")
	}
	if v.Reason != "failed units: cron.service, logrotate.service" {
		t.Errorf("reason %q", v.Reason)
	}
}

func TestFailureWhileWaiting(t *testing.T) {
	sd := newFake(map[string][]string{
		"multi-user.target": {"active/active"},
		"web.service":       {"activating/start", "activating/start", "failed/failed"},
	})
	v := Check{RequiredUnits: []string{"web.service"}, Timeout: 10 * time.Second, Poll: poll}.Run(context.Background(), sd)
	if v.Good || sd.lookCount("web.service") != 3 || !strings.Contains(v.Reason, "web.service (required)") {
		t.Fatalf("verdict %+v after %d looks", v, sd.lookCount("web.service"))
	}
}

func TestTimeoutNamesWhatItWaitedFor(t *testing.T) {
	sd := newFake(map[string][]string{
		"multi-user.target": {"active/active"},
		"web.service":       {"active/running"},
		"db.service":        {"activating/start"},
	})
	timeout := 60 * time.Millisecond
	v := Check{RequiredUnits: []string{"web.service", "db.service", "never.service"}, Timeout: timeout, Poll: poll}.Run(context.Background(), sd)
	if v.Good {
		t.Fatal("good although db.service never became active")
	}
	if v.Waited < timeout || v.Waited > timeout+500*time.Millisecond {
		t.Errorf("waited %s, want about %s", v.Waited, timeout)
	}
	want := "timed out after 60ms waiting for db.service (activating/start), never.service (inactive/dead)"
	if v.Reason != want {
		t.Errorf("reason\n %q, want\n %q", v.Reason, want)
	}
	if !slices.Equal(v.Waiting, []string{"db.service (activating/start)", "never.service (inactive/dead)"}) {
		t.Errorf("waiting %q", v.Waiting)
	}
}

func TestTargetNeverActive(t *testing.T) {
	sd := newFake(map[string][]string{"graphical.target": {"inactive/dead"}})
	v := Check{Target: "graphical.target", Timeout: 30 * time.Millisecond, Poll: poll}.Run(context.Background(), sd)
	if v.Good || !strings.Contains(v.Reason, "graphical.target (inactive/dead)") {
		t.Fatalf("verdict %+v", v)
	}
}

func TestMissingRequiredUnitIsBadAtOnce(t *testing.T) {
	sd := newFake(map[string][]string{"multi-user.target": {"active/active"}})
	sd.missing["wbe.service"] = "not-found"
	start := time.Now()
	v := Check{RequiredUnits: []string{"wbe.service"}, Timeout: 10 * time.Second, Poll: poll}.Run(context.Background(), sd)
	if v.Good || time.Since(start) > time.Second {
		t.Fatalf("verdict %+v after %s", v, time.Since(start))
	}
	if v.Reason != "required units cannot load: wbe.service (not-found)" {
		t.Errorf("reason %q", v.Reason)
	}
}

func TestDBusErrorsRetriedThenReported(t *testing.T) {
	sd := newFake(map[string][]string{"multi-user.target": {"active/active"}})
	sd.listErr = errors.New("list failed units: connection reset")
	v := Check{Timeout: 30 * time.Millisecond, Poll: poll}.Run(context.Background(), sd)
	if v.Good {
		t.Fatal("good although the failed units could not be listed")
	}
	if !strings.Contains(v.Reason, "timed out after 30ms") || !strings.Contains(v.Reason, "last error: list failed units: connection reset") {
		t.Errorf("reason %q", v.Reason)
	}

	// An error that goes away is forgotten.
	sd = newFake(map[string][]string{"multi-user.target": {"active/active"}})
	flaky := &flakyList{fakeSystemd: sd, errs: 2}
	v = Check{Timeout: time.Second, Poll: poll}.Run(context.Background(), flaky)
	if !v.Good {
		t.Fatalf("verdict %+v, want good once listing works", v)
	}
}

type flakyList struct {
	*fakeSystemd
	errs int
}

func (f *flakyList) FailedUnits(ctx context.Context) ([]string, error) {
	if f.errs > 0 {
		f.errs--
		return nil, fmt.Errorf("transient")
	}
	return f.fakeSystemd.FailedUnits(ctx)
}

func TestCancel(t *testing.T) {
	sd := newFake(map[string][]string{"multi-user.target": {"activating/start"}})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	v := Check{Timeout: 10 * time.Second, Poll: poll}.Run(ctx, sd)
	if v.Good || time.Since(start) > time.Second {
		t.Fatalf("verdict %+v after %s", v, time.Since(start))
	}
	if v.Reason != "check interrupted: context canceled" {
		t.Errorf("reason %q", v.Reason)
	}

	// Cancelled before the first look: nothing is asked.
	sd = newFake(nil)
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	v = Check{Poll: poll}.Run(ctx, sd)
	if v.Good || sd.lookCount("multi-user.target") != 0 {
		t.Fatalf("verdict %+v, %d looks", v, sd.lookCount("multi-user.target"))
	}
}

// TestConnect talks to the machine's systemd when there is one (read only).
func TestConnect(t *testing.T) {
	const sock = "/run/systemd/private"
	if _, err := os.Stat(sock); err != nil {
		_, err := Connect(t.Context())
		if err == nil || !strings.Contains(err.Error(), sock) {
			t.Fatalf("Connect without systemd: %v, want an error naming %s", err, sock)
		}
		t.Skip("no systemd here:", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("systemd's private socket is for root")
	}
	sd, err := Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	active, sub, err := sd.UnitState(t.Context(), "-.slice")
	if err != nil || active != "active" || sub != "active" {
		t.Errorf("-.slice: %s/%s, %v", active, sub, err)
	}
	var le *LoadError
	if _, _, err := sd.UnitState(t.Context(), "slate-no-such-unit.service"); !errors.As(err, &le) || le.LoadState != "not-found" {
		t.Errorf("missing unit: %v, want a not-found LoadError", err)
	}
	if _, err := sd.FailedUnits(t.Context()); err != nil {
		t.Error(err)
	}
}
