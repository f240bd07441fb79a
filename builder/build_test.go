package builder

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/builder/inspect"
	"github.com/slate-os/slate/builder/nodefiles"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/internal/testtool"
	"github.com/slate-os/slate/signature"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	testtool.Need(t, tools...)
}

func testSpec(dir string) spec.Spec {
	return spec.Spec{APIVersion: spec.APIVersion, Kind: spec.Kind, Source: "test",
		Outputs: spec.Outputs{Disk: filepath.Join(dir, "disk.raw"), Artifact: filepath.Join(dir, "node.oci")}}
}

func buildImage(t *testing.T, img v1.Image, s spec.Spec) (*Result, error) {
	t.Helper()
	return Build(context.Background(), Options{Spec: s, Image: img, AgentBinary: testimage.StaticBinary(t)})
}

// region copies bytes [off, off+n) of a file into a new temp file.
func region(t *testing.T, path string, off, n int64) string {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := filepath.Join(t.TempDir(), "region")
	dst, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, off, n)); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	return out
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestBuildDiskAndArtifact(t *testing.T) {
	need(t, "tar2sqfs", "sgdisk", "fsck.fat", "veritysetup", "unsquashfs")
	img, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// One update key, named twice (a file and the same key inline): baked
	// into the root once.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := signature.MarshalPublicKey(key.Public())
	keyFile := filepath.Join(dir, "release.pub")
	if err := os.WriteFile(keyFile, keyPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := testSpec(dir)
	ts.Update.PublicKeys = []string{keyFile, string(keyPEM)}
	res, err := buildImage(t, img, ts)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{signature.KeyID(key.Public())}; !slices.Equal(res.UpdateKeys, want) || res.AllowUnsigned {
		t.Errorf("update keys %q (allow unsigned %v), want %q", res.UpdateKeys, res.AllowUnsigned, want)
	}
	raw := res.Disk
	if res.Version != "1.0.0" {
		t.Errorf("version %q, want the image label 1.0.0", res.Version)
	}

	// The partition table, as sgdisk reads it.
	gpt := run(t, "sgdisk", "--verify", raw)
	if !strings.Contains(gpt, "No problems found") {
		t.Errorf("sgdisk --verify:\n%s", gpt)
	}
	for n, want := range map[int][2]string{
		1: {boot.TypeESP, boot.PartESP},
		2: {boot.TypeRootX8664, "slate-root-a"},
		3: {boot.TypeRootX8664, "slate-root-b"},
		4: {boot.TypeVar, boot.PartState},
	} {
		info := run(t, "sgdisk", "--info="+strconv.Itoa(n), raw)
		if !strings.Contains(info, want[0]) || !strings.Contains(info, "'"+want[1]+"'") {
			t.Errorf("partition %d: want type %s name %s:\n%s", n, want[0], want[1], info)
		}
	}
	if info := run(t, "sgdisk", "--info=2", raw); !strings.Contains(info, "Attribute flags: 9000000000000000") {
		t.Errorf("slot A lacks the read-only and no-auto attributes:\n%s", info)
	}

	// The ESP is FAT32, fsck-clean, and holds the boot files.
	espPart := res.Plan.Part(boot.NumESP)
	espImg := region(t, raw, espPart.Start, espPart.Size)
	if out, err := exec.Command("fsck.fat", "-n", espImg).CombinedOutput(); err != nil || strings.Contains(string(out), "\n  ") {
		t.Errorf("fsck.fat -n: %v\n%s", err, out)
	}
	rep, err := inspect.Disk(raw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rep.Loader, "default") {
		t.Errorf("loader.conf has a default line, which overrides boot counting:\n%s", rep.Loader)
	}
	a, b := rep.Slots[0], rep.Slots[1]
	if a.State != "good" || a.Entry != "slate-a.conf" || a.Generation != 1 || a.Version != "1.0.0" || a.RootHash != res.RootHash {
		t.Errorf("slot A: %+v", a)
	}
	if b.State != "empty" {
		t.Errorf("slot B: %+v", b)
	}
	for _, arg := range []string{"console=ttyS0,115200", "panic=10", "slate.slot=a", "slate.root=" + a.PartUUID, "slate.roothash=" + res.RootHash,
		"slate.state=" + res.Plan.Part(boot.NumState).GUID} {
		if !strings.Contains(a.Cmdline, arg) {
			t.Errorf("slot A command line lacks %s: %s", arg, a.Cmdline)
		}
	}

	// Slot A: squashfs then a verity tree veritysetup accepts.
	slot := res.Plan.Part(boot.NumRootA)
	slotImg := region(t, raw, slot.Start, res.RootSize)
	rootCfg := artifactConfig(t, res.Artifact)
	run(t, "veritysetup", "verify", slotImg, slotImg, res.RootHash, "--hash-offset="+strconv.FormatInt(rootCfg.Root.HashOffset, 10))
	if ls := run(t, "unsquashfs", "-lln", slotImg); !strings.Contains(ls, "/usr/bin/su") {
		t.Errorf("slot A squashfs lacks /usr/bin/su")
	}
	checkNodeFiles(t, slotImg, testimage.StaticBinary(t))
	// What the image's agent trusts, in the root.
	info, err := boot.ParseImageInfo([]byte(run(t, "unsquashfs", "-cat", slotImg, boot.ImageInfoFile)))
	if err != nil || info.Version != "1.0.0" || !info.Created.Equal(rootCfg.Created) || info.Source != rootCfg.Source || info.AllowUnsigned {
		t.Errorf("image.json: %+v (%v); want version 1.0.0 created %s from %s", info, err, rootCfg.Created, rootCfg.Source)
	}
	if got := run(t, "unsquashfs", "-cat", slotImg, nodefiles.UpdateKeyPath(0)); got != string(keyPEM) {
		t.Errorf("%s: %q, want the key", nodefiles.UpdateKeyPath(0), got)
	}
	if ls := run(t, "unsquashfs", "-lln", slotImg); strings.Contains(ls, "update-keys/02.pub") {
		t.Error("a key named twice was baked in twice")
	}

	// Slot A's release on the ESP says what the slot holds.
	rel := a.Release
	if rel == nil {
		t.Fatalf("slot A has no release (%v)", a.Problems)
	}
	want := boot.Release{Slot: boot.SlotA, Version: "1.0.0", Source: res.Source, RootHash: res.RootHash, RootSize: res.RootSize,
		KernelRelease: testimage.KernelRelease, Architecture: "amd64", Created: testimage.Epoch}
	if *rel != want || len(a.Problems) != 0 {
		t.Errorf("slot A release:\n got %+v\nwant %+v\nproblems %v", *rel, want, a.Problems)
	}
	// The initramfs as inspect reads it off the ESP: ext4's crc32c came
	// through its soft dependency, before it; the optional drivers the
	// fake kernel lacks are only listed.
	wantMods := []string{"squashfs", "crc32c_generic", "jbd2", "ext4", "virtio_ring", "virtio", "virtio_pci", "virtio_blk", "efi_pstore"}
	if a.Initramfs == nil || !reflect.DeepEqual(a.Initramfs.Modules, wantMods) || !reflect.DeepEqual(res.Initramfs, wantMods) || a.Initramfs.KernelRelease != res.KernelRelease {
		t.Errorf("slot A initramfs %+v, build result %v, want modules %v", a.Initramfs, res.Initramfs, wantMods)
	}
	// The optional modules the fake kernel lacks, in initramfs.DefaultModules' order.
	wantSkipped := []string{"ahci", "xen_blkfront", "hv_storvsc", "crypto-sha256", "udf", "ata_piix", "vmw_pvscsi", "mptspi",
		"virtio_net", "ena", "gve", "hv_netvsc", "xen_netfront", "vmxnet3", "e1000", "e1000e"}
	if !reflect.DeepEqual(res.InitramfsSkipped, wantSkipped) {
		t.Errorf("skipped %v", res.InitramfsSkipped)
	}
	if ar, err := inspect.Path(res.Artifact); err != nil || ar.Artifact.Initramfs == nil || !reflect.DeepEqual(ar.Artifact.Initramfs.Modules, wantMods) {
		t.Errorf("artifact's initramfs: %+v %v", ar, err)
	}
	if b.Release != nil || len(b.Problems) != 0 || b.Initramfs != nil {
		t.Errorf("slot B has a release %+v, an initramfs %+v or problems %v", b.Release, b.Initramfs, b.Problems)
	}
	var text strings.Builder
	rep.Text(&text)
	if want := "  release  1.0.0, kernel " + testimage.KernelRelease + ", root " + strconv.FormatInt(res.RootSize, 10) + " bytes, created 2026-01-02T03:04:05Z\n  source   " + res.Source + "\n"; !strings.Contains(text.String(), want) {
		t.Errorf("slate inspect text lacks slot A's release %q:\n%s", want, text.String())
	}
	// The state partition carries the first-boot marker.
	st := res.Plan.Part(boot.NumState)
	if m := region(t, raw, st.Start, int64(len(boot.StateUnformatted))); readFile(t, m) != boot.StateUnformatted {
		t.Error("state partition lacks the unformatted marker")
	}

	// The artifact: config and root layer agree with the disk.
	if rootCfg.Root.RootHash != res.RootHash || rootCfg.Version != "1.0.0" || rootCfg.Architecture != "amd64" ||
		rootCfg.OSRelease.ID != "testos" || rootCfg.OSRelease.VersionID != "1" {
		t.Errorf("artifact config: %+v", rootCfg)
	}
	art, err := artifact.Open("oci:" + res.Artifact)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := art.Root.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	layerSum := sha256.New()
	io.Copy(layerSum, rc)
	rc.Close()
	if !bytes.Equal(layerSum.Sum(nil), sum(t, slotImg)) {
		t.Error("artifact root layer differs from slot A")
	}
	// The image's systemd-boot goes along (the test image's is a fake
	// without a version: the config names none).
	if art.SystemdBoot == nil {
		t.Fatal("the artifact has no systemd-boot layer")
	}
	rc, err = art.SystemdBoot.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	loader, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(loader) != "MZ fake systemd-boot\n" || art.Config.SystemdBootVersion != "" {
		t.Errorf("systemd-boot layer %q (%v), version %q", loader, err, art.Config.SystemdBootVersion)
	}
}

// checkNodeFiles checks that a slot's squashfs holds slate's files on top of
// the image: the agent (byte for byte), the health unit, its [Install] links
// and the bless-boot drop-in.
func checkNodeFiles(t *testing.T, slotImg, agent string) {
	t.Helper()
	ls := run(t, "unsquashfs", "-lln", slotImg)
	for _, want := range []string{
		"-rwxr-xr-x 0/0 .* squashfs-root/usr/bin/slate\n",
		"-rw-r--r-- 0/0 .* squashfs-root/usr/lib/systemd/system/slate-health.service\n",
		"lrwxrwxrwx 0/0 .* squashfs-root/usr/lib/systemd/system/boot-complete.target.requires/slate-health.service -> ../slate-health.service\n",
		"lrwxrwxrwx 0/0 .* squashfs-root/usr/lib/systemd/system/multi-user.target.wants/slate-health.service -> ../slate-health.service\n",
		"-rw-r--r-- 0/0 .* squashfs-root/usr/lib/systemd/system/systemd-bless-boot.service.d/50-slate.conf\n",
	} {
		if !regexp.MustCompile(want).MatchString(ls) {
			t.Errorf("slot squashfs lacks %q", want)
		}
	}
	got := run(t, "unsquashfs", "-cat", slotImg, "usr/bin/slate")
	if got != readFile(t, agent) {
		t.Errorf("/usr/bin/slate in the slot (%d bytes) is not the agent binary", len(got))
	}
	if got := run(t, "unsquashfs", "-cat", slotImg, nodefiles.HealthUnit); got != nodefiles.HealthService {
		t.Errorf("slate-health.service in the slot:\n%s", got)
	}
}

func artifactConfig(t *testing.T, dir string) artifact.Config {
	t.Helper()
	a, err := artifact.Open("oci:" + dir)
	if err != nil {
		t.Fatal(err)
	}
	return a.Config
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sum(t *testing.T, p string) []byte {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return h.Sum(nil)
}

func treeSums(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(root, p)
			out[rel] = string(sum(t, p))
		}
		return nil
	})
	return out
}

