package initramfs

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/slate-os/slate/initramfs/initbin"
	"github.com/slate-os/slate/initramfs/layout"
)

// kernelFiles is a fake kernel's depmod output.
type kernelFiles struct {
	dep, builtin, builtinModinfo, softdep, weakdep, alias string
}

// Debian bookworm's generic kernel (linux-image-6.1.0-*-amd64), cut down:
// ext4 and jbd2 reach crc32c only through modules.softdep and the alias.
var bookwormGeneric = kernelFiles{
	dep: `kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/arch/x86/crypto/sha256-ssse3.ko:
kernel/fs/squashfs/squashfs.ko:
kernel/drivers/scsi/hv_storvsc.ko: kernel/drivers/scsi/scsi_transport_fc.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko kernel/drivers/hv/hv_vmbus.ko
kernel/drivers/scsi/scsi_transport_fc.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/hv/hv_vmbus.ko:
`,
	builtin: "kernel/crypto/sha256_generic.ko\nkernel/lib/crc32.ko\n",
	builtinModinfo: "sha256_generic.alias=crypto-sha256-generic\x00sha256_generic.alias=crypto-sha256\x00" +
		"sha256_generic.license=GPL\x00sha256_generic.description=SHA-224 and SHA-256 Secure Hash Algorithm\x00",
	softdep: "# Soft dependencies extracted from modules themselves.\n" +
		"softdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\nsoftdep cifs gcm\n",
	alias: "# Aliases extracted from modules themselves.\n" +
		"alias crypto-sha256 sha256_ssse3\n" +
		"alias crypto-crc32c-intel crc32c_intel\nalias crypto-crc32c crc32c_intel\n" +
		"alias crypto-crc32c-generic crc32c_generic\nalias crypto-crc32c crc32c_generic\n" +
		"alias vmbus:4acc9b2f6900f34ab76b6fd0be528cda hv_storvsc\nalias fs-ext4 ext4\n",
}

