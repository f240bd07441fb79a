package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/slate-os/slate/initramfs/layout"
	"github.com/slate-os/slate/internal/testtool"
)

const kver = "6.1.0-99-test-amd64"

// fakeKO is a stand-in module: an ELF magic and its name.
func fakeKO(name string) []byte { return []byte("\x7fELF fake module " + name + "\n") }

func xzBytes(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstBytes(t *testing.T, b []byte) []byte {
	e, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return e.EncodeAll(b, nil)
}

const modulesDep = `kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_pci.ko.zst: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/fs/squashfs/squashfs.ko.zst:
kernel/fs/overlayfs/overlay.ko.gz:
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/reed_solomon/reed_solomon.ko
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-mod.ko:
kernel/lib/reed_solomon/reed_solomon.ko:
kernel/fs/unused/unused.ko:
kernel/drivers/broken/needs-missing.ko: kernel/drivers/broken/missing.ko
`

const modulesBuiltin = `kernel/fs/ext4/ext4.ko
kernel/drivers/nvme/host/nvme.ko
`

type fakeTree struct {
	files  map[string][]byte // relPath -> file as on disk
	opened []string
}

func newFakeTree(t *testing.T) *fakeTree { return fakeTreeOf(t, modulesDep) }

// fakeTreeOf makes a module file for every line of a modules.dep,
// compressed as its name says.
func fakeTreeOf(t *testing.T, dep string) *fakeTree {
	ft := &fakeTree{files: map[string][]byte{}}
	for _, line := range strings.Split(strings.TrimSpace(dep), "\n") {
		rel, _, _ := strings.Cut(line, ":")
		ko := fakeKO(NormalizeModuleName(rel))
		switch {
		case strings.HasSuffix(rel, ".xz"):
			ft.files[rel] = xzBytes(t, ko)
		case strings.HasSuffix(rel, ".zst"):
			ft.files[rel] = zstBytes(t, ko)
		case strings.HasSuffix(rel, ".gz"):
			var b bytes.Buffer
			g := gzip.NewWriter(&b)
			g.Write(ko)
			g.Close()
			ft.files[rel] = b.Bytes()
		default:
			ft.files[rel] = ko
		}
	}
	return ft
}

func (ft *fakeTree) open(rel string) (io.ReadCloser, error) {
	ft.opened = append(ft.opened, rel)
	b, ok := ft.files[rel]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: rel, Err: fs.ErrNotExist}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

var fakeInit = append([]byte("\x7fELF"), bytes.Repeat([]byte("slate-init "), 5000)...)

func input(t *testing.T, ft *fakeTree, config string, wanted ...string) Input {
	in := Input{
		Init:           fakeInit,
		KernelRelease:  kver,
		ModulesDep:     []byte(modulesDep),
		ModulesBuiltin: []byte(modulesBuiltin),
		Modules:        required(wanted...),
		OpenModule:     ft.open,
	}
	if config != "" {
		in.KernelConfig = []byte(config)
	}
	return in
}

func required(names ...string) []Module {
	var mods []Module
	for _, n := range names {
		mods = append(mods, Module{Name: n, Why: "the test needs it"})
	}
	return mods
}

var wantOrder = []string{
	"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk",
	"squashfs", "overlay", "reed_solomon", "dm_mod", "dm_bufio", "dm_verity",
}

var wanted = []string{"virtio_pci", "virtio-blk", "squashfs", "overlay", "dm-verity", "ext4", "nvme", "virtio_blk"}

const zstdConfig = "CONFIG_RD_GZIP=y\nCONFIG_RD_XZ=y\nCONFIG_RD_ZSTD=y\n"

func TestClosure(t *testing.T) {
	ft := newFakeTree(t)
	var out bytes.Buffer
	info, err := Build(&out, input(t, ft, zstdConfig, wanted...))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(info.Modules, wantOrder) {
		t.Errorf("load order\n got %v\nwant %v", info.Modules, wantOrder)
	}
	if !reflect.DeepEqual(info.Builtin, []string{"ext4", "nvme"}) {
		t.Errorf("builtin = %v", info.Builtin)
	}
	// Every module comes after all of its dependencies (checked against
	// modules.dep itself, not just the expected list).
	db, _ := parseModules(modFiles{dep: []byte(modulesDep)})
	pos := map[string]int{}
	for i, m := range info.Modules {
		pos[m] = i
	}
	for _, m := range info.Modules {
		for _, d := range db.deps[db.byName[m]] {
			if pos[NormalizeModuleName(d)] >= pos[m] {
				t.Errorf("%s loads before its dependency %s", m, d)
			}
		}
	}
	for _, rel := range ft.opened {
		if strings.Contains(rel, "unused") {
			t.Errorf("opened a module nobody wants: %s", rel)
		}
	}
}

func TestUnknownModule(t *testing.T) {
	ft := newFakeTree(t)
	_, err := Build(io.Discard, input(t, ft, zstdConfig, "squashfs", "no-such_module"))
	if err == nil || err.Error() != "initramfs: kernel "+kver+" has no no-such_module (neither built in nor a module): the test needs it" {
		t.Errorf("err = %v, want one naming no-such_module", err)
	}
	_, err = Build(io.Discard, input(t, ft, zstdConfig, "needs_missing"))
	if err == nil || !strings.Contains(err.Error(), "kernel/drivers/broken/missing.ko") {
		t.Errorf("missing dependency: err = %v", err)
	}
	ft.files["kernel/fs/squashfs/squashfs.ko.zst"] = []byte("garbage")
	if _, err := Build(io.Discard, input(t, ft, zstdConfig, "squashfs")); err == nil || !strings.Contains(err.Error(), "squashfs") {
		t.Errorf("corrupt module: err = %v", err)
	}
	delete(ft.files, "kernel/fs/squashfs/squashfs.ko.zst")
	if _, err := Build(io.Discard, input(t, ft, zstdConfig, "squashfs")); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("absent module file: err = %v", err)
	}
}

