// Package nodetest proves a user's own node images under QEMU: that V1
// boots as a slate node should, that a node config applies, and that V1
// upgrades to V2, rolls back, survives power cuts and refuses a tampered
// slot. It is what `slate test` runs, and slate's own QEMU suite runs it on
// the reference images.
//
// Each scenario boots fresh machines (package vm) from V1's disk and judges
// what the node says about itself. Nothing is added to the images: what
// runs inside the guest comes with the node config (nodeconfig), which
// slate already injects at every boot through QEMU's fw_cfg. The test's
// config is the user's config plus a small runner unit that, once the node
// is up, runs the script the harness hands over for that boot (fw_cfg
// opt/slate/test) and prints its output on the serial console between
// markers; so every step of a scenario is a script, and one boot's script
// can differ from the next. V2 reaches the node as an update artifact
// pushed to a registry on the host's loopback, which the guest reaches at
// 10.0.2.2 through QEMU's user network, signed with a key made for the run
// and named by the test config.
package nodetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/nodeconfig"
)

// Image is one side of the test.
type Image struct {
	// Disk is a disk slate built (raw, qcow2, or another format qemu-img
	// reads): V1 boots from it. It is never written.
	Disk string
	// Format is the disk's qemu-img format; empty means ask qemu-img.
	Format string
	// Artifact is the image's update artifact, an OCI layout directory
	// (slate build --artifact): what a node upgrades to. V2 needs one.
	Artifact string
}

// Check is a user's own check: a shell script run on the node after every
// boot that reaches the runner; it must exit 0.
type Check struct {
	Name   string
	Script string
}

// Options is one run of the scenarios.
type Options struct {
	From Image
	// To is V2; nil skips the scenarios that upgrade.
	To *Image
	// Config is the user's node config (YAML or JSON); nil means none,
	// and then the config scenario only checks that an invalid config
	// applies nothing.
	Config []byte
	// ConfigName names Config in errors (its file).
	ConfigName string
	// Scenarios to run, by name; empty means all that apply.
	Scenarios []string
	// Checks run after every boot of every scenario.
	Checks []Check
	// Dir keeps each scenario's console log (DIR/SCENARIO/console.log) and
	// the run's scratch files (removed at the end).
	Dir string
	// Parallel is how many scenarios run at once; 0 means one per host
	// core (each QEMU under TCG keeps one core busy).
	Parallel int
	// MemoryMiB and CPUs size each machine; 0 means vm's defaults.
	MemoryMiB, CPUs int
	// Progress gets the status line; nil shows none.
	Progress io.Writer
}

// Status is a scenario's outcome.
type Status string

const (
	Pass Status = "pass"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Result is one scenario's outcome.
type Result struct {
	Scenario string `json:"scenario"`
	// Description says what the scenario proves.
	Description string `json:"description"`
	Status      Status `json:"status"`
	// Reason is why it failed or was skipped.
	Reason  string        `json:"reason,omitempty"`
	Seconds float64       `json:"seconds"`
	Boots   []BootSummary `json:"boots,omitempty"`
	// Log is the console log of every boot, one after another, each
	// starting with a "--- slate/vm NAME: boot N ---" line.
	Log string `json:"log,omitempty"`
	// Notes are what a passing scenario measured or saw.
	Notes []string `json:"notes,omitempty"`
}

// BootSummary is one boot as the console showed it.
type BootSummary struct {
	N       int    `json:"n"`
	Slot    string `json:"slot,omitempty"`
	Version string `json:"version,omitempty"`
	// Ended is how the boot ended: "guest-reset", "guest-shutdown", "cut".
	Ended   string  `json:"ended"`
	Seconds float64 `json:"seconds"`
	Runner  bool    `json:"runner"` // the test runner ran its script
}

// Report is a whole run.
type Report struct {
	From    string   `json:"from"`
	To      string   `json:"to,omitempty"`
	Results []Result `json:"results"`
	Seconds float64  `json:"seconds"`
	Passed  bool     `json:"passed"`
}

// Scenario is one named proof.
type scenario struct {
	name, description string
	needsTo           bool
	run               func(ctx context.Context, s *session) error
}

// Scenarios lists the scenarios in the order they are reported.
func Scenarios() []string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	return names
}

