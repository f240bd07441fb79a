package record

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
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

func TestConfig(t *testing.T) {
	// Before the config step ran (a fatal error earlier): no config key.
	raw, _ := (&Record{FormatVersion: FormatVersion}).Marshal()
	if strings.Contains(string(raw), `"config"`) {
		t.Errorf("record without a config step has a config:\n%s", raw)
	}
	for _, tc := range []struct {
		c    Config
		keys []string
	}{
		{Config{Source: ConfigNone},
			[]string{`"config": {`, `"source": "none"`, `"applied": false`, `"tainted": false`}},
		{Config{Source: "fw_cfg", Location: "opt/slate/config", SHA256: strings.Repeat("ab", 32), Size: 120,
			Applied: true, Tainted: true, Hostname: "node-1", Files: []string{"/etc/hostname", "/etc/motd"}},
			[]string{`"source": "fw_cfg"`, `"location": "opt/slate/config"`, `"sha256": "abab`, `"size": 120`, `"applied": true`,
				`"tainted": true`, `"hostname": "node-1"`, `"files": [`, `"/etc/motd"`}},
		{Config{Source: "config-drive", Location: "/dev/vdb", SHA256: strings.Repeat("cd", 32), Size: 64,
			Failed: ConfigFailedParse, Error: "files[0].path (line 5): /usr/x is outside /etc and /run"},
			[]string{`"source": "config-drive"`, `"applied": false`, `"failed": "parse"`, `"error": "files[0].path (line 5): /usr/x is outside /etc and /run"`}},
	} {
		r := &Record{FormatVersion: FormatVersion, Slot: "a", Config: &tc.c}
		raw, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range tc.keys {
			if !strings.Contains(string(raw), k) {
				t.Errorf("record JSON lacks %s:\n%s", k, raw)
			}
		}
		back, err := Parse(raw)
		if err != nil || back.Config == nil || !reflect.DeepEqual(*back.Config, tc.c) {
			t.Errorf("round trip: %+v %v", back, err)
		}
	}
	// A record from before the config fields still parses.
	r, err := Parse([]byte(`{"format_version": 1, "slot": "a"}`))
	if err != nil || r.Config != nil {
		t.Errorf("old record: %+v %v", r, err)
	}
}
