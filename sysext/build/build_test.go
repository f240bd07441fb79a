package build

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/internal/testtool"
	"github.com/slate-os/slate/sysext"
)

// tree writes files under a new directory: a name ending in / is a
// directory, "->" a symbolic link.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(name, "/"):
			err := os.MkdirAll(p, 0o755)
			if err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(body, "->"):
			if err := os.Symlink(strings.TrimPrefix(body, "->"), p); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// ociLayout writes img as an OCI layout and returns its reference.
func ociLayout(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir
}

func image(t *testing.T, layers ...[]testimage.Entry) v1.Image {
	t.Helper()
	img, err := testimage.Image(layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// extLayers are an extension's layers, with a whiteout and an opaque
// directory for flatten to apply.
func extLayers() [][]testimage.Entry {
	return [][]testimage.Entry{
		{
			testimage.Dir("usr"), testimage.Dir("usr/bin"),
			{Name: "usr/bin/tool", Mode: 0o755, Body: "#!/bin/sh\necho tool\n"},
			testimage.File("usr/bin/old", "whited out"),
			testimage.Dir("opt"), testimage.Dir("opt/tool"), testimage.File("opt/tool/stale", "hidden by the opaque marker"),
		},
		{
			testimage.Dir("usr"), testimage.Dir("usr/bin"), {Name: "usr/bin/.wh.old"},
			testimage.Dir("opt"), testimage.Dir("opt/tool"), {Name: "opt/tool/.wh..wh..opq"}, testimage.File("opt/tool/data", "fresh"),
		},
	}
}

func need(t *testing.T) { t.Helper(); testtool.Need(t, "tar2sqfs", "rdsquashfs") }

func build(t *testing.T, o Options) (*Result, error) {
	t.Helper()
	if o.Output == "" && o.Artifact == "" {
		o.Output = filepath.Join(t.TempDir(), "ext.raw")
	}
	return Build(context.Background(), o)
}

var debian12 = sysext.Release{ID: "debian", VersionID: "12"}

func TestContentRule(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		name   string
		src    func(t *testing.T) string
		want   []string
		absent []string
	}{
		{"one file", func(t *testing.T) string {
			return tree(t, map[string]string{"usr/bin/tool": "x", "etc/tool.conf": "y"})
		}, []string{"/etc: an extension holds only /usr and /opt"}, nil},
		{"nested", func(t *testing.T) string {
			return tree(t, map[string]string{"usr/bin/tool": "x", "var/lib/tool/state": "y", "srv/a": "b", "srv/c": "d"})
		}, []string{"outside /usr and /opt: /srv, /var; "}, []string{"/var/lib"}},
		{"empty etc", func(t *testing.T) string {
			return tree(t, map[string]string{"usr/bin/tool": "x", "etc/": ""})
		}, []string{"/etc: an extension holds only"}, nil},
		{"a base image", func(t *testing.T) string {
			return ociLayout(t, image(t, testimage.Base(testimage.Options{NoKernel: true})))
		}, []string{"outside /usr and /opt: /etc (and 2 entries under it), /var (and 2 entries under it), /proc, /sys, /dev, /run, /tmp, /boot, and 3 more"}, nil},
		{"a device", func(t *testing.T) string {
			return ociLayout(t, image(t, []testimage.Entry{testimage.Dir("usr"), {Name: "usr/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3}}))
		}, []string{"/usr/null: device nodes"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := build(t, Options{Source: tc.src(t), Name: "tool", Version: "1", Release: debian12})
			if err == nil {
				t.Fatal("built")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(err.Error(), a) {
					t.Errorf("error %q has %q", err, a)
				}
			}
		})
	}
}

func TestDirectoryRefusesSpecialFiles(t *testing.T) {
	need(t)
	dir := tree(t, map[string]string{"usr/bin/tool": "x"})
	if err := syscall.Mkfifo(filepath.Join(dir, "usr/bin/fifo"), 0o644); err != nil {
		t.Skip(err)
	}
	_, err := build(t, Options{Source: dir, Name: "tool", Version: "1", Release: debian12})
	if err == nil || !strings.Contains(err.Error(), "/usr/bin/fifo: a named pipe") {
		t.Errorf("fifo: %v", err)
	}
}

func TestRelease(t *testing.T) {
	need(t)
	rel := func(name, body string) map[string]string {
		return map[string]string{"usr/bin/tool": "x", "usr/lib/extension-release.d/extension-release." + name: body}
	}
	for _, tc := range []struct {
		name    string
		files   map[string]string
		o       Options
		want    sysext.Release
		wantErr string
	}{
		{"written", map[string]string{"usr/bin/tool": "x"}, Options{Name: "tool", Release: debian12},
			sysext.Release{ID: "debian", VersionID: "12", Architecture: "x86-64"}, ""},
		{"written for any", map[string]string{"usr/bin/tool": "x"}, Options{Name: "tool", Release: sysext.Release{ID: "_any", Architecture: "_any"}},
			sysext.Release{ID: "_any", Architecture: "_any"}, ""},
		{"kept, named by it", rel("tool", "ID=_any\nSYSEXT_SCOPE=system\n"), Options{},
			sysext.Release{ID: "_any", Scope: "system"}, ""},
		{"kept, agrees", rel("tool", "ID=debian\nVERSION_ID=12\n"), Options{Name: "tool", Release: sysext.Release{ID: "debian"}},
			sysext.Release{ID: "debian", VersionID: "12"}, ""},
		{"other name", rel("tool", "ID=_any\n"), Options{Name: "other", Release: debian12}, sysext.Release{},
			"carries /usr/lib/extension-release.d/extension-release.tool, but the extension is named other (--name)"},
		{"disagrees", rel("tool", "ID=fedora\n"), Options{Name: "tool", Release: debian12}, sysext.Release{},
			"extension-release.tool has ID=fedora, but debian was given"},
		{"no ID", rel("tool", "VERSION_ID=12\n"), Options{}, sysext.Release{}, "extension-release.tool: no ID="},
		{"bad field", rel("tool", "ID=debian\nVERSION_ID=\"12 beta\"\n"), Options{}, sysext.Release{}, "extension-release.tool: config.release.versionID"},
		{"two", map[string]string{"usr/lib/extension-release.d/extension-release.a": "ID=_any\n", "usr/lib/extension-release.d/extension-release.b": "ID=_any\n"},
			Options{}, sysext.Release{}, "2 extension-release files"},
		{"a link", map[string]string{"usr/lib/x": "ID=_any\n", "usr/lib/extension-release.d/extension-release.tool": "->../x"},
			Options{Name: "tool", Release: debian12}, sysext.Release{}, "must be a regular file"},
		{"no name", map[string]string{"usr/bin/tool": "x"}, Options{Release: debian12}, sysext.Release{}, "give --name"},
		{"no target", map[string]string{"usr/bin/tool": "x"}, Options{Name: "tool"}, sysext.Release{}, "give --for IMAGE"},
		{"usr/lib a link", map[string]string{"usr/lib": "->/opt"}, Options{Name: "tool", Release: debian12}, sysext.Release{}, "/usr/lib is a symbolic link in the source, not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Source, o.Version = tree(t, tc.files), "1.0"
			res, err := build(t, o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Config.Release != tc.want || res.Config.Name != "tool" {
				t.Errorf("name %q release %+v, want tool %+v", res.Config.Name, res.Config.Release, tc.want)
			}
			if kept := tc.o.Name == "" || tc.files["usr/lib/extension-release.d/extension-release.tool"] != ""; res.ReleaseKept != kept {
				t.Errorf("ReleaseKept %v", res.ReleaseKept)
			}
			r, err := Inspect(res.Output)
			if err != nil {
				t.Fatal(err)
			}
			if r.Release == nil || *r.Release != tc.want || r.Name != "tool" {
				t.Errorf("inspect: %q %+v", r.Name, r.Release)
			}
		})
	}
}

func TestReproducible(t *testing.T) {
	need(t)
	ref := ociLayout(t, image(t, extLayers()...))
	dir := tree(t, map[string]string{"usr/bin/tool": "x", "opt/tool/data": "y"})
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"image", Options{Source: ref, Name: "tool", Release: debian12}},
		{"directory", Options{Source: dir, Name: "tool", Version: "1.0", Release: debian12, ModTime: time.Unix(1700000000, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var outs [3][]byte
			for i := range outs {
				o := tc.o
				if i == 2 {
					o.Version = "2.0" // another version, another salt
				}
				res, err := build(t, o)
				if err != nil {
					t.Fatal(err)
				}
				if outs[i], err = os.ReadFile(res.Output); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(outs[0], outs[1]) {
				t.Error("two builds differ")
			}
			if bytes.Equal(outs[0], outs[2]) {
				t.Error("another version gave the same bytes (the salt ignores the version)")
			}
		})
	}
}

func TestImageSource(t *testing.T) {
	need(t)
	testtool.Need(t, "unsquashfs")
	img := image(t, extLayers()...)
	d, _ := img.Digest()
	res, err := build(t, Options{Source: ociLayout(t, img), Name: "tool", Release: debian12})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Config
	if c.Version != "1.0.0" || c.Source != d.String() || !c.Created.Equal(testimage.Epoch) || c.Architecture != "amd64" || c.OS != "linux" {
		t.Errorf("config %+v", c)
	}
	ls := listing(t, res.Output)
	for _, want := range []string{"/usr/bin/tool", "/opt/tool/data", "/usr/lib/extension-release.d/extension-release.tool"} {
		if !strings.Contains(ls, want) {
			t.Errorf("no %s in\n%s", want, ls)
		}
	}
	for _, gone := range []string{"/usr/bin/old", "/opt/tool/stale", ".wh."} {
		if strings.Contains(ls, gone) {
			t.Errorf("%s in\n%s", gone, ls)
		}
	}

	// No label, no --version: an error.
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = nil
	noLabel, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := build(t, Options{Source: ociLayout(t, noLabel), Name: "tool", Release: debian12}); err == nil || !strings.Contains(err.Error(), "give --version") {
		t.Errorf("no version: %v", err)
	}
	if _, err := build(t, Options{Source: tree(t, map[string]string{"usr/x": "y"}), Name: "tool", Release: debian12}); err == nil || !strings.Contains(err.Error(), "give --version") {
		t.Errorf("directory, no version: %v", err)
	}
}

func listing(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("unsquashfs", "-lln", "-d", "", path).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	return string(out)
}

func TestDirectorySource(t *testing.T) {
	need(t)
	testtool.Need(t, "unsquashfs")
	dir := tree(t, map[string]string{
		"usr/bin/tool": "tool", "usr/bin/tool-link": "->tool", "opt/tool/empty/": "",
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		must(os.Chown(filepath.Join(dir, "usr/bin/tool"), 1000, 1000))
	}
	must(os.Chmod(filepath.Join(dir, "usr/bin/tool"), 0o755|os.ModeSetuid)) // after chown, which clears it
	must(os.Link(filepath.Join(dir, "usr/bin/tool"), filepath.Join(dir, "usr/bin/tool2")))
	mt := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	res, err := build(t, Options{Source: dir, Name: "tool", Version: "1.0", Release: debian12, ModTime: mt})
	if err != nil {
		t.Fatal(err)
	}
	if res.Config.Source != "" || !res.Config.Created.Equal(mt) {
		t.Errorf("source %q created %s", res.Config.Source, res.Config.Created)
	}
	ls := listing(t, res.Output)
	for _, want := range []string{
		"-rwsr-xr-x 0/0", "2025-05-06 07:08 /usr/bin/tool\n",
		"/usr/bin/tool-link -> tool",
		"/opt/tool/empty",
		"/usr/lib/extension-release.d/extension-release.tool",
	} {
		if !strings.Contains(ls, want) {
			t.Errorf("no %q in\n%s", want, ls)
		}
	}
	if strings.Contains(ls, "1000") {
		t.Errorf("an owner kept:\n%s", ls)
	}
	x := filepath.Join(t.TempDir(), "x")
	if out, err := exec.Command("unsquashfs", "-q", "-n", "-d", x, res.Output, "usr/bin").CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	a, _ := os.Stat(filepath.Join(x, "usr/bin/tool"))
	b, _ := os.Stat(filepath.Join(x, "usr/bin/tool2"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("usr/bin/tool2 is not a hard link of usr/bin/tool")
	}
}

func TestInspect(t *testing.T) {
	need(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "tool.raw")
	// Incompressible: several data blocks, a tree with a level.
	noise := make([]byte, 256<<10)
	x := uint32(2463534242)
	for i := range noise {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		noise[i] = byte(x)
	}
	res, err := build(t, Options{Source: tree(t, map[string]string{"usr/bin/tool": string(noise)}),
		Name: "tool", Version: "1.0", Release: debian12, Output: out, Artifact: filepath.Join(dir, "tool.oci")})
	if err != nil {
		t.Fatal(err)
	}
	if !IsImage(out) || IsImage(dir) || IsImage(filepath.Join(dir, "tool.oci", "index.json")) {
		t.Error("IsImage")
	}
	r, err := Inspect(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Image != res.Config.Image || !r.TreeConsistent || len(r.Problems) > 0 || r.Name != "tool" ||
		r.ReleaseFile["VERSION_ID"] != "12" || r.Kind != "extension-image" {
		t.Errorf("inspect %+v\nbuilt %+v", r, res.Config.Image)
	}
	var text bytes.Buffer
	r.Text(&text)
	for _, want := range []string{"name      tool", "release   ID=debian VERSION_ID=12 ARCHITECTURE=x86-64", "roothash  " + res.Config.Image.RootHash, "consistent"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}

	// The artifact carries the same config and image.
	a, err := artifact.OpenExtension(artifact.LayoutPrefix + filepath.Join(dir, "tool.oci"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Extension == nil || *a.Extension != res.Config || a.Digest.String() != res.Digest {
		t.Errorf("artifact config %+v digest %s, built %+v %s", a.Extension, a.Digest, res.Config, res.Digest)
	}
	rc, err := a.ExtensionImage.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	rc.Close()
	raw, _ := os.ReadFile(out)
	if err != nil || !bytes.Equal(blob, raw) {
		t.Errorf("the artifact's image is not EXT.raw (%v)", err)
	}

	// A flipped byte in the tree, then in the data.
	l := res.Config.Image
	for _, tc := range []struct {
		name string
		at   int64
		want string
	}{
		{"top hash block", l.HashOffset + verity.BlockSize + 100, "the stored hash tree does not match the data: verity: data block"},
		{"data", l.DataSize - 2*verity.BlockSize, "does not match the data: verity: data block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(t.TempDir(), "bad.raw")
			b := bytes.Clone(raw)
			b[tc.at] ^= 1
			if err := os.WriteFile(bad, b, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Inspect(bad)
			if err != nil {
				t.Fatal(err)
			}
			if r.TreeConsistent || len(r.Problems) == 0 || !strings.Contains(r.Problems[0], tc.want) {
				t.Errorf("consistent %v, problems %q, want %q", r.TreeConsistent, r.Problems, tc.want)
			}
			if tc.name == "data" && (r.Image.RootHash == l.RootHash || r.TreeRootHash != l.RootHash) {
				t.Errorf("root hash %s, tree's %s: not recomputed from the data", r.Image.RootHash, r.TreeRootHash)
			}
		})
	}

	// A bare squashfs: no tree.
	bare := filepath.Join(dir, "bare.sqfs")
	if err := os.WriteFile(bare, raw[:l.DataSize], 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := Inspect(bare); err != nil || r.TreeConsistent || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "no verity tree") {
		t.Errorf("bare squashfs: %+v %v", r, err)
	}
	if _, err := Inspect(filepath.Join(dir, "tool.oci", "index.json")); err == nil || !strings.Contains(err.Error(), "not a squashfs") {
		t.Errorf("not a squashfs: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := Inspect(out); err == nil || !strings.Contains(err.Error(), "apt-get install squashfs-tools-ng") {
		t.Errorf("without rdsquashfs: %v", err)
	}
}

func TestFor(t *testing.T) {
	need(t)
	osImage := ociLayout(t, image(t, testimage.Base(testimage.Options{NoKernel: true, NoSystemdBoot: true})))
	ext := tree(t, map[string]string{"usr/bin/tool": "x"})
	res, err := build(t, Options{Source: ext, Name: "tool", Version: "1", For: osImage})
	if err != nil {
		t.Fatal(err)
	}
	want := sysext.Release{ID: "testos", VersionID: "1", Architecture: "x86-64"}
	if res.Config.Release != want || res.For == nil || res.For.ID != "testos" {
		t.Errorf("release %+v for %+v", res.Config.Release, res.For)
	}

	// /etc/os-release, a file, wins over /usr/lib/os-release; SYSEXT_LEVEL
	// wins over VERSION_ID.
	etc := ociLayout(t, image(t, testimage.Base(testimage.Options{NoKernel: true, NoSystemdBoot: true}),
		[]testimage.Entry{testimage.Dir("etc"), testimage.File("etc/os-release", "ID=other\nVERSION_ID=7\nSYSEXT_LEVEL=1.2\n")}))
	if res, err := build(t, Options{Source: ext, Name: "tool", Version: "1", For: etc}); err != nil ||
		res.Config.Release != (sysext.Release{ID: "other", SysextLevel: "1.2", Architecture: "x86-64"}) {
		t.Errorf("etc/os-release: %+v %v", res, err)
	}

	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no os-release", Options{Source: ext, Name: "tool", For: ociLayout(t, image(t, []testimage.Entry{testimage.Dir("usr")}))},
			"neither /etc/os-release nor /usr/lib/os-release"},
		{"kept, for another OS", Options{Source: tree(t, map[string]string{"usr/lib/extension-release.d/extension-release.tool": "ID=testos\nVERSION_ID=2\n"}), For: osImage},
			"extension-release.tool (ID=testos VERSION_ID=2) is not for " + osImage + " (ID=testos VERSION_ID=1"},
		{"both", Options{Source: ext, Name: "tool", For: osImage, Release: debian12}, "either --for IMAGE or the release fields"},
		{"missing", Options{Source: ext, Name: "tool", For: "oci:" + filepath.Join(t.TempDir(), "nope")}, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Version = "1"
			if _, err := build(t, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}

	// An update artifact: the os-release its config carries.
	root, err := build(t, Options{Source: ext, Name: "root", Version: "1", Release: debian12})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs")
	if err := os.WriteFile(kernel, []byte("MZ kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, []byte{0x1f, 0x8b, 8, 0, 1, 2, 3}, 0o644); err != nil {
		t.Fatal(err)
	}
	update := filepath.Join(dir, "node.oci")
	if _, err := artifact.Write(update, artifact.Config{Version: "1.0", Architecture: "amd64", OS: "linux", Source: "sha256:" + strings.Repeat("ab", 32),
		KernelRelease: testimage.KernelRelease, Root: root.Config.Image, Created: testimage.Epoch, OSRelease: sysext.Release{ID: "testos", SysextLevel: "3"}},
		artifact.Blobs{Root: artifact.Blob{Path: root.Output}, Kernel: artifact.Blob{Path: kernel}, Initramfs: artifact.Blob{Path: initrd}}); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{update, "oci:" + update} {
		if res, err := build(t, Options{Source: ext, Name: "tool", Version: "1", For: ref}); err != nil ||
			res.Config.Release != (sysext.Release{ID: "testos", SysextLevel: "3", Architecture: "x86-64"}) {
			t.Errorf("for the update artifact %s: %+v %v", ref, res, err)
		}
	}

	// A kept release that matches is kept.
	if res, err := build(t, Options{Source: tree(t, map[string]string{"usr/lib/extension-release.d/extension-release.tool": "ID=testos\nVERSION_ID=1\n"}),
		For: osImage, Version: "1"}); err != nil || !res.ReleaseKept {
		t.Errorf("kept and matching: %+v %v", res, err)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Output: "x"}, "no source"},
		{Options{Source: "x"}, "nothing to write"},
		{Options{Source: "x", Output: "x", Name: "../x"}, "--name"},
		{Options{Source: "x", Output: "x", Release: sysext.Release{VersionID: "12"}}, "need --id"},
		{Options{Source: "x", Output: "x", Release: sysext.Release{ID: "debian os"}}, "config.release.id"},
	} {
		if _, err := Build(context.Background(), tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
}
