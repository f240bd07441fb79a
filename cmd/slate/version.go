package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is slate's version; a release build may set it with
// -ldflags "-X main.version=v1.2.3", else the module's version (from its
// VCS tag) is used.
var version string

// buildInfo is what `slate version` prints. The build's output depends on
// the tar2sqfs it runs, so that is part of it.
type buildInfo struct {
	Version, Commit, Go, Tar2sqfs string
}

func readBuildInfo() buildInfo {
	v := buildInfo{Version: version, Commit: "unknown", Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		var rev, modified, when string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			case "vcs.time":
				when = s.Value
			}
		}
		if rev != "" {
			v.Commit = rev
			if when != "" {
				v.Commit += " (" + when + ")"
			}
			if modified == "true" {
				v.Commit += ", with local changes"
			}
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	v.Tar2sqfs = tar2sqfsVersion()
	return v
}

// tar2sqfsVersion is the tar2sqfs that slate build would run (the first in
// PATH) and the first line of its --version.
func tar2sqfsVersion() string {
	p, err := exec.LookPath("tar2sqfs")
	if err != nil {
		return "not found (slate build needs it: Debian package squashfs-tools-ng)"
	}
	out, err := exec.Command(p, "--version").Output()
	first, _, _ := strings.Cut(string(bytes.TrimSpace(out)), "\n")
	if err != nil || first == "" {
		return fmt.Sprintf("%s (its version is unknown: %v)", p, err)
	}
	return p + ": " + first
}

func (v buildInfo) String() string {
	return fmt.Sprintf("slate %s\n  commit    %s\n  go        %s\n  tar2sqfs  %s\n", v.Version, v.Commit, v.Go, v.Tar2sqfs)
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show slate's version and commit, its Go, and the tar2sqfs it builds with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Print(readBuildInfo())
			return nil
		},
	}
}

// setVersionFlag makes `slate --version` print what `slate version` does,
// working it out only when asked.
func setVersionFlag(root *cobra.Command) {
	cobra.AddTemplateFunc("slateVersion", func() string { return readBuildInfo().String() })
	root.Version = "set" // cobra adds --version only when Version is set
	root.SetVersionTemplate("{{slateVersion}}")
}
