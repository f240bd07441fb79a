package main

import (
	"archive/tar"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

const testEpoch = 1700000000 // 2023-11-14, older than any file the test creates

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value granting
// cap_net_raw (bit 13) permitted+effective, as setcap writes it.
var capNetRaw = string([]byte{
	0x01, 0x00, 0x00, 0x02, // magic: revision 2, effective flag
	0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // permitted[0], inheritable[0]
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // permitted[1], inheritable[1]
})

type treeFeatures struct {
	userXattr bool // the file system takes user.* xattrs
	root      bool // device nodes and security.capability
}

// makeTree builds the same small tree in dir; reverse creates the entries in
// the opposite order (and the hard link pair the other way round), so inode
// numbers and change times differ between the two trees.
func makeTree(t *testing.T, dir string, reverse bool) treeFeatures {
	t.Helper()
	feat := treeFeatures{root: os.Geteuid() == 0}
	p := func(rel string) string { return filepath.Join(dir, rel) }
	dirs := []string{"etc", "usr/bin", "usr/share", "lib", "run", "var/empty"}
	if feat.root {
		dirs = append(dirs, "dev")
	}
	for _, d := range dirs {
		must(t, os.MkdirAll(p(d), 0o755))
	}
	must(t, os.Chmod(p("var/empty"), 0o700))
	write := func(rel, data string, mode uint32) func() error {
		return func() error {
			if err := os.WriteFile(p(rel), []byte(data), 0o600); err != nil {
				return err
			}
			return unix.Chmod(p(rel), mode) // no umask; os.Chmod would drop 04000
		}
	}
	steps := []func() error{
		write("etc/hostname", "slate\n", 0o644),
		func() error {
			// Hard link pair: which name is created first must not matter.
			a, b := "usr/bin/tool", "usr/bin/tool-alias"
			if reverse {
				a, b = b, a
			}
			if err := write(a, "#!/bin/sh\necho tool\n", 0o755)(); err != nil {
				return err
			}
			return os.Link(p(a), p(b))
		},
		write("usr/bin/su", "su", 0o4755),
		write("usr/share/old", strings.Repeat("x", 100000), 0o644),
		func() error { return os.Symlink("usr/bin", p("bin")) },
		func() error { return os.Symlink("/nowhere", p("lib/dangling")) },
		func() error {
			if err := unix.Mkfifo(p("run/initctl"), 0o600); err != nil {
				return err
			}
			return os.Chmod(p("run/initctl"), 0o600)
		},
		func() error {
			l, err := net.Listen("unix", p("run/sock")) // skipped by Convert
			if err != nil {
				return err
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			return l.Close()
		},
	}
	if feat.root {
		steps = append(steps, func() error {
			if err := unix.Mknod(p("dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				return err
			}
			return unix.Chmod(p("dev/null"), 0o666)
		})
	}
	if reverse {
		slices.Reverse(steps)
	}
	for _, step := range steps {
		must(t, step())
	}
	old := time.Unix(testEpoch-86400, 0)
	must(t, os.Chtimes(p("usr/share/old"), old, old))

	err := unix.Lsetxattr(p("etc/hostname"), "user.slate.test", []byte("v\x00bin"), 0)
	switch {
	case err == nil:
		feat.userXattr = true
	case errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EPERM):
		t.Logf("no user xattrs here: %v", err)
	default:
		t.Fatal(err)
	}
	if feat.root {
		must(t, unix.Lsetxattr(p("usr/bin/tool"), "security.capability", []byte(capNetRaw), 0))
	}
	return feat
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// readFiles maps every file under dir to its content (directories to "").
func readFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			m[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		m[rel] = string(b)
		return err
	})
	must(t, err)
	return m
}

func TestConvertDeterministic(t *testing.T) {
	base := t.TempDir()
	treeA, treeB := filepath.Join(base, "a"), filepath.Join(base, "b")
	featA := makeTree(t, treeA, false)
	featB := makeTree(t, treeB, true)
	if featA != featB {
		t.Fatalf("trees differ in features: %+v %+v", featA, featB)
	}
	opts := Options{Epoch: testEpoch, CreatedBy: "test", Warn: io.Discard}

	outs := []string{filepath.Join(base, "oci-a1"), filepath.Join(base, "oci-a2"), filepath.Join(base, "oci-b")}
	var results []*Result
	for i, out := range outs {
		tree := treeA
		if i == 2 {
			tree = treeB
		}
		res, err := Convert(tree, out, opts)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	want := readFiles(t, outs[0])
	for i, out := range outs[1:] {
		got := readFiles(t, out)
		if len(got) != len(want) {
			t.Errorf("layout %d has %d files, first has %d", i+1, len(got), len(want))
		}
		for name, content := range want {
			if got[name] != content {
				t.Errorf("layout %d: %s differs from the first run", i+1, name)
			}
		}
		if *results[i+1] != *results[0] {
			t.Errorf("result %d = %+v, first = %+v", i+1, results[i+1], results[0])
		}
	}
	// No leftover temp blob.
	blobs, _ := os.ReadDir(filepath.Join(outs[0], "blobs/sha256"))
	if len(blobs) != 3 {
		t.Errorf("%d blobs, want 3 (manifest, config, layer)", len(blobs))
	}
	for _, b := range blobs {
		if fi, err := b.Info(); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("blob %s: mode %v, %v", b.Name(), fi.Mode(), err)
		}
	}
	checkLayout(t, outs[0], results[0], featA)
}

type entry struct {
	hdr  *tar.Header
	data string
}

func checkLayout(t *testing.T, dir string, res *Result, feat treeFeatures) {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	must(t, err)
	im, err := idx.IndexManifest()
	must(t, err)
	if len(im.Manifests) != 1 {
		t.Fatalf("%d manifests in index.json", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.Annotations["org.opencontainers.image.ref.name"] != "latest" {
		t.Errorf("annotations = %v", desc.Annotations)
	}
	if desc.MediaType != types.OCIManifestSchema1 || desc.Digest != res.Manifest {
		t.Errorf("descriptor = %+v", desc)
	}
	img, err := idx.Image(desc.Digest)
	must(t, err)
	m, err := img.Manifest()
	must(t, err)
	if m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("manifest = %+v", m)
	}
	cfg, err := img.ConfigFile()
	must(t, err)
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.Created.Unix() != testEpoch {
		t.Errorf("config os=%s arch=%s created=%v", cfg.OS, cfg.Architecture, cfg.Created)
	}
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != res.DiffID {
		t.Errorf("diff_ids = %v, want %v", cfg.RootFS.DiffIDs, res.DiffID)
	}
	layers, err := img.Layers()
	must(t, err)
	// Read back through the layout (not our fileLayer), verifying digests.
	checkDigest(t, layers[0], res)

	rc, err := layers[0].Uncompressed()
	must(t, err)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var names []string
	ents := map[string]entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		b, err := io.ReadAll(tr)
		must(t, err)
		names = append(names, h.Name)
		ents[h.Name] = entry{h, string(b)}
	}
	wantNames := []string{"bin", "etc/", "etc/hostname", "lib/", "lib/dangling", "run/", "run/initctl",
		"usr/", "usr/bin/", "usr/bin/su", "usr/bin/tool", "usr/bin/tool-alias", "usr/share/", "usr/share/old",
		"var/", "var/empty/"}
	if feat.root {
		wantNames = append([]string{"bin", "dev/", "dev/null"}, wantNames[1:]...)
	}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("entries:\n got %q\nwant %q", names, wantNames)
	}
	for _, n := range names {
		h := ents[n].hdr
		want := time.Unix(testEpoch, 0)
		if n == "usr/share/old" {
			want = time.Unix(testEpoch-86400, 0)
		}
		if !h.ModTime.Equal(want) {
			t.Errorf("%s mtime %v, want %v", n, h.ModTime, want)
		}
		if h.Uid != os.Getuid() || h.Gid != os.Getgid() || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s owner %d:%d (%q:%q)", n, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s has atime/ctime", n)
		}
	}
	expect := func(name string, typ byte, mode int64) *tar.Header {
		t.Helper()
		h := ents[name].hdr
		if h.Typeflag != typ || h.Mode != mode {
			t.Errorf("%s: type %q mode %#o, want %q %#o", name, h.Typeflag, h.Mode, typ, mode)
		}
		return h
	}
	if h := expect("bin", tar.TypeSymlink, 0o777); h.Linkname != "usr/bin" {
		t.Errorf("bin -> %q", h.Linkname)
	}
	if h := expect("lib/dangling", tar.TypeSymlink, 0o777); h.Linkname != "/nowhere" {
		t.Errorf("lib/dangling -> %q", h.Linkname)
	}
	expect("run/initctl", tar.TypeFifo, 0o600)
	expect("usr/bin/su", tar.TypeReg, 0o4755)
	expect("var/empty/", tar.TypeDir, 0o700)
	expect("usr/bin/tool", tar.TypeReg, 0o755)
	if ents["usr/bin/tool"].data != "#!/bin/sh\necho tool\n" {
		t.Errorf("usr/bin/tool content %q", ents["usr/bin/tool"].data)
	}
	if h := expect("usr/bin/tool-alias", tar.TypeLink, 0o755); h.Linkname != "usr/bin/tool" || h.Size != 0 {
		t.Errorf("usr/bin/tool-alias: link %q size %d", h.Linkname, h.Size)
	}
	if d := ents["usr/share/old"].data; len(d) != 100000 {
		t.Errorf("usr/share/old has %d bytes", len(d))
	}
	if feat.userXattr {
		if v := ents["etc/hostname"].hdr.PAXRecords["SCHILY.xattr.user.slate.test"]; v != "v\x00bin" {
			t.Errorf("etc/hostname xattr = %q (records %v)", v, ents["etc/hostname"].hdr.PAXRecords)
		}
	} else {
		t.Log("user xattrs not supported here: not checked")
	}
	if feat.root {
		if v := ents["usr/bin/tool"].hdr.PAXRecords["SCHILY.xattr.security.capability"]; v != capNetRaw {
			t.Errorf("usr/bin/tool security.capability = %x", v)
		}
		if h := expect("dev/null", tar.TypeChar, 0o666); h.Devmajor != 1 || h.Devminor != 3 {
			t.Errorf("dev/null is %d:%d", h.Devmajor, h.Devminor)
		}
	} else {
		t.Log("not root: device nodes and security.capability not checked")
	}
}

