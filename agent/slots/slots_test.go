package slots

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot"
)

// newESP makes an ESP directory with loader/entries, as the builder leaves it.
func newESP(t *testing.T) *ESP {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, boot.EntriesDir), 0o755); err != nil {
		t.Fatal(err)
	}
	return Open(dir)
}

func put(t *testing.T, e *ESP, rel, content string) {
	t.Helper()
	p := filepath.Join(e.Dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func entry(s boot.Slot, gen int, name string) boot.Entry {
	en, ok := boot.ParseEntryName(name)
	if !ok {
		panic(name)
	}
	en.Generation = gen
	en.Title = "slate v" + string(s)
	en.Linux, en.Initrd = s.KernelPath(), s.InitrdPath()
	en.Options = "console=ttyS0 slate.slot=" + string(s) + " slate.roothash=" + strings.Repeat(string(s), 64) + " slate.version=v" + string(s)
	return en
}

func marshal(en boot.Entry) string { return string(en.Marshal()) }

func release(s boot.Slot) boot.Release {
	return boot.Release{Slot: s, Version: "v" + string(s), RootHash: strings.Repeat(string(s), 64),
		Created: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// putSlot writes an entry file named name and the slot's kernel, initramfs
// and release.json.
func putSlot(t *testing.T, e *ESP, s boot.Slot, gen int, name string) boot.Entry {
	t.Helper()
	en := entry(s, gen, name)
	put(t, e, boot.EntriesDir+"/"+name, string(en.Marshal()))
	put(t, e, s.ESPDir()+"/vmlinuz", "kernel "+string(s))
	put(t, e, s.ESPDir()+"/initramfs", "initramfs "+string(s))
	put(t, e, s.ESPDir()+"/release.json", string(release(s).Marshal()))
	return en
}

// listDir returns the names in dir (relative to the ESP), sorted.
func listDir(t *testing.T, e *ESP, rel string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(e.Dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func read(t *testing.T, e *ESP) map[boot.Slot]*Info {
	t.Helper()
	m, err := e.Read()
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[boot.SlotA] == nil || m[boot.SlotB] == nil {
		t.Fatalf("Read gave %v, want both slots", m)
	}
	return m
}

func TestStates(t *testing.T) {
	for _, c := range []struct {
		name        string // entry file of slot b; "" for none
		state       State
		counting    bool
		left, done  int
		wantProblem bool
	}{
		{"", Empty, false, 0, 0, false},
		{"slate-b.conf", Good, false, 0, 0, false},
		{"slate-b+3.conf", Trying, true, 3, 0, false},
		{"slate-b+2-1.conf", Trying, true, 2, 1, false},
		{"slate-b+0-3.conf", Bad, true, 0, 3, false},
		{"slate-b+0.conf", Bad, true, 0, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newESP(t)
			putSlot(t, e, boot.SlotA, 1, "slate-a.conf")
			if c.name != "" {
				putSlot(t, e, boot.SlotB, 2, c.name)
			}
			// Not slate entries: ignored.
			put(t, e, boot.EntriesDir+"/other.conf", "title other\nlinux /x\n")
			put(t, e, boot.EntriesDir+"/slate-c.conf", "title c\nlinux /x\n")
			put(t, e, boot.EntriesDir+"/slate-b.conf.bak", "title old\nlinux /x\n")
			put(t, e, boot.EntriesDir+"/.slate-tmp-slate-b+3.conf.tmp", "half")

			m := read(t, e)
			a := m[boot.SlotA]
			if a.State != Good || a.EntryFile != "slate-a.conf" || a.Generation != 1 || len(a.Problems) > 0 {
				t.Errorf("slot a: %+v", a)
			}
			b := m[boot.SlotB]
			if b.Slot != boot.SlotB || b.State != c.state || b.Counting != c.counting || b.TriesLeft != c.left || b.TriesDone != c.done {
				t.Errorf("slot b: %+v, want state %s counting %v left %d done %d", b, c.state, c.counting, c.left, c.done)
			}
			if len(b.Problems) > 0 {
				t.Errorf("problems: %q", b.Problems)
			}
			if c.name == "" {
				if b.Entry != nil || b.EntryFile != "" || b.Release != nil {
					t.Errorf("empty slot has entry or release: %+v", b)
				}
				return
			}
			if b.EntryFile != c.name || b.Generation != 2 || b.Entry == nil || b.Entry.Version != "vb" {
				t.Errorf("slot b entry: %+v %+v", b, b.Entry)
			}
			if b.Release == nil || b.Release.Version != "vb" {
				t.Errorf("slot b release: %+v", b.Release)
			}
		})
	}
}

func TestInfoJSON(t *testing.T) {
	e := newESP(t)
	putSlot(t, e, boot.SlotB, 4, "slate-b+2-1.conf")
	b, err := json.Marshal(read(t, e)[boot.SlotB])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"slot":"b"`, `"state":"trying"`, `"entry":"slate-b+2-1.conf"`, `"generation":4`,
		`"counting":true`, `"triesLeft":2`, `"triesDone":1`, `"release":{"slot":"b","version":"vb"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s\nlacks %s", b, want)
		}
	}
}

func TestProblems(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, e *ESP)
		state State
		gen   int
		want  []string
	}{
		{"two entries, newest wins", func(t *testing.T, e *ESP) {
			putSlot(t, e, boot.SlotB, 5, "slate-b+3.conf")
			putSlot(t, e, boot.SlotB, 2, "slate-b.conf")
		}, Trying, 5, []string{"slot b has 2 boot entries (slate-b+3.conf, slate-b.conf); there must be one"}},
		{"two entries, other order", func(t *testing.T, e *ESP) {
			putSlot(t, e, boot.SlotB, 2, "slate-b+3.conf")
			putSlot(t, e, boot.SlotB, 5, "slate-b.conf")
		}, Good, 5, []string{"slot b has 2 boot entries"}},
		{"missing kernel and initramfs", func(t *testing.T, e *ESP) {
			putSlot(t, e, boot.SlotB, 2, "slate-b.conf")
			os.Remove(filepath.Join(e.Dir, "slate/b/vmlinuz"))
			os.Remove(filepath.Join(e.Dir, "slate/b/initramfs"))
		}, Good, 2, []string{"slate-b.conf: kernel /slate/b/vmlinuz: missing", "slate-b.conf: initramfs /slate/b/initramfs: missing"}},
		{"missing release", func(t *testing.T, e *ESP) {
			putSlot(t, e, boot.SlotB, 2, "slate-b.conf")
			os.Remove(filepath.Join(e.Dir, "slate/b/release.json"))
		}, Good, 2, []string{"slate/b/release.json: missing"}},
		{"unreadable release", func(t *testing.T, e *ESP) {
			putSlot(t, e, boot.SlotB, 2, "slate-b.conf")
			put(t, e, "slate/b/release.json", "{not json")
		}, Good, 2, []string{"slate/b/release.json: invalid character"}},
		{"release of the other slot", func(t *testing.T, e *ESP) {
			putSlot(t, e, boot.SlotB, 2, "slate-b.conf")
			put(t, e, "slate/b/release.json", string(release(boot.SlotA).Marshal()))
		}, Good, 2, []string{`slate/b/release.json: says slot "a"`, "slate-b.conf has slate.roothash=bbbb", "slate-b.conf has slate.version=vb, but slate/b/release.json says va"}},
		{"unparseable entry", func(t *testing.T, e *ESP) {
			put(t, e, boot.EntriesDir+"/slate-b+1.conf", "title x\nversion seven\nlinux /x\n")
		}, Empty, 0, []string{`loader/entries/slate-b+1.conf: slate-b+1.conf: version "seven" is not a generation number`}},
		{"files without an entry", func(t *testing.T, e *ESP) {
			put(t, e, "slate/b/vmlinuz", "k")
		}, Empty, 0, []string{"slate/b holds files but the slot has no boot entry (an interrupted upgrade?)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newESP(t)
			putSlot(t, e, boot.SlotA, 1, "slate-a.conf")
			c.setup(t, e)
			m := read(t, e)
			b := m[boot.SlotB]
			if b.State != c.state || b.Generation != c.gen {
				t.Errorf("state %s generation %d, want %s %d", b.State, b.Generation, c.state, c.gen)
			}
			got := strings.Join(b.Problems, "\n")
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("problems:\n%s\nlack %q", got, w)
				}
			}
			if len(b.Problems) < len(c.want) {
				t.Errorf("problems %q, want %d", b.Problems, len(c.want))
			}
			if len(m[boot.SlotA].Problems) > 0 {
				t.Errorf("slot a problems: %q", m[boot.SlotA].Problems)
			}
		})
	}
}

