package status

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/agent/upgrade"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/internal/jsonduration"
	"github.com/slate-os/slate/sysext"
)

func TestWriteText(t *testing.T) {
	st := &Status{
		Running: Running{Slot: boot.SlotB, Version: "v2"},
		Slots: []Slot{
			{Info: slots.Info{Slot: boot.SlotA, State: slots.Bad, EntryFile: "slate-a+0-3.conf", Generation: 3, Counting: true,
				Release: &boot.Release{Slot: boot.SlotA, Version: "v3", RootHash: strings.Repeat("ab", 32), Artifact: "sha256:" + strings.Repeat("cd", 32), SignedBy: "sha256:0123456789abcdef"}}},
			{Info: slots.Info{Slot: boot.SlotB, State: slots.Good, EntryFile: "slate-b.conf", Generation: 2,
				Release: &boot.Release{Slot: boot.SlotB, Version: "v2", RootHash: strings.Repeat("ef", 32)}}, Running: true},
		},
		Config: &record.Config{Source: "fw_cfg", SHA256: strings.Repeat("12", 32), Applied: true},
		Health: &history.Boot{Result: history.ResultGood},
		Update: &Update{Source: "registry.example/org/node:stable", Policy: PolicySigned, NotBefore: time.Date(2026, 6, 26, 13, 13, 13, 0, time.UTC), Keys: []UpdateKey{
			{ID: "sha256:0123456789abcdef", From: "image", Where: "/usr/lib/slate/update-keys/01.pub"},
			{ID: "sha256:fedcba9876543210", From: "node config", Where: "update.publicKey"}}},
		LastRollback: &history.Rollback{Time: time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC), FromSlot: boot.SlotA, FromVersion: "v3",
			FromGeneration: 3, ToSlot: boot.SlotB, ToVersion: "v2", Cause: "kernel panic: Kernel panic - not syncing: Attempted to kill init!",
			Files: []string{"console.txt", "pstore/dmesg-efi-1", "pstore/dmesg-efi-2"}, Dir: "/var/lib/slate/rollbacks/3-a", ConsoleTail: "line 1\nKernel panic - not syncing: Attempted to kill init!\n"},
		LastInitFailure: &InitFailure{InitFailure: record.InitFailure{Slot: "a", Step: "state", Error: "state partition /dev/vda4 is damaged", Count: 2,
			Time: time.Date(2026, 11, 27, 13, 0, 0, 0, time.UTC)}, BeforeThisBoot: true},
	}
	var b strings.Builder
	if err := st.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"running: slot b (v2)",
		" a    bad    v3       3           0",
		"*b    good   v2       2           -",
		"sha256:cdcdcdcdcdcd…  sha256:0123456789abcdef",
		"built in",
		"health of this boot: good",
		"updates: from registry.example/org/node:stable: only artifacts signed by a trusted key\n" +
			"  trusted key sha256:0123456789abcdef  image (/usr/lib/slate/update-keys/01.pub)\n" +
			"  trusted key sha256:fedcba9876543210  node config (update.publicKey)\n" +
			"  no downgrade: artifacts created before 2026-06-26 13:13:13Z (the running image) are refused\n",
		"config: fw_cfg sha256:121212121212…, applied",
		"slot a (v3, generation 3) -> slot b (v2)",
		"cause: kernel panic",
		"kept: /var/lib/slate/rollbacks/3-a/console.txt",
		"kept: /var/lib/slate/rollbacks/3-a/pstore (2 pstore records)",
		"    Kernel panic - not syncing",
		"last init failure: 2026-11-27 13:00:00Z slot a, step state: state partition /dev/vda4 is damaged (2 boots in a row) (the init stopped: it did not reboot)\n  the 2 boots before this one failed so\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status text lacks %q:\n%s", want, out)
		}
	}
}

// The init keeps its failures under /var/lib/slate/init-failures; status
// shows the newest, and whether the boot before this one was it.
func TestLastInitFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), record.InitFailureDirName)
	if f := lastInitFailure(dir, nil); f != nil {
		t.Errorf("nothing kept: %+v", f)
	}
	old := record.InitFailure{Slot: "b", Step: "modules", Error: "loading x.ko: no such file", Count: 1, Counted: true, Rebooted: true, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	last := record.InitFailure{Slot: "a", Step: "state", Error: "damaged", Count: 2, Time: time.Date(2026, 1, 3, 3, 4, 5, 0, time.UTC)}
	for _, f := range []record.InitFailure{old, last} {
		if _, err := record.WriteInitFailure(dir, f, record.KeepInitFailures); err != nil {
			t.Fatal(err)
		}
	}
	// A later boot: the newest kept failure, not just before this boot.
	f := lastInitFailure(dir, nil)
	if f == nil || !f.Same(last) || f.BeforeThisBoot {
		t.Fatalf("later boot: %+v", f)
	}
	// The boot the init moved it on.
	f = lastInitFailure(dir, &last)
	if f == nil || !f.Same(last) || !f.BeforeThisBoot {
		t.Errorf("this boot: %+v", f)
	}
	// The init could not write it on the state partition: the record's.
	f = lastInitFailure(filepath.Join(t.TempDir(), "none"), &old)
	if f == nil || !f.Same(old) || !f.BeforeThisBoot {
		t.Errorf("from the record: %+v", f)
	}
	b, _ := json.Marshal(&Status{LastInitFailure: f})
	if !strings.Contains(string(b), `"lastInitFailure":{"slot":"b","step":"modules","error":"loading x.ko: no such file","count":1,"counted":true,"rebooted":true,"time":"2026-01-02T03:04:05Z","beforeThisBoot":true}`) {
		t.Errorf("JSON: %s", b)
	}
}

