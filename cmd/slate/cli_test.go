package main

import (
	"reflect"
	"strings"
	"testing"
)

// --cmdline takes one kernel argument per flag, commas and all.
func TestCmdlineFlag(t *testing.T) {
	c := buildCmd()
	if err := c.ParseFlags([]string{"--cmdline", "console=ttyS0,115200", "--cmdline", "quiet"}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Flags().GetStringArray("cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"console=ttyS0,115200", "quiet"}; !reflect.DeepEqual(got, want) {
		t.Errorf("--cmdline gave %q, want %q", got, want)
	}
}

func TestVersion(t *testing.T) {
	v := readBuildInfo()
	if v.Version == "" || v.Commit == "" || !strings.HasPrefix(v.Go, "go") || v.Tar2sqfs == "" {
		t.Errorf("incomplete: %+v", v)
	}
	s := buildInfo{Version: "v1.2.3", Commit: "abc", Go: "go1.26 linux/amd64", Tar2sqfs: "not found"}.String()
	want := "slate v1.2.3\n  commit    abc\n  go        go1.26 linux/amd64\n  tar2sqfs  not found\n"
	if s != want {
		t.Errorf("got %q, want %q", s, want)
	}
	t.Setenv("PATH", t.TempDir())
	if got := tar2sqfsVersion(); !strings.HasPrefix(got, "not found") {
		t.Errorf("without tar2sqfs: %q", got)
	}
}
