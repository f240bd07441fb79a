package status

import (
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
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
		Update: &Update{Source: "registry.example/org/node:stable", Key: "sha256:0123456789abcdef"},
		LastRollback: &history.Rollback{Time: time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC), FromSlot: boot.SlotA, FromVersion: "v3",
			FromGeneration: 3, ToSlot: boot.SlotB, ToVersion: "v2", Cause: "kernel panic: Kernel panic - not syncing: Attempted to kill init!",
			Files: []string{"console.txt", "pstore/dmesg-efi-1", "pstore/dmesg-efi-2"}, Dir: "/var/lib/slate/rollbacks/3-a", ConsoleTail: "line 1\nKernel panic - not syncing: Attempted to kill init!\n"},
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
		"updates: from registry.example/org/node:stable, signed by key sha256:0123456789abcdef only",
		"config: fw_cfg sha256:121212121212…, applied",
		"slot a (v3, generation 3) -> slot b (v2)",
		"cause: kernel panic",
		"kept: /var/lib/slate/rollbacks/3-a/console.txt",
		"kept: /var/lib/slate/rollbacks/3-a/pstore (2 pstore records)",
		"    Kernel panic - not syncing",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status text lacks %q:\n%s", want, out)
		}
	}
}