// The taint the init keeps on the state partition is shown after a reboot
// with a clean config, in text and JSON: since when, by which config.
func TestTaint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, record.TaintFileName)
	if tt, e := nodeTaint(path, nil); tt != nil || e != "" {
		t.Errorf("never tainted: %+v %q", tt, e)
	}
	since := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	if _, err := record.MarkTainted(path, since, strings.Repeat("ab", 32), "fw_cfg"); err != nil {
		t.Fatal(err)
	}
	tt, e := nodeTaint(path, nil)
	if tt == nil || e != "" || !tt.Since.Equal(since) {
		t.Fatalf("tainted: %+v %q", tt, e)
	}
	// This boot's config is clean: the node is tainted still.
	st := &Status{Running: Running{Slot: boot.SlotA}, Config: &record.Config{Source: "fw_cfg", SHA256: strings.Repeat("12", 32), Applied: true},
		Tainted: true, Taint: tt}
	var b strings.Builder
	st.WriteText(&b)
	if want := "TAINTED since 2026-03-01 10:00:00Z, by config sha256:abababababab… from fw_cfg (access.breakGlass): until the node is re-imaged\n"; !strings.Contains(b.String(), want) {
		t.Errorf("text lacks %q:\n%s", want, b.String())
	}
	if strings.Contains(b.String(), "tainted (breakGlass)") {
		t.Errorf("this boot's config is not tainted:\n%s", b.String())
	}
	raw, _ := json.Marshal(st)
	if want := `"tainted":true,"taint":{"since":"2026-03-01T10:00:00Z","config_sha256":"abab`; !strings.Contains(string(raw), want) {
		t.Errorf("JSON lacks %s: %s", want, raw)
	}

	// The file gone (it never is but by hand): the boot record's.
	if tt2, e := nodeTaint(filepath.Join(dir, "none"), tt); tt2 != tt || e != "" {
		t.Errorf("from the record: %+v %q", tt2, e)
	}
	// Unreadable: tainted, and why.
	os.WriteFile(path, []byte("{"), 0o644)
	tt, e = nodeTaint(path, nil)
	if tt != nil || e == "" {
		t.Errorf("unreadable: %+v %q", tt, e)
	}
	b.Reset()
	(&Status{TaintError: e, Tainted: true}).WriteText(&b)
	if !strings.Contains(b.String(), "TAINTED (access.breakGlass): the taint record is unreadable: ") {
		t.Errorf("text: %s", b.String())
	}
}

// The update policy, as text and JSON, in each of its states.
func TestUpdateText(t *testing.T) {
	for _, c := range []struct {
		u    Update
		text string
		json string
	}{
		{Update{Policy: PolicyRefused, Error: "no update is trusted: build the image with update.publicKeys"},
			"updates: from -: every upgrade REFUSED: no update is trusted: build the image with update.publicKeys\n",
			`{"policy":"refused","error":"no update is trusted: build the image with update.publicKeys"}`},
		{Update{Source: "r/x", Policy: PolicyUnsigned, AllowUnsigned: []string{"image", "node config"}},
			"updates: from r/x: UNSIGNED artifacts accepted (update.allowUnsigned in the image and the node config)\n",
			`{"source":"r/x","policy":"unsigned-allowed","allowUnsigned":["image","node config"]}`},
		{Update{Policy: PolicySigned, Keys: []UpdateKey{{ID: "sha256:0123456789abcdef", From: "image", Where: "/usr/lib/slate/update-keys/01.pub"}}},
			"updates: from -: only artifacts signed by a trusted key\n  trusted key sha256:0123456789abcdef  image (/usr/lib/slate/update-keys/01.pub)\n",
			`{"policy":"signed","keys":[{"id":"sha256:0123456789abcdef","from":"image","where":"/usr/lib/slate/update-keys/01.pub"}]}`},
	} {
		var b strings.Builder
		c.u.writeText(&b)
		if b.String() != c.text {
			t.Errorf("text:\n%s\nwant\n%s", b.String(), c.text)
		}
		if j, _ := json.Marshal(c.u); string(j) != c.json {
			t.Errorf("JSON %s\nwant %s", j, c.json)
		}
	}
}

