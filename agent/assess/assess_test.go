package assess

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/nodeconfig"
)

const bootID = "0123456789abcdef0123456789abcdef"

// info is a slot as the ESP shows it with the entry file name (slate-a.conf:
// good; slate-b+2-1.conf: trying; slate-b+0-3.conf: bad).
func info(name string, gen int) *slots.Info {
	en, ok := boot.ParseEntryName(name)
	if !ok {
		panic(name)
	}
	en.Generation, en.Version = gen, "v"+string(en.Slot)
	in := &slots.Info{Slot: en.Slot, EntryFile: name, Entry: &en, Generation: gen,
		Counting: en.Counting, TriesLeft: en.Left, TriesDone: en.Done}
	switch {
	case !en.Counting:
		in.State = slots.Good
	case en.Left > 0:
		in.State = slots.Trying
	default:
		in.State = slots.Bad
	}
	return in
}

func empty(s boot.Slot) *slots.Info { return &slots.Info{Slot: s, State: slots.Empty} }

// fakeESP serves infos and changes them as slots.ESP changes the files.
type fakeESP struct {
	infos                          map[boot.Slot]*slots.Info
	reads                          int
	failRead                       int // this read (1: the first) fails
	countErr, promoteErr, blessErr error
	calls                          *[]string
}

func (e *fakeESP) Read() (map[boot.Slot]*slots.Info, error) {
	e.reads++
	if e.reads == e.failRead {
		return nil, errors.New("reading the ESP failed")
	}
	m := map[boot.Slot]*slots.Info{}
	for s, in := range e.infos {
		c := *in
		m[s] = &c
	}
	return m, nil
}

func (e *fakeESP) Count(s boot.Slot) (*boot.Entry, error) {
	*e.calls = append(*e.calls, "count "+string(s))
	if e.countErr != nil {
		return nil, e.countErr
	}
	in := e.infos[s]
	en := *in.Entry
	en.Left, en.Done = en.Left-1, en.Done+1
	*in = *info(en.FileName(), in.Generation)
	return &en, nil
}

func (e *fakeESP) Promote(s boot.Slot) (*boot.Entry, error) {
	*e.calls = append(*e.calls, "promote "+string(s))
	if e.promoteErr != nil {
		return nil, e.promoteErr
	}
	en := *e.infos[s].Entry
	en.Generation = 9
	e.infos[s] = info(en.FileName(), 9)
	return &en, nil
}

func (e *fakeESP) Bless(s boot.Slot) error {
	*e.calls = append(*e.calls, "bless "+string(s))
	if e.blessErr != nil {
		return e.blessErr
	}
	e.infos[s] = info("slate-"+string(s)+".conf", e.infos[s].Generation)
	return nil
}

// fakeSystemd says multi-user.target and the required units are active,
// except the failed ones.
type fakeSystemd struct {
	failed    []string
	rebootErr error
	calls     *[]string
}

func (f *fakeSystemd) UnitState(ctx context.Context, name string) (string, string, error) {
	if slices.Contains(f.failed, name) {
		return "failed", "failed", nil
	}
	return "active", "running", nil
}

func (f *fakeSystemd) FailedUnits(ctx context.Context) ([]string, error) { return f.failed, nil }

func (f *fakeSystemd) Reboot(ctx context.Context) error {
	*f.calls = append(*f.calls, "reboot")
	return f.rebootErr
}

func (f *fakeSystemd) Close() { *f.calls = append(*f.calls, "close") }

type fakeJournal []byte

func (j fakeJournal) BootLog(ctx context.Context, id string) ([]byte, error) { return j, nil }

// env is one node for a test case.
type env struct {
	counted                        bool
	countedErr                     error
	nodeErr                        error
	running                        boot.Slot // SlotA when empty
	infos                          map[boot.Slot]*slots.Info
	failRead                       int
	countErr, promoteErr, blessErr error
	bootIDErr                      error
	connectErr                     error
	failed                         []string // failed units: the boot is bad
	rebootErr                      error
	health                         nodeconfig.Health
	blessBoot                      bool               // the image has systemd-bless-boot
	noStore                        bool               // the state directory cannot be written
	extensions                     *extensions.Report // slate-sysext's report; nil: none
}

type result struct {
	sys      System
	calls    []string
	out, err *bytes.Buffer
}

