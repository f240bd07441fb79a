package sbat

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/uki"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/secureboot"
)

const (
	secureBootVar = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
	levelVar      = secureboot.SBATLevelName + "-" + secureboot.SlateGUID
)

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// efiVars is a fake efivarfs: Secure Boot on or off, and the node's level
// (0: not set) as the firmware shows it, its data without the signature.
func efiVars(t *testing.T, on bool, level int) string {
	dir := t.TempDir()
	sb := byte(0)
	if on {
		sb = 1
	}
	write(t, filepath.Join(dir, secureBootVar), []byte{6, 0, 0, 0, sb})
	if level > 0 {
		write(t, filepath.Join(dir, levelVar), []byte("\x27\x00\x00\x00slate,"+string(rune('0'+level))+"\n"))
	}
	return dir
}

func TestRaise(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	if err := secureboot.GenerateKeySet(keys, "test", nil); err != nil {
		t.Fatal(err)
	}
	s, err := secureboot.LoadSigner(filepath.Join(keys, "db.key"), filepath.Join(keys, "db.crt"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := secureboot.SBATLevelPayload(2, s)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "sbat-level.auth")
	if msg, err := Raise(file, efiVars(t, true, 0)); msg != "" || err != nil {
		t.Errorf("an image without a payload: %q, %v", msg, err)
	}
	write(t, file, payload)

	for _, c := range []struct {
		name   string
		on     bool
		level  int
		raised bool
	}{
		{"Secure Boot off", false, 0, false},
		{"no level yet", true, 0, true},
		{"a lower level", true, 1, true},
		{"the same level", true, 2, false},
		{"a higher level", true, 3, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := efiVars(t, c.on, c.level)
			before, _ := os.ReadFile(filepath.Join(dir, levelVar))
			msg, err := Raise(file, dir)
			if err != nil {
				t.Fatal(err)
			}
			after, _ := os.ReadFile(filepath.Join(dir, levelVar))
			if c.raised {
				// What reaches efivarfs: the attributes, then the signed payload.
				if !bytes.Equal(after, append([]byte{0x27, 0, 0, 0}, payload...)) {
					t.Errorf("written %d bytes, want the payload's %d", len(after), len(payload)+4)
				}
				if !strings.Contains(msg, "raised from "+string(rune('0'+c.level))+" to 2") {
					t.Errorf("message %q", msg)
				}
			} else if msg != "" || !bytes.Equal(before, after) {
				t.Errorf("changed the level: %q, %q → %q", msg, before, after)
			}
		})
	}
}

func TestCheckSlot(t *testing.T) {
	esp := t.TempDir()
	img, err := uki.Assemble(testimage.EFI([2]string{".text", "\xcc"}), uki.Sections{
		Cmdline: []byte(boot.UKICmdline("ro", "ab12", "1.0", 1)),
		Linux:   []byte("kernel"),
	})
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(esp, "slate/a/uki.efi"), img)
	e := boot.Entry{Slot: boot.SlotA, Generation: 1, Title: "slate 1.0 (slot A)", EFI: boot.SlotA.UKIPath(), Options: "ro"}
	write(t, filepath.Join(esp, boot.EntriesDir, e.FileName()), e.Marshal())
	write(t, filepath.Join(esp, "slate/b/.keep"), nil)

	for level, refused := range map[int]bool{0: false, 1: false, 2: true} {
		err := CheckSlot(slots.Open(esp), boot.SlotA, efiVars(t, true, level))
		if refused != (err != nil) {
			t.Errorf("level %d: %v", level, err)
		}
		if err != nil && !strings.Contains(err.Error(), "SBAT generation 1, and this node has revoked every generation below 2") {
			t.Errorf("level %d: %v", level, err)
		}
	}
	// A slot without a UKI is left to Promote's own checks.
	if err := CheckSlot(slots.Open(esp), boot.SlotB, efiVars(t, true, 2)); err != nil {
		t.Errorf("slot b: %v", err)
	}
}
