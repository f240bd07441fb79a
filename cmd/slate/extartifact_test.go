package main

import (
	"encoding/json"
	"io"
	"log"
	"math/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/spf13/cobra"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/sysext"
)

// run runs a command with args and returns what it printed on stdout.
func run(t *testing.T, c *cobra.Command, args ...string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = stdout }()
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	c.SetArgs(args)
	c.SetOut(io.Discard)
	c.SetErr(io.Discard)
	err = c.Execute()
	w.Close()
	return <-out, err
}

// writeExtension writes an extension layout for host's release.
func writeExtension(t *testing.T, host sysext.Release, seed int64) string {
	t.Helper()
	l := verity.Layout{
		DataSize: 4096, HashOffset: 4096, RootHash: strings.Repeat("cd", 32), Salt: "",
		Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096,
	}
	b := make([]byte, l.MinSize())
	rand.New(rand.NewSource(seed)).Read(b)
	img := filepath.Join(t.TempDir(), "gpu.raw")
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "gpu.oci")
	cfg := sysext.Config{Name: "gpu", Version: "1.0", Release: sysext.ForHost(host), Architecture: "amd64", OS: "linux",
		Image: l, Created: time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := artifact.WriteExtension(dir, cfg, artifact.Blob{Path: img}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// slate sign, push and inspect take extension layouts and references; a
// tag of two releases is an index, signed and inspected entry by entry.
func TestExtensionCommands(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // anonymous
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	tag := strings.TrimPrefix(srv.URL, "http://") + "/slate/gpu:1.0"
	key := filepath.Join(t.TempDir(), "release.key")
	if _, err := run(t, keygenCmd(), key); err != nil {
		t.Fatal(err)
	}

	dir12 := writeExtension(t, sysext.Release{ID: "debian", VersionID: "12"}, 1)
	dir13 := writeExtension(t, sysext.Release{ID: "debian", VersionID: "13"}, 2)
	out, err := run(t, signCmd(), "--key", key, dir12)
	if err != nil || !strings.Contains(out, "signed oci:"+dir12) {
		t.Fatalf("sign: %q %v", out, err)
	}
	out, err = run(t, inspectCmd(), "--key", key+".pub", dir12)
	for _, w := range []string{"extension gpu 1.0 (oci:" + dir12 + "@sha256:", "release  ID=debian VERSION_ID=12 ARCHITECTURE=x86-64",
		"arch     linux/amd64", "image    8192 bytes (squashfs 4096, verity tree at 4096)", "roothash " + strings.Repeat("cd", 32),
		"source   a directory", "signed   1 signature(s) under the tag sha256-", "verified signed by key"} {
		if err != nil || !strings.Contains(out, w) {
			t.Errorf("inspect %s: %v\n%s\nlacks %q", dir12, err, out, w)
		}
	}
	if out, err := run(t, inspectCmd(), "--key", key+".pub", dir13); err == nil || !strings.Contains(out, "NOT verified") {
		t.Errorf("inspect of an unsigned extension with --key: %v\n%s", err, out)
	}

	for _, dir := range []string{dir12, dir13} {
		if out, err = run(t, pushCmd(), dir, tag); err != nil {
			t.Fatalf("push %s: %v\n%s", dir, err, out)
		}
	}
	if !strings.Contains(out, tag+" is an index (sha256:") || !strings.Contains(out, "of extensions for: ID=debian VERSION_ID=12 ARCHITECTURE=x86-64; ID=debian VERSION_ID=13") {
		t.Errorf("second push: %s", out)
	}
	// The tag holds both now: sign signs each, inspect shows each.
	out, err = run(t, signCmd(), "--key", key, "--bundle", tag)
	if err != nil || strings.Count(out, "signed ") != 2 {
		t.Fatalf("sign the index: %v\n%s", err, out)
	}
	out, err = run(t, inspectCmd(), "--json", "--key", key+".pub", tag)
	if err != nil {
		t.Fatalf("inspect %s: %v\n%s", tag, err, out)
	}
	var r extensionArtifacts
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Kind != "extension" || len(r.Extensions) != 2 {
		t.Fatalf("report %+v", r)
	}
	for i, e := range r.Extensions {
		if e.Config.Release.VersionID != []string{"12", "13"}[i] || e.VerifiedBy == "" || e.Bundles != 1 {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
}