func TestBuildIsReproducible(t *testing.T) {
	need(t, "tar2sqfs", "qemu-img")
	img, err := testimage.Node(testimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var disks [2][]byte
	var arts [2]map[string]string
	for i := range disks {
		dir := t.TempDir()
		s := testSpec(dir)
		s.Outputs.Format = "qcow2"
		res, err := buildImage(t, img, s)
		if err != nil {
			t.Fatal(err)
		}
		disks[i] = sum(t, res.Disk)
		arts[i] = treeSums(t, res.Artifact)
	}
	if !bytes.Equal(disks[0], disks[1]) {
		t.Error("two builds gave different disks")
	}
	if len(arts[0]) == 0 || len(arts[0]) != len(arts[1]) {
		t.Fatalf("artifact files: %d vs %d", len(arts[0]), len(arts[1]))
	}
	for k, v := range arts[0] {
		if arts[1][k] != v {
			t.Errorf("artifact file %s differs between builds", k)
		}
	}
}

func TestBuildErrorsLeaveNothing(t *testing.T) {
	need(t, "tar2sqfs")
	big, err := testimage.Node(testimage.Options{BigFile: 3 << 20})
	if err != nil {
		t.Fatal(err)
	}
	noKernel, _ := testimage.Node(testimage.Options{NoKernel: true})
	noBoot, _ := testimage.Node(testimage.Options{NoSystemdBoot: true})
	small := func(s *spec.Spec) { s.Disk.SlotSize = 2 << 20 } // the image expands to less than 4 times that
	tiny := func(s *spec.Spec) { s.Disk.SlotSize = 1 << 20 }
	for _, tc := range []struct {
		name  string
		img   v1.Image
		tweak func(*spec.Spec)
		want  string
	}{
		{"slot too small", big, small, "disk.slotSize: the root image with its hash tree is"},
		{"image expands past the bound", big, tiny, "the image expands to more than 4MiB, 4 × disk.slotSize (1MiB)"},
		{"no kernel", noKernel, nil, "no kernel in the image"},
		{"no systemd-boot", noBoot, nil, "no systemd-boot in the image"},
		{"unreadable source", nil, func(s *spec.Spec) { s.Source = "oci:/nonexistent/layout" }, "no such file or directory: /nonexistent/layout"},
		{"bad spec", noKernel, func(s *spec.Spec) { s.Root.Compression = "brotli" }, "root.compression"},
		{"missing output dir", noKernel, func(s *spec.Spec) { s.Outputs.Disk = "/nonexistent/dir/disk.raw" }, "directory /nonexistent/dir does not exist"},
		{"no agent", noKernel, nil, "no agent binary"},
		{"dynamic agent", noKernel, nil, "agent binary /bin/true is dynamically linked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := testSpec(dir)
			if tc.tweak != nil {
				tc.tweak(&s)
			}
			o := Options{Spec: s, Image: tc.img, AgentBinary: testimage.StaticBinary(t)}
			switch tc.name {
			case "no agent":
				o.AgentBinary = ""
			case "dynamic agent":
				o.AgentBinary = "/bin/true"
			}
			_, err := Build(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("a failed build left %v in the output directory", left)
			}
		})
	}
}

