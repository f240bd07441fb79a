package metrics

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/agent/status"
	"github.com/slate-os/slate/agent/upgrade"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name (rewritten with -update).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it):\n%s", path, got)
	}
}

var (
	t0    = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	hashA = strings.Repeat("ab", 32)
)

// fullStatus is a node that has seen everything: a rollback from 1.5 back
// to 1.4, a break-glass config and logins, a refused update, extensions.
func fullStatus() *status.Status {
	cause := "health check failed: unit \"app.service\" failed\nC:\\path " + strings.Repeat("x", 300)
	return &status.Status{
		Running: status.Running{Slot: boot.SlotB, Version: "1.4", Entry: "slate-b.conf", BootID: strings.Repeat("1", 32)},
		Slots: []status.Slot{
			{Info: slots.Info{Slot: boot.SlotA, State: slots.Bad, EntryFile: "slate-a+0-3.conf", Generation: 3, Counting: true, TriesLeft: 0, TriesDone: 3,
				Release: &boot.Release{Slot: boot.SlotA, Version: "1.5", KernelRelease: "6.12.0-1-amd64"}}},
			{Info: slots.Info{Slot: boot.SlotB, State: slots.Good, EntryFile: "slate-b.conf", Generation: 2,
				Release: &boot.Release{Slot: boot.SlotB, Version: "1.4", KernelRelease: "6.1.0-28-amd64"}}, Running: true},
		},
		SystemdBoot: &status.SystemdBoot{Booted: "257.9-1~deb13u1"},
		Health:      &history.Boot{Result: history.ResultGood},
		LastRollback: &history.Rollback{Time: t0.Add(-time.Hour + 250*time.Millisecond), FromSlot: boot.SlotA, FromVersion: "1.5", FromGeneration: 3,
			ToSlot: boot.SlotB, ToVersion: "1.4", Cause: cause},
		Config:  &record.Config{Source: "fw_cfg", SHA256: hashA, Applied: true},
		Tainted: true,
		Taint: &record.Taint{Since: t0.Add(-24 * time.Hour), ConfigSHA256: hashA, Source: "fw_cfg", Boots: 1, LoginsTotal: 3,
			Logins: []record.Login{{Time: t0.Add(-2 * time.Hour), User: "root", TTY: "ttyS0", Via: "serial console"},
				{Time: t0.Add(-30 * time.Minute), User: "root", TTY: "pts/0", Host: "10.0.2.2", Via: "ssh"}}},
		LastUpdateCheck: &upgrade.LastCheck{Time: t0.Add(-5 * time.Minute), Result: upgrade.CheckRefused, Ref: "registry.example/org/node:stable",
			Version: "1.5", Error: "not signed"},
		Extensions: &extensions.Report{Entries: []extensions.Entry{
			{Entry: "tools", State: extensions.Merged}, {Entry: "debug", State: extensions.Merged}, {Entry: "gpu", State: extensions.Refused}}},
	}
}

// freshStatus is a node just imaged: slot a good, b empty, no config, no
// health check yet, nothing kept on the state partition.
func freshStatus() *status.Status {
	return &status.Status{
		Running: status.Running{Slot: boot.SlotA, Version: "1.0"},
		Slots: []status.Slot{
			{Info: slots.Info{Slot: boot.SlotA, State: slots.Good, EntryFile: "slate-a.conf", Generation: 1,
				Release: &boot.Release{Slot: boot.SlotA, Version: "1.0", KernelRelease: "6.1.0-28-amd64"}}, Running: true},
			{Info: slots.Info{Slot: boot.SlotB, State: slots.Empty}},
		},
		Config: &record.Config{Source: record.ConfigNone},
	}
}

func TestFormatGolden(t *testing.T) {
	full := Format(&Snapshot{Status: fullStatus(), Rollbacks: 3})
	golden(t, "full.prom", full)
	checkExposition(t, full)
	fresh := Format(&Snapshot{Status: freshStatus()})
	golden(t, "fresh.prom", fresh)
	checkExposition(t, fresh)
	// Nothing known at all: only the scrape's own metric.
	none := Format(&Snapshot{Rollbacks: -1, Errors: []string{"node status: no ESP"}})
	if string(none) != "# HELP slate_scrape_error "+defs["slate_scrape_error"].help+"\n# TYPE slate_scrape_error gauge\nslate_scrape_error 1\n" {
		t.Errorf("nothing known:\n%s", none)
	}
	checkExposition(t, none)
	// The same state, the same bytes, whatever the order of the slots.
	st := fullStatus()
	st.Slots[0], st.Slots[1] = st.Slots[1], st.Slots[0]
	if again := Format(&Snapshot{Status: st, Rollbacks: 3}); !bytes.Equal(again, full) {
		t.Errorf("not deterministic:\n%s", again)
	}
	// Every family is defined, and every definition is used by the full node.
	for name := range defs {
		if name != "slate_scrape_error" && !bytes.Contains(full, []byte("\n"+name)) {
			t.Errorf("%s is never written", name)
		}
	}
}

var (
	sampleRe = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (\S+)$`)
	helpRe   = regexp.MustCompile(`^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (?:[^\\\n]|\\[\\n])*$`)
	typeRe   = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$`)
)

