package store_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
	"github.com/slate-os/slate/sysext/store/storetest"
)

var (
	debian12 = sysext.Release{ID: "debian", VersionID: "12"}
	debian13 = sysext.Release{ID: "debian", VersionID: "13"}
)

func open(t testing.TB, ref string) *artifact.Artifact {
	t.Helper()
	a, err := artifact.OpenExtension(ref)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func add(t testing.TB, s *store.Store, ref, entry string) store.Entry {
	t.Helper()
	e, err := s.Add(context.Background(), open(t, ref), entry, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func list(t testing.TB, s *store.Store) []store.Entry {
	t.Helper()
	es, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// blobs lists the files under blobs/sha256.
func blobs(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestEmpty(t *testing.T) {
	s := store.Open(filepath.Join(t.TempDir(), "missing"))
	if es, err := s.List(); err != nil || len(es) != 0 {
		t.Errorf("List of a missing store: %v, %v", es, err)
	}
	if gone, err := s.Prune(func(store.Entry) bool { return false }); err != nil || len(gone) != 0 {
		t.Errorf("Prune of a missing store: %v, %v", gone, err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Prune created the store: %v", err)
	}
}

// Added extensions come back from List and open as artifacts whose
// signatures verify, in both formats, from the store.
func TestAddList(t *testing.T) {
	key := storetest.Key(t)
	gpuRef, gpuDigest := storetest.Ext{Name: "gpu", Version: "1.0", Release: sysext.ForHost(debian12), Seed: 1}.Layout(t)
	storetest.Sign(t, gpuRef, key, false)
	toolsRef, toolsDigest := storetest.Ext{Name: "tools", Version: "2.0", Release: sysext.ForHost(debian12), Seed: 2}.Layout(t)
	storetest.Sign(t, toolsRef, key, true)

	s := store.Open(filepath.Join(t.TempDir(), "store"))
	var progress []int64
	gpu, err := s.Add(context.Background(), open(t, gpuRef), "registry.example/ext/gpu:1.0", func(done, total int64) {
		progress = append(progress, done, total)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(progress) < 2 || progress[len(progress)-2] != progress[len(progress)-1] {
		t.Errorf("progress %v does not end with the whole image", progress)
	}
	tools := add(t, s, toolsRef, "")

	es := list(t, s)
	if len(es) != 2 {
		t.Fatalf("List: %d entries, want 2", len(es))
	}
	for i, c := range []struct {
		got    store.Entry
		added  store.Entry
		digest v1.Hash
		name   string
		ref    string
	}{
		{es[0], gpu, gpuDigest, "gpu", "registry.example/ext/gpu:1.0"},
		{es[1], tools, toolsDigest, "tools", ""},
	} {
		if c.got.Digest != c.digest || c.got.Config.Name != c.name || c.got.Ref != c.ref || c.got.Added.IsZero() {
			t.Errorf("entry %d: %+v", i, c.got)
		}
		if !c.got.Added.Equal(c.added.Added) || c.got.ImagePath != c.added.ImagePath || c.got.Digest != c.added.Digest {
			t.Errorf("entry %d: List %+v, Add returned %+v", i, c.got, c.added)
		}
		a, err := s.Artifact(c.digest)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.VerifySignature(key.Public()); err != nil {
			t.Errorf("%s from the store: %v", c.name, err)
		}
		if _, err := a.VerifySignature(storetest.Key(t).Public()); err == nil {
			t.Errorf("%s verifies with another key", c.name)
		}
		// The image file is the layer.
		rc, err := a.ExtensionImage.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		layer, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		file, err := os.ReadFile(c.got.ImagePath)
		if err != nil || !bytes.Equal(file, layer) {
			t.Errorf("%s: ImagePath %s is not the image layer (%v)", c.name, c.got.ImagePath, err)
		}
	}
	if fi, err := os.Stat(gpu.ImagePath); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("image blob: %v, %v", fi, err)
	}

	// Adding the same digest again copies nothing and updates Ref and Added.
	before := blobs(t, s.Dir)
	again := add(t, s, gpuRef, "registry.example/ext/gpu:latest")
	es = list(t, s)
	if len(es) != 2 || es[0].Ref != "registry.example/ext/gpu:latest" || !es[0].Added.Equal(again.Added) || es[0].Digest != gpuDigest {
		t.Errorf("after adding gpu again: %+v", es)
	}
	if after := blobs(t, s.Dir); !slices.Equal(before, after) {
		t.Errorf("adding again changed the blobs: %v → %v", before, after)
	}
	if a, err := s.Artifact(gpuDigest); err != nil {
		t.Fatal(err)
	} else if _, err := a.VerifySignature(key.Public()); err != nil {
		t.Errorf("gpu after adding again: %v", err)
	}
}

// A layer that is not what the manifest or the config says is refused,
// and leaves the store as it was.
func TestAddTampered(t *testing.T) {
	good := storetest.Ext{Name: "good", Version: "1", Release: sysext.ForHost(debian12), Seed: 3}
	for _, c := range []struct {
		name string
		make func(t *testing.T) string
		want string
	}{
		{"a byte of the blob flipped", func(t *testing.T) string {
			ext := storetest.Ext{Name: "bad", Version: "1", Release: sysext.ForHost(debian12), Seed: 4}
			ref, d := ext.Layout(t)
			a := open(t, ref)
			ld, _ := a.ExtensionImage.Digest()
			p := filepath.Join(strings.TrimPrefix(ref, "oci:"), "blobs", "sha256", ld.Hex)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[100] ^= 1
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return ref + "@" + d.String()
		}, "digest"},
		{"the config's root hash is not the image's", func(t *testing.T) string {
			ext := storetest.Ext{Name: "bad", Version: "1", Release: sysext.ForHost(debian12), Seed: 5, RootHash: strings.Repeat("ab", 32)}
			ref, _ := ext.Layout(t)
			return ref
		}, "root hash " + strings.Repeat("ab", 32)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := store.Open(filepath.Join(t.TempDir(), "store"))
			ref, _ := good.Layout(t)
			add(t, s, ref, "")
			before := blobs(t, s.Dir)
			index, _ := os.ReadFile(filepath.Join(s.Dir, "index.json"))

			_, err := s.Add(context.Background(), open(t, c.make(t)), "registry.example/ext/bad:1", nil)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad 1") {
				t.Fatalf("Add: %v, want an error naming the extension and %q", err, c.want)
			}
			if !errors.Is(err, store.ErrCorrupt) {
				t.Errorf("Add: %v does not wrap ErrCorrupt", err)
			}
			if after := blobs(t, s.Dir); !slices.Equal(before, after) {
				t.Errorf("blobs %v → %v", before, after)
			}
			if after, _ := os.ReadFile(filepath.Join(s.Dir, "index.json")); !bytes.Equal(index, after) {
				t.Errorf("index.json changed:\n%s", after)
			}
			if es := list(t, s); len(es) != 1 || es[0].Config.Name != "good" {
				t.Errorf("List: %+v", es)
			}
		})
	}
}

// A store whose files changed underneath is read with an error naming the
// entry, and the entries that are fine.
func TestListDamaged(t *testing.T) {
	s := store.Open(filepath.Join(t.TempDir(), "store"))
	r1, _ := storetest.Ext{Name: "one", Version: "1", Release: debian12, Seed: 6}.Layout(t)
	r2, d2 := storetest.Ext{Name: "two", Version: "1", Release: debian12, Seed: 7}.Layout(t)
	add(t, s, r1, "")
	add(t, s, r2, "")
	if err := os.WriteFile(filepath.Join(s.Dir, "blobs", "sha256", d2.Hex), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	es, err := s.List()
	if err == nil || !strings.Contains(err.Error(), d2.String()) {
		t.Errorf("List: %v, want an error naming %s", err, d2)
	}
	if len(es) != 1 || es[0].Config.Name != "one" {
		t.Errorf("List: %+v", es)
	}
}

func TestPrune(t *testing.T) {
	key := storetest.Key(t)
	s := store.Open(filepath.Join(t.TempDir(), "store"))
	var digests []v1.Hash
	for i, name := range []string{"a", "b", "c"} {
		ref, d := storetest.Ext{Name: name, Version: "1", Release: debian12, Seed: int64(10 + i)}.Layout(t)
		storetest.Sign(t, ref, key, false)
		storetest.Sign(t, ref, key, true)
		add(t, s, ref, "")
		digests = append(digests, d)
	}
	// What a crash leaves: a half-written blob and one nothing names.
	for _, n := range []string{".tmp-0123456789ab-42", strings.Repeat("0", 64)} {
		if err := os.WriteFile(filepath.Join(s.Dir, "blobs", "sha256", n), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := s.Prune(func(e store.Entry) bool { return e.Config.Name == "b" })
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range gone {
		names = append(names, e.Config.Name)
	}
	if !slices.Equal(names, []string{"a", "c"}) {
		t.Errorf("Prune removed %v, want a and c", names)
	}
	es := list(t, s)
	if len(es) != 1 || es[0].Digest != digests[1] {
		t.Fatalf("after Prune: %+v", es)
	}
	a, err := s.Artifact(digests[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifySignature(key.Public()); err != nil {
		t.Error(err)
	}
	// Only b's manifest, config and image, its .sig image and its bundle
	// referrer (each a manifest, a config and one layer) are left.
	var idx v1.IndexManifest
	raw, _ := os.ReadFile(filepath.Join(s.Dir, "index.json"))
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 3 {
		t.Errorf("index.json lists %d manifests, want b and its two signatures:\n%s", len(idx.Manifests), raw)
	}
	if got := blobs(t, s.Dir); len(got) > 9 {
		t.Errorf("%d blobs left: %v", len(got), got)
	}
	for _, n := range blobs(t, s.Dir) {
		if strings.HasPrefix(n, ".") || n == strings.Repeat("0", 64) {
			t.Errorf("Prune left %s", n)
		}
	}
}

func TestSelect(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(c byte) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(c), 64)} }
	e := func(d byte, name, ref string, rel sysext.Release, added int) store.Entry {
		return store.Entry{Digest: h(d), Ref: ref, Added: t0.Add(time.Duration(added) * time.Hour),
			Config: sysext.Config{Name: name, Version: "v" + string(d), Release: rel}}
	}
	const gpuRef = "registry.example/ext/gpu:1"
	entries := []store.Entry{
		e('1', "gpu", gpuRef, sysext.ForHost(debian12), 1),
		e('2', "gpu", gpuRef, sysext.ForHost(debian13), 2),
		e('3', "gpu", "", sysext.ForHost(debian12), 3),
		e('4', "tools", "", sysext.Release{ID: "_any"}, 1),
		e('5', "tools", "", sysext.Release{ID: "_any"}, 1),
	}
	for _, c := range []struct {
		name  string
		entry string
		host  sysext.Release
		want  byte // 0: none
		why   []string
	}{
		{"by reference", gpuRef, debian12, '1', []string{"gpu v2 (sha256:222222222222): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12"}},
		{"by reference, the other release", gpuRef, debian13, '2', []string{"gpu v1 (sha256:111111111111): not for this image: it is for debian VERSION_ID=12, this image is VERSION_ID=13"}},
		{"by name: the newest", "gpu", debian12, '3', []string{
			"gpu v2 (sha256:222222222222): not for this image: it is for debian VERSION_ID=13, this image is VERSION_ID=12",
			"gpu v1 (sha256:111111111111): gpu v3 (sha256:333333333333) was added later"}},
		{"no match", gpuRef, sysext.Release{ID: "fedora", VersionID: "40"}, 0, []string{
			"gpu v1 (sha256:111111111111): not for this image: it is for ID=debian, this image is ID=fedora",
			"gpu v2 (sha256:222222222222): not for this image: it is for ID=debian, this image is ID=fedora"}},
		{"unknown", "nothing", debian12, 0, nil},
		{"a tie: the higher digest", "tools", debian13, '5', []string{"tools v4 (sha256:444444444444): tools v5 (sha256:555555555555) was added at the same time and has the higher digest"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, why, ok := store.Select(entries, c.entry, c.host, sysext.SystemdArch)
			if ok != (c.want != 0) || (ok && got.Digest != h(c.want)) {
				t.Errorf("Select: %v %v, want %c", got.Digest, ok, c.want)
			}
			if !slices.Equal(why, c.why) {
				t.Errorf("why:\n  %s\nwant\n  %s", strings.Join(why, "\n  "), strings.Join(c.why, "\n  "))
			}
		})
	}
}

// The rendered store is a reproducible tar of the layout under ImageDir
// that opens and verifies once unpacked.
func TestLayer(t *testing.T) {
	key := storetest.Key(t)
	r1, d1 := storetest.Ext{Name: "gpu", Version: "1", Release: debian12, Seed: 20}.Layout(t)
	storetest.Sign(t, r1, key, false)
	r2, d2 := storetest.Ext{Name: "tools", Version: "1", Release: debian12, Seed: 21}.Layout(t)
	storetest.Sign(t, r2, key, true)
	mtime := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)

	render := func() []byte {
		s := store.Open(filepath.Join(t.TempDir(), "store"))
		add(t, s, r1, "")
		add(t, s, r2, "")
		l, err := s.Layer(mtime.Add(500 * time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		var direct bytes.Buffer
		if err := s.WriteTar(&direct, mtime); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(direct.Bytes(), b) {
			t.Error("WriteTar and Layer differ")
		}
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if want, _, _ := v1.SHA256(bytes.NewReader(b)); d != want {
			t.Errorf("Digest %s, the bytes are %s", d, want)
		}
		return b
	}
	first := render()
	if second := render(); !bytes.Equal(first, second) {
		t.Error("two renders of the same extensions differ")
	}

	root := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(first))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(mtime) {
			t.Errorf("%s: %d:%d %s", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		p := filepath.Join(root, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if h.Mode != 0o755 {
				t.Errorf("%s: mode %o", h.Name, h.Mode)
			}
			os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			if h.Mode != 0o644 {
				t.Errorf("%s: mode %o", h.Name, h.Mode)
			}
			b, _ := io.ReadAll(tr)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Errorf("%s: type %c", h.Name, h.Typeflag)
		}
	}
	if !slices.IsSorted(names) || names[0] != "usr/" || names[3] != "usr/lib/slate/extensions/" {
		t.Errorf("entries: %v", names)
	}
	s := store.Open(filepath.Join(root, store.ImageDir))
	es := list(t, s)
	if len(es) != 2 {
		t.Fatalf("unpacked store: %+v", es)
	}
	for _, e := range es {
		if !e.Added.Equal(mtime) || e.Ref != "" {
			t.Errorf("unpacked %s: added %s, ref %q", e, e.Added, e.Ref)
		}
	}
	for _, d := range []v1.Hash{d1, d2} {
		a, err := s.Artifact(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.VerifySignature(key.Public()); err != nil {
			t.Errorf("unpacked %s: %v", d, err)
		}
	}
}

// A stored image damaged where it lies is replaced when the extension is
// added again; a second manifest that claims the same image with another
// root hash is refused without touching it.
func TestAddRepairsAndShares(t *testing.T) {
	ext := storetest.Ext{Name: "x", Version: "1", Release: debian12, Seed: 30}
	ref, d := ext.Layout(t)
	s := store.Open(filepath.Join(t.TempDir(), "store"))
	e := add(t, s, ref, "")
	good, err := os.ReadFile(e.ImagePath)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[5000] ^= 0xff
	if err := os.WriteFile(e.ImagePath, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	add(t, s, ref, "")
	if got, _ := os.ReadFile(e.ImagePath); !bytes.Equal(got, good) {
		t.Error("the damaged image was not replaced")
	}

	liar := ext
	liar.Version, liar.RootHash = "2", strings.Repeat("cd", 32)
	lref, _ := liar.Layout(t)
	if la := open(t, lref); func() bool { ld, _ := la.ExtensionImage.Digest(); return ld.Hex != filepath.Base(e.ImagePath) }() {
		t.Fatal("the test extensions do not share their image")
	}
	if _, err := s.Add(context.Background(), open(t, lref), "", nil); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("Add of a manifest that lies about a stored image: %v", err)
	}
	if got, _ := os.ReadFile(e.ImagePath); !bytes.Equal(got, good) {
		t.Error("the shared image was changed")
	}
	if es := list(t, s); len(es) != 1 || es[0].Digest != d {
		t.Errorf("List: %+v", es)
	}
}
