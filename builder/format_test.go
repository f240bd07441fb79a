package builder

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/slate-os/slate/builder/format"
	"github.com/slate-os/slate/builder/inspect"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/internal/testtool"
)

// A build writes the disk in the format asked for under the output's name,
// leaves no temporary file beside it, and slate inspect reads it back to the
// partitions and slot the build planned. (Package format tests each format
// in depth; TestBuildIsReproducible a whole build's bytes.)
func TestBuildFormats(t *testing.T) {
	need(t, "tar2sqfs", "qemu-img", "xz")
	img, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range format.Names {
		t.Run(f, func(t *testing.T) {
			dir := t.TempDir()
			s := testSpec(dir)
			s.Outputs.Artifact = ""
			s.Outputs.Format = f
			s.Outputs.Disk = filepath.Join(dir, "node."+f)
			if f == format.GCE {
				s.Outputs.Disk = filepath.Join(dir, "node.tar.gz")
			}
			// A small disk: the conversions read every byte of it.
			s.Disk.SlotSize, s.Disk.ESPSize = 16<<20, 128<<20
			res, err := buildImage(t, img, s)
			if err != nil {
				t.Fatal(err)
			}
			if res.Disk != s.Outputs.Disk || res.Format != f {
				t.Errorf("result: disk %s format %s", res.Disk, res.Format)
			}
			if left, _ := os.ReadDir(dir); len(left) != 1 {
				t.Errorf("the output directory holds %v, want only the disk", left)
			}
			converted := false
			for _, st := range res.Steps {
				converted = converted || st.Name == "convert"
			}
			if converted != (f != format.Raw) {
				t.Errorf("steps %+v: a convert step only for a format other than raw", res.Steps)
			}
			rep, err := inspect.Path(res.Disk)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Format != f || !reflect.DeepEqual(*rep.Disk, res.Plan) {
				t.Errorf("inspect: format %s, disk %+v; want %s, %+v", rep.Format, rep.Disk, f, res.Plan)
			}
			if a := rep.Slots[0]; a.State != "good" || a.RootHash != res.RootHash || a.Release == nil || len(a.Problems) > 0 {
				t.Errorf("inspect: slot A %+v", a)
			}
		})
	}
}

// The format's tool missing fails the build before its slow steps, saying
// which and where to get it, and leaves nothing.
func TestBuildFormatToolMissing(t *testing.T) {
	need(t, "tar2sqfs")
	img, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	testimage.StaticBinary(t) // built (once) before PATH loses the go tool
	tar2sqfs := testtool.Path(t, "tar2sqfs")
	bin := t.TempDir()
	if err := os.Symlink(tar2sqfs, filepath.Join(bin, "tar2sqfs")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	dir := t.TempDir()
	s := testSpec(dir)
	s.Outputs.Format, s.Outputs.Disk = format.VHD, filepath.Join(dir, "node.vhd")
	s.Disk.SlotSize, s.Disk.ESPSize = 16<<20, 128<<20
	_, err = buildImage(t, img, s)
	if want := "outputs.format vhd: qemu-img is not installed (Debian: apt-get install qemu-utils)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("a failed build left %v", left)
	}
}
