package testnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/slate-os/slate/builder"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testimage"
)

// Variant is a test image for upgrade tests: the reference image, the test
// runner and one more layer of the variant's own (a version marker, a unit,
// a broken /sbin/init), built as an update artifact and, if asked, a disk.
type Variant struct {
	// Name names the build and its outputs; each name is built once per
	// test process.
	Name string
	// Version is the image's version; it also tags the artifact.
	Version string
	// Entries make the variant's layer, on top of the runner; none, no layer.
	Entries []testimage.Entry
	// Disk asks for a disk as well as the update artifact.
	Disk bool
	// Tweak edits the spec before the build.
	Tweak func(*spec.Spec)
	// NoRunner leaves the test runner layer out: an image as a user's
	// would be, for tests that bring their own (slate test).
	NoRunner bool
	// Base is the image the variant is made from: "" for the reference
	// image, or one of the reference matrix's images (see [Matrix]).
	Base string
}

var (
	variantMu sync.Mutex
	variants  = map[string]*builder.Result{}
)

// BuildVariant builds v (once per process and name; builds run one at a
// time, as each takes both cores) and returns the build's result: Artifact
// is the update artifact's OCI layout, Disk the raw disk if v.Disk.
func BuildVariant(tb testing.TB, v Variant) *builder.Result {
	tb.Helper()
	variantMu.Lock()
	defer variantMu.Unlock()
	if r, ok := variants[v.Name]; ok {
		return r
	}
	base := Reference(tb)
	if v.Base != "" {
		base = Matrix(tb, v.Base)
	}
	img := base
	if !v.NoRunner {
		var err error
		if img, err = WithRunner(base); err != nil {
			tb.Fatal(err)
		}
	}
	if len(v.Entries) > 0 {
		l, err := testimage.Layer(v.Entries)
		if err != nil {
			tb.Fatalf("variant %s: %v", v.Name, err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			tb.Fatalf("variant %s: %v", v.Name, err)
		}
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("slate-qemu-tests-%d", os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	s := spec.Spec{APIVersion: spec.APIVersion, Kind: spec.Kind, Source: "reference+runner+" + v.Name, Version: v.Version,
		Outputs: spec.Outputs{Artifact: filepath.Join(dir, v.Name+".oci")}}
	if v.Disk {
		s.Outputs.Disk = filepath.Join(dir, v.Name+".raw")
	}
	if v.Tweak != nil {
		v.Tweak(&s)
	}
	start := time.Now()
	r, err := builder.Build(context.Background(), builder.Options{Spec: s, Image: img, AgentBinary: testimage.AgentBinary(tb)})
	if err != nil {
		tb.Fatalf("building test image %s: %v", v.Name, err)
	}
	what := "artifact"
	if v.Disk {
		what = "disk and artifact"
	}
	tb.Logf("built test image %s (%s, version %s) in %.1fs: root %d MiB, initramfs %d KiB",
		v.Name, what, r.Version, time.Since(start).Seconds(), r.RootSize>>20, r.InitramfsSize>>10)
	variants[v.Name] = r
	return r
}

// ParseResult reads a script's output from one boot's console lines (see
// vm.Machine.BootLines): the lines between the runner's markers. ended is
// false when the end marker is missing, as when the script rebooted the
// node itself or the power was cut; Lines then holds what it printed.
// It returns nil when the script never started.
func ParseResult(lines []string) (r *Result, ended bool) {
	for _, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case r == nil:
			if strings.Contains(l, Begin) {
				r = &Result{}
			}
		case endRe.MatchString(l):
			r.Code = endRe.FindStringSubmatch(l)[1]
			return r, true
		default:
			r.Lines = append(r.Lines, l)
		}
	}
	return r, false
}