// checkExposition checks the text format's grammar as Prometheus reads it:
// each family once, HELP then TYPE then its samples, names prefixed slate_,
// label values escaped, values floats.
func checkExposition(t *testing.T, text []byte) {
	t.Helper()
	seen := map[string]bool{}
	var help, typ string
	for i, l := range strings.Split(strings.TrimSuffix(string(text), "\n"), "\n") {
		switch {
		case helpRe.MatchString(l):
			help = helpRe.FindStringSubmatch(l)[1]
			if seen[help] {
				t.Errorf("line %d: %s twice", i+1, help)
			}
			seen[help] = true
		case typeRe.MatchString(l):
			if typ = typeRe.FindStringSubmatch(l)[1]; typ != help {
				t.Errorf("line %d: TYPE of %s after HELP of %s", i+1, typ, help)
			}
		case sampleRe.MatchString(l):
			m := sampleRe.FindStringSubmatch(l)
			if m[1] != typ || !strings.HasPrefix(m[1], "slate_") {
				t.Errorf("line %d: sample of %s under %s", i+1, m[1], typ)
			}
			if _, err := fmt.Sscan(m[3], new(float64)); err != nil {
				t.Errorf("line %d: value %q", i+1, m[3])
			}
		default:
			t.Errorf("line %d is not the text format: %q", i+1, l)
		}
	}
}

func TestEscapeLabelValue(t *testing.T) {
	for in, want := range map[string]string{
		"1.4":             "1.4",
		`say "hi"`:        `say \"hi\"`,
		`C:\dir`:          `C:\\dir`,
		"two\nlines":      `two\nlines`,
		"bad \xff utf-8":  "bad \uFFFD utf-8",
		`\"` + "\n":       `\\\"\n`,
		"tab\tstays":      "tab\tstays",
		"üñí code points": "üñí code points",
	} {
		if got := EscapeLabelValue(in); got != want {
			t.Errorf("EscapeLabelValue(%q) = %q, want %q", in, got, want)
		}
	}
	if got := escapeHelp("a\\b\nc \"q\""); got != `a\\b\nc "q"` {
		t.Errorf("escapeHelp: %q", got)
	}
	f := families{}
	f.add("slate_info", 1, "version", "1\"2", "slot", "a")
	if got := string(f.write()); !strings.HasSuffix(got, "slate_info{slot=\"a\",version=\"1\\\"2\"} 1\n") {
		t.Errorf("labels sorted and escaped:\n%s", got)
	}
	for v, want := range map[float64]string{0: "0", 3: "3", 1772359200.25: "1772359200.25", -1.5: "-1.5"} {
		if got := formatValue(v); got != want {
			t.Errorf("formatValue(%v) = %s", v, got)
		}
	}
}

// Gather: a status with the rollbacks counted in the store; with no status
// (the ESP unreadable), what the state partition alone says, and the error.
func TestGather(t *testing.T) {
	store := history.Open(t.TempDir())
	s := Gather(freshStatus(), nil, store)
	if s.Rollbacks != 0 || len(s.Errors) != 0 || s.Err() != nil {
		t.Errorf("fresh node: %+v", s)
	}
	golden(t, "fresh.prom", Format(s))

	// Nothing readable but the state partition, which holds nothing yet.
	s = Gather(nil, errors.New("mounting the ESP: no such device"), store)
	got := string(Format(s))
	for _, want := range []string{"slate_tainted 0\n", "slate_logins_total 0\n", "slate_rollbacks_total 0\n", "slate_scrape_error 1\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("partial lacks %q:\n%s", want, got)
		}
	}
	for _, not := range []string{"slate_info", "slate_health", "slate_slot", "slate_config", "slate_boot_counted"} {
		if strings.Contains(got, not) {
			t.Errorf("partial has %s, which only the ESP and the boot record tell:\n%s", not, got)
		}
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "node status: mounting the ESP") {
		t.Errorf("Err: %v", err)
	}

	// The state partition's records: a taint, an update check.
	if _, err := record.MarkTainted(filepath.Join(store.Dir, record.TaintFileName), t0, hashA, "fw_cfg"); err != nil {
		t.Fatal(err)
	}
	if err := upgrade.WriteLastCheck(filepath.Join(store.Dir, upgrade.LastCheckFileName), upgrade.LastCheck{Time: t0, Result: upgrade.CheckUpToDate, Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	got = string(Format(Gather(nil, errors.New("no ESP"), store)))
	for _, want := range []string{"slate_tainted 1\n", "slate_tainted_since_timestamp_seconds 1772359200\n",
		"slate_update_last_check_success 1\n", `slate_update_last_check_info{result="up-to-date",version="1.0"} 1` + "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("partial lacks %q:\n%s", want, got)
		}
	}

	// A damaged update check is an error of the scrape; a damaged taint is
	// shown as tainted.
	os.WriteFile(filepath.Join(store.Dir, upgrade.LastCheckFileName), []byte("{"), 0o644)
	os.WriteFile(filepath.Join(store.Dir, record.TaintFileName), []byte("{"), 0o644)
	s = Gather(nil, nil, store)
	got = string(Format(s))
	if !strings.Contains(got, "slate_tainted 1\n") || strings.Contains(got, "slate_logins_total") || !strings.Contains(got, "slate_scrape_error 1\n") ||
		len(s.Errors) != 1 || !strings.Contains(s.Errors[0], "last update check: ") {
		t.Errorf("damaged records: %q\n%s", s.Errors, got)
	}
}
