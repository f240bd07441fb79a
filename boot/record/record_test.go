package record

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	r := &Record{
		FormatVersion: FormatVersion,
		Slot:          "a",
		Version:       "1.4",
		RootHash:      strings.Repeat("ab", 32),
		RootPartUUID:  "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
		RootDevice:    "/dev/vda2",
		StatePartUUID: "11111111-2222-3333-4444-555555555555",
		StateDevice:   "/dev/vda4",
		Cmdline:       "console=ttyS0 slate.slot=a",
		FirstBoot:     true,
		StateGrown:    true,
		StateFsck:     -1,
		Modules:       []string{"/lib/modules/6.1/kernel/fs/squashfs/squashfs.ko"},
		TotalMS:       812,
	}
	r.AddStep("modules", 1500*time.Microsecond, nil)
	r.AddStep("state", 2*time.Second, errors.New("boom"))
	path := filepath.Join(t.TempDir(), "run", "slate", "boot.json")
	if err := r.Write(path); err != nil {
		t.Fatal(err)
	}
	back, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(r)
	b, _ := json.Marshal(back)
	if string(a) != string(b) {
		t.Errorf("round trip:\n%s\n%s", a, b)
	}
	if back.Steps[0].DurationMS != 1 || back.Steps[1].DurationMS != 2000 || back.Steps[1].Error != "boom" {
		t.Errorf("steps: %+v", back.Steps)
	}

	// The JSON names are the contract with the agent and the QEMU tests.
	raw, _ := r.Marshal()
	for _, key := range []string{`"slot": "a"`, `"version": "1.4"`, `"root_hash"`, `"root_partuuid"`, `"state_partuuid"`,
		`"cmdline"`, `"first_boot": true`, `"state_grown": true`, `"steps"`, `"duration_ms": 2000`, `"name": "state"`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("record JSON lacks %s:\n%s", key, raw)
		}
	}
}

func TestParse(t *testing.T) {
	if _, err := Parse([]byte(`{"format_version": 99, "slot": "a"}`)); err == nil {
		t.Error("newer format accepted")
	}
	r, err := Parse([]byte(`{"format_version": 1, "slot": "b", "some_future_field": 3}`))
	if err != nil || r.Slot != "b" {
		t.Errorf("Parse = %+v, %v", r, err)
	}
	if _, err := Parse([]byte(`{`)); err == nil {
		t.Error("bad JSON accepted")
	}
}