func (e env) system(t *testing.T) *result {
	t.Helper()
	r := &result{out: &bytes.Buffer{}, err: &bytes.Buffer{}}
	running := e.running
	if running == "" {
		running = boot.SlotA
	}
	esp := &fakeESP{infos: e.infos, failRead: e.failRead, countErr: e.countErr, promoteErr: e.promoteErr, blessErr: e.blessErr, calls: &r.calls}
	dir := t.TempDir()
	store := filepath.Join(dir, "state")
	if e.noStore {
		if err := os.WriteFile(store, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bless := filepath.Join(dir, "systemd-bless-boot")
	if e.blessBoot {
		if err := os.WriteFile(bless, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.sys = System{
		BootCounted: func() (bool, error) { return e.counted, e.countedErr },
		Node: func() (*Node, error) {
			if e.nodeErr != nil {
				return nil, e.nodeErr
			}
			return &Node{Running: running, Version: "v" + string(running), ESP: esp, Health: e.health}, nil
		},
		BootID: func() (string, error) { return bootID, e.bootIDErr },
		Connect: func(context.Context) (Systemd, error) {
			r.calls = append(r.calls, "connect")
			if e.connectErr != nil {
				return nil, e.connectErr
			}
			return &fakeSystemd{failed: e.failed, rebootErr: e.rebootErr, calls: &r.calls}, nil
		},
		Store:   &history.Store{Dir: store},
		Sources: history.Sources{PstoreDirs: []string{filepath.Join(dir, "pstore")}},
		Journal: fakeJournal("the bad boot's journal\n"),
		Extensions: func() (*extensions.Report, error) {
			if e.extensions == nil {
				return nil, extensions.ErrNoReport
			}
			return e.extensions, nil
		},
		BlessBoot: bless,
		Now:       func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
		Poll:      time.Millisecond,
		Out:       r.out,
		Err:       r.err,
	}
	return r
}

func slotsOf(infos ...*slots.Info) map[boot.Slot]*slots.Info {
	m := map[boot.Slot]*slots.Info{}
	for _, in := range infos {
		m[in.Slot] = in
	}
	return m
}

// Every branch of the policy: what it changes on the ESP, whether it
// reboots, what it records and says, and whether the boot counts.
func TestAssess(t *testing.T) {
	for _, c := range []struct {
		name string
		env  env
		// want
		counted bool
		err     string   // "" for none
		calls   []string // ESP changes and systemd calls, in order
		result  history.Result
		journal bool     // the bad boot's journal is kept
		out     []string // in the messages, in order
		errOut  string   // in the failures to keep history
	}{
		{
			name:   "good blessed boot",
			env:    env{infos: slotsOf(info("slate-a.conf", 1), empty(boot.SlotB))},
			calls:  []string{"connect", "close"},
			result: history.ResultGood,
			out:    []string{"slate health: slot a (va) is healthy after 0s\n"},
		},
		{
			name:    "good counted boot, systemd-bless-boot blesses",
			env:     env{counted: true, blessBoot: true, running: boot.SlotB, infos: slotsOf(info("slate-a.conf", 1), info("slate-b+2-1.conf", 2))},
			counted: true,
			calls:   []string{"connect", "close"},
			result:  history.ResultGood,
			out:     []string{"slot b (vb) is healthy"},
		},
		{
			name:    "good counted boot, no systemd-bless-boot: the agent blesses",
			env:     env{counted: true, running: boot.SlotB, infos: slotsOf(info("slate-a.conf", 1), info("slate-b+2-1.conf", 2))},
			counted: true,
			calls:   []string{"connect", "bless b", "close"},
			result:  history.ResultGood,
			out:     []string{"slot b (vb) is healthy", "slate health: slot b marked good (no systemd-bless-boot in this image)\n"},
		},
		{
			name:    "good counted boot, blessing fails",
			env:     env{counted: true, running: boot.SlotB, blessErr: errors.New("read-only ESP"), infos: slotsOf(info("slate-a.conf", 1), info("slate-b+2-1.conf", 2))},
			counted: true,
			err:     "marking slot b good: read-only ESP",
			calls:   []string{"connect", "bless b", "close"},
			result:  history.ResultGood,
		},
		{
			name:    "uncounted boot of a counted entry with tries: the agent counts it",
			env:     env{running: boot.SlotB, infos: slotsOf(info("slate-a.conf", 1), info("slate-b+3.conf", 2))},
			counted: true,
			calls:   []string{"count b", "connect", "bless b", "close"},
			result:  history.ResultGood,
			out: []string{
				"slate health: the boot loader did not count this boot of slot b; slate counted it (slate-b+2-1.conf)\n",
				"slot b (vb) is healthy",
			},
		},
		{
			name:    "uncounted boot counted by the agent, then bad: reboots",
			env:     env{running: boot.SlotB, failed: []string{"broken.service"}, infos: slotsOf(info("slate-a.conf", 1), info("slate-b+3.conf", 2))},
			counted: true,
			err:     "unhealthy boot",
			calls:   []string{"count b", "connect", "reboot", "close"},
			result:  history.ResultBad,
			journal: true,
			out:     []string{"slate counted it", "is NOT healthy: failed units: broken.service", "rebooting; this spends one of the slot's tries"},
		},
		{
			name:  "counting fails",
			env:   env{running: boot.SlotB, countErr: errors.New("rename failed"), infos: slotsOf(info("slate-a.conf", 1), info("slate-b+3.conf", 2))},
			err:   "rename failed",
			calls: []string{"count b"},
		},
		{
			name:    "reading the ESP again after counting fails",
			env:     env{running: boot.SlotB, failRead: 2, infos: slotsOf(info("slate-a.conf", 1), info("slate-b+3.conf", 2))},
			counted: false, // the try is spent, but the boot is not known to be counted
			err:     "reading the ESP failed",
			calls:   []string{"count b"},
		},
		{
			name:  "uncounted boot with no tries left, the other slot good: hands over",
			env:   env{running: boot.SlotB, infos: slotsOf(info("slate-a.conf", 1), info("slate-b+0-3.conf", 2))},
			calls: []string{"promote a", "connect", "reboot", "close"},
			out:   []string{"slate health: the boot loader booted slot b with no tries left; slot a boots next\n"},
		},
		{
			name:  "handing over, promoting fails",
			env:   env{running: boot.SlotB, promoteErr: errors.New("no kernel"), infos: slotsOf(info("slate-a.conf", 1), info("slate-b+0-3.conf", 2))},
			err:   "no kernel",
			calls: []string{"promote a"},
		},
		{
			name:  "handing over, systemd unreachable",
			env:   env{running: boot.SlotB, connectErr: errors.New("no socket"), infos: slotsOf(info("slate-a.conf", 1), info("slate-b+0-3.conf", 2))},
			err:   "asking systemd to reboot: no socket",
			calls: []string{"promote a", "connect"},
		},
		{
			name:  "handing over, reboot fails",
			env:   env{running: boot.SlotB, rebootErr: errors.New("refused"), infos: slotsOf(info("slate-a.conf", 1), info("slate-b+0-3.conf", 2))},
			err:   "refused",
			calls: []string{"promote a", "connect", "reboot", "close"},
		},
		{
			name:   "uncounted boot with no tries left, the other slot not good: assessed as it is",
			env:    env{running: boot.SlotB, infos: slotsOf(info("slate-a+0-3.conf", 1), info("slate-b+0-3.conf", 2))},
			calls:  []string{"connect", "close"},
			result: history.ResultGood,
			out:    []string{"slot b (vb) is healthy"},
		},
		{
			name:    "bad counted boot: reboots, spending a try",
			env:     env{counted: true, running: boot.SlotB, failed: []string{"app.service"}, health: nodeconfig.Health{RequiredUnits: []string{"app.service"}}, infos: slotsOf(info("slate-a.conf", 1), info("slate-b+2-1.conf", 2))},
			counted: true,
			err:     "unhealthy boot",
			calls:   []string{"connect", "reboot", "close"},
			result:  history.ResultBad,
			journal: true,
			out:     []string{"slate health: slot b (vb) is NOT healthy: failed units: app.service (required)\n", "slate health: rebooting; this spends one of the slot's tries\n"},
		},
		{
			name: "counted boot, a required extension refused: reboots",
			env: env{counted: true, running: boot.SlotB, health: nodeconfig.Health{RequiredExtensions: []string{"gpu"}},
				extensions: &extensions.Report{Entries: []extensions.Entry{{Entry: "gpu", Name: "gpu", State: extensions.Refused, Reason: "it is for debian VERSION_ID=13, this image is VERSION_ID=12"}}},
				infos:      slotsOf(info("slate-a.conf", 1), info("slate-b+2-1.conf", 2))},
			counted: true,
			err:     "unhealthy boot",
			calls:   []string{"connect", "reboot", "close"},
			result:  history.ResultBad,
			journal: true,
			out:     []string{"slate health: slot b (vb) is NOT healthy: required extensions not merged: gpu (refused: it is for debian VERSION_ID=13, this image is VERSION_ID=12)\n"},
		},
		{
			name: "a required extension merged",
			env: env{health: nodeconfig.Health{RequiredExtensions: []string{"gpu"}},
				extensions: &extensions.Report{Entries: []extensions.Entry{{Entry: "gpu", Name: "gpu", State: extensions.Merged}}},
				infos:      slotsOf(info("slate-a.conf", 1), empty(boot.SlotB))},
			calls:  []string{"connect", "close"},
			result: history.ResultGood,
			out:    []string{"slate health: slot a (va) is healthy"},
		},
		{
			name:    "bad counted boot, reboot fails",
			env:     env{counted: true, running: boot.SlotB, failed: []string{"x.service"}, rebootErr: errors.New("refused"), infos: slotsOf(info("slate-a.conf", 1), info("slate-b+2-1.conf", 2))},
			counted: true,
			err:     "refused",
			calls:   []string{"connect", "reboot", "close"},
			result:  history.ResultBad,
			journal: true,
		},
		{
			name:    "bad blessed boot: stays up",
			env:     env{failed: []string{"x.service"}, infos: slotsOf(info("slate-a.conf", 1), empty(boot.SlotB))},
			calls:   []string{"connect", "close"},
			result:  history.ResultBad,
			journal: true,
			out:     []string{"is NOT healthy", "slate health: this boot is not on trial (slot already good): not rebooting\n"},
		},
		{
			name:    "a health timeout over the maximum is cut",
			env:     env{failed: []string{"x.service"}, health: nodeconfig.Health{Timeout: nodeconfig.Duration(time.Hour)}, infos: slotsOf(info("slate-a.conf", 1))},
			calls:   []string{"connect", "close"},
			result:  history.ResultBad,
			journal: true,
			out:     []string{"slate health: health.timeout 1h0m0s is longer than 15m0s: waiting 15m0s\n"},
		},
		{
			name:    "the node cannot be found on a counted boot",
			env:     env{counted: true, nodeErr: errors.New("not a slate node")},
			counted: true,
			err:     "not a slate node",
		},
		{
			name: "the node cannot be found, and whether the boot counts cannot be read",
			env:  env{countedErr: errors.New("no efivars"), nodeErr: errors.New("not a slate node")},
			err:  "not a slate node",
		},
		{
			name:    "the ESP cannot be read",
			env:     env{counted: true, failRead: 1, infos: slotsOf(info("slate-a+2-1.conf", 1))},
			counted: true,
			err:     "reading the ESP failed",
		},
		{
			name:    "no boot id",
			env:     env{counted: true, bootIDErr: errors.New("no /proc"), infos: slotsOf(info("slate-a+2-1.conf", 1))},
			counted: true,
			err:     "no /proc",
		},
		{
			name:    "systemd unreachable: the boot is recorded, not judged",
			env:     env{counted: true, connectErr: errors.New("no socket"), infos: slotsOf(info("slate-a+2-1.conf", 1))},
			counted: true,
			err:     "no socket",
			calls:   []string{"connect"},
			result:  history.ResultChecking,
		},
		{
			name:   "history cannot be written: the check goes on",
			env:    env{noStore: true, infos: slotsOf(info("slate-a.conf", 1))},
			calls:  []string{"connect", "close"},
			out:    []string{"slot a (va) is healthy"},
			errOut: "slate health: recording the boot:",
		},
		{
			name:   "a rollback is found and recorded",
			env:    env{infos: slotsOf(info("slate-a.conf", 3), info("slate-b+0-3.conf", 2))},
			calls:  []string{"connect", "close"},
			result: history.ResultGood,
			out:    []string{"slate health: slot b (vb) rolled back to slot a: no boot of vb reached the health check; logs kept in ", "slot a (va) is healthy"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.env.system(t)
			r.sys.defaults()
			counted, err := assess(context.Background(), r.sys)
			if counted != c.counted {
				t.Errorf("counted = %v, want %v", counted, c.counted)
			}
			if c.err == "" && err != nil || c.err != "" && (err == nil || err.Error() != c.err) {
				t.Errorf("error = %v, want %q", err, c.err)
			}
			if !slices.Equal(r.calls, c.calls) {
				t.Errorf("calls = %q, want %q", r.calls, c.calls)
			}
			out := r.out.String()
			rest := out
			for _, w := range c.out {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("output lacks %q (in order); it is:\n%s", w, out)
					break
				}
				rest = rest[i+len(w):]
			}
			if c.errOut != "" && !strings.Contains(r.err.String(), c.errOut) || c.errOut == "" && r.err.Len() > 0 {
				t.Errorf("failures to keep history: %q, want %q", r.err.String(), c.errOut)
			}
			if c.env.noStore {
				return
			}
			b, err := r.sys.Store.Boot(bootID)
			switch {
			case c.result == "" && err == nil:
				t.Errorf("boot recorded (%s), want none", b.Result)
			case c.result == "":
			case err != nil:
				t.Errorf("boot record: %v", err)
			default:
				if b.Result != c.result || b.Counting != counted || b.Slot != r.sys.nodeSlot(t) {
					t.Errorf("boot record: result %s, counting %v, slot %s; want %s, %v", b.Result, b.Counting, b.Slot, c.result, counted)
				}
			}
			_, jerr := os.Stat(filepath.Join(r.sys.Store.Dir, "boots", bootID, "journal.txt"))
			if kept := jerr == nil; kept != c.journal {
				t.Errorf("journal kept: %v, want %v", kept, c.journal)
			}
		})
	}
}

func (sys System) nodeSlot(t *testing.T) boot.Slot {
	n, err := sys.Node()
	if err != nil {
		t.Fatal(err)
	}
	return n.Running
}

// A boot's record says what the ESP said of it: the entry and tries after
// the agent counted it.
func TestBootRecord(t *testing.T) {
	r := env{running: boot.SlotB, infos: slotsOf(info("slate-a.conf", 1), info("slate-b+3.conf", 2))}.system(t)
	if err := Run(context.Background(), r.sys); err != nil {
		t.Fatal(err)
	}
	b, err := r.sys.Store.Boot(bootID)
	if err != nil {
		t.Fatal(err)
	}
	want := history.Boot{ID: bootID, Slot: boot.SlotB, Version: "vb", Generation: 2, Entry: "slate-b+2-1.conf",
		Counting: true, TriesLeft: 2, Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Result: history.ResultGood}
	b.Finished = time.Time{}
	if *b != want {
		t.Errorf("boot record:\n%+v\nwant\n%+v", *b, want)
	}
}

// Run returns the error of a boot on trial, so the unit's FailureAction
// reboots; on a boot that is not, it says so and returns nil.
func TestRun(t *testing.T) {
	for _, c := range []struct {
		name string
		env  env
		err  string
		out  string
	}{
		{"good", env{infos: slotsOf(info("slate-a.conf", 1))}, "", "is healthy"},
		{"counted, node not found", env{counted: true, nodeErr: errors.New("not a slate node")}, "not a slate node", ""},
		{"not counted, node not found", env{nodeErr: errors.New("not a slate node")}, "",
			"slate health: not a slate node\nslate health: this boot is not on trial: not rebooting\n"},
		{"counted, bad", env{counted: true, failed: []string{"x.service"}, infos: slotsOf(info("slate-a+2-1.conf", 1))}, "unhealthy boot", "rebooting"},
		{"not counted, bad", env{failed: []string{"x.service"}, infos: slotsOf(info("slate-a.conf", 1))}, "", "not rebooting"},
		{"not counted, handover reboot fails", env{running: boot.SlotB, rebootErr: errors.New("refused"), infos: slotsOf(info("slate-a.conf", 1), info("slate-b+0-3.conf", 2))},
			"", "slate health: refused\nslate health: this boot is not on trial: not rebooting\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.env.system(t)
			err := Run(context.Background(), r.sys)
			if c.err == "" && err != nil || c.err != "" && (err == nil || err.Error() != c.err) {
				t.Errorf("error = %v, want %q", err, c.err)
			}
			if !strings.Contains(r.out.String(), c.out) {
				t.Errorf("output lacks %q; it is:\n%s", c.out, r.out.String())
			}
		})
	}
}

// The policy on a real ESP: an uncounted boot of a counted entry is
// counted (slate-b+3.conf becomes slate-b+2-1.conf) and, good, blessed
// (slate-b.conf) where the image has no systemd-bless-boot.
func TestRealESP(t *testing.T) {
	dir := t.TempDir()
	entries := filepath.Join(dir, boot.EntriesDir)
	if err := os.MkdirAll(entries, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, gen := range map[string]int{"slate-a.conf": 1, "slate-b+3.conf": 2} {
		en := *info(name, gen).Entry
		en.Title, en.Linux, en.Initrd = "slate", en.Slot.KernelPath(), en.Slot.InitrdPath()
		if err := os.WriteFile(filepath.Join(entries, name), en.Marshal(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := env{running: boot.SlotB}.system(t)
	esp := slots.Open(dir)
	r.sys.Node = func() (*Node, error) { return &Node{Running: boot.SlotB, Version: "vb", ESP: esp}, nil }
	if err := Run(context.Background(), r.sys); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(entries)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"slate-a.conf", "slate-b.conf"}; !slices.Equal(names, want) {
		t.Errorf("entries %q, want %q; output:\n%s", names, want, r.out)
	}
	b, err := r.sys.Store.Boot(bootID)
	if err != nil {
		t.Fatal(err)
	}
	if b.Entry != "slate-b+2-1.conf" || !b.Counting || b.Result != history.ResultGood {
		t.Errorf("boot record %+v", b)
	}
}
