package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// --format takes every format the builder writes; an unknown one, or a GCE
// image not named .tar.gz, fails before anything is read, naming the field.
func TestBuildFormatFlag(t *testing.T) {
	help := buildCmd().Flags().Lookup("format").Usage
	for _, f := range []string{"raw", "qcow2", "vhd", "vmdk", "gce", "raw.zst", "raw.xz"} {
		if !strings.Contains(help, f) {
			t.Errorf("--format's help lacks %s: %s", f, help)
		}
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "vdi", "--output", filepath.Join(dir, "node.vdi")}, `outputs.format: unknown format "vdi" (want one of raw, qcow2, vhd, vmdk, gce, raw.zst, raw.xz)`},
		{[]string{"--format", "gce", "--output", filepath.Join(dir, "node.raw")}, "outputs.disk: \"" + filepath.Join(dir, "node.raw") + "\": outputs.format gce writes disk.raw in a gzip'd tar, which GCE imports as a .tar.gz: name it e.g. " + filepath.Join(dir, "node.tar.gz")},
	} {
		c := buildCmd()
		c.SetArgs(append([]string{"--source", "oci:" + filepath.Join(dir, "none")}, tc.args...))
		c.SilenceUsage, c.SilenceErrors = true, true
		if err := c.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