func TestChooseCompression(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{zstdConfig, Zstd},
		{"CONFIG_RD_GZIP=y\nCONFIG_RD_XZ=y\n# CONFIG_RD_ZSTD is not set\n", XZ},
		{"CONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=m\n", Gzip},
		{"# CONFIG_RD_GZIP is not set\n", None},
	} {
		if got := ChooseCompression([]byte(tc.config)); got != tc.want {
			t.Errorf("ChooseCompression(%q) = %s, want %s", tc.config, got, tc.want)
		}
	}
	if got := ChooseCompression(nil); got != Gzip {
		t.Errorf("no config: %s, want gzip", got)
	}
}

// wantEntries is the archive's full listing, in order.
func wantEntries() []string {
	md := "lib/modules/" + kver
	return []string{
		"dev", "dev/console",
		"etc", "etc/slate-init", "etc/slate-init/modules.load",
		"init",
		"lib", "lib/modules", md,
		md + "/kernel", md + "/kernel/drivers",
		md + "/kernel/drivers/block", md + "/kernel/drivers/block/virtio_blk.ko",
		md + "/kernel/drivers/md", md + "/kernel/drivers/md/dm-bufio.ko", md + "/kernel/drivers/md/dm-mod.ko", md + "/kernel/drivers/md/dm-verity.ko",
		md + "/kernel/drivers/virtio",
		md + "/kernel/drivers/virtio/virtio.ko", md + "/kernel/drivers/virtio/virtio_pci.ko",
		md + "/kernel/drivers/virtio/virtio_pci_modern_dev.ko", md + "/kernel/drivers/virtio/virtio_ring.ko",
		md + "/kernel/fs",
		md + "/kernel/fs/overlayfs", md + "/kernel/fs/overlayfs/overlay.ko",
		md + "/kernel/fs/squashfs", md + "/kernel/fs/squashfs/squashfs.ko",
		md + "/kernel/lib", md + "/kernel/lib/reed_solomon", md + "/kernel/lib/reed_solomon/reed_solomon.ko",
		"proc", "run", "sys", "sysroot",
	}
}

