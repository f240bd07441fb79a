package builder

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/slate-os/slate/builder/flatten"
	"github.com/slate-os/slate/builder/source"
)

// reference is the reference image layout: $SLATE_REFERENCE or build/reference.
func reference(b *testing.B) string {
	p := os.Getenv("SLATE_REFERENCE")
	if p == "" {
		p, _ = filepath.Abs("../build/reference")
	}
	if _, err := os.Stat(filepath.Join(p, "index.json")); err != nil {
		b.Skip("no reference image: run make reference-image")
	}
	return p
}

// BenchmarkReferenceBuild runs `slate build` on the reference image (OCI
// layout → raw disk and artifact) as its own process, so its peak RSS is
// the build's alone, and prints both figures.
func BenchmarkReferenceBuild(b *testing.B) {
	ref := reference(b)
	dir := b.TempDir()
	bin := filepath.Join(dir, "slate")
	// Static, as make builds it: the binary installs itself as the node's agent.
	gobuild := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "../cmd/slate")
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(bin, "build", "--source", "oci:"+ref, "--output", filepath.Join(dir, "disk.raw"), "--artifact", filepath.Join(dir, "node.oci"))
		cmd.Stderr = os.Stderr
		start := time.Now()
		if out, err := cmd.Output(); err != nil {
			b.Fatalf("slate build: %v\n%s", err, out)
		}
		elapsed := time.Since(start)
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		b.ReportMetric(elapsed.Seconds(), "s/build")
		b.ReportMetric(float64(ru.Maxrss)/1024, "MB-peak-rss")
	}
}

// BenchmarkReferenceFloor is the floor a build cannot beat: flattening the
// image (checked, package flatten) and tar2sqfs on the same stream, nothing
// else.
func BenchmarkReferenceFloor(b *testing.B) {
	ref := reference(b)
	img, err := source.Open("oci:"+ref, source.Options{})
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "root.sqfs")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		err := flatten.Stream(context.Background(), img, flatten.Options{WorkDir: b.TempDir()}, func(ctx context.Context, r io.Reader) error {
			cmd := exec.CommandContext(ctx, "tar2sqfs", "--quiet", "--force", "--no-skip", "--no-xattr",
				"--compressor", "zstd", "--comp-extra", "level=3", out)
			cmd.Stdin = r
			return cmd.Run()
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/floor")
	}
}
