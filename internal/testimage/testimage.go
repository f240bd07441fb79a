// Package testimage builds small OCI images inside tests: several layers
// with whiteouts, an opaque directory, hard links, a setuid file, a
// security.capability xattr, a device node, a large directory and a dangling
// symlink, plus a fake kernel, modules and systemd-boot, so the builder can be
// tested without a network or a real distribution.
package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/slate-os/slate/boot"
)

// Epoch is every entry's mtime and the image's creation time.
var Epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// KernelRelease is the fake kernel's version.
const KernelRelease = "6.1.0-99-cloud-amd64"

// Entry is one tar entry of a layer.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg if 0
	Mode     int64
	Body     string
	Link     string
	UID, GID int
	Xattrs   map[string]string
	Major    int64
	Minor    int64
}

// Layer makes an uncompressed-tar layer from entries, in order.
func Layer(entries []Entry) (v1.Layer, error) {
	b, err := Tar(entries)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// Tar is the tar archive of entries, in order, names as given.
func Tar(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
			ModTime: Epoch, Linkname: e.Link, Devmajor: e.Major, Devminor: e.Minor, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if len(e.Xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Dir is a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Type: tar.TypeDir} }

// File is a regular file entry.
func File(name, body string) Entry { return Entry{Name: name, Body: body} }

// Options choose what the node image leaves out, for the error paths.
type Options struct {
	NoKernel      bool
	NoSystemdBoot bool
	// BigFile adds a file of this many incompressible bytes, to overflow slots.
	BigFile int
}

// Base is a minimal "OS" with boot files: the layer every node image starts from.
func Base(o Options) []Entry {
	kmod := "usr/lib/modules/" + KernelRelease + "/"
	es := []Entry{
		Dir("etc"), Dir("usr"), Dir("usr/lib"), Dir("usr/bin"), Dir("usr/sbin"), Dir("var"), Dir("var/lib"),
		Dir("proc"), Dir("sys"), Dir("dev"), Dir("run"), Dir("tmp"), Dir("boot"),
		{Name: "bin", Type: tar.TypeSymlink, Link: "usr/bin"},
		{Name: "lib", Type: tar.TypeSymlink, Link: "usr/lib"},
		{Name: "sbin", Type: tar.TypeSymlink, Link: "usr/sbin"},
		File("usr/lib/os-release", "ID=testos\nVERSION_ID=1\nPRETTY_NAME=\"Test OS\"\n"),
		{Name: "etc/os-release", Type: tar.TypeSymlink, Link: "../usr/lib/os-release"},
		File("etc/machine-id", ""),
		{Name: "usr/sbin/init", Mode: 0o755, Body: "#!/bin/false\n"},
		File("var/lib/seed", "from the image\n"),
	}
	if !o.NoSystemdBoot {
		es = append(es, Dir("usr/lib/systemd"), Dir("usr/lib/systemd/boot"), Dir("usr/lib/systemd/boot/efi"),
			File("usr/lib/systemd/boot/efi/systemd-bootx64.efi", "MZ fake systemd-boot\n"))
	}
	if !o.NoKernel {
		es = append(es,
			File("boot/vmlinuz-"+KernelRelease, "fake kernel "+KernelRelease+"\n"),
			File("boot/config-"+KernelRelease, "CONFIG_RD_GZIP=y\nCONFIG_RD_XZ=y\nCONFIG_RD_ZSTD=y\n"),
			Dir("usr/lib/modules"), Dir(kmod), Dir(kmod+"kernel"), Dir(kmod+"kernel/drivers"),
			File(kmod+"kernel/drivers/virtio_ring.ko", "\x7fELF virtio_ring"),
			File(kmod+"kernel/drivers/virtio.ko", "\x7fELF virtio"),
			File(kmod+"kernel/drivers/virtio_blk.ko", "\x7fELF virtio_blk"),
			File(kmod+"kernel/drivers/virtio_pci.ko", "\x7fELF virtio_pci"),
			File(kmod+"kernel/drivers/squashfs.ko", "\x7fELF squashfs"),
			File(kmod+"kernel/drivers/efi-pstore.ko", "\x7fELF efi-pstore"),
			// ext4 as on Debian's generic kernel: its crc32c only through
			// modules.softdep and modules.alias.
			File(kmod+"kernel/drivers/ext4.ko", "\x7fELF ext4"),
			File(kmod+"kernel/drivers/jbd2.ko", "\x7fELF jbd2"),
			File(kmod+"kernel/drivers/crc32c_generic.ko", "\x7fELF crc32c_generic"),
			File(kmod+"modules.softdep", "softdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\n"),
			File(kmod+"modules.alias", "alias crypto-crc32c crc32c_generic\nalias fs-ext4 ext4\n"),
			File(kmod+"modules.dep", "kernel/drivers/virtio_ring.ko:\nkernel/drivers/virtio.ko: kernel/drivers/virtio_ring.ko\n"+
				"kernel/drivers/virtio_blk.ko: kernel/drivers/virtio.ko kernel/drivers/virtio_ring.ko\n"+
				"kernel/drivers/virtio_pci.ko: kernel/drivers/virtio.ko kernel/drivers/virtio_ring.ko\n"+
				"kernel/drivers/squashfs.ko:\nkernel/drivers/efi-pstore.ko:\n"+
				"kernel/drivers/ext4.ko: kernel/drivers/jbd2.ko\nkernel/drivers/jbd2.ko:\nkernel/drivers/crc32c_generic.ko:\n"),
			File(kmod+"modules.builtin", "kernel/fs/overlayfs/overlay.ko\nkernel/drivers/md/dm-verity.ko\nkernel/drivers/scsi/virtio_scsi.ko\nkernel/drivers/nvme/host/nvme.ko\nkernel/drivers/block/sd_mod.ko\nkernel/fs/efivarfs/efivarfs.ko\nkernel/drivers/firmware/qemu_fw_cfg.ko\nkernel/fs/fat/vfat.ko\nkernel/fs/nls/nls_cp437.ko\nkernel/fs/nls/nls_ascii.ko\nkernel/fs/isofs/isofs.ko\nkernel/drivers/scsi/sr_mod.ko\n"),
		)
	}
	if o.BigFile > 0 {
		b := make([]byte, o.BigFile)
		x := uint32(2463534242)
		for i := range b {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
		}
		es = append(es, File("usr/lib/big", string(b)))
	}
	return es
}

// Tricky is the layer set that exercises every tar feature a root must keep.
func Tricky() [][]Entry {
	big := []Entry{Dir("usr/share"), Dir("usr/share/many")}
	for i := 0; i < 2000; i++ {
		big = append(big, File(fmt.Sprintf("usr/share/many/f%04d", i), fmt.Sprint(i)))
	}
	l2 := []Entry{
		{Name: "usr/bin/su", Mode: 0o4755, Body: "setuid"},
		{Name: "usr/bin/wall", Mode: 0o2755, GID: 5, Body: "setgid"},
		{Name: "usr/bin/ping", Mode: 0o755, Body: "ping", Xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
		{Name: "usr/bin/ping6", Type: tar.TypeLink, Link: "usr/bin/ping"},
		{Name: "usr/share/owned", UID: 1000, GID: 1001, Mode: 0o600, Body: "mine"},
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3},
		{Name: "run/fifo", Type: tar.TypeFifo, Mode: 0o644},
		{Name: "usr/share/dangling", Type: tar.TypeSymlink, Link: "/nonexistent/target"},
		{Name: "tmp", Type: tar.TypeDir, Mode: 0o1777},
		Dir("opt"), Dir("opt/old"), File("opt/old/stale", "gone after the opaque whiteout"), File("opt/removed", "whited out"),
	}
	l3 := []Entry{
		Dir("opt"), {Name: "opt/.wh.removed"}, Dir("opt/old"), {Name: "opt/old/.wh..wh..opq"}, File("opt/old/fresh", "new"),
	}
	return [][]Entry{big, l2, l3}
}

// Image stacks layers into an image with a config for linux/amd64.
func Image(layers ...[]Entry) (v1.Image, error) {
	img := empty.Image
	for _, es := range layers {
		l, err := Layer(es)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = boot.OS, boot.Arch
	cf.Created = v1.Time{Time: Epoch}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.version": "1.0.0"}
	return mutate.ConfigFile(img, cf)
}

// Node is a bootable-looking test image: Base plus Tricky.
func Node(o Options) (v1.Image, error) {
	return Image(append([][]Entry{Base(o)}, Tricky()...)...)
}