// A Secure Boot slot's entry boots its UKI: no kernel or initramfs to check,
// but the UKI must be there.
func TestUKIEntry(t *testing.T) {
	e := newESP(t)
	putSlot(t, e, boot.SlotA, 1, "slate-a.conf")
	en := entry(boot.SlotB, 2, "slate-b.conf")
	en.Linux, en.Initrd, en.EFI = "", "", boot.SlotB.UKIPath()
	put(t, e, boot.EntriesDir+"/slate-b.conf", marshal(en))
	put(t, e, "slate/b/uki.efi", "uki")
	put(t, e, "slate/b/release.json", string(release(boot.SlotB).Marshal()))
	if b := read(t, e)[boot.SlotB]; b.State != Good || len(b.Problems) > 0 || b.Entry.EFI != "/slate/b/uki.efi" {
		t.Errorf("slot b: %s %q %+v", b.State, b.Problems, b.Entry)
	}
	os.Remove(filepath.Join(e.Dir, "slate/b/uki.efi"))
	if b := read(t, e)[boot.SlotB]; strings.Join(b.Problems, "\n") != "slate-b.conf: UKI /slate/b/uki.efi: missing" {
		t.Errorf("missing UKI: problems %q", b.Problems)
	}
	if _, err := e.Promote(boot.SlotB); err == nil || !strings.Contains(err.Error(), "/slate/b/uki.efi is missing") {
		t.Errorf("Promote without the UKI: %v", err)
	}
}

