package record

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The taint is written, read back, kept across later breakGlass boots
// (Since and the first config stay) and replaced when unreadable.
func TestTaint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "var/lib/slate", TaintFileName)
	if tt, err := ReadTaint(path); tt != nil || err != nil {
		t.Fatalf("nothing kept: %+v %v", tt, err)
	}
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	sha1, sha2 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	w, err := MarkTainted(path, t1, sha1, "fw_cfg")
	if err != nil {
		t.Fatal(err)
	}
	want := Taint{Since: t1, ConfigSHA256: sha1, Source: "fw_cfg", Last: t1, LastConfigSHA256: sha1, Boots: 1}
	if !reflect.DeepEqual(*w, want) {
		t.Errorf("written: %+v", w)
	}
	back, err := ReadTaint(path)
	if err != nil || back == nil || !reflect.DeepEqual(*back, want) {
		t.Fatalf("read back: %+v %v", back, err)
	}
	raw, _ := os.ReadFile(path)
	for _, k := range []string{`"since": "2026-03-01T10:00:00Z"`, `"config_sha256": "abab`, `"source": "fw_cfg"`, `"boots": 1`} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("taint JSON lacks %s:\n%s", k, raw)
		}
	}
	if s := back.String(); s != "since 2026-03-01 10:00:00Z, by config sha256:abababababab… from fw_cfg" {
		t.Errorf("String: %s", s)
	}

	// A later breakGlass boot keeps when and by what the node was first tainted.
	t2 := t1.Add(48 * time.Hour)
	if _, err := MarkTainted(path, t2, sha2, "cmdline"); err != nil {
		t.Fatal(err)
	}
	back, _ = ReadTaint(path)
	want = Taint{Since: t1, ConfigSHA256: sha1, Source: "fw_cfg", Last: t2, LastConfigSHA256: sha2, Boots: 2}
	if back == nil || !reflect.DeepEqual(*back, want) {
		t.Errorf("second boot: %+v", back)
	}
	if s := back.String(); !strings.Contains(s, "; 2 boots with breakGlass, the last 2026-03-03 10:00:00Z (config sha256:cdcdcdcdcdcd…)") {
		t.Errorf("String: %s", s)
	}

	// An unreadable record is an error to the reader, and is replaced by the
	// next breakGlass boot: the node stays tainted either way.
	os.WriteFile(path, []byte("{garbage"), 0o644)
	if _, err := ReadTaint(path); err == nil {
		t.Error("garbage read")
	}
	if w, err := MarkTainted(path, t2, sha2, "fw_cfg"); err != nil || w.Since != t2 || w.Boots != 1 {
		t.Errorf("over garbage: %+v %v", w, err)
	}
	if ents, err := os.ReadDir(filepath.Dir(path)); err != nil || len(ents) != 1 {
		t.Errorf("temporary file left: %v %v", ents, err)
	}
}

// Errors in the record are capped: a config error may quote megabytes.
func TestRecordErrorsCapped(t *testing.T) {
	huge := strings.Repeat("x", 4<<20)
	r := &Record{FormatVersion: FormatVersion, Slot: "a", Error: huge, Warnings: []string{"short", huge},
		Config:          &Config{Source: "fw_cfg", Failed: ConfigFailedParse, Error: huge},
		PreviousFailure: &InitFailure{Step: "state", Error: huge}}
	r.AddStep("config", time.Millisecond, errors.New(huge))
	raw, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 8*MaxError {
		t.Errorf("record is %d bytes", len(raw))
	}
	var back Record
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string]string{"error": back.Error, "warning": back.Warnings[1], "config error": back.Config.Error,
		"previous failure": back.PreviousFailure.Error, "step": back.Steps[0].Error} {
		if len(s) > MaxError || !strings.HasSuffix(s, " bytes more)") {
			t.Errorf("%s: %d bytes, ends %q", what, len(s), s[len(s)-20:])
		}
	}
	if back.Warnings[0] != "short" {
		t.Errorf("short warning: %q", back.Warnings[0])
	}
	// Marshal does not change the record itself.
	if r.Error != huge || r.Config.Error != huge || r.Warnings[1] != huge || r.PreviousFailure.Error != huge {
		t.Error("Marshal cut the record in place")
	}
}

// A login taints a node, and a later breakGlass config keeps the login's
// time as Since; the logins are bounded.
func TestAddLogins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tainted")
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	l := Login{Time: t1, User: "root", TTY: "ttyS1", Via: "serial console", Boot: "b1"}
	tt, err := AddLogins(path, l)
	if err != nil {
		t.Fatal(err)
	}
	if !tt.Since.Equal(t1) || tt.ConfigSHA256 != "" || tt.LoginsTotal != 1 || len(tt.Logins) != 1 {
		t.Errorf("after a login: %+v", tt)
	}
	if s := tt.String(); s != "since 2026-03-01 10:00:00Z; 1 interactive login(s), the last root on ttyS1 (serial console) at 2026-03-01 10:00:00Z" {
		t.Errorf("String: %s", s)
	}
	if tt, err = MarkTainted(path, t1.Add(time.Hour), "abab", "fw_cfg"); err != nil || !tt.Since.Equal(t1) || tt.ConfigSHA256 != "abab" || tt.LoginsTotal != 1 {
		t.Errorf("a breakGlass boot after the login: %+v, %v", tt, err)
	}
	for i := range MaxLogins + 5 {
		l.Time = t1.Add(time.Duration(i) * time.Minute)
		if _, err := AddLogins(path, l); err != nil {
			t.Fatal(err)
		}
	}
	back, err := ReadTaint(path)
	if err != nil || len(back.Logins) != MaxLogins || back.LoginsTotal != MaxLogins+6 || !back.Logins[MaxLogins-1].Time.Equal(l.Time) {
		t.Errorf("bounded logins: %d kept, %d total, %v", len(back.Logins), back.LoginsTotal, err)
	}
}