func checkDigest(t *testing.T, l v1.Layer, res *Result) {
	t.Helper()
	rc, err := l.Compressed()
	must(t, err)
	defer rc.Close()
	d, n, err := v1.SHA256(rc)
	must(t, err)
	if d != res.Layer || n != res.Size {
		t.Errorf("layer blob is %v (%d bytes), result says %v (%d)", d, n, res.Layer, res.Size)
	}
	urc, err := l.Uncompressed()
	must(t, err)
	defer urc.Close()
	d, n, err = v1.SHA256(urc)
	must(t, err)
	if d != res.DiffID || n != res.TarSize {
		t.Errorf("tar is %v (%d bytes), result says %v (%d)", d, n, res.DiffID, res.TarSize)
	}
}

func TestConvertRefusesNonEmptyOutput(t *testing.T) {
	tree, out := t.TempDir(), t.TempDir()
	must(t, os.WriteFile(filepath.Join(out, "x"), nil, 0o644))
	_, err := Convert(tree, out, Options{Epoch: testEpoch})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("err = %v", err)
	}
}

func TestConvertEmptyTree(t *testing.T) {
	tree, out := t.TempDir(), filepath.Join(t.TempDir(), "oci")
	res, err := Convert(tree, out, Options{Epoch: testEpoch})
	must(t, err)
	if res.Entries != 0 {
		t.Errorf("%d entries", res.Entries)
	}
	if _, err := layout.ImageIndexFromPath(out); err != nil {
		t.Fatal(err)
	}
}
