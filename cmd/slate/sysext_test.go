package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/slate-os/slate/internal/testtool"
)

// slate sysext build from a directory, then slate inspect EXT.raw.
func TestSysextBuildAndInspect(t *testing.T) {
	testtool.Need(t, "tar2sqfs", "rdsquashfs")
	dir := t.TempDir()
	src := filepath.Join(dir, "src", "usr", "bin")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Incompressible, so that the image has a hash tree to check.
	noise := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{1}).Read(noise)
	if err := os.WriteFile(filepath.Join(src, "noise"), noise, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "hello.raw")
	run := func(c *cobra.Command, args ...string) error {
		c.SetArgs(args)
		c.SilenceUsage, c.SilenceErrors = true, true
		return c.Execute()
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"build", "--source", filepath.Join(dir, "src"), "--name", "hello", "--version", "1", "--version-id", "12", "-o", out}, "need --id"},
		{[]string{"build", "--source", filepath.Join(dir, "src"), "--name", "hello", "--version", "1", "--id", "debian", "--for", "oci:x", "-o", out}, "either --for IMAGE or the release fields"},
	} {
		if err := run(sysextCmd(), tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if err := run(sysextCmd(), "build", "--source", filepath.Join(dir, "src"), "--name", "hello", "--version", "1", "--id", "debian", "--version-id", "12", "-o", out); err != nil {
		t.Fatal(err)
	}
	if err := run(inspectCmd(), "--json", out); err != nil {
		t.Errorf("inspect: %v", err)
	}
	if err := run(inspectCmd(), "--key", "k.pub", out); err == nil || !strings.Contains(err.Error(), "is an extension image") {
		t.Errorf("inspect --key: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b[4096] ^= 1 // in the squashfs's data
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(inspectCmd(), out); err == nil || !strings.Contains(err.Error(), "not a sound extension image") {
		t.Errorf("inspect of a damaged image: %v", err)
	}
}