func buildKernel(t *testing.T, k kernelFiles, wanted []Module) (*Info, []layout.LoadEntry, error) {
	t.Helper()
	ft := fakeTreeOf(t, k.dep)
	var out bytes.Buffer
	info, err := Build(&out, Input{
		Init: fakeInit, KernelRelease: kver, Compression: None,
		ModulesDep: []byte(k.dep), ModulesBuiltin: []byte(k.builtin), ModulesBuiltinModinfo: []byte(k.builtinModinfo),
		ModulesSoftdep: []byte(k.softdep), ModulesWeakdep: []byte(k.weakdep), ModulesAlias: []byte(k.alias),
		Modules: wanted, OpenModule: ft.open,
	})
	if err != nil {
		return nil, nil, err
	}
	r := cpio.Newc.Reader(bytes.NewReader(out.Bytes()))
	for {
		rec, err := r.ReadRecord()
		if err != nil {
			t.Fatalf("no load list in the archive: %v", err)
		}
		if rec.Name == strings.TrimPrefix(layout.LoadList, "/") {
			list, _, err := layout.ParseLoadList(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			return info, list, nil
		}
	}
}

func TestModuleClosure(t *testing.T) {
	opt := func(names ...string) []Module {
		var m []Module
		for _, n := range names {
			m = append(m, Module{Name: n, Optional: true})
		}
		return m
	}
	for _, tc := range []struct {
		name       string
		k          kernelFiles
		wanted     []Module
		order      []string // module names in load order
		builtin    []string
		skipped    []string
		unresolved []string
		err        string
		needs      map[string][]string // module -> its load list entry's needs
	}{{
		name: "softdep pre before, post after",
		k: kernelFiles{
			dep:     "kernel/x.ko: kernel/a.ko\nkernel/a.ko:\nkernel/pre.ko:\nkernel/post.ko:\nkernel/unused.ko:\nkernel/y.ko:\n",
			softdep: "softdep x pre: pre post: post\n",
		},
		wanted: required("x", "y"),
		order:  []string{"pre", "a", "x", "post", "y"},
		needs:  map[string][]string{"x": {"a"}, "pre": nil},
	}, {
		name: "post before its softdep even when that is wanted first",
		k: kernelFiles{
			dep:     "kernel/x.ko:\nkernel/post.ko:\n",
			softdep: "softdep x post: post\n",
		},
		wanted: required("post", "x"),
		order:  []string{"x", "post"},
	}, {
		name: "alias to several modules, all loaded in modules.alias's order",
		k: kernelFiles{
			dep:   "kernel/crypto/crc32c_generic.ko:\nkernel/arch/x86/crypto/crc32c-intel.ko:\nkernel/other.ko:\n",
			alias: "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\nalias crypto-crc32c-generic crc32c_generic\nalias crypto-other other\n",
		},
		wanted: required("crypto-crc32c"),
		order:  []string{"crc32c_intel", "crc32c_generic"},
	}, {
		name: "glob alias",
		k: kernelFiles{
			dep:   "kernel/drivers/block/virtio_blk.ko:\nkernel/char/foo.ko:\nkernel/char/bar.ko:\n",
			alias: "alias virtio:d00000002v* virtio_blk\nalias char-major-10-[!0]* foo\nalias char-major-10-0* bar\n",
		},
		wanted: required("virtio:d00000002v00001AF4", "char-major-10-135"),
		order:  []string{"virtio_blk", "foo"},
	}, {
		name: "a module name wins over an alias",
		k: kernelFiles{
			dep:   "kernel/ext4.ko:\nkernel/ext2.ko:\n",
			alias: "alias ext4 ext2\n",
		},
		wanted: required("ext4"),
		order:  []string{"ext4"},
	}, {
		name: "softdep to a built-in module, by name and by alias",
		k: kernelFiles{
			dep:            "kernel/fs/ext4/ext4.ko:\n",
			builtin:        "kernel/crypto/crc32c_generic.ko\n",
			builtinModinfo: "crc32c_generic.alias=crypto-crc32c\x00crc32c_generic.license=GPL\x00",
			softdep:        "softdep ext4 pre: crypto-crc32c crc32c-generic\n",
		},
		wanted: required("ext4"),
		order:  []string{"ext4"},
	}, {
		name: "softdep that resolves to nothing is reported, not an error",
		k: kernelFiles{
			dep:     "kernel/fs/ext4/ext4.ko:\n",
			softdep: "softdep ext4 pre: crypto-crc32c\nsoftdep ext4 post: nothing\n",
		},
		wanted:     required("ext4"),
		order:      []string{"ext4"},
		unresolved: []string{"ext4 pre: crypto-crc32c", "ext4 post: nothing"},
	}, {
		name: "mutual pre softdeps",
		k: kernelFiles{
			dep:     "kernel/a.ko:\nkernel/b.ko:\n",
			softdep: "softdep a pre: b\nsoftdep b pre: a\n",
		},
		wanted: required("a"),
		order:  []string{"b", "a"},
	}, {
		name: "mutual post softdeps",
		k: kernelFiles{
			dep:     "kernel/a.ko:\nkernel/b.ko:\n",
			softdep: "softdep a post: b\nsoftdep b post: a\n",
		},
		wanted: required("a"),
		order:  []string{"a", "b"},
	}, {
		name: "a softdep against a hard dependency gives way",
		k: kernelFiles{
			dep:     "kernel/a.ko:\nkernel/b.ko: kernel/a.ko\nkernel/c.ko: kernel/b.ko kernel/a.ko\n",
			softdep: "softdep a pre: c\nsoftdep b post: a\n",
		},
		wanted: required("a"),
		order:  []string{"a", "b", "c"},
	}, {
		name: "weakdep loads after, through aliases too",
		k: kernelFiles{
			dep:     "kernel/x.ko:\nkernel/w.ko:\nkernel/crypto/crc32c_generic.ko:\n",
			weakdep: "# Weak dependencies extracted from modules themselves.\nweakdep x w crc32c\nweakdep x absent\n",
			alias:   "alias crc32c crc32c_generic\n",
		},
		wanted:     required("x"),
		order:      []string{"x", "w", "crc32c_generic"},
		unresolved: []string{"x weakdep absent"},
	}, {
		name: "compressed modules",
		k: kernelFiles{
			dep:     "kernel/fs/ext4/ext4.ko.zst: kernel/fs/jbd2/jbd2.ko.xz\nkernel/fs/jbd2/jbd2.ko.xz:\nkernel/crypto/crc32c_generic.ko.gz:\n",
			softdep: "softdep jbd2 pre: crypto-crc32c\n",
			alias:   "alias crypto-crc32c crc32c_generic\n",
		},
		wanted: required("ext4"),
		order:  []string{"crc32c_generic", "jbd2", "ext4"},
		needs:  map[string][]string{"ext4": {"jbd2"}},
	}, {
		name: "optional modules the kernel lacks are skipped and listed",
		k: kernelFiles{
			dep:            "kernel/fs/squashfs/squashfs.ko:\nkernel/drivers/nvme/host/nvme.ko:\n",
			builtin:        "kernel/drivers/block/virtio_blk.ko\n",
			builtinModinfo: "sha256_generic.alias=crypto-sha256\x00",
		},
		wanted:  append(required("squashfs"), opt("xen_blkfront", "nvme", "virtio_blk", "crypto-sha256", "hv_storvsc")...),
		order:   []string{"squashfs", "nvme"},
		builtin: []string{"virtio_blk", "crypto_sha256"},
		skipped: []string{"xen_blkfront", "hv_storvsc"},
	}, {
		name: "a name both optional and required is required",
		k: kernelFiles{
			dep: "kernel/fs/squashfs/squashfs.ko:\n",
		},
		wanted: append(opt("dm-verity"), Module{Name: "dm_verity", Why: "slate's init needs it to verify the root"}),
		err:    "initramfs: kernel " + kver + " has no dm-verity (neither built in nor a module): slate's init needs it to verify the root",
	}, {
		name: "required modules missing are refused, each named",
		k: kernelFiles{
			dep: "kernel/fs/squashfs/squashfs.ko:\n",
		},
		wanted: DefaultModules,
		err: "initramfs: kernel " + kver + " has no dm_verity (neither built in nor a module): slate's init needs it to verify the root\n" +
			"kernel " + kver + " has no overlay (neither built in nor a module): slate's init needs it for /etc (an overlay on a tmpfs)\n" +
			"kernel " + kver + " has no ext4 (neither built in nor a module): slate's init needs it for the state partition (/var)",
	}, {
		name: "a softdep's module missing from modules.dep",
		k: kernelFiles{
			dep:     "kernel/x.ko:\nkernel/y.ko: kernel/gone.ko\n",
			softdep: "softdep x pre: y\n",
		},
		wanted: required("x"),
		err:    "initramfs: kernel " + kver + ": module kernel/gone.ko (needed by kernel/x.ko -> kernel/y.ko) is not in modules.dep",
	}, {
		name:    "bookworm generic: crc32c before jbd2 and ext4",
		k:       bookwormGeneric,
		wanted:  append(required("ext4", "squashfs"), opt("hv_storvsc", "crypto-sha256", "nvme")...),
		order:   []string{"crc32c_intel", "crc32c_generic", "jbd2", "mbcache", "crc16", "ext4", "squashfs", "hv_vmbus", "scsi_common", "scsi_mod", "scsi_transport_fc", "hv_storvsc", "sha256_ssse3"},
		skipped: []string{"nvme"},
		needs:   map[string][]string{"hv_storvsc": {"scsi_transport_fc", "scsi_mod", "scsi_common", "hv_vmbus"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			info, list, err := buildKernel(t, tc.k, tc.wanted)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v\nwant %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(info.Modules, tc.order) {
				t.Errorf("load order\n got %v\nwant %v", info.Modules, tc.order)
			}
			var names []string
			for _, e := range list {
				names = append(names, e.Name())
				if want, ok := tc.needs[e.Name()]; ok && !reflect.DeepEqual(e.Needs, want) && (len(want) > 0 || len(e.Needs) > 0) {
					t.Errorf("%s needs %q, want %q", e.Name(), e.Needs, want)
				}
			}
			if !reflect.DeepEqual(names, info.Modules) {
				t.Errorf("load list %v, Info.Modules %v", names, info.Modules)
			}
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"builtin", info.Builtin, tc.builtin}, {"skipped", info.Skipped, tc.skipped}, {"unresolved", info.Unresolved, tc.unresolved}} {
				if len(c.got) > 0 || len(c.want) > 0 {
					if !reflect.DeepEqual(c.got, c.want) {
						t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
					}
				}
			}
		})
	}
}

