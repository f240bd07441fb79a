package record

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInitFailureFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), InitFailureDirName)
	if f, err := ReadLastInitFailure(dir); f != nil || err != nil {
		t.Fatalf("no directory: %v %v", f, err)
	}
	when := time.Date(2026, 1, 27, 14, 0, 0, 0, time.UTC)
	var paths []string
	for i := 1; i <= 4; i++ {
		f := InitFailure{Slot: "a", Step: "state", Error: "damaged", Count: i, Time: when.Add(time.Duration(i) * time.Minute)}
		p, err := WriteInitFailure(dir, f, 3)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, filepath.Base(p))
		got, err := ReadLastInitFailure(dir)
		if err != nil || got == nil || !got.Same(f) {
			t.Fatalf("after writing %+v: read %+v %v", f, got, err)
		}
	}
	if strings.Join(paths, " ") != "000001.json 000002.json 000003.json 000004.json" {
		t.Errorf("files %v", paths)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "000002.json 000003.json 000004.json" {
		t.Errorf("kept %v, want the newest 3", names)
	}
	// The same failure again (the EFI variable could not be deleted): not a new file.
	last, _ := ReadLastInitFailure(dir)
	if p, err := WriteInitFailure(dir, *last, 3); err != nil || filepath.Base(p) != "000004.json" {
		t.Errorf("same failure again: %s %v", p, err)
	}
	// Strangers in the directory are left alone and ignored.
	os.WriteFile(filepath.Join(dir, "notes.json"), []byte("{"), 0o644)
	if got, err := ReadLastInitFailure(dir); err != nil || got.Count != 4 {
		t.Errorf("with a stranger: %+v %v", got, err)
	}
	os.WriteFile(filepath.Join(dir, "000009.json"), []byte("{"), 0o644)
	if _, err := ReadLastInitFailure(dir); err == nil {
		t.Error("a broken newest file was read")
	}
}

func TestInitFailureString(t *testing.T) {
	f := InitFailure{Slot: "a", Step: "state", Error: "state partition is damaged", Count: 2}
	if got := f.String(); got != "slot a, step state: state partition is damaged (2 boots in a row) (the init stopped: it did not reboot)" {
		t.Errorf("String = %q", got)
	}
	f = InitFailure{Step: "cmdline", Error: "bad", Count: 1, Rebooted: true}
	if got := f.String(); got != "slot ?, step cmdline: bad" {
		t.Errorf("String = %q", got)
	}
}
