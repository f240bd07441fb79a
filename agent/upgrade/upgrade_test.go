package upgrade

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/static"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/signature"
)

// art describes a test artifact.
type art struct {
	version    string
	arch       string
	dataBlocks int64
	cmdline    string
	rootHash   string    // overrides the config's root hash (a wrong one)
	noSquashfs bool      // the data does not start with a squashfs superblock
	loader     []byte    // the systemd-boot layer; nil: trixieLoader
	noLoader   bool      // no systemd-boot layer, as artifacts before it had
	created    time.Time // the image's creation time; zero: testCreated
	unsigned   bool      // not signed by imageKey
}

// testCreated is when the test images were created: the running one's
// (node.options) and the artifacts', unless art.created says otherwise.
var testCreated = time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)

// imageKey signs the test artifacts; the test node's image trusts it.
var imageKey = func() crypto.Signer {
	_, k, err := ed25519.GenerateKey(cryptorand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}()

// imagePolicy trusts keys as an image built with them would.
func imagePolicy(keys ...crypto.PublicKey) Policy {
	var p Policy
	for i, k := range keys {
		p.Keys = append(p.Keys, TrustedKey{Key: k, ID: signature.KeyID(k), From: FromImage, Where: fmt.Sprintf("/usr/lib/slate/update-keys/%02d.pub", i+1)})
	}
	return p
}

// Fake systemd-boot binaries: what matters is their LoaderInfo.
var (
	bookwormLoader = fakeLoader("252.39-1~deb12u1", "bookworm")
	trixieLoader   = fakeLoader("257.9-1~deb13u1", "trixie")
)

// fakeLoader is an EFI binary as far as the upgrade can tell: bytes around
// the LoaderInfo string of systemd-boot's .sdmagic section.
func fakeLoader(version, filler string) []byte {
	b := append([]byte("MZ\x90\x00"), bytes.Repeat([]byte(filler+"\x00"), 500)...)
	b = append(b, "#### LoaderInfo: systemd-boot "+version+" ####\x00"...)
	return append(b, bytes.Repeat([]byte{0xcc}, 100)...)
}

// built is an artifact layout and the blobs it holds.
type built struct {
	ref                  string
	dir                  string
	cfg                  artifact.Config
	root, kernel, initrd []byte
	loader               []byte // nil: no systemd-boot layer
}

func blobPath(dir string, b []byte) string {
	sum := sha256.Sum256(b)
	return filepath.Join(dir, "blobs", "sha256", hex.EncodeToString(sum[:]))
}

// corrupt flips one bit of the file at byte i.
func corrupt(t testing.TB, path string, i int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[i] ^= 1
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeArtifact writes an update artifact whose root is a squashfs-like
// payload (the superblock's magic and length, random bytes after) padded to
// 4 KiB, with its real dm-verity superblock and tree, as the builder's
// appendVerity lays them out.
func makeArtifact(t testing.TB, a art) built {
	t.Helper()
	if a.version == "" {
		a.version = "2.0"
	}
	if a.arch == "" {
		a.arch = "amd64"
	}
	if a.dataBlocks == 0 {
		a.dataBlocks = 40
	}
	if a.created.IsZero() {
		a.created = testCreated
	}
	tmp := t.TempDir()
	dataSize := a.dataBlocks * verity.BlockSize
	data := make([]byte, dataSize)
	rand.New(rand.NewSource(int64(len(a.version)))).Read(data)
	if !a.noSquashfs {
		copy(data, "hsqs")
		binary.LittleEndian.PutUint64(data[40:], uint64(dataSize-1234))
	}
	salt := bytes.Repeat([]byte{0x5a}, 32)
	var uuid [16]byte
	copy(uuid[:], "slate test uuid!")
	tree, err := verity.Build(bytes.NewReader(data), dataSize, salt, uuid)
	if err != nil {
		t.Fatal(err)
	}
	var root bytes.Buffer
	root.Write(data)
	if _, err := tree.WriteTo(&root); err != nil {
		t.Fatal(err)
	}
	b := built{
		dir:    filepath.Join(tmp, "layout"),
		root:   root.Bytes(),
		kernel: append([]byte("MZ kernel "+a.version), bytes.Repeat([]byte{1, 2, 3}, 3000)...),
		initrd: append([]byte{0x1f, 0x8b, 8, 0}, bytes.Repeat([]byte("cpio"+a.version), 2000)...),
	}
	b.ref = artifact.LayoutPrefix + b.dir
	b.cfg = artifact.Config{
		Version: a.version, Architecture: a.arch, OS: "linux",
		Source:        "sha256:" + strings.Repeat("0123456789abcdef", 4),
		KernelRelease: "6.1.0-18-cloud-amd64",
		Cmdline:       a.cmdline,
		Root: artifact.RootInfo{
			Size: int64(root.Len()), DataSize: dataSize, HashOffset: int64(tree.HashOffset),
			RootHash: tree.RootHashHex(), Salt: hex.EncodeToString(tree.Salt), Algorithm: "sha256",
			DataBlockSize: verity.BlockSize, HashBlockSize: verity.BlockSize,
		},
		Created: a.created,
	}
	if a.rootHash != "" {
		b.cfg.Root.RootHash = a.rootHash
	}
	if !a.noLoader {
		b.loader = a.loader
		if b.loader == nil {
			b.loader = trixieLoader
		}
	}
	blob := func(name string, data []byte) artifact.Blob {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return artifact.Blob{Path: p}
	}
	blobs := artifact.Blobs{Root: blob("root", b.root), Kernel: blob("kernel", b.kernel), Initramfs: blob("initrd", b.initrd)}
	if b.loader != nil {
		blobs.SystemdBoot = blob("systemd-boot", b.loader)
	}
	if _, err := artifact.Write(b.dir, b.cfg, blobs); err != nil {
		t.Fatal(err)
	}
	if b.loader != nil {
		b.cfg.SystemdBootVersion, _ = boot.SystemdBootVersion(b.loader) // as Write does
	}
	if !a.unsigned {
		if _, err := artifact.Sign(b.ref, imageKey, ""); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

const (
	partUUID  = "0b3c5f0e-1d2a-4c8e-9a41-7e2f3d6b5c4a"
	stateUUID = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
	devSize   = 1 << 20
)

// node is a test node running slot a (good, generation 3) with an older
// good image in slot b (generation 2), and bookworm's systemd-boot as the
// ESP's fallback loader, as the builder leaves it.
type node struct {
	esp     *slots.ESP
	device  string
	log     []string
	efiVars string // an empty efivarfs directory: Secure Boot off
}

func put(t testing.TB, dir, rel, content string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func putSlot(t testing.TB, dir string, s boot.Slot, gen int, name, version string) {
	t.Helper()
	en, _ := boot.ParseEntryName(name)
	en.Generation = gen
	en.Title = "slate " + version
	en.Linux, en.Initrd = s.KernelPath(), s.InitrdPath()
	en.Options = "console=ttyS0 slate.slot=" + string(s) + " slate.version=" + version
	put(t, dir, boot.EntriesDir+"/"+name, string(en.Marshal()))
	put(t, dir, s.ESPDir()+"/vmlinuz", "old kernel "+version)
	put(t, dir, s.ESPDir()+"/initramfs", "old initramfs "+version)
	rel := boot.Release{Slot: s, Version: version, RootHash: strings.Repeat("c", 64)}
	put(t, dir, s.ESPDir()+"/release.json", string(rel.Marshal()))
}

func newNode(t testing.TB, entryA string) *node {
	t.Helper()
	dir := t.TempDir()
	esp := filepath.Join(dir, "esp")
	putSlot(t, esp, boot.SlotA, 3, entryA, "1.0")
	putSlot(t, esp, boot.SlotB, 2, "slate-b.conf", "0.9")
	put(t, esp, boot.LoaderConf, "timeout 0\n")
	put(t, esp, boot.FallbackEFI, string(bookwormLoader))
	n := &node{esp: slots.Open(esp), device: filepath.Join(dir, "vda3"), efiVars: t.TempDir()}
	if err := os.WriteFile(n.device, bytes.Repeat([]byte{0xee}, devSize), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) options(ref string) Options {
	return Options{
		Ref:     ref,
		Running: boot.SlotA,
		Target:  Target{Slot: boot.SlotB, Device: n.device, Size: devSize, PartUUID: partUUID, StatePartUUID: stateUUID},
		ESP:     n.esp,
		Log:     func(format string, args ...any) { n.log = append(n.log, fmt.Sprintf(format, args...)) },
		Now:     func() time.Time { return time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC) },
		Policy:  imagePolicy(imageKey.Public()),
		Image:   &boot.ImageInfo{Version: "1.0", Created: testCreated},
		// Not the host's: a host booted with Secure Boot on would refuse
		// these artifacts, which carry no unified kernel image.
		EFIVars: n.efiVars,
	}
}

// snapshot is every file of the ESP and the device's bytes.
// unchanged fails t for each file of a snapshot that changed or appeared.
func unchanged(t testing.TB, before, after map[string]string) {
	t.Helper()
	for k := range before {
		if before[k] != after[k] {
			t.Errorf("%s changed", k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s appeared", k)
		}
	}
}

func (n *node) snapshot(t testing.TB) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(n.esp.Dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(n.esp.Dir, p)
		if de.IsDir() {
			m[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		m[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(n.device)
	if err != nil {
		t.Fatal(err)
	}
	m["DEVICE"] = string(b)
	return m
}

func (n *node) entries(t testing.TB) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(n.esp.Dir, boot.EntriesDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestUpgrade(t *testing.T) {
	for _, cmdline := range []string{"console=ttyS0 panic=10", ""} {
		t.Run(fmt.Sprintf("cmdline %q", cmdline), func(t *testing.T) {
			b := makeArtifact(t, art{version: "2.0", cmdline: cmdline})
			n := newNode(t, "slate-a.conf")
			entryA, _ := os.ReadFile(filepath.Join(n.esp.Dir, boot.EntriesDir, "slate-a.conf"))

			res, err := Run(context.Background(), n.options(b.ref))
			if err != nil {
				t.Fatal(err)
			}

			wantLog := []string{
				fmt.Sprintf("upgrade: 2.0 (%s) is signed by key %s (image /usr/lib/slate/update-keys/01.pub)", res.Digest, signature.KeyID(imageKey.Public())),
				"upgrade: retiring slot b's boot entry",
				fmt.Sprintf("upgrade: writing root of slot b (%s)", humanSize(int64(len(b.root)))),
				"upgrade: verifying slot b",
				"upgrade: writing kernel and initramfs of slot b",
				"upgrade: systemd-boot 252.39-1~deb12u1 → 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI)",
				"upgrade: writing boot entry of slot b",
				"upgrade: slot b holds 2.0 (generation 4, 3 tries); reboot to use it",
			}
			if !slices.Equal(n.log, wantLog) {
				t.Errorf("log:\n%s\nwant\n%s", strings.Join(n.log, "\n"), strings.Join(wantLog, "\n"))
			}
			digest, _ := os.ReadFile(filepath.Join(b.dir, "index.json"))
			if res.Slot != boot.SlotB || res.Version != "2.0" || res.Entry != "slate-b+3.conf" || res.Generation != 4 || res.SignedBy != signature.KeyID(imageKey.Public()) ||
				res.RootBytes != int64(len(b.root)) || res.RootHash != b.cfg.Root.RootHash ||
				!strings.HasPrefix(res.Digest, "sha256:") || !strings.Contains(string(digest), res.Digest) || res.Total <= 0 ||
				res.SystemdBoot != "257.9-1~deb13u1" {
				t.Errorf("result %+v", res)
			}

			// The device: the root at its start, the rest untouched, its size unchanged.
			dev, err := os.ReadFile(n.device)
			if err != nil {
				t.Fatal(err)
			}
			if len(dev) != devSize {
				t.Errorf("device is %d bytes, was %d", len(dev), devSize)
			}
			if !bytes.Equal(dev[:len(b.root)], b.root) {
				t.Error("the device does not hold the root")
			}
			if !bytes.Equal(dev[len(b.root):], bytes.Repeat([]byte{0xee}, devSize-len(b.root))) {
				t.Error("the device past the root changed")
			}

			// The ESP.
			for rel, want := range map[string][]byte{"slate/b/vmlinuz": b.kernel, "slate/b/initramfs": b.initrd, boot.FallbackEFI: trixieLoader} {
				if got, err := os.ReadFile(filepath.Join(n.esp.Dir, rel)); err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: %d bytes (%v), want the layer's %d", rel, len(got), err, len(want))
				}
			}
			if got := n.entries(t); !slices.Equal(got, []string{"slate-a.conf", "slate-b+3.conf"}) {
				t.Errorf("entries: %q", got)
			}
			if got, _ := os.ReadFile(filepath.Join(n.esp.Dir, boot.EntriesDir, "slate-a.conf")); !bytes.Equal(got, entryA) {
				t.Errorf("slot a's entry changed:\n%s", got)
			}
			wantOptions := strings.TrimPrefix(cmdline+" slate.slot=b slate.root="+partUUID+" slate.roothash="+b.cfg.Root.RootHash+
				" slate.state="+stateUUID+" slate.version=2.0", " ")
			wantEntry := "title slate 2.0 (slot B)\nsort-key slate\nversion 4\nlinux /slate/b/vmlinuz\ninitrd /slate/b/initramfs\noptions " + wantOptions + "\n"
			if got, _ := os.ReadFile(filepath.Join(n.esp.Dir, boot.EntriesDir, "slate-b+3.conf")); string(got) != wantEntry {
				t.Errorf("entry:\n%s\nwant\n%s", got, wantEntry)
			}
			var rel boot.Release
			data, _ := os.ReadFile(filepath.Join(n.esp.Dir, "slate/b/release.json"))
			if err := json.Unmarshal(data, &rel); err != nil {
				t.Fatal(err)
			}
			wantRel := boot.Release{Slot: boot.SlotB, Version: "2.0", Artifact: res.Digest, SignedBy: res.SignedBy, Source: b.cfg.Source,
				RootHash: b.cfg.Root.RootHash, RootSize: int64(len(b.root)), KernelRelease: "6.1.0-18-cloud-amd64", SystemdBootVersion: "257.9-1~deb13u1",
				Architecture: "amd64", Created: b.cfg.Created, Written: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)}
			if rel != wantRel {
				t.Errorf("release.json %+v\nwant %+v", rel, wantRel)
			}

			// What the agent's status will show.
			infos, err := n.esp.Read()
			if err != nil {
				t.Fatal(err)
			}
			if in := infos[boot.SlotB]; in.State != slots.Trying || in.TriesLeft != 3 || in.Generation != 4 || len(in.Problems) > 0 {
				t.Errorf("slot b: %+v", in)
			}
			if in := infos[boot.SlotA]; in.State != slots.Good || in.Generation != 3 {
				t.Errorf("slot a: %+v", in)
			}
		})
	}
}

// TestRefused: every refusal comes before any change.
func TestRefused(t *testing.T) {
	good := makeArtifact(t, art{})
	unsigned := makeArtifact(t, art{unsigned: true})
	older := makeArtifact(t, art{version: "0.5", created: testCreated.Add(-time.Second)})
	withConfig := makeArtifact(t, art{version: "2.4", cmdline: "console=ttyS0 slate.reboot_delay=1m slate.config=data:,{} quiet"})
	quoted := makeArtifact(t, art{version: "2.5", cmdline: `console=ttyS0 "slate.config=data:,{ }"`})
	arm := makeArtifact(t, art{arch: "arm64"})
	signed, key := signedArtifact(t)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	// A systemd-boot blob that is not what the manifest says: refused
	// before anything is written, like a bad signature.
	badLoader := makeArtifact(t, art{version: "2.3"})
	corrupt(t, blobPath(badLoader.dir, badLoader.loader), 100)
	for _, c := range []struct {
		name   string
		entryA string // slot a's entry (a runs)
		ref    string
		edit   func(o *Options)
		ctx    func() context.Context
		want   string
	}{
		{"wrong architecture", "slate-a.conf", arm.ref, nil, nil, "artifact " + arm.ref + " is for arm64; this node is amd64"},
		{"root too big", "slate-a.conf", good.ref, func(o *Options) { o.Target.Size = int64(len(good.root)) - 1 }, nil,
			"larger than slot b's partition"},
		{"device smaller than said", "slate-a.conf", good.ref, func(o *Options) {
			os.Truncate(o.Target.Device, int64(len(good.root))-4096)
		}, nil, "larger than " + "DEVICE"},
		{"running slot on trial", "slate-a+2-1.conf", good.ref, nil, nil, "slot a is still on trial (slate-a+2-1.conf)"},
		{"running slot bad", "slate-a+0-3.conf", good.ref, nil, nil, "slot a, the running slot, is marked bad"},
		{"target is running", "slate-a.conf", good.ref, func(o *Options) { o.Running = boot.SlotB }, nil,
			"slot b is the running slot; an upgrade writes the other one"},
		{"ESP too small", "slate-a.conf", good.ref, func(o *Options) {
			statESP = func(string) (int64, int64, error) { return 4096, 4096, nil }
		}, nil, "the ESP has 4.0 KiB free (16.0 KiB once slot b's old files are removed); the kernel, initramfs and systemd-boot need 40.0 KiB"},
		{"ESP too small, no newer systemd-boot", "slate-a.conf", good.ref, func(o *Options) {
			put(t, o.ESP.Dir, boot.FallbackEFI, string(fakeLoader("258", "newer")))
			statESP = func(string) (int64, int64, error) { return 4096, 4096, nil }
		}, nil, "; the kernel and initramfs need 36.0 KiB"},
		{"bad systemd-boot digest", "slate-a.conf", badLoader.ref, nil, nil, "the artifact's systemd-boot layer: " + badLoader.ref + ": blob sha256:"},
		{"bad systemd-boot digest, signed", "slate-a.conf", badLoader.ref, func(o *Options) {
			if _, err := artifact.Sign(badLoader.ref, key, ""); err != nil {
				t.Fatal(err)
			}
			o.Policy = imagePolicy(key.Public())
		}, nil, "has digest sha256:"},
		{"no such artifact", "slate-a.conf", "oci:/nonexistent", nil, nil, "oci:/nonexistent: not an OCI layout"},
		// Fails closed: no config, an image without keys.
		{"nothing trusted", "slate-a.conf", unsigned.ref, func(o *Options) { o.Policy = Policy{} }, nil,
			"no update is trusted: this image was built without update keys, and the node config adds none: build the image with update.publicKeys"},
		{"nothing trusted, signed", "slate-a.conf", good.ref, func(o *Options) { o.Policy = Policy{} }, nil, "no update is trusted"},
		{"unsigned", "slate-a.conf", unsigned.ref, nil, nil,
			"; updates must be signed by a trusted key: " + signature.KeyID(imageKey.Public()) + " (image /usr/lib/slate/update-keys/01.pub)"},
		{"unsigned, says so", "slate-a.conf", unsigned.ref, nil, nil, unsigned.ref + ": not signed"},
		{"signed by another key", "slate-a.conf", signed.ref, func(o *Options) { o.Policy = imagePolicy(otherKey.Public()) }, nil,
			"not made by key " + signature.KeyID(otherKey.Public())},
		{"signed by none of two keys", "slate-a.conf", signed.ref, func(o *Options) { o.Policy = imagePolicy(otherKey.Public(), imageKey.Public()) }, nil,
			"not made by key " + signature.KeyID(imageKey.Public())},
		{"downgrade", "slate-a.conf", older.ref, nil, nil,
			"artifact " + older.ref + " (0.5) is a downgrade: its image was created 2024-06-01T11:59:59Z, before the running image (created 2024-06-01T12:00:00Z, by /usr/lib/slate/image.json); `slate upgrade --allow-downgrade` installs it"},
		{"downgrade, by the release when the image has no image.json", "slate-a.conf", older.ref, func(o *Options) {
			o.Image = nil
			rel := boot.Release{Slot: boot.SlotA, Version: "1.0", RootHash: strings.Repeat("c", 64), Created: testCreated}
			put(t, o.ESP.Dir, boot.SlotA.ESPDir()+"/release.json", string(rel.Marshal()))
		}, nil, "is a downgrade: its image was created 2024-06-01T11:59:59Z, before the running image (created 2024-06-01T12:00:00Z, by slot a's release.json on the ESP"},
		{"running image's age unknown", "slate-a.conf", good.ref, func(o *Options) { o.Image = nil }, nil,
			"cannot be checked for a downgrade: the running image's creation time is unknown"},
		{"slate.config on the command line", "slate-a.conf", withConfig.ref, nil, nil,
			`its kernel command line carries "slate.config=data:,{}": an image may set no slate.* argument but slate.reboot_delay`},
		{"slate.config quoted", "slate-a.conf", quoted.ref, nil, nil, `carries "\"slate.config=data:,{"`},
		{"already running", "slate-a.conf", good.ref, func(o *Options) {
			rel := boot.Release{Slot: boot.SlotA, Version: "1.0", RootHash: good.cfg.Root.RootHash}
			put(t, o.ESP.Dir, boot.SlotA.ESPDir()+"/release.json", string(rel.Marshal()))
		}, nil, "already up to date: slot a already runs 2.0"},
		{"canceled", "slate-a.conf", good.ref, nil, func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, "context canceled"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t, c.entryA)
			o := n.options(c.ref)
			saved := statESP
			defer func() { statESP = saved }()
			if c.edit != nil {
				c.edit(&o)
			}
			before := n.snapshot(t)
			ctx := context.Background()
			if c.ctx != nil {
				ctx = c.ctx()
			}
			var offered string
			o.Offered = func(version, digest string) { offered = version + " " + digest }
			_, err := Run(ctx, o)
			t.Log(err)
			want := strings.ReplaceAll(c.want, "DEVICE", n.device)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v\nwant %q", err, want)
			}
			// What slate upgrade records (LastCheck): a check that said no is
			// a refusal, what could not be read or done a failure.
			result := CheckRefused
			switch c.name {
			case "already running":
				result = CheckUpToDate
			case "no such artifact", "canceled", "target is running", "bad systemd-boot digest", "bad systemd-boot digest, signed":
				result = CheckError
			}
			if got := CheckResult(err); got != result {
				t.Errorf("CheckResult: %s, want %s", got, result)
			}
			if opened := !slices.Contains([]string{"no such artifact", "canceled", "target is running", "running slot on trial", "running slot bad"}, c.name) &&
				!strings.HasPrefix(c.name, "nothing trusted"); opened != (offered != "") {
				t.Errorf("offered %q", offered)
			}
			if len(n.log) > 0 {
				t.Errorf("logged steps: %q", n.log)
			}
			after := n.snapshot(t)
			if c.name == "device smaller than said" {
				before["DEVICE"] = after["DEVICE"] // the test shrank it
			}
			unchanged(t, before, after)
		})
	}
}

// TestFailed: a failure after the first change leaves slot b without an
// entry (and without files), slot a as it was.
func TestFailed(t *testing.T) {
	for _, c := range []struct {
		name     string
		art      art
		damage   func(t *testing.T, b built)
		want     string
		lastStep string
	}{
		{"corrupted root blob", art{}, func(t *testing.T, b built) {
			p := blobPath(b.dir, b.root)
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 1
			os.WriteFile(p, data, 0o644)
		}, "writing the root to", "upgrade: writing root of slot b"},
		{"truncated root blob", art{}, func(t *testing.T, b built) {
			os.Truncate(blobPath(b.dir, b.root), int64(len(b.root))-4096)
		}, "bytes, want", "upgrade: writing root of slot b"},
		{"wrong root hash", art{rootHash: strings.Repeat("ab", 32)}, nil,
			"does not match the root hash", "upgrade: verifying slot b"},
		{"not a squashfs", art{noSquashfs: true}, nil,
			"does not start with a squashfs", "upgrade: verifying slot b"},
		{"corrupted kernel blob", art{}, func(t *testing.T, b built) {
			corrupt(t, blobPath(b.dir, b.kernel), 0)
		}, "writing the kernel", "upgrade: writing kernel and initramfs of slot b"},
		// The failure is planted on the node's ESP below.
		{"systemd-boot not written", art{}, nil, "installing systemd-boot", "upgrade: systemd-boot 252.39-1~deb12u1 → 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := makeArtifact(t, c.art)
			if c.damage != nil {
				c.damage(t, b)
			}
			n := newNode(t, "slate-a.conf")
			if c.name == "systemd-boot not written" {
				// os.Remove cannot remove a directory that is not empty, so
				// the write to the loader's temporary name fails.
				put(t, n.esp.Dir, "EFI/BOOT/.slate-tmp-BOOTX64.EFI.tmp/x", "")
			}
			before := n.snapshot(t)
			_, err := Run(context.Background(), n.options(b.ref))
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant %q", err, c.want)
			}
			if got := CheckResult(err); got != CheckError {
				t.Errorf("CheckResult: %s, want %s", got, CheckError)
			}
			if !strings.Contains(err.Error(), "slot b has no boot entry now; slot a boots as before") {
				t.Errorf("error does not say what is left: %v", err)
			}
			if len(n.log) == 0 || !strings.HasPrefix(n.log[len(n.log)-1], c.lastStep) {
				t.Errorf("log %q, want it to end at %q", n.log, c.lastStep)
			}
			if got := n.entries(t); !slices.Equal(got, []string{"slate-a.conf"}) {
				t.Errorf("entries: %q (slot b's old entry must be retired, no new one written)", got)
			}
			after := n.snapshot(t)
			for k, v := range before {
				if strings.HasPrefix(k, "slate/a/") || k == "loader/entries/slate-a.conf" || k == boot.LoaderConf || k == boot.FallbackEFI {
					if after[k] != v {
						t.Errorf("%s changed", k)
					}
				}
			}
			for k := range after {
				if strings.HasPrefix(k, "slate/b/") && k != "slate/b/" {
					t.Errorf("%s left on the ESP", k)
				}
			}
			infos, err := n.esp.Read()
			if err != nil {
				t.Fatal(err)
			}
			if infos[boot.SlotB].State != slots.Empty || infos[boot.SlotA].State != slots.Good {
				t.Errorf("slots: a %s, b %s", infos[boot.SlotA].State, infos[boot.SlotB].State)
			}
		})
	}
}

// TestSecondUpgrade: an upgrade after a failed one succeeds and takes the
// next generation.
func TestSecondUpgrade(t *testing.T) {
	bad := makeArtifact(t, art{rootHash: strings.Repeat("ab", 32)})
	good := makeArtifact(t, art{version: "2.1"})
	n := newNode(t, "slate-a.conf")
	if _, err := Run(context.Background(), n.options(bad.ref)); err == nil {
		t.Fatal("bad artifact written")
	}
	res, err := Run(context.Background(), n.options(good.ref))
	if err != nil {
		t.Fatal(err)
	}
	if res.Generation != 4 || res.Entry != "slate-b+3.conf" {
		t.Errorf("result %+v", res)
	}
}

// signedArtifact is an artifact signed with a new key.
func signedArtifact(t *testing.T) (built, crypto.Signer) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(cryptorand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := makeArtifact(t, art{version: "2.2", unsigned: true})
	if _, err := artifact.Sign(b.ref, key, ""); err != nil {
		t.Fatal(err)
	}
	return b, key
}

// TestSigned: a node with a key installs an artifact that key signed, and
// its release names the key.
func TestSigned(t *testing.T) {
	b, key := signedArtifact(t)
	n := newNode(t, "slate-a.conf")
	o := n.options(b.ref)
	o.Policy = imagePolicy(key.Public())
	res, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	want := signature.KeyID(key.Public())
	if res.SignedBy != want {
		t.Errorf("result signed by %q, want %q", res.SignedBy, want)
	}
	if len(n.log) == 0 || !strings.HasSuffix(n.log[0], "is signed by key "+want+" (image /usr/lib/slate/update-keys/01.pub)") {
		t.Errorf("first step logged: %q, want the signature's key", n.log)
	}
	infos, err := n.esp.Read()
	if err != nil {
		t.Fatal(err)
	}
	if r := infos[boot.SlotB].Release; r == nil || r.SignedBy != want || r.Version != "2.2" {
		t.Errorf("slot b's release %+v, want version 2.2 signed by %s", r, want)
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{100: "100 B", 4096: "4.0 KiB", 1536 << 20: "1.5 GiB", 3 << 20: "3.0 MiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}

// plainReader and plainWriter hide io.WriterTo and io.ReaderFrom, so the
// baseline copies through user space like any sequential writer
// (copy_file_range between two files would not be a fair baseline).
type plainReader struct{ io.Reader }
type plainWriter struct{ io.Writer }

// BenchmarkRootWrite compares the upgrade's root write (digest-checked
// artifact stream, pipelined writes, fdatasync, fadvise) with a plain
// sequential copy of the same bytes to the same file followed by fdatasync.
// The target: upgrade-MB/s at least 80% of plain-MB/s on a node.
// stream-MB/s, reading and hashing the artifact's root alone, is the
// ceiling of upgrade-MB/s: where sha256 is slower than the disk, it sets
// the pace.
func BenchmarkRootWrite(b *testing.B) {
	built := makeArtifact(b, art{dataBlocks: 32768}) // 128 MiB of data
	size := int64(len(built.root))
	dev := filepath.Join(b.TempDir(), "vda3")
	if err := os.WriteFile(dev, make([]byte, size), 0o644); err != nil {
		b.Fatal(err)
	}
	a, err := artifact.Open(built.ref)
	if err != nil {
		b.Fatal(err)
	}
	blob := blobPath(built.dir, built.root)

	upgradeWrite := func(buf int) time.Duration {
		start := time.Now()
		f, err := os.OpenFile(dev, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		rc, err := a.Root.Compressed()
		if err != nil {
			b.Fatal(err)
		}
		defer rc.Close()
		if n, err := writeRoot(context.Background(), f, rc, size, buf, nil); err != nil || n != size {
			b.Fatal(n, err)
		}
		return time.Since(start)
	}
	plainWrite := func(buf int) time.Duration {
		start := time.Now()
		f, err := os.OpenFile(dev, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		src, err := os.Open(blob)
		if err != nil {
			b.Fatal(err)
		}
		defer src.Close()
		if n, err := io.CopyBuffer(plainWriter{f}, plainReader{src}, make([]byte, buf)); err != nil || n != size {
			b.Fatal(n, err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}

	// The ceiling: reading and hashing the artifact stream alone.
	hashOnly := func() time.Duration {
		start := time.Now()
		rc, err := a.Root.Compressed()
		if err != nil {
			b.Fatal(err)
		}
		defer rc.Close()
		if _, err := io.Copy(io.Discard, rc); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}

	for _, buf := range []int{1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("buffer=%dMiB", buf>>20), func(b *testing.B) {
			var up, plain, hash time.Duration
			n := 0
			for b.Loop() {
				// Alternate the order so neither always finds a warm cache.
				if n%2 == 0 {
					up += upgradeWrite(buf)
					plain += plainWrite(buf)
				} else {
					plain += plainWrite(buf)
					up += upgradeWrite(buf)
				}
				hash += hashOnly()
				n++
			}
			mbs := func(d time.Duration) float64 { return float64(size) * float64(n) / d.Seconds() / 1e6 }
			b.ReportMetric(mbs(up), "upgrade-MB/s")
			b.ReportMetric(mbs(plain), "plain-MB/s")
			b.ReportMetric(mbs(hash), "stream-MB/s")
			b.ReportMetric(plain.Seconds()/up.Seconds(), "upgrade/plain")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func TestWriteRoot(t *testing.T) {
	data := make([]byte, 5<<20+123)
	rand.New(rand.NewSource(7)).Read(data)
	open := func() *os.File {
		f, err := os.Create(filepath.Join(t.TempDir(), "dev"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}

	f := open()
	var seen []int64
	n, err := writeRoot(context.Background(), f, bytes.NewReader(data), int64(len(data)), 1<<20, func(n int64) { seen = append(seen, n) })
	if err != nil || n != int64(len(data)) {
		t.Fatalf("writeRoot: %d, %v", n, err)
	}
	if got, _ := os.ReadFile(f.Name()); !bytes.Equal(got, data) {
		t.Error("written bytes differ")
	}
	if len(seen) != 6 || seen[5] != int64(len(data)) {
		t.Errorf("progress: %v", seen)
	}

	if _, err := writeRoot(context.Background(), open(), bytes.NewReader(data), 3<<20, 1<<20, nil); err == nil ||
		err.Error() != "the root layer is longer than 3145728 bytes" {
		t.Errorf("over the limit: %v", err)
	}

	// A stream error (the digest check at the end) fails the write.
	r := io.MultiReader(bytes.NewReader(data[:2<<20]), errorReader{})
	if _, err := writeRoot(context.Background(), open(), r, int64(len(data)), 1<<20, nil); err == nil || err.Error() != "digest mismatch" {
		t.Errorf("stream error: %v", err)
	}

	// A canceled context stops a stream that never ends.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := writeRoot(ctx, open(), endless{}, 1<<40, 1<<20, nil); err != context.Canceled {
		t.Errorf("canceled: %v", err)
	}
}

type errorReader struct{}

func (errorReader) Read([]byte) (int, error) { return 0, errors.New("digest mismatch") }

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	time.Sleep(5 * time.Millisecond)
	return len(p), nil
}

// TestLoader: the artifact's systemd-boot replaces the ESP's only when it is
// newer, at each loader path that has a systemd-boot, and never creates one.
func TestLoader(t *testing.T) {
	const (
		fallback = boot.FallbackEFI
		bootctl  = boot.SystemdBootEFI
	)
	trixieOnESP := fakeLoader("257.9-1~deb13u1", "the ESP's own bytes") // same version, other bytes
	shim := []byte("MZ shim, not systemd-boot")
	for _, c := range []struct {
		name    string
		art     art
		esp     map[string][]byte // loaders on the ESP before; nil values are absent
		after   map[string][]byte // and after; absent keys must not exist
		log     []string          // lines between the kernel's and the entry's
		version string            // Result.SystemdBoot
		release string            // release.json's systemdBootVersion
	}{
		{"newer, both paths", art{},
			map[string][]byte{fallback: bookwormLoader, bootctl: bookwormLoader},
			map[string][]byte{fallback: trixieLoader, bootctl: trixieLoader},
			[]string{"upgrade: systemd-boot 252.39-1~deb12u1 → 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI)",
				"upgrade: systemd-boot 252.39-1~deb12u1 → 257.9-1~deb13u1 on the ESP (EFI/systemd/systemd-bootx64.efi)"},
			"257.9-1~deb13u1", "257.9-1~deb13u1"},
		{"equal: no write", art{},
			map[string][]byte{fallback: trixieOnESP},
			map[string][]byte{fallback: trixieOnESP},
			[]string{"upgrade: systemd-boot 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI) is the artifact's"},
			"", "257.9-1~deb13u1"},
		{"older: no write (a downgrade keeps the newer loader)", art{loader: bookwormLoader},
			map[string][]byte{fallback: trixieLoader},
			map[string][]byte{fallback: trixieLoader},
			[]string{"upgrade: systemd-boot 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI) is newer than the artifact's 252.39-1~deb12u1: kept"},
			"", "252.39-1~deb12u1"},
		{"one path older, one newer", art{},
			map[string][]byte{fallback: bookwormLoader, bootctl: fakeLoader("258.1", "newer")},
			map[string][]byte{fallback: trixieLoader, bootctl: fakeLoader("258.1", "newer")},
			[]string{"upgrade: systemd-boot 258.1 on the ESP (EFI/systemd/systemd-bootx64.efi) is newer than the artifact's 257.9-1~deb13u1: kept",
				"upgrade: systemd-boot 252.39-1~deb12u1 → 257.9-1~deb13u1 on the ESP (EFI/BOOT/BOOTX64.EFI)"},
			"257.9-1~deb13u1", "257.9-1~deb13u1"},
		{"artifact's version unreadable", art{loader: []byte("MZ fake systemd-boot\n")},
			map[string][]byte{fallback: bookwormLoader},
			map[string][]byte{fallback: bookwormLoader},
			[]string{"upgrade: the artifact's systemd-boot is not installed: its version cannot be read (no LoaderInfo marker: not a systemd EFI binary)"},
			"", ""},
		{"ESP's loader is not systemd-boot", art{},
			map[string][]byte{fallback: shim},
			map[string][]byte{fallback: shim},
			[]string{"upgrade: EFI/BOOT/BOOTX64.EFI on the ESP is left alone: no LoaderInfo marker: not a systemd EFI binary"},
			"", "257.9-1~deb13u1"},
		{"no loader on the ESP: none created", art{},
			map[string][]byte{fallback: nil},
			map[string][]byte{},
			[]string{"upgrade: systemd-boot 257.9-1~deb13u1 is not installed: the ESP has no boot loader at EFI/BOOT/BOOTX64.EFI or EFI/systemd/systemd-bootx64.efi"},
			"", "257.9-1~deb13u1"},
		{"artifact without systemd-boot", art{noLoader: true},
			map[string][]byte{fallback: bookwormLoader},
			map[string][]byte{fallback: bookwormLoader},
			[]string{"upgrade: the artifact carries no systemd-boot (built before artifacts did); the ESP's is left as it is"},
			"", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := makeArtifact(t, c.art)
			n := newNode(t, "slate-a.conf")
			for rel, data := range c.esp {
				p := filepath.Join(n.esp.Dir, filepath.FromSlash(rel))
				if data == nil {
					if err := os.Remove(p); err != nil {
						t.Fatal(err)
					}
					continue
				}
				put(t, n.esp.Dir, rel, string(data))
			}
			res, err := Run(context.Background(), n.options(b.ref))
			if err != nil {
				t.Fatal(err)
			}
			if res.SystemdBoot != c.version || res.Entry != "slate-b+3.conf" {
				t.Errorf("result: systemd-boot %q, entry %s; want %q", res.SystemdBoot, res.Entry, c.version)
			}
			i := slices.Index(n.log, "upgrade: writing kernel and initramfs of slot b")
			j := slices.Index(n.log, "upgrade: writing boot entry of slot b")
			if i < 0 || j < i || !slices.Equal(n.log[i+1:j], c.log) {
				t.Errorf("log:\n%s\nwant between the kernel and the entry:\n%s", strings.Join(n.log, "\n"), strings.Join(c.log, "\n"))
			}
			for _, rel := range boot.LoaderPaths {
				got, err := os.ReadFile(filepath.Join(n.esp.Dir, filepath.FromSlash(rel)))
				want, ok := c.after[rel]
				switch {
				case !ok && err == nil:
					t.Errorf("%s was created", rel)
				case ok && !bytes.Equal(got, want):
					v, _ := boot.SystemdBootVersion(got)
					t.Errorf("%s: %d bytes (%q, %v), want %d bytes", rel, len(got), v, err, len(want))
				}
			}
			for _, dir := range []string{"EFI/BOOT", "EFI/systemd"} {
				des, _ := os.ReadDir(filepath.Join(n.esp.Dir, dir))
				for _, de := range des {
					if strings.HasPrefix(de.Name(), ".slate-tmp-") {
						t.Errorf("%s/%s left behind", dir, de.Name())
					}
				}
			}
			infos, err := n.esp.Read()
			if err != nil {
				t.Fatal(err)
			}
			if r := infos[boot.SlotB].Release; r == nil || r.SystemdBootVersion != c.release {
				t.Errorf("slot b's release %+v, want systemd-boot %q", r, c.release)
			}
		})
	}
}

// TestPlanLoaderDisagrees: an artifact whose config names another
// systemd-boot than its layer holds is refused (Write never makes one).
func TestPlanLoaderDisagrees(t *testing.T) {
	n := newNode(t, "slate-a.conf")
	o := n.options("oci:crafted")
	for _, c := range []struct {
		config string
		blob   []byte
		want   string
	}{
		{"257.9-1~deb13u1", bookwormLoader, "config.systemdBootVersion is 257.9-1~deb13u1, but its systemd-boot layer says 252.39-1~deb12u1"},
		{"257.9-1~deb13u1", []byte("MZ"), "config.systemdBootVersion is 257.9-1~deb13u1, but its systemd-boot layer has no readable version"},
	} {
		a := &artifact.Artifact{Config: artifact.Config{SystemdBootVersion: c.config}, SystemdBoot: static.NewLayer(c.blob, artifact.SystemdBootMediaType)}
		if _, err := planLoader(&o, a); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v\nwant %q", err, c.want)
		}
	}
	// Agreeing, it plans the install.
	a := &artifact.Artifact{Config: artifact.Config{SystemdBootVersion: "257.9-1~deb13u1"}, SystemdBoot: static.NewLayer(trixieLoader, artifact.SystemdBootMediaType)}
	p, err := planLoader(&o, a)
	if err != nil || len(p.installs) != 1 || p.installs[0] != (loaderInstall{boot.FallbackEFI, "252.39-1~deb12u1"}) || p.version != "257.9-1~deb13u1" {
		t.Errorf("plan %+v, %v", p, err)
	}
}
