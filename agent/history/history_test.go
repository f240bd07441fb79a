package history

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// clock returns a Now that starts at t0 and moves a minute per call.
func clock() func() time.Time {
	n := 0
	return func() time.Time {
		n++
		return t0.Add(time.Duration(n) * time.Minute)
	}
}

func bootID(n int) string { return fmt.Sprintf("%032x", 0xb007_0000+n) }

func TestBootLifecycle(t *testing.T) {
	st := &Store{Dir: t.TempDir(), Now: clock()}
	dashed := "0123ABCD-89ab-cdef-0123-456789abcdef"
	id := "0123abcd89abcdef0123456789abcdef"
	err := st.BeginBoot(Boot{ID: dashed, Slot: "b", Version: "2.0", Generation: 4, Entry: "slate-b+2-1.conf", Counting: true, TriesLeft: 2, Result: ResultGood, Reason: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Boot(id)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID != id || b.Result != ResultChecking || b.Reason != "" || b.Started.IsZero() || !b.Finished.IsZero() || b.Entry != "slate-b+2-1.conf" {
		t.Fatalf("after BeginBoot: %+v", b)
	}
	if err := st.FinishBoot(id, ResultBad, "failed units: web.service (required)"); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveJournal(dashed, []byte("[    1.000000] hello\n")); err != nil {
		t.Fatal(err)
	}
	b, err = st.Boot(dashed)
	if err != nil {
		t.Fatal(err)
	}
	if b.Result != ResultBad || b.Reason != "failed units: web.service (required)" || !b.Finished.After(b.Started) {
		t.Fatalf("after FinishBoot: %+v", b)
	}
	raw, err := os.ReadFile(filepath.Join(st.Dir, "boots", id, "boot.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"id": "` + id + `"`, `"slot": "b"`, `"generation": 4`, `"entry": "slate-b+2-1.conf"`, `"counting": true`, `"triesLeft": 2`, `"result": "bad"`, `"finished"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("boot.json lacks %s:\n%s", want, raw)
		}
	}
	if j, _ := os.ReadFile(filepath.Join(st.Dir, "boots", id, "journal.txt")); string(j) != "[    1.000000] hello\n" {
		t.Errorf("journal.txt = %q", j)
	}
	leftovers, _ := filepath.Glob(filepath.Join(st.Dir, "boots", id, ".*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	if err := st.FinishBoot(id, ResultChecking, ""); err == nil {
		t.Error("FinishBoot accepted result checking")
	}
	if err := st.BeginBoot(Boot{ID: "../../etc"}); err == nil {
		t.Error("BeginBoot accepted a path as boot id")
	}
	if err := st.SaveJournal(bootID(9), []byte("x")); err == nil {
		t.Error("SaveJournal accepted a boot without a record")
	}
}

func TestPruneBoots(t *testing.T) {
	st := &Store{Dir: t.TempDir()}
	for i := range 25 {
		if err := st.BeginBoot(Boot{ID: bootID(i), Slot: "a", Started: t0.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	// The current boot is kept even when its clock says it is oldest.
	cur := bootID(99)
	if err := st.BeginBoot(Boot{ID: cur, Slot: "a", Started: t0.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	boots, err := st.Boots()
	if err != nil {
		t.Fatal(err)
	}
	if len(boots) != MaxBoots {
		t.Fatalf("%d boots kept, want %d", len(boots), MaxBoots)
	}
	if boots[0].ID != cur || boots[1].ID != bootID(6) || boots[len(boots)-1].ID != bootID(24) {
		t.Errorf("kept %s, %s ... %s; want the current boot and the newest", boots[0].ID, boots[1].ID, boots[len(boots)-1].ID)
	}
}

func TestJournalCapped(t *testing.T) {
	st := &Store{Dir: t.TempDir()}
	id := bootID(1)
	if err := st.BeginBoot(Boot{ID: id}); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	for i := 0; log.Len() < MaxJournal+MaxJournal/2; i++ {
		fmt.Fprintf(&log, "[%12d.000000] line %d of a long journal\n", i, i)
	}
	if err := st.SaveJournal(id, log.Bytes()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(st.Dir, "boots", id, "journal.txt"))
	if err != nil {
		t.Fatal(err)
	}
	first, rest, _ := bytes.Cut(got, []byte("\n"))
	if !bytes.HasPrefix(first, []byte("[slate: the first ")) || len(rest) > MaxJournal {
		t.Fatalf("capped journal starts %q and keeps %d bytes", first, len(rest))
	}
	if !bytes.HasSuffix(log.Bytes(), rest) || !bytes.HasPrefix(rest, []byte("[")) {
		t.Error("capped journal is not the end of the log from a line start")
	}
	want := fmt.Sprintf("[slate: the first %d bytes of this log were cut]", log.Len()-len(rest))
	if string(first) != want {
		t.Errorf("note %q, want %q", first, want)
	}

	tw := &tailWriter{max: MaxJournal}
	for chunk := range bytes.Lines(log.Bytes()) {
		tw.Write(chunk)
	}
	if !bytes.Equal(tw.bytes(), got) {
		t.Error("tailWriter keeps something else than SaveJournal")
	}
}

func TestJournalctl(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "journalctl")
	args := filepath.Join(dir, "args")
	err := os.WriteFile(script, []byte(`#!/bin/sh
echo "$@" > `+args+`
if [ "$2" = 00000000000000000000000000000bad ]; then
	echo "Data from the specified boot (00000000000000000000000000000bad) is not available: No such boot ID in journal" >&2
	exit 1
fi
echo "[    0.000000] kernel: Linux version 6.1.0"
`), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	j := Journalctl{Path: script}
	out, err := j.BootLog(t.Context(), "0123abcd-89ab-cdef-0123-456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "[    0.000000] kernel: Linux version 6.1.0\n" {
		t.Errorf("output %q", out)
	}
	if a, _ := os.ReadFile(args); string(a) != "-b 0123abcd89abcdef0123456789abcdef -o short-monotonic --no-pager\n" {
		t.Errorf("journalctl ran with %q", a)
	}
	_, err = j.BootLog(t.Context(), "00000000000000000000000000000bad")
	if err == nil || !strings.Contains(err.Error(), "No such boot ID in journal") {
		t.Errorf("error %v, want journalctl's message", err)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}