// An image that ships its own /usr/bin/slate gets the builder's: the node
// runs the agent that matches the init and the disk layout.
func TestBuildAgentReplacesTheImages(t *testing.T) {
	need(t, "tar2sqfs", "unsquashfs")
	img, err := testimage.Image(testimage.Base(testimage.Options{}), []testimage.Entry{
		{Name: "usr/bin/slate", Mode: 0o700, UID: 1000, Body: "#!/bin/sh\necho old agent\n"},
		testimage.Dir("usr/lib/systemd/system"),
		testimage.File("usr/lib/systemd/system/slate-health.service", "[Unit]\nDescription=old\n"),
		testimage.Dir("usr/lib/systemd/system/multi-user.target.wants"),
		{Name: "usr/lib/systemd/system/multi-user.target.wants/other.service", Type: '2', Link: "../other.service"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := testSpec(dir)
	s.Outputs.Artifact = ""
	res, err := buildImage(t, img, s)
	if err != nil {
		t.Fatal(err)
	}
	slotImg := region(t, res.Disk, res.Plan.Part(boot.NumRootA).Start, res.RootSize)
	checkNodeFiles(t, slotImg, testimage.StaticBinary(t))
	// The image's own entries in a directory the layer also has stay.
	if ls := run(t, "unsquashfs", "-lln", slotImg); !strings.Contains(ls, "multi-user.target.wants/other.service -> ../other.service") {
		t.Error("the image's multi-user.target.wants/other.service is gone")
	}
}
