package history

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
)

const panicLineText = "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"

// efiID is the record id efi-pstore gives part of dump count written at t.
func efiID(t time.Time, part, count int) uint64 {
	return (uint64(t.Unix())*100+uint64(part))*1000 + uint64(count)
}

// panicParts is what a kernel that panicked at boot leaves in efi-pstore:
// Part1 is the end of the log, Part2 the lines before.
func panicParts(boot int) (part1, part2 string) {
	part2 = fmt.Sprintf(`Panic#1 Part2
<5>[    0.000000] Linux version 6.1.0-31-cloud-amd64 (boot %d)
<6>[    0.000000] Command line: BOOT_IMAGE=/slate/b/vmlinuz slate.slot=b panic=10
<6>[    1.912345] Freeing unused kernel image (initmem) memory: 2960K
`, boot)
	part1 = `Panic#1 Part1
<6>[    2.104398] Run /sbin/init as init process
<0>[    2.310012] ` + panicLineText + `
<4>[    2.310345] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-31-cloud-amd64 #1  Debian 6.1.128-1
<4>[    2.310501] Call Trace:
<4>[    2.310502]  <TASK>
<4>[    2.310600]  dump_stack_lvl+0x44/0x5c
<4>[    2.310700]  panic+0x118/0x2ed
<4>[    2.310800]  do_exit.cold+0x15/0x15
<4>[    2.310900]  </TASK>
<0>[    2.311000] Kernel Offset: 0x2a00000 from 0xffffffff81000000
<0>[    2.311100] ---[ end Kernel panic - not syncing: ` + strings.TrimPrefix(panicLineText, "Kernel panic - not syncing: ") + ` ]---
`
	return part1, part2
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// archive writes a dump the way systemd-pstore (252+) keeps it:
// <archive>/<id without the last 5 digits>/<count>/dmesg-efi_pstore-<id>
// plus its dmesg.txt.
func archive(t *testing.T, root string, at time.Time, parts ...string) []string {
	t.Helper()
	var paths []string
	var dmesg strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		id := idStr(efiID(at, i+1, 1))
		p := filepath.Join(root, id[:len(id)-5], id[len(id)-3:], "dmesg-efi_pstore-"+id)
		write(t, p, parts[i])
		paths = append(paths, p)
		dmesg.WriteString(parts[i])
	}
	write(t, filepath.Join(filepath.Dir(paths[0]), "dmesg.txt"), dmesg.String())
	return paths
}

func idStr(n uint64) string { return fmt.Sprint(n) }

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

type fakeJournal struct {
	logs  map[string]string
	asked []string
}

func (f *fakeJournal) BootLog(_ context.Context, id string) ([]byte, error) {
	f.asked = append(f.asked, id)
	l, ok := f.logs[id]
	if !ok {
		return nil, errors.New("no such boot in the journal")
	}
	return []byte(l), nil
}

// esp is slot a good (running, 2.0, generation 2) and slot b out of tries
// (3.0, generation 3, written at written).
func esp(written time.Time) map[boot.Slot]*slots.Info {
	return map[boot.Slot]*slots.Info{
		boot.SlotA: {Slot: "a", State: slots.Good, EntryFile: "slate-a.conf", Generation: 2,
			Release: &boot.Release{Slot: "a", Version: "2.0"}},
		boot.SlotB: {Slot: "b", State: slots.Bad, EntryFile: "slate-b+0-3.conf", Generation: 3, Counting: true, TriesDone: 3,
			Entry:   &boot.Entry{Slot: "b", Generation: 3, Counting: true, Done: 3, Version: "3.0"},
			Release: &boot.Release{Slot: "b", Version: "3.0", Written: written}},
	}
}