func decompressCLI(t *testing.T, tool string, data []byte) []byte {
	t.Helper()
	testtool.Need(t, tool)
	cmd := exec.Command(tool, "-dc")
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -dc: %v\n%s", tool, err, stderr.String())
	}
	return out
}

func TestArchive(t *testing.T) {
	for _, tc := range []struct{ config, comp, tool string }{
		{zstdConfig, Zstd, "zstd"},
		{"CONFIG_RD_XZ=y\nCONFIG_RD_GZIP=y\n", XZ, "xz"},
		{"CONFIG_RD_GZIP=y\n", Gzip, "gzip"},
	} {
		t.Run(tc.comp, func(t *testing.T) {
			ft := newFakeTree(t)
			var out bytes.Buffer
			info, err := Build(&out, input(t, ft, tc.config, wanted...))
			if err != nil {
				t.Fatal(err)
			}
			if info.Compression != tc.comp || info.Size != int64(out.Len()) {
				t.Errorf("info = %+v (wrote %d bytes)", info, out.Len())
			}
			raw := decompressCLI(t, tc.tool, out.Bytes())
			if int64(len(raw)) != info.CPIOSize {
				t.Errorf("cpio is %d bytes, info says %d", len(raw), info.CPIOSize)
			}
			checkListing(t, raw)
			checkContents(t, raw)

			// What slate inspect shows.
			c, err := Read(bytes.NewReader(out.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if c.Compression != tc.comp || c.Size != info.Size || c.KernelRelease != kver || !reflect.DeepEqual(c.Modules, wantOrder) {
				t.Errorf("Read = %+v", c)
			}

			// Byte-reproducible.
			var again bytes.Buffer
			if _, err := Build(&again, input(t, newFakeTree(t), tc.config, wanted...)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), again.Bytes()) {
				t.Error("two builds differ")
			}
		})
	}
}

// checkListing runs GNU cpio -itv on the archive.
func checkListing(t *testing.T, raw []byte) {
	t.Helper()
	testtool.Need(t, "cpio")
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -itv: %v\n%s", err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 {
			t.Fatalf("cpio -itv line %q", line)
		}
		name := f[len(f)-1]
		names = append(names, name)
		if f[2] != "root" || f[3] != "root" {
			t.Errorf("%s: owner %s:%s", name, f[2], f[3])
		}
		if !strings.Contains(line, " 1970 ") {
			t.Errorf("%s: mtime is not 0: %s", name, line)
		}
		mode := f[0]
		switch {
		case name == "init":
			if mode != "-rwxr-xr-x" {
				t.Errorf("init mode %s", mode)
			}
		case name == "dev/console":
			if mode != "crw-------" || f[4] != "5," || f[5] != "1" {
				t.Errorf("dev/console: %s", line)
			}
		case strings.HasSuffix(name, ".ko") || strings.HasSuffix(name, ".load"):
			if mode != "-rw-r--r--" {
				t.Errorf("%s mode %s", name, mode)
			}
		default:
			if mode != "drwxr-xr-x" {
				t.Errorf("%s mode %s, want a directory", name, mode)
			}
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}
	if want := wantEntries(); !reflect.DeepEqual(names, want) {
		t.Errorf("entries\n got %v\nwant %v", names, want)
	}
}