func TestNotMounted(t *testing.T) {
	e := Open(t.TempDir()) // an empty mount point
	if _, err := e.Read(); err == nil || !strings.Contains(err.Error(), "no loader/entries directory: is the ESP mounted there?") {
		t.Errorf("Read: %v", err)
	}
	if _, err := e.WriteFile("slate/b/vmlinuz", strings.NewReader("k")); err == nil {
		t.Error("WriteFile wrote into an unmounted ESP")
	}
	if err := e.WriteEntry(entry(boot.SlotB, 1, "slate-b.conf")); err == nil {
		t.Error("WriteEntry wrote into an unmounted ESP")
	}
	if _, err := os.Stat(filepath.Join(e.Dir, "slate")); err == nil {
		t.Error("created slate/ on an unmounted ESP")
	}
}

func TestNextGeneration(t *testing.T) {
	e := newESP(t)
	next := func() int {
		t.Helper()
		g, err := e.NextGeneration()
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	if g := next(); g != 1 {
		t.Errorf("no entries: %d, want 1", g)
	}
	putSlot(t, e, boot.SlotA, 3, "slate-a.conf")
	if g := next(); g != 4 {
		t.Errorf("a at 3: %d, want 4", g)
	}
	putSlot(t, e, boot.SlotB, 9, "slate-b+0-3.conf") // a bad entry still counts
	if g := next(); g != 10 {
		t.Errorf("b at 9: %d, want 10", g)
	}
	// Generations compare as numbers, not as file text.
	putSlot(t, e, boot.SlotA, 10, "slate-a.conf")
	if g := next(); g != 11 {
		t.Errorf("a at 10: %d, want 11", g)
	}
	put(t, e, boot.EntriesDir+"/slate-b.conf", "title x\nversion 9x\nlinux /x\n")
	if _, err := e.NextGeneration(); err == nil || !strings.Contains(err.Error(), "slate-b.conf") {
		t.Errorf("unparseable entry: %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	e := newESP(t)
	// Leftovers of an interrupted write, and an unrelated file.
	put(t, e, "slate/b/.slate-tmp-vmlinuz.tmp", "half a kernel")
	put(t, e, "slate/b/.slate-tmp-initramfs.tmp", "half an initramfs")
	put(t, e, "slate/b/notes", "keep")

	n, err := e.WriteFile("slate/b/vmlinuz", strings.NewReader("new kernel"))
	if err != nil || n != 10 {
		t.Fatalf("WriteFile: %d, %v", n, err)
	}
	if got := listDir(t, e, "slate/b"); !slices.Equal(got, []string{"notes", "vmlinuz"}) {
		t.Errorf("slate/b: %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(e.Dir, "slate/b/vmlinuz")); string(b) != "new kernel" {
		t.Errorf("content %q", b)
	}

	// A failing stream (a layer whose digest is wrong fails at its end)
	// leaves the old file and no temporary file.
	r := io.MultiReader(strings.NewReader("bad bytes"), errReader{errors.New("blob has digest sha256:0000")})
	if _, err := e.WriteFile("slate/b/vmlinuz", r); err == nil || !strings.Contains(err.Error(), "writing slate/b/vmlinuz on the ESP: blob has digest") {
		t.Errorf("failing reader: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.Dir, "slate/b/vmlinuz")); string(b) != "new kernel" {
		t.Errorf("content after a failed write: %q", b)
	}
	if got := listDir(t, e, "slate/b"); !slices.Equal(got, []string{"notes", "vmlinuz"}) {
		t.Errorf("slate/b after a failed write: %q", got)
	}

	// New directories are made.
	if _, err := e.WriteFile("slate/c/d/f", strings.NewReader("x")); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"../outside", "/etc/passwd", "slate/../../x"} {
		if _, err := e.WriteFile(bad, strings.NewReader("x")); err == nil {
			t.Errorf("%s: written", bad)
		}
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestTempNamesAreNotEntries(t *testing.T) {
	for _, name := range []string{"slate-a.conf", "slate-b+3.conf", "slate-b+2-1.conf"} {
		tmp := tmpPrefix + name + tmpSuffix
		if strings.HasSuffix(tmp, ".conf") {
			t.Errorf("%s ends in .conf: systemd-boot would read it", tmp)
		}
		if _, ok := boot.ParseEntryName(tmp); ok {
			t.Errorf("%s parses as an entry", tmp)
		}
		if !isTemp(tmp) {
			t.Errorf("%s not recognised as temporary", tmp)
		}
	}
}

func TestWriteEntry(t *testing.T) {
	e := newESP(t)
	a := putSlot(t, e, boot.SlotA, 1, "slate-a.conf")
	putSlot(t, e, boot.SlotB, 2, "slate-b.conf")
	put(t, e, boot.EntriesDir+"/slate-b+1-2.conf", marshal(entry(boot.SlotB, 1, "slate-b+1-2.conf")))
	put(t, e, boot.EntriesDir+"/.slate-tmp-slate-b+3.conf.tmp", "half")
	put(t, e, boot.EntriesDir+"/other.conf", "not ours")

	en := entry(boot.SlotB, 3, "slate-b+3.conf")
	if err := e.WriteEntry(en); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, e, boot.EntriesDir); !slices.Equal(got, []string{"other.conf", "slate-a.conf", "slate-b+3.conf"}) {
		t.Errorf("entries: %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(e.Dir, boot.EntriesDir, "slate-b+3.conf")); string(b) != string(en.Marshal()) {
		t.Errorf("entry:\n%s\nwant\n%s", b, en.Marshal())
	}
	if b, _ := os.ReadFile(filepath.Join(e.Dir, boot.EntriesDir, "slate-a.conf")); string(b) != string(a.Marshal()) {
		t.Errorf("slot a's entry changed:\n%s", b)
	}
	m := read(t, e)
	if b := m[boot.SlotB]; b.State != Trying || b.Generation != 3 || len(b.Problems) > 0 {
		t.Errorf("slot b: %+v", b)
	}

	// Rewriting under the same name replaces it.
	en.Generation = 4
	if err := e.WriteEntry(en); err != nil {
		t.Fatal(err)
	}
	if m := read(t, e); m[boot.SlotB].Generation != 4 || len(m[boot.SlotB].Problems) > 0 {
		t.Errorf("after rewrite: %+v", m[boot.SlotB])
	}
}

func TestRetireRemoveFiles(t *testing.T) {
	e := newESP(t)
	putSlot(t, e, boot.SlotA, 1, "slate-a.conf")
	putSlot(t, e, boot.SlotB, 2, "slate-b.conf")
	put(t, e, boot.EntriesDir+"/slate-b+0-3.conf", marshal(entry(boot.SlotB, 1, "slate-b+0-3.conf")))
	put(t, e, "slate/b/.slate-tmp-vmlinuz.tmp", "half")

	if err := e.Retire(boot.SlotB); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, e, boot.EntriesDir); !slices.Equal(got, []string{"slate-a.conf"}) {
		t.Errorf("entries after retiring b: %q", got)
	}
	if err := e.RemoveFiles(boot.SlotB); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, e, "slate/b"); len(got) != 0 {
		t.Errorf("slate/b after RemoveFiles: %q", got)
	}
	if got := listDir(t, e, "slate/a"); len(got) != 3 {
		t.Errorf("slate/a: %q", got)
	}
	m := read(t, e)
	if b := m[boot.SlotB]; b.State != Empty || len(b.Problems) > 0 {
		t.Errorf("slot b: %+v", b)
	}
	// Nothing to remove is no error.
	if err := e.Retire(boot.SlotB); err != nil {
		t.Error(err)
	}
	os.Remove(filepath.Join(e.Dir, "slate/b"))
	if err := e.RemoveFiles(boot.SlotB); err != nil {
		t.Error(err)
	}
}

func TestPromote(t *testing.T) {
	for _, c := range []struct {
		name  string // slot a's entry; "" for none
		gen   int
		setup func(t *testing.T, e *ESP)
		want  string
	}{
		{"", 0, nil, "slot a holds no image"},
		{"slate-a+0-3.conf", 7, nil, "slot a is known bad: its image va ran out of boot tries"},
		{"slate-a+2-1.conf", 7, nil, "slot a has not been marked good yet"},
		{"slate-a.conf", 1, func(t *testing.T, e *ESP) { os.Remove(filepath.Join(e.Dir, "slate/a/vmlinuz")) },
			"slot a cannot boot: /slate/a/vmlinuz is missing"},
	} {
		t.Run(c.want, func(t *testing.T) {
			e := newESP(t)
			putSlot(t, e, boot.SlotB, 5, "slate-b.conf")
			if c.name != "" {
				putSlot(t, e, boot.SlotA, c.gen, c.name)
			}
			if c.setup != nil {
				c.setup(t, e)
			}
			before := listDir(t, e, boot.EntriesDir)
			_, err := e.Promote(boot.SlotA)
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("Promote: %v, want %q", err, c.want)
			}
			if after := listDir(t, e, boot.EntriesDir); !slices.Equal(before, after) {
				t.Errorf("entries changed: %q -> %q", before, after)
			}
		})
	}

	t.Run("good", func(t *testing.T) {
		e := newESP(t)
		a := putSlot(t, e, boot.SlotA, 1, "slate-a.conf")
		putSlot(t, e, boot.SlotB, 5, "slate-b.conf")
		en, err := e.Promote(boot.SlotA)
		if err != nil {
			t.Fatal(err)
		}
		if en.Generation != 6 || en.Counting || en.FileName() != "slate-a.conf" {
			t.Errorf("promoted entry: %+v", en)
		}
		a.Generation = 6
		if b, _ := os.ReadFile(filepath.Join(e.Dir, boot.EntriesDir, "slate-a.conf")); string(b) != string(a.Marshal()) {
			t.Errorf("entry:\n%s\nwant\n%s", b, a.Marshal())
		}
		m := read(t, e)
		if m[boot.SlotA].Generation <= m[boot.SlotB].Generation || m[boot.SlotA].State != Good {
			t.Errorf("a %+v does not boot before b %+v", m[boot.SlotA], m[boot.SlotB])
		}
	})
}

func TestBless(t *testing.T) {
	e := newESP(t)
	putSlot(t, e, boot.SlotA, 1, "slate-a.conf")
	b := putSlot(t, e, boot.SlotB, 2, "slate-b+2-1.conf")
	if err := e.Bless(boot.SlotB); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, e, boot.EntriesDir); !slices.Equal(got, []string{"slate-a.conf", "slate-b.conf"}) {
		t.Errorf("entries: %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(e.Dir, boot.EntriesDir, "slate-b.conf")); string(got) != string(b.Marshal()) {
		t.Errorf("blessed entry's content changed:\n%s", got)
	}
	if m := read(t, e); m[boot.SlotB].State != Good || m[boot.SlotB].Generation != 2 {
		t.Errorf("slot b: %+v", m[boot.SlotB])
	}
	// Blessing a good slot changes nothing.
	if err := e.Bless(boot.SlotB); err != nil {
		t.Error(err)
	}
	if got := listDir(t, e, boot.EntriesDir); !slices.Equal(got, []string{"slate-a.conf", "slate-b.conf"}) {
		t.Errorf("entries: %q", got)
	}

	// A stale plain entry next to the counting one (bless-boot gives up on
	// that, systemd#33504): the counting one, newer, wins and is the only one left.
	put(t, e, boot.EntriesDir+"/slate-b+1-2.conf", marshal(entry(boot.SlotB, 3, "slate-b+1-2.conf")))
	if err := e.Bless(boot.SlotB); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, e, boot.EntriesDir); !slices.Equal(got, []string{"slate-a.conf", "slate-b.conf"}) {
		t.Errorf("entries: %q", got)
	}
	if m := read(t, e); m[boot.SlotB].Generation != 3 || len(m[boot.SlotB].Problems) > 0 {
		t.Errorf("slot b: %+v", m[boot.SlotB])
	}

	e2 := newESP(t)
	if err := e2.Bless(boot.SlotB); err == nil || err.Error() != "slot b has no boot entry to bless" {
		t.Errorf("empty: %v", err)
	}
}

func TestWriteRelease(t *testing.T) {
	e := newESP(t)
	putSlot(t, e, boot.SlotB, 2, "slate-b.conf")
	r := release(boot.SlotB)
	r.Artifact = "sha256:" + strings.Repeat("1", 64)
	r.Written = time.Date(2025, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := e.WriteRelease(r); err != nil {
		t.Fatal(err)
	}
	got := read(t, e)[boot.SlotB].Release
	if got == nil || *got != r {
		t.Errorf("release %+v, want %+v", got, r)
	}
	if err := e.WriteRelease(boot.Release{Version: "x"}); err == nil {
		t.Error("release without a slot written")
	}
}

func TestFreeSync(t *testing.T) {
	e := newESP(t)
	free, err := e.Free()
	if err != nil || free <= 0 {
		t.Errorf("Free: %d, %v", free, err)
	}
	if err := e.Sync(); err != nil {
		t.Error(err)
	}
	if _, err := Open(filepath.Join(e.Dir, "nope")).Free(); err == nil {
		t.Error("Free of a missing directory")
	}
}

func TestCount(t *testing.T) {
	e := newESP(t)
	putSlot(t, e, boot.SlotB, 2, "slate-b+3.conf")
	got, err := e.Count(boot.SlotB)
	if err != nil {
		t.Fatal(err)
	}
	if got.FileName() != "slate-b+2-1.conf" {
		t.Errorf("counted entry %s", got.FileName())
	}
	in := read(t, e)[boot.SlotB]
	if in.EntryFile != "slate-b+2-1.conf" || in.TriesLeft != 2 || in.TriesDone != 1 || in.Generation != 2 {
		t.Errorf("after Count: %+v", in)
	}
	e.Count(boot.SlotB)
	e.Count(boot.SlotB)
	if in := read(t, e)[boot.SlotB]; in.EntryFile != "slate-b+0-3.conf" || in.State != Bad {
		t.Errorf("after three: %+v", in)
	}
	if _, err := e.Count(boot.SlotB); err == nil || !strings.Contains(err.Error(), "no try left") {
		t.Errorf("exhausted: %v", err)
	}
	putSlot(t, e, boot.SlotA, 1, "slate-a.conf")
	if _, err := e.Count(boot.SlotA); err == nil || !strings.Contains(err.Error(), "not on trial") {
		t.Errorf("good slot: %v", err)
	}
}