func TestRollbackAfterKernelPanics(t *testing.T) {
	dir := t.TempDir()
	st := &Store{Dir: filepath.Join(dir, "slate"), Now: clock()}
	arch := filepath.Join(dir, "var-lib-systemd-pstore")
	live := filepath.Join(dir, "sys-fs-pstore")
	written := t0.Add(time.Hour)

	// A panic from before slot b was written belongs to another story.
	oldPart1, _ := panicParts(0)
	old := archive(t, arch, written.Add(-24*time.Hour), strings.Replace(oldPart1, "Attempted to kill init!", "old panic", 1))
	// Three tries, three panics: two moved by systemd-pstore, the last
	// still in the pstore filesystem (systemd-pstore did not run).
	var moved []string
	for i := 1; i <= 2; i++ {
		p1, p2 := panicParts(i)
		moved = append(moved, archive(t, arch, written.Add(time.Duration(i)*time.Minute), p1, p2)...)
	}
	p1, p2 := panicParts(3)
	at3 := written.Add(3 * time.Minute)
	livePaths := []string{
		filepath.Join(live, "dmesg-efi_pstore-"+idStr(efiID(at3, 1, 1))),
		filepath.Join(live, "dmesg-efi_pstore-"+idStr(efiID(at3, 2, 1))),
	}
	write(t, livePaths[0], p1)
	write(t, livePaths[1], p2)
	write(t, filepath.Join(live, "console-ramoops-0"), "not a dmesg record\n")

	src := Sources{PstoreDirs: []string{arch, live}, Journal: &fakeJournal{}}
	made, err := st.NoteRollbacks(esp(written), boot.SlotA, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(made) != 1 {
		t.Fatalf("%d rollbacks recorded, want 1", len(made))
	}
	r := made[0]
	rdir := filepath.Join(st.Dir, "rollbacks", "3-b")
	if r.Dir != rdir || r.FromSlot != "b" || r.FromVersion != "3.0" || r.FromGeneration != 3 || r.ToSlot != "a" || r.ToVersion != "2.0" {
		t.Errorf("rollback %+v", r)
	}
	if want := "kernel panic: " + panicLineText; r.Cause != want {
		t.Errorf("cause %q, want %q", r.Cause, want)
	}
	if len(r.Boots) != 0 {
		t.Errorf("boots %v: none was recorded", r.Boots)
	}

	// The records are moved in, the old one stays, systemd's emptied
	// directories and their dmesg.txt go.
	for _, p := range append(moved, livePaths...) {
		if exists(p) {
			t.Errorf("%s still there", p)
		}
		if !exists(filepath.Join(rdir, "pstore", filepath.Base(p))) {
			t.Errorf("%s not kept", filepath.Base(p))
		}
		if exists(filepath.Dir(filepath.Dir(p))) && filepath.Dir(p) != live {
			t.Errorf("emptied archive directory %s left", filepath.Dir(filepath.Dir(p)))
		}
	}
	if !exists(old[0]) || !exists(filepath.Join(filepath.Dir(old[0]), "dmesg.txt")) {
		t.Error("a dump older than the slot was taken")
	}
	if !exists(filepath.Join(live, "console-ramoops-0")) {
		t.Error("a record that is not dmesg was taken")
	}
	wantFiles := []string{"console.txt", "pstore/" + filepath.Base(livePaths[0]), "pstore/" + filepath.Base(livePaths[1])}
	for _, p := range moved {
		wantFiles = append(wantFiles, "pstore/"+filepath.Base(p))
	}
	slices.Sort(wantFiles)
	if !slices.Equal(r.Files, wantFiles) {
		t.Errorf("files %q, want %q", r.Files, wantFiles)
	}
	if d := st.RollbackDir(&Rollback{FromGeneration: 3, FromSlot: "b"}); d != rdir {
		t.Errorf("RollbackDir %s, want %s", d, rdir)
	}
	if exists(rdir + ".partial") {
		t.Error(".partial left")
	}

	// console.txt reads top to bottom: three dumps in time order, each from
	// "Linux version" to "end Kernel panic".
	console, err := os.ReadFile(filepath.Join(rdir, "console.txt"))
	if err != nil {
		t.Fatal(err)
	}
	c := string(console)
	if strings.Contains(c, "Part1") || strings.Contains(c, "<0>") || strings.Contains(c, "old panic") {
		t.Errorf("console.txt has headers, syslog priorities or the old dump:\n%s", c)
	}
	last := -1
	for i := 1; i <= 3; i++ {
		for _, line := range []string{
			fmt.Sprintf("==== Panic#1 at %s (pstore efi_pstore, 2 part(s)) ====", written.Add(time.Duration(i)*time.Minute).Format(time.RFC3339)),
			fmt.Sprintf("[    0.000000] Linux version 6.1.0-31-cloud-amd64 (boot %d)", i),
			"[    1.912345] Freeing unused kernel image",
			"[    2.310012] " + panicLineText,
			"[    2.311100] ---[ end Kernel panic",
		} {
			j := strings.Index(c[last+1:], line)
			if j < 0 {
				t.Fatalf("console.txt: %q missing after byte %d:\n%s", line, last, c)
			}
			last += 1 + j
		}
	}

	// A second look changes nothing.
	before, _ := os.ReadFile(filepath.Join(rdir, "rollback.json"))
	made, err = st.NoteRollbacks(esp(written), boot.SlotA, src)
	if err != nil || len(made) != 0 {
		t.Fatalf("second call: %d rollbacks, %v", len(made), err)
	}
	after, _ := os.ReadFile(filepath.Join(rdir, "rollback.json"))
	if string(before) != string(after) {
		t.Error("second call rewrote rollback.json")
	}
	if !exists(old[0]) {
		t.Error("second call took the old dump")
	}

	lr, err := st.LastRollback()
	if err != nil {
		t.Fatal(err)
	}
	if lr == nil || lr.Cause != r.Cause || lr.Dir != rdir {
		t.Fatalf("LastRollback %+v", lr)
	}
	tail := strings.Split(strings.TrimSuffix(lr.ConsoleTail, "\n"), "\n")
	if len(tail) != ConsoleTailLines || !strings.Contains(lr.ConsoleTail, panicLineText) || !strings.HasSuffix(tail[len(tail)-1], "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100") {
		t.Errorf("console tail (%d lines):\n%s", len(tail), lr.ConsoleTail)
	}
}

func TestRollbackAfterFailedHealthChecks(t *testing.T) {
	dir := t.TempDir()
	st := &Store{Dir: filepath.Join(dir, "slate"), Now: clock()}
	const reason = "failed units: web.service (required)"
	// Boot 0 ran 2.0 on slot a; boots 1-3 tried 3.0 on slot b: two said
	// bad and kept their journal, the third ended during the check.
	if err := st.BeginBoot(Boot{ID: bootID(0), Slot: "a", Version: "2.0", Generation: 2, Entry: "slate-a.conf"}); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishBoot(bootID(0), ResultGood, "fine"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		b := Boot{ID: bootID(i), Slot: "b", Version: "3.0", Generation: 3, Entry: fmt.Sprintf("slate-b+%d-%d.conf", 3-i, i), Counting: true, TriesLeft: 3 - i}
		if err := st.BeginBoot(b); err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			if err := st.FinishBoot(b.ID, ResultBad, reason); err != nil {
				t.Fatal(err)
			}
			if err := st.SaveJournal(b.ID, fmt.Appendf(nil, "[    5.000000] web.service: Failed (try %d)\n", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	j := &fakeJournal{logs: map[string]string{bootID(3): "[    6.000000] slate[400]: checking health (try 3)"}}
	src := Sources{PstoreDirs: []string{filepath.Join(dir, "none")}, Journal: j}
	made, err := st.NoteRollbacks(esp(time.Time{}), boot.SlotA, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(made) != 1 {
		t.Fatalf("%d rollbacks", len(made))
	}
	r := made[0]
	if r.Cause != "health check failed: "+reason {
		t.Errorf("cause %q", r.Cause)
	}
	if !slices.Equal(r.Boots, []string{bootID(1), bootID(2), bootID(3)}) {
		t.Errorf("boots %v", r.Boots)
	}
	if !slices.Equal(j.asked, []string{bootID(3)}) {
		t.Errorf("journal asked for %v, want only the boot without journal.txt", j.asked)
	}
	if !slices.Equal(r.Files, []string{"journal.txt"}) {
		t.Errorf("files %v", r.Files)
	}
	journal, err := os.ReadFile(filepath.Join(r.Dir, "journal.txt"))
	if err != nil {
		t.Fatal(err)
	}
	jt := string(journal)
	i1 := strings.Index(jt, "web.service: Failed (try 1)")
	i2 := strings.Index(jt, "web.service: Failed (try 2)")
	i3 := strings.Index(jt, "checking health (try 3)")
	if i1 < 0 || i2 < i1 || i3 < i2 || !strings.Contains(jt, "==== boot "+bootID(1)+": 3.0 slate-b+2-1.conf") || !strings.Contains(jt, "health bad: "+reason) {
		t.Errorf("journal.txt:\n%s", jt)
	}
	var onDisk Rollback
	readJSON(t, filepath.Join(r.Dir, "rollback.json"), &onDisk)
	if onDisk.Cause != r.Cause || onDisk.Dir != "" || onDisk.ConsoleTail != "" || !onDisk.Time.Equal(r.Time) {
		t.Errorf("rollback.json %+v", onDisk)
	}

	lr, err := st.LastRollback()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(lr.ConsoleTail, "checking health (try 3)\n") {
		t.Errorf("tail from journal.txt: %q", lr.ConsoleTail)
	}
}

func TestRollbackCauses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		result Result // of the one boot of 3.0 recorded; "" none
		want   string
	}{
		{"never reached", "", "no boot of 3.0 reached the health check"},
		{"did not finish", ResultChecking, "the health check of 3.0 did not finish (boot " + bootID(1) + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &Store{Dir: t.TempDir(), Now: clock()}
			if tc.result != "" {
				if err := st.BeginBoot(Boot{ID: bootID(1), Slot: "b", Version: "3.0", Generation: 3}); err != nil {
					t.Fatal(err)
				}
			}
			made, err := st.NoteRollbacks(esp(time.Time{}), boot.SlotA, Sources{PstoreDirs: []string{}})
			if err != nil || len(made) != 1 {
				t.Fatalf("%d rollbacks, %v", len(made), err)
			}
			if made[0].Cause != tc.want {
				t.Errorf("cause %q, want %q", made[0].Cause, tc.want)
			}
			if tc.result == "" && len(made[0].Files) != 0 {
				t.Errorf("files %v", made[0].Files)
			}
		})
	}
}

func TestNoRollback(t *testing.T) {
	st := &Store{Dir: t.TempDir()}
	infos := esp(time.Time{})
	// Running the bad slot is not a rollback (the init deals with that).
	if made, err := st.NoteRollbacks(infos, boot.SlotB, Sources{PstoreDirs: []string{}}); err != nil || len(made) != 0 {
		t.Fatalf("running the bad slot: %d, %v", len(made), err)
	}
	for _, state := range []slots.State{slots.Good, slots.Trying, slots.Empty} {
		infos[boot.SlotB].State = state
		if made, err := st.NoteRollbacks(infos, boot.SlotA, Sources{PstoreDirs: []string{}}); err != nil || len(made) != 0 {
			t.Fatalf("slot b %s: %d, %v", state, len(made), err)
		}
	}
	if lr, err := st.LastRollback(); lr != nil || err != nil {
		t.Errorf("LastRollback %v, %v", lr, err)
	}
	if exists(filepath.Join(st.Dir, "rollbacks")) {
		t.Error("rollbacks directory made for nothing")
	}
}

// A run cut short after moving the pstore records into the .partial
// directory: the next run finishes the record with them.
func TestRollbackResumesPartial(t *testing.T) {
	st := &Store{Dir: t.TempDir(), Now: clock()}
	p1, p2 := panicParts(1)
	at := t0.Add(time.Hour)
	stage := filepath.Join(st.Dir, "rollbacks", "3-b.partial", "pstore")
	write(t, filepath.Join(stage, "dmesg-efi-"+idStr(efiID(at, 1, 1))), p1)
	write(t, filepath.Join(stage, "dmesg-efi-"+idStr(efiID(at, 2, 1))), p2)
	made, err := st.NoteRollbacks(esp(t0), boot.SlotA, Sources{PstoreDirs: []string{filepath.Join(st.Dir, "empty")}})
	if err != nil || len(made) != 1 {
		t.Fatalf("%d rollbacks, %v", len(made), err)
	}
	if made[0].Cause != "kernel panic: "+panicLineText || len(made[0].Files) != 3 {
		t.Errorf("rollback %+v", made[0])
	}
	if exists(filepath.Join(st.Dir, "rollbacks", "3-b.partial")) {
		t.Error(".partial left")
	}
}

func TestPruneRollbacks(t *testing.T) {
	st := &Store{Dir: t.TempDir(), Now: clock()}
	infos := esp(time.Time{})
	for g := 3; g < 3+MaxRollbacks+2; g++ {
		infos[boot.SlotB].Generation = g
		if made, err := st.NoteRollbacks(infos, boot.SlotA, Sources{PstoreDirs: []string{}}); err != nil || len(made) != 1 {
			t.Fatalf("generation %d: %d, %v", g, len(made), err)
		}
	}
	rs, err := st.Rollbacks()
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != MaxRollbacks || rs[0].FromGeneration != 5 || rs[len(rs)-1].FromGeneration != 3+MaxRollbacks+1 {
		t.Fatalf("%d kept, generations %d..%d", len(rs), rs[0].FromGeneration, rs[len(rs)-1].FromGeneration)
	}
	lr, err := st.LastRollback()
	if err != nil || lr.FromGeneration != 3+MaxRollbacks+1 || lr.ConsoleTail != "" {
		t.Fatalf("LastRollback %+v, %v", lr, err)
	}
}

func TestGroupDumps(t *testing.T) {
	dir := t.TempDir()
	at := t0
	// One boot oopsed (dump 1, three parts, the third a second later) then
	// panicked (dump 2); the next boot panicked too (count back to 1).
	files := map[string]string{
		"dmesg-efi_pstore-" + idStr(efiID(at, 1, 1)):                               "Oops#1 Part1\n<4>[   10.3] oops line 3\n",
		"dmesg-efi_pstore-" + idStr(efiID(at, 2, 1)):                               "Oops#1 Part2\n<4>[   10.2] oops line 2\n",
		"dmesg-efi_pstore-" + idStr(efiID(at.Add(time.Second), 3, 1)):              "Oops#1 Part3\n<4>[   10.1] oops line 1\n",
		"dmesg-efi_pstore-" + idStr(efiID(at.Add(time.Second), 1, 2)):              "Panic#2 Part1\n<0>[   11.0] Kernel panic - not syncing: Fatal exception\n",
		"dmesg-efi_pstore-" + idStr(efiID(at.Add(2*time.Minute), 1, 1)):            "Panic#1 Part1\n<0>[    3.0] " + panicLineText + "\n",
		"dmesg-efi_pstore-" + idStr(efiID(at.Add(2*time.Minute), 2, 1)) + ".enc.z": "\x78\x9c binary",
		"dmesg.txt": "systemd's copy, ignored\n",
	}
	for name, content := range files {
		write(t, filepath.Join(dir, name), content)
	}
	got, err := consoleText(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := `==== Oops#1 at 2025-03-01T12:00:00Z (pstore efi_pstore, 3 part(s)) ====
[   10.1] oops line 1
[   10.2] oops line 2
[   10.3] oops line 3
==== Panic#2 at 2025-03-01T12:00:01Z (pstore efi_pstore, 1 part(s)) ====
[   11.0] Kernel panic - not syncing: Fatal exception
==== Panic#1 at 2025-03-01T12:02:00Z (pstore efi_pstore, 2 part(s)) ====
[slate: dmesg-efi_pstore-` + idStr(efiID(at.Add(2*time.Minute), 2, 1)) + `.enc.z is compressed and the kernel could not decode it; kept as is]
[    3.0] ` + panicLineText + "\n"
	if string(got) != want {
		t.Errorf("console:\n%s\nwant:\n%s", got, want)
	}
	if l := panicLine(got); l != panicLineText {
		t.Errorf("panic line %q", l)
	}
}