// checkContents reads the archive back with u-root's reader.
func checkContents(t *testing.T, raw []byte) {
	t.Helper()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, r := range recs {
		if r.Mode&cpio.S_IFMT == cpio.S_IFREG {
			b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			files[r.Name] = b
		}
	}
	if !bytes.Equal(files["init"], fakeInit) {
		t.Error("init differs")
	}
	list, lkver, err := layout.ParseLoadList(bytes.NewReader(files[strings.TrimPrefix(layout.LoadList, "/")]))
	if err != nil || lkver != kver {
		t.Errorf("load list: kernel %q, %v", lkver, err)
	}
	var names []string
	for _, e := range list {
		mod := files[strings.TrimPrefix(e.Path, "/")]
		if want := fakeKO(NormalizeModuleName(e.Path)); !bytes.Equal(mod, want) {
			t.Errorf("%s: content %q, want %q (decompressed)", e.Path, mod, want)
		}
		if !strings.HasPrefix(e.Path, path.Join(layout.ModulesDir, kver)+"/") || !strings.HasSuffix(e.Path, ".ko") {
			t.Errorf("load list entry %q", e)
		}
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, wantOrder) {
		t.Errorf("load list order %v", names)
	}
	// Each entry names its modules.dep line, so the init can skip what
	// needs a module that refused to load.
	if e := list[len(list)-1]; e.Name() != "dm_verity" || !reflect.DeepEqual(e.Needs, []string{"dm_bufio", "dm_mod", "reed_solomon"}) {
		t.Errorf("last entry %q, want dm_verity needing dm_bufio dm_mod reed_solomon", e)
	}
}

func TestReadRefuses(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("MZ not an initramfs"), zstBytes(t, []byte("070701 truncated"))} {
		if c, err := Read(bytes.NewReader(data)); err == nil {
			t.Errorf("Read(%q) = %+v", data, c)
		}
	}
	// A cpio without a load list.
	var raw bytes.Buffer
	if err := writeCPIO(&raw, []cpio.Record{cpio.StaticFile("init", "x", 0o755)}); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(&raw); err == nil || !strings.Contains(err.Error(), "no "+layout.LoadList) {
		t.Errorf("no load list: %v", err)
	}
}

func TestZstdFrame(t *testing.T) {
	testtool.Need(t, "zstd")
	var out bytes.Buffer
	if _, err := Build(&out, input(t, newFakeTree(t), zstdConfig, wanted...)); err != nil {
		t.Fatal(err)
	}
	p := t.TempDir() + "/initramfs.zst"
	os.WriteFile(p, out.Bytes(), 0o644)
	b, err := exec.Command("zstd", "-lv", p).CombinedOutput()
	if err != nil {
		t.Fatalf("zstd -lv: %v\n%s", err, b)
	}
	s := string(b)
	if !strings.Contains(s, "Check: XXH64") || !strings.Contains(s, "Frames: 1") {
		t.Errorf("zstd -lv:\n%s", s)
	}
	// The window the kernel must allocate stays at or below 8 MiB.
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "Window Size:") {
			var v float64
			var unit string
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "Window Size:")), "%f %s", &v, &unit)
			if unit == "MiB" && v > 8 || unit == "GiB" {
				t.Errorf("window too large: %s", line)
			}
		}
	}
}

func TestXZCheck(t *testing.T) {
	testtool.Need(t, "xz")
	var out bytes.Buffer
	if _, err := Build(&out, input(t, newFakeTree(t), "CONFIG_RD_XZ=y\n", wanted...)); err != nil {
		t.Fatal(err)
	}
	p := t.TempDir() + "/initramfs.xz"
	os.WriteFile(p, out.Bytes(), 0o644)
	b, err := exec.Command("xz", "--robot", "--list", p).CombinedOutput()
	if err != nil {
		t.Fatalf("xz --list: %v\n%s", err, b)
	}
	// The kernel's xz decoder only verifies CRC32 (or no check).
	if !strings.Contains(string(b), "\tCRC32\t") || strings.Contains(string(b), "CRC64") {
		t.Errorf("xz check is not CRC32:\n%s", b)
	}
}

func TestBadInput(t *testing.T) {
	ft := newFakeTree(t)
	in := input(t, ft, zstdConfig, "squashfs")
	in.Init = []byte("#!/bin/sh\n")
	if _, err := Build(io.Discard, in); err == nil {
		t.Error("non-ELF init accepted")
	}
	in = input(t, ft, zstdConfig, "squashfs")
	in.KernelRelease = "../x"
	if _, err := Build(io.Discard, in); err == nil {
		t.Error("bad kernel release accepted")
	}
	in = input(t, ft, zstdConfig, "squashfs")
	in.Compression = "lz4"
	if _, err := Build(io.Discard, in); err == nil {
		t.Error("unknown compression accepted")
	}
}
