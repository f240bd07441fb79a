package builder

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
	"github.com/slate-os/slate/sysext/store/storetest"
)

// testOS is internal/testimage's os-release.
var testOS = sysext.Release{ID: "testos", VersionID: "1"}

func ecdsaKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemKey(t *testing.T, k *ecdsa.PrivateKey) string {
	t.Helper()
	b, err := signature.MarshalPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An extension that matches the image goes into the root's store, signed,
// and into the artifact's config.
func TestBuildExtension(t *testing.T) {
	need(t, "tar2sqfs", "unsquashfs")
	img, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := ecdsaKey(t)
	ref, digest := storetest.Ext{Name: "tools", Version: "2.1", Release: sysext.ForHost(testOS), Seed: 7}.Layout(t)
	storetest.Sign(t, ref, key, false)

	dir := t.TempDir()
	s := testSpec(dir)
	s.Update.PublicKeys = []string{pemKey(t, key)}
	s.Extensions = []string{ref}
	res, err := buildImage(t, img, s)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extension{{Ref: ref, SignedBy: signature.KeyID(key.Public()), CarriedExtension: artifact.CarriedExtension{
		Name: "tools", Version: "2.1", Release: sysext.ForHost(testOS), Digest: digest.String()}}}
	if !reflect.DeepEqual(res.Extensions, want) {
		t.Errorf("result extensions %+v, want %+v", res.Extensions, want)
	}
	cfg := artifactConfig(t, res.Artifact)
	if !reflect.DeepEqual(cfg.Extensions, []artifact.CarriedExtension{want[0].CarriedExtension}) {
		t.Errorf("artifact config extensions %+v", cfg.Extensions)
	}

	// The root's store opens, its extension still signed, once unpacked.
	slotImg := region(t, res.Disk, res.Plan.Part(boot.NumRootA).Start, res.RootSize)
	out := filepath.Join(t.TempDir(), "root")
	run(t, "unsquashfs", "-no-xattrs", "-d", out, slotImg, strings.TrimPrefix(store.ImageDir, "/"))
	st := store.Open(filepath.Join(out, store.ImageDir))
	es, err := st.List()
	if err != nil || len(es) != 1 || es[0].Digest != digest || es[0].Ref != "" || !es[0].Added.Equal(testimage.Epoch) {
		t.Fatalf("the root's store: %+v, %v", es, err)
	}
	a, err := st.Artifact(digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifySignature(key.Public()); err != nil {
		t.Errorf("the image's extension: %v", err)
	}
	// The node files are still there: the store is one more layer.
	checkNodeFiles(t, slotImg, testimage.StaticBinary(t))

	// The same inputs, the same root, whenever the extension was stored.
	s = testSpec(t.TempDir())
	s.Update.PublicKeys = []string{pemKey(t, key)}
	s.Extensions = []string{ref}
	again, err := buildImage(t, img, s)
	if err != nil {
		t.Fatal(err)
	}
	if again.RootHash != res.RootHash {
		t.Errorf("a second build's root hash %s, the first's %s", again.RootHash, res.RootHash)
	}
}

// An extension for another OS release fails the build before any output
// is written, naming it and both releases.
func TestBuildExtensionMismatch(t *testing.T) {
	need(t, "tar2sqfs")
	img, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := storetest.Ext{Name: "gpu", Version: "1.0", Release: sysext.ForHost(sysext.Release{ID: "debian", VersionID: "12"}), Seed: 8}.Layout(t)
	dir := t.TempDir()
	s := testSpec(dir)
	s.Extensions = []string{ref}
	_, err = buildImage(t, img, s)
	want := "extension gpu 1.0 (" + ref + ") is for ID=debian VERSION_ID=12 ARCHITECTURE=x86-64, and this image's os-release is ID=testos VERSION_ID=1: it is for ID=debian, this image is ID=testos"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v\nwant %s", err, want)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("a failed build left %v", left)
	}
}

// What is refused before the image is read: signatures the image's keys
// do not verify, two extensions of one name, another architecture.
func TestBuildExtensionRefused(t *testing.T) {
	img, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, other := ecdsaKey(t), ecdsaKey(t)
	unsigned, _ := storetest.Ext{Name: "a", Version: "1", Release: sysext.ForHost(testOS), Seed: 9}.Layout(t)
	byOther, _ := storetest.Ext{Name: "b", Version: "1", Release: sysext.ForHost(testOS), Seed: 10}.Layout(t)
	storetest.Sign(t, byOther, other, true)
	twin, _ := storetest.Ext{Name: "a", Version: "2", Release: sysext.ForHost(testOS), Seed: 11}.Layout(t)
	for _, c := range []struct {
		name          string
		exts          []string
		allowUnsigned bool
		want          string
	}{
		{"unsigned", []string{unsigned}, false, "extensions[0] " + unsigned + " (a 1): not signed by an update key of this image: " + unsigned + ": not signed"},
		{"signed by another key", []string{byOther}, false, "extensions[0] " + byOther + " (b 1): not signed by an update key of this image: "},
		{"unsigned allowed, twice one name", []string{unsigned, twin}, true, "extensions[1] " + twin + " (a 2): the extension a is also extensions[0] " + unsigned},
		{"missing", []string{"oci:/nonexistent/ext"}, false, "extensions[0] oci:/nonexistent/ext: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := testSpec(dir)
			s.Update.PublicKeys = []string{pemKey(t, key)}
			s.Update.AllowUnsigned = c.allowUnsigned
			s.Extensions = c.exts
			// Refused before the root's pass: no tool is needed.
			_, err := Build(context.Background(), Options{Spec: s, Image: img, AgentBinary: testimage.StaticBinary(t)})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant %s", err, c.want)
			}
		})
	}
}