// TestBookwormGenericRule checks the order against the files themselves:
// every module after its modules.dep line and its pre: soft dependencies.
func TestBookwormGenericRule(t *testing.T) {
	info, _, err := buildKernel(t, bookwormGeneric, append(required("ext4"), Module{Name: "hv_storvsc", Optional: true}))
	if err != nil {
		t.Fatal(err)
	}
	db, err := parseModules(modFiles{dep: []byte(bookwormGeneric.dep), softdep: []byte(bookwormGeneric.softdep), alias: []byte(bookwormGeneric.alias)})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range info.Modules {
		pos[m] = i
	}
	for _, m := range info.Modules {
		before := db.deps[db.byName[m]]
		if sd := db.soft[m]; sd != nil {
			for _, s := range sd.pre {
				rels, _ := db.resolve(s)
				before = append(before, rels...)
			}
		}
		for _, d := range before {
			if p, ok := pos[NormalizeModuleName(d)]; !ok || p >= pos[m] {
				t.Errorf("%s loads before %s (or without it)", m, d)
			}
		}
	}
	if pos["crc32c_generic"] >= pos["ext4"] || pos["crc32c_intel"] >= pos["jbd2"] {
		t.Errorf("crc32c after ext4 or jbd2: %v", info.Modules)
	}
}