// Extensions: merged with version and digest, refused and missing with
// why, in text and JSON; no section when the node has none.
func TestExtensions(t *testing.T) {
	rep := &extensions.Report{
		Time: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC), Took: jsonduration.Duration(1500 * time.Millisecond), Host: sysext.Release{ID: "debian", VersionID: "12"},
		Entries: []extensions.Entry{
			{Entry: "tools", Name: "tools", Version: "1.0", Digest: "sha256:" + strings.Repeat("ab", 32), From: extensions.FromImage, State: extensions.Merged},
			{Entry: "gpu", Name: "gpu", Version: "550", Digest: "sha256:" + strings.Repeat("cd", 32), From: extensions.FromNode, State: extensions.Refused,
				Reason: "gpu 550 (sha256:cdcdcdcdcdcd): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12"},
			{Entry: "registry.example/ext/debug:1", State: extensions.Missing, Reason: "not fetched yet"},
		},
	}
	st := &Status{Running: Running{Slot: boot.SlotA}, Extensions: rep}
	var b strings.Builder
	st.WriteText(&b)
	for _, want := range []string{
		"extensions (for ID=debian VERSION_ID=12, activated 2026-05-01 10:00:00Z in 1.5s):\n",
		"  tools                         tools  1.0      sha256:abababababab…  merged from the image\n",
		"  gpu                           gpu    550      sha256:cdcdcdcdcdcd…  refused\n",
		"  registry.example/ext/debug:1  -      -        -                     missing\n",
		"  ! gpu refused: gpu 550 (sha256:cdcdcdcdcdcd): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12\n",
		"  ! registry.example/ext/debug:1 missing: not fetched yet\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	raw, _ := json.Marshal(st)
	for _, want := range []string{`"extensions":{"time":"2026-05-01T10:00:00Z","took":"1.5s","host":{"id":"debian","versionID":"12"},`,
		`{"entry":"tools","name":"tools","version":"1.0","digest":"sha256:abab`, `"state":"refused","reason":"gpu 550`, `"state":"missing"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("JSON lacks %s: %s", want, raw)
		}
	}

	b.Reset()
	(&Status{Extensions: &extensions.Report{Entries: []extensions.Entry{}}}).WriteText(&b)
	if strings.Contains(b.String(), "extensions") {
		t.Errorf("a node without extensions shows them:\n%s", b.String())
	}
	if raw, _ := json.Marshal(&Status{}); strings.Contains(string(raw), "extensions") {
		t.Errorf("JSON: %s", raw)
	}
	b.Reset()
	(&Status{ExtensionsError: "extensions were not activated this boot: no /run/slate/extensions.json"}).WriteText(&b)
	if !strings.Contains(b.String(), "extensions: NOT activated: extensions were not activated this boot: no /run/slate/extensions.json\n") {
		t.Errorf("text:\n%s", b.String())
	}
}

// The last update check, kept by slate upgrade, in text and JSON; the
// same record slate metrics exports.
func TestLastUpdateCheck(t *testing.T) {
	dir := t.TempDir()
	if c, e := LastUpdateCheck(dir); c != nil || e != "" {
		t.Errorf("none: %+v %q", c, e)
	}
	want := upgrade.LastCheck{Time: time.Date(2026, 3, 2, 4, 0, 0, 0, time.UTC), Result: upgrade.CheckRefused, Ref: "registry.example/org/node:stable",
		Version: "1.5", Error: "not signed"}
	if err := upgrade.WriteLastCheck(filepath.Join(dir, upgrade.LastCheckFileName), want); err != nil {
		t.Fatal(err)
	}
	c, e := LastUpdateCheck(dir)
	if c == nil || *c != want || e != "" {
		t.Fatalf("read %+v %q", c, e)
	}
	var b strings.Builder
	(&Status{LastUpdateCheck: c}).WriteText(&b)
	if want := "last update check: 2026-03-02 04:00:00Z refused, offered 1.5 (registry.example/org/node:stable): not signed\n"; !strings.Contains(b.String(), want) {
		t.Errorf("text lacks %q:\n%s", want, b.String())
	}
	raw, _ := json.Marshal(&Status{LastUpdateCheck: c})
	if want := `"lastUpdateCheck":{"time":"2026-03-02T04:00:00Z","result":"refused","ref":"registry.example/org/node:stable","version":"1.5","error":"not signed"}`; !strings.Contains(string(raw), want) {
		t.Errorf("JSON lacks %s: %s", want, raw)
	}
	os.WriteFile(filepath.Join(dir, upgrade.LastCheckFileName), []byte("{"), 0o644)
	if c, e := LastUpdateCheck(dir); c != nil || !strings.Contains(e, upgrade.LastCheckFileName) {
		t.Errorf("unreadable: %+v %q", c, e)
	}
}
