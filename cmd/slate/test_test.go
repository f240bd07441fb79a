package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTestInput(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "node.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := testInput(t.Context(), "V1", disk, dir, false, false)
	if err != nil || img.Disk != disk || img.Format != "raw" {
		t.Errorf("a raw disk as V1: %+v, %v", img, err)
	}
	if _, err := testInput(t.Context(), "V2", disk, dir, false, true); err == nil || !strings.Contains(err.Error(), "is a disk") {
		t.Errorf("a disk as V2: %v, want it refused as a disk", err)
	}
	if _, err := testInput(t.Context(), "V1", filepath.Join(dir, "missing.raw"), dir, false, false); err == nil || !strings.Contains(err.Error(), "missing.raw") {
		t.Errorf("a missing disk: %v", err)
	}
}

func TestTestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"test"}, "--from is required"},
		{[]string{"test", "--from", "x.raw", "--scenario", "boot,bot"}, `"bot"`},
	} {
		c := testCmd()
		c.SetArgs(tc.args[1:])
		c.SetOut(new(strings.Builder))
		c.SetErr(new(strings.Builder))
		if err := c.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("slate %s: %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