// Describe says what scenario name proves ("" if there is none).
func Describe(name string) string {
	for _, s := range scenarios {
		if s.name == name {
			return s.description
		}
	}
	return ""
}

// Run runs the scenarios and reports each. It returns an error only when
// the run could not start (a missing disk, an invalid config, no QEMU);
// a scenario that fails is in the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.Dir == "" {
		return nil, errors.New("nodetest: no directory for the logs")
	}
	env, err := prepare(o)
	if err != nil {
		return nil, err
	}
	defer env.close()

	var todo []*scenario
	want := o.Scenarios
	for _, w := range want {
		if Describe(w) == "" {
			return nil, fmt.Errorf("no scenario %q (there are %s)", w, strings.Join(Scenarios(), ", "))
		}
	}
	for i := range scenarios {
		if len(want) == 0 || slices.Contains(want, scenarios[i].name) {
			todo = append(todo, &scenarios[i])
		}
	}
	if o.To != nil {
		if err := env.publish(ctx, *o.To); err != nil {
			return nil, err
		}
	}

	par := o.Parallel
	if par <= 0 {
		par = runtime.NumCPU()
	}
	results := make([]Result, len(todo))
	board := newBoard(o.Progress, todo)
	defer board.stop()
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i, sc := range todo {
		res := &results[i]
		res.Scenario, res.Description = sc.name, sc.description
		if sc.needsTo && o.To == nil {
			res.Status, res.Reason = Skip, "needs V2 (--to)"
			board.done(sc.name, res)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				res.Status, res.Reason = Fail, "not started: "+ctx.Err().Error()
				board.done(sc.name, res)
				return
			}
			defer func() { <-sem }()
			env.runScenario(ctx, sc, res, board)
			board.done(sc.name, res)
		}()
	}
	wg.Wait()
	rep := &Report{From: o.From.Disk, Results: results, Seconds: time.Since(start).Seconds(), Passed: true}
	if o.To != nil {
		rep.To = o.To.Artifact
	}
	for _, r := range results {
		if r.Status == Fail {
			rep.Passed = false
		}
	}
	return rep, nil
}

// env is what every scenario shares: the parsed config, the registry
// holding V2 and the key that signed it.
type env struct {
	o        Options
	user     *nodeconfig.Config // nil: no config given
	scratch  string
	reg      *registry
	v2       string // V2's version
	v2Source string // V2 as the guest names it, for update.source
}

func prepare(o Options) (*env, error) {
	if _, err := os.Stat(o.From.Disk); err != nil {
		return nil, fmt.Errorf("V1: %w", err)
	}
	e := &env{o: o}
	if o.Config != nil {
		c, err := nodeconfig.Parse(o.Config)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.ConfigName, nodeconfig.WithLine(o.Config, err))
		}
		e.user = c
	}
	if o.To != nil {
		a, err := artifact.Open("oci:" + o.To.Artifact)
		if err != nil {
			return nil, fmt.Errorf("V2: %w", err)
		}
		if err := a.Validate(); err != nil {
			return nil, fmt.Errorf("V2: %w", err)
		}
		e.v2 = a.Config.Version
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	scratch, err := os.MkdirTemp(o.Dir, ".scratch-")
	if err != nil {
		return nil, err
	}
	e.scratch = scratch
	return e, nil
}

func (e *env) close() {
	if e.reg != nil {
		e.reg.close()
	}
	os.RemoveAll(e.scratch)
}

// runScenario runs one scenario on its own machines, in DIR/NAME, and
// keeps only their console logs.
func (e *env) runScenario(ctx context.Context, sc *scenario, res *Result, board *board) {
	start := time.Now()
	dir := filepath.Join(e.o.Dir, sc.name)
	os.RemoveAll(dir)
	s := &session{env: e, name: sc.name, dir: dir, board: board}
	err := sc.run(ctx, s)
	s.closeAll()
	res.Seconds = time.Since(start).Seconds()
	res.Boots, res.Notes = s.boots, s.notes
	res.Log = s.keepLogs()
	if err != nil {
		res.Status, res.Reason = Fail, err.Error()
		return
	}
	res.Status = Pass
}
