package builder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/testimage"
)

// A layout whose layer blob was edited in place (same size) does not build,
// and the failed build leaves no output (builder/flatten has the cases).
func TestBuildRefusesEditedLayout(t *testing.T) {
	need(t, "tar2sqfs")
	img, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lay := t.TempDir()
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	base, _ := layers[0].Digest() // the kernel and systemd-boot
	blob := filepath.Join(lay, "blobs", base.Algorithm, base.Hex)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b)/2 - 7; i < len(b)/2+8; i++ {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := testSpec(dir)
	s.Source = "oci:" + lay
	_, err = Build(context.Background(), Options{Spec: s, AgentBinary: testimage.StaticBinary(t)})
	if err == nil || !strings.Contains(err.Error(), "layer "+base.String()) {
		t.Fatalf("error %v, want one naming layer %s", err, base)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("a failed build left %v in the output directory", left)
	}
}

// A name twice in a layer makes the flattener stream the image a second
// time (rootfs.Build runs again); the last entry is in the root.
func TestBuildLastEntryWins(t *testing.T) {
	need(t, "tar2sqfs", "unsquashfs")
	base := testimage.Base(testimage.Options{})
	base = append(base, testimage.File("etc/motd", "first\n"), testimage.File("etc/motd", "last\n"))
	img, err := testimage.Image(base, []testimage.Entry{testimage.File("etc/issue", "upper\n")})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res, err := buildImage(t, img, testSpec(dir))
	if err != nil {
		t.Fatal(err)
	}
	slot := res.Plan.Part(boot.NumRootA)
	root := region(t, res.Disk, slot.Start, res.RootSize)
	if got := run(t, "unsquashfs", "-cat", root, "etc/motd"); got != "last\n" {
		t.Errorf("etc/motd: %q, want the layer's last entry", got)
	}
	if got := run(t, "unsquashfs", "-cat", root, "etc/issue"); got != "upper\n" {
		t.Errorf("etc/issue: %q", got)
	}
}
