package configsrc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFwCfg(t *testing.T) {
	sys := t.TempDir()
	platform := filepath.Join(sys, "bus", "platform", "devices")
	byName := filepath.Join(sys, "firmware", "qemu_fw_cfg", "by_name")
	entry := filepath.Join(byName, "opt", "slate", "config")
	os.MkdirAll(platform, 0o755)
	src := FwCfg{Sys: sys, Wait: 300 * time.Millisecond}
	fetch := func() ([]byte, *Env, error, time.Duration) {
		env := &Env{}
		start := time.Now()
		b, err := src.Fetch(WithEnv(context.Background(), env))
		return b, env, err, time.Since(start)
	}

	// Not QEMU: no device, no wait.
	if _, _, err, d := fetch(); !errors.Is(err, ErrNotFound) || d > 50*time.Millisecond {
		t.Errorf("no device: %v after %s", err, d)
	}
	// The device, but no driver binds to it: not found after the wait.
	dev := filepath.Join(platform, "QEMU0002:00")
	os.MkdirAll(dev, 0o755)
	var notes []string
	env := &Env{Logf: func(f string, a ...any) { notes = append(notes, f) }}
	start := time.Now()
	_, err := src.Fetch(WithEnv(context.Background(), env))
	if d := time.Since(start); !errors.Is(err, ErrNotFound) || d < 300*time.Millisecond || len(notes) != 1 || !strings.Contains(notes[0], "qemu_fw_cfg module missing") {
		t.Errorf("unbound device: %v after %s, notes %q", err, d, notes)
	}
	// The driver binds late: it lists the entries, then the device's
	// driver link appears.
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.MkdirAll(entry, 0o755)
		os.WriteFile(filepath.Join(entry, "raw"), []byte("hostname: q\n"), 0o400)
		os.MkdirAll(filepath.Join(sys, "bus", "platform", "drivers", "fw_cfg"), 0o755)
		os.Symlink("../../drivers/fw_cfg", filepath.Join(dev, "driver"))
	}()
	src.Wait = 5 * time.Second
	b, env, err, d := fetch()
	if err != nil || string(b) != "hostname: q\n" || env.Location != "opt/slate/config" || d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("late bind: %q %v location %q after %s", b, err, env.Location, d)
	}
	// Entries but not ours: not found, no wait.
	os.RemoveAll(filepath.Join(byName, "opt", "slate"))
	os.MkdirAll(filepath.Join(byName, "opt", "slate", "test"), 0o755)
	if _, _, err, d := fetch(); !errors.Is(err, ErrNotFound) || d > 50*time.Millisecond {
		t.Errorf("no opt/slate/config: %v after %s", err, d)
	}
	// Ours, unreadable (here: a directory where raw should be).
	os.MkdirAll(filepath.Join(entry, "raw"), 0o755)
	if _, env, err, _ := fetch(); err == nil || errors.Is(err, ErrNotFound) || !strings.HasPrefix(err.Error(), "fw_cfg opt/slate/config: ") || env.Location != "opt/slate/config" {
		t.Errorf("unreadable entry: %v", err)
	}
	// A device tree machine (arm virt) names the device differently.
	os.RemoveAll(dev)
	os.MkdirAll(filepath.Join(platform, "9020000.fw-cfg"), 0o755)
	if devs := fwCfgDevices(sys); len(devs) != 1 || bound(devs) {
		t.Errorf("9020000.fw-cfg: %q", devs)
	}
}
