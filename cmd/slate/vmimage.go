package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/builder"
	"github.com/slate-os/slate/builder/format"
	"github.com/slate-os/slate/builder/spec"
	prog "github.com/slate-os/slate/internal/progress"
)

// buildForVM builds src into dir for a virtual machine: the raw disk
// DIR/disk.raw, and the update artifact DIR/artifact (an OCI layout) of the
// same build, so that a test can upgrade a node to the image it booted.
//
// src is what slate build takes as --source (a registry reference,
// oci:DIR[:TAG|@sha256:DIGEST], docker-archive:FILE) or an image spec file
// (.yaml, .yml), whose own outputs are replaced by dir's. As in slate build,
// the running slate binary is the node's agent. progress, if not nil, gets
// the build's progress lines.
func buildForVM(ctx context.Context, src, dir string, insecure bool, progress io.Writer) (*builder.Result, error) {
	s := &spec.Spec{APIVersion: spec.APIVersion, Kind: spec.Kind, Source: src}
	if isSpecFile(src) {
		var err error
		if s, err = spec.Load(src); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s.Outputs = spec.Outputs{
		Disk:     filepath.Join(dir, "disk.raw"),
		Format:   format.Raw,
		Artifact: filepath.Join(dir, "artifact"),
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this slate binary to install as the agent: %w", err)
	}
	o := builder.Options{Spec: *s, AgentBinary: self}
	if progress != nil {
		o.Progress = prog.New(progress)
	}
	o.SourceOptions.Insecure = insecure
	if insecure {
		o.ExtensionOptions = append(o.ExtensionOptions, artifact.Insecure())
	}
	return builder.Build(ctx, o)
}

// isSpecFile says whether src names an image spec rather than an image:
// by its name, since a spec file and a docker-save tarball are both files.
func isSpecFile(src string) bool {
	return strings.HasSuffix(src, ".yaml") || strings.HasSuffix(src, ".yml")
}