// TestRealKernel packs DefaultModules from a real kernel's modules
// directory, e.g. a Debian kernel package unpacked and depmod'ed:
//
//	apt-get download linux-image-6.1.0-28-amd64 kmod
//	dpkg-deb -x linux-image-*.deb /tmp/k && depmod -b /tmp/k 6.1.0-28-amd64
//	SLATE_MODULES_DIR=/tmp/k/lib/modules/6.1.0-28-amd64 go test -run TestRealKernel -v ./initramfs
//
// and checks the order against the kernel's own files.
func TestRealKernel(t *testing.T) {
	dir := os.Getenv("SLATE_MODULES_DIR")
	if dir == "" {
		t.Skip("SLATE_MODULES_DIR is not set (see the comment)")
	}
	read := func(name string) []byte { b, _ := os.ReadFile(filepath.Join(dir, name)); return b }
	init, err := initbin.Binary()
	if err != nil {
		t.Fatal(err)
	}
	kfiles := modFiles{dep: read("modules.dep"), builtin: read("modules.builtin"), builtinModinfo: read("modules.builtin.modinfo"),
		softdep: read("modules.softdep"), weakdep: read("modules.weakdep"), alias: read("modules.alias")}
	var out bytes.Buffer
	t0 := time.Now()
	info, err := Build(&out, Input{
		Init: init, KernelRelease: filepath.Base(dir), Compression: Zstd,
		ModulesDep: kfiles.dep, ModulesBuiltin: kfiles.builtin, ModulesBuiltinModinfo: kfiles.builtinModinfo,
		ModulesSoftdep: kfiles.softdep, ModulesWeakdep: kfiles.weakdep, ModulesAlias: kfiles.alias,
		Modules:    DefaultModules,
		OpenModule: func(rel string) (io.ReadCloser, error) { return os.Open(filepath.Join(dir, rel)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d modules in %v, initramfs %d KiB zstd (cpio %d KiB, init %d KiB)", filepath.Base(dir), len(info.Modules), time.Since(t0).Round(time.Millisecond), info.Size>>10, info.CPIOSize>>10, len(init)>>10)
	t.Logf("modules:    %s", strings.Join(info.Modules, " "))
	t.Logf("built in:   %s", strings.Join(info.Builtin, " "))
	t.Logf("skipped:    %s", strings.Join(info.Skipped, " "))
	t.Logf("unresolved: %s", strings.Join(info.Unresolved, ", "))

	db, err := parseModules(kfiles)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range info.Modules {
		pos[m] = i
	}
	for _, m := range info.Modules {
		before := db.deps[db.byName[m]]
		if sd := db.soft[m]; sd != nil {
			for _, s := range sd.pre {
				rels, _ := db.resolve(s)
				before = append(before, rels...)
			}
		}
		for _, d := range before {
			if p, ok := pos[NormalizeModuleName(d)]; !ok || p >= pos[m] {
				t.Errorf("%s loads before %s (or without it)", m, d)
			}
		}
	}
	if _, ok := pos["ext4"]; ok && db.soft["ext4"] != nil {
		crc, _ := db.resolve("crypto-crc32c")
		if len(crc) == 0 {
			t.Error("ext4 has soft dependencies but crypto-crc32c resolves to no module")
		}
		for _, r := range crc {
			t.Logf("crypto-crc32c -> %s at %d, ext4 at %d", NormalizeModuleName(r), pos[NormalizeModuleName(r)], pos["ext4"])
		}
	}
}
