// Command check reads the reference image from an OCI layout (as the builder
// would: layout.FromPath, then the flattened filesystem stream) and reports
// what the boot needs from it: where the kernel is, its modules and their
// compression, the kernel config's initramfs decompressors, systemd-boot, the
// init, the /usr merge. It exits non-zero when something the builder relies on
// is missing, so build.sh runs it as the last step of every fresh build.
//
//	go run ./qemu-tests/reference/check build/reference
package main

import (
	"archive/tar"
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// configKeys are the kernel options worth knowing for slate's init.
var configKeys = regexp.MustCompile(`^(# )?CONFIG_(RD_[A-Z0-9]+|MODULE_COMPRESS_[A-Z]+|SQUASHFS|SQUASHFS_(ZSTD|XZ)|` +
	`DM_VERITY|OVERLAY_FS|VIRTIO_BLK|VIRTIO_PCI|DEVTMPFS|DEVTMPFS_MOUNT|EFI_STUB|EFIVAR_FS|BLK_DEV_INITRD|FW_CFG_SYSFS|EXT4_FS)[= ]`)

var modDir = regexp.MustCompile(`^/usr/lib/modules/([^/]+)$`)

type node struct {
	hdr  *tar.Header
	data []byte // kept for small files we look into
}

func main() {
	ref := flag.String("ref", "latest", "org.opencontainers.image.ref.name to read")
	prepared := flag.Bool("prepared", true, "check build.sh's '@prepare clean' too (identity emptied, systemd-networkd enabled); false for a tree as debootstrap leaves it")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: check [-ref NAME] OCI_LAYOUT")
		os.Exit(2)
	}
	problems, err := run(os.Stdout, flag.Arg(0), *ref, *prepared)
	if err != nil {
		fmt.Fprintln(os.Stderr, "check:", err)
		os.Exit(1)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "check: MISSING:", p)
		}
		os.Exit(1)
	}
}

func run(w io.Writer, dir, ref string, prepared bool) (problems []string, err error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var img v1.Image
	for _, d := range im.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == ref {
			if img, err = idx.Image(d.Digest); err != nil {
				return nil, err
			}
			fmt.Fprintf(w, "manifest: %s\n", d.Digest)
		}
	}
	if img == nil {
		return nil, fmt.Errorf("no image named %q in %s", ref, dir)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "config: os=%s arch=%s created=%s layers=%d\n", cfg.OS, cfg.Architecture,
		cfg.Created.UTC().Format("2006-01-02T15:04:05Z"), len(layers))

	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]*node{}
	var order []string
	var regBytes int64
	modExt := map[string]int{}
	xattrs := map[string]int{}
	types := map[byte]int{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue
		}
		n := &node{hdr: h}
		files[name] = n
		order = append(order, name)
		types[h.Typeflag]++
		for k := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				xattrs[x]++
			}
		}
		if h.Typeflag == tar.TypeReg {
			regBytes += h.Size
			if h.Size < 1<<20 && interesting(name) {
				if n.data, err = io.ReadAll(tr); err != nil {
					return nil, err
				}
			}
		}
		if i := strings.Index(name, ".ko"); i > 0 && strings.HasPrefix(name, "/usr/lib/modules/") && !strings.Contains(name[i+1:], "/") {
			modExt[name[i:]]++
		}
	}
	fmt.Fprintf(w, "entries: %d (regular %d, dirs %d, symlinks %d, hardlinks %d, char devs %d, block devs %d, fifos %d), file bytes: %d\n",
		len(order), types[tar.TypeReg], types[tar.TypeDir], types[tar.TypeSymlink], types[tar.TypeLink],
		types[tar.TypeChar], types[tar.TypeBlock], types[tar.TypeFifo], regBytes)
	fmt.Fprintf(w, "xattrs: %s\n", counts(xattrs))

	for _, top := range []string{"/bin", "/sbin", "/lib", "/lib64"} {
		if n := files[top]; n != nil && n.hdr.Typeflag == tar.TypeSymlink {
			fmt.Fprintf(w, "usrmerge: %s -> %s\n", top, n.hdr.Linkname)
		} else if n != nil {
			fmt.Fprintf(w, "usrmerge: %s is not a symlink\n", top)
		}
	}
	if files["/lib"] == nil || files["/lib"].hdr.Typeflag != tar.TypeSymlink {
		problems = append(problems, "/lib is not a symlink to usr/lib (not merged /usr)")
	}

	// Kernels: /boot/vmlinuz-<kver> (Debian) or /usr/lib/modules/<kver>/vmlinuz (bootc style).
	var kvers []string
	for _, name := range order {
		if m := modDir.FindStringSubmatch(name); m != nil && files[name].hdr.Typeflag == tar.TypeDir {
			kvers = append(kvers, m[1])
		}
	}
	if len(kvers) == 0 {
		problems = append(problems, "no /usr/lib/modules/<kver>")
	}
	for _, kv := range kvers {
		var kernel []string
		for _, p := range []string{"/boot/vmlinuz-" + kv, "/usr/lib/modules/" + kv + "/vmlinuz"} {
			if n := resolve(files, p); n != nil && n.hdr.Typeflag == tar.TypeReg {
				kernel = append(kernel, fmt.Sprintf("%s (%d bytes)", p, n.hdr.Size))
			}
		}
		if len(kernel) == 0 {
			problems = append(problems, "no kernel for "+kv)
		}
		fmt.Fprintf(w, "kernel %s: %s\n", kv, strings.Join(kernel, ", "))
		dep := resolve(files, "/usr/lib/modules/"+kv+"/modules.dep")
		if dep == nil {
			problems = append(problems, "no modules.dep for "+kv)
		} else {
			fmt.Fprintf(w, "modules.dep %s: %d bytes, %d modules\n", kv, dep.hdr.Size, strings.Count(string(dep.data), "\n"))
		}
		if cfgFile := resolve(files, "/boot/config-"+kv); cfgFile != nil {
			var opts []string
			sc := bufio.NewScanner(strings.NewReader(string(cfgFile.data)))
			for sc.Scan() {
				if configKeys.MatchString(sc.Text()) {
					opts = append(opts, strings.TrimSuffix(strings.TrimPrefix(sc.Text(), "# "), " is not set")+map[bool]string{true: "=n", false: ""}[strings.HasPrefix(sc.Text(), "# ")])
				}
			}
			fmt.Fprintf(w, "/boot/config-%s: %s\n", kv, strings.Join(opts, " "))
		} else {
			fmt.Fprintf(w, "/boot/config-%s: absent\n", kv)
		}
	}
	fmt.Fprintf(w, "modules by extension: %s\n", counts(modExt))
	for _, top := range []string{"/vmlinuz", "/initrd.img"} {
		if n := files[top]; n != nil {
			fmt.Fprintf(w, "%s -> %s\n", top, n.hdr.Linkname)
		}
	}
	var initrds []string
	for _, name := range order {
		if strings.HasPrefix(name, "/boot/initrd") {
			initrds = append(initrds, name)
		}
	}
	fmt.Fprintf(w, "initrd images: %d %v\n", len(initrds), initrds)

	for _, p := range []string{"/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "/usr/lib/systemd/systemd-bless-boot",
		"/usr/lib/systemd/systemd-networkd"} {
		if n := resolve(files, p); n != nil && n.hdr.Typeflag == tar.TypeReg {
			fmt.Fprintf(w, "%s: %d bytes\n", p, n.hdr.Size)
		} else {
			problems = append(problems, p)
		}
	}
	chain, target := resolveChain(files, "/sbin/init")
	fmt.Fprintf(w, "/sbin/init: %s\n", strings.Join(chain, " -> "))
	if target == nil || target.hdr.Typeflag != tar.TypeReg || target.hdr.Mode&0o111 == 0 {
		problems = append(problems, "/sbin/init is not an executable file")
	}
	if prepared {
		if n := files["/etc/machine-id"]; n == nil || n.hdr.Typeflag != tar.TypeReg || n.hdr.Size != 0 {
			problems = append(problems, "/etc/machine-id is not an empty file")
		} else {
			fmt.Fprintf(w, "/etc/machine-id: empty file, mode %#o\n", n.hdr.Mode)
		}
		if n := files["/var/lib/dbus/machine-id"]; n != nil {
			problems = append(problems, "/var/lib/dbus/machine-id still there")
		}
		if n := files["/etc/hostname"]; n == nil || string(n.data) != "slate\n" {
			problems = append(problems, `/etc/hostname is not "slate"`)
		}
		wants := []string{"/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
			"/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"}
		enabled := true
		for _, p := range wants {
			if n := files[p]; n == nil || n.hdr.Typeflag != tar.TypeSymlink {
				problems = append(problems, p+" (systemd-networkd not enabled)")
				enabled = false
			}
		}
		fmt.Fprintf(w, "systemd-networkd enabled: %v\n", enabled)
	}
	if n := files["/etc/os-release"]; n != nil {
		fmt.Fprintf(w, "/etc/os-release -> %s\n", n.hdr.Linkname)
	}
	if n := resolve(files, "/etc/os-release"); n != nil {
		for _, l := range strings.Split(string(n.data), "\n") {
			if strings.HasPrefix(l, "PRETTY_NAME=") || strings.HasPrefix(l, "VERSION_ID=") {
				fmt.Fprintf(w, "os-release: %s\n", l)
			}
		}
	}
	return problems, nil
}

func interesting(name string) bool {
	return strings.HasPrefix(name, "/boot/config-") || strings.HasSuffix(name, "/modules.dep") ||
		strings.HasPrefix(name, "/etc/") || strings.HasPrefix(name, "/usr/lib/os-release")
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var out []string
	for _, k := range ks {
		out = append(out, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(out, " ")
}

// resolve follows symlinks (in every component, as the kernel would with
// the image as root) and hard links to the entry holding the content.
func resolve(files map[string]*node, p string) *node {
	_, n := resolveChain(files, p)
	return n
}

func resolveChain(files map[string]*node, p string) (chain []string, n *node) {
	chain = []string{p}
	for hops := 0; hops < 40; hops++ {
		// Resolve the directory part component by component.
		parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
		cur := ""
		restarted := false
		for i, part := range parts {
			cur = cur + "/" + part
			e := files[cur]
			if e == nil {
				return chain, nil
			}
			if e.hdr.Typeflag == tar.TypeSymlink {
				t := e.hdr.Linkname
				if !strings.HasPrefix(t, "/") {
					t = path.Join(path.Dir(cur), t)
				}
				p = path.Join(append([]string{t}, parts[i+1:]...)...)
				chain = append(chain, p)
				restarted = true
				break
			}
			if e.hdr.Typeflag == tar.TypeLink && i == len(parts)-1 {
				return chain, files[strings.TrimSuffix(path.Clean("/"+e.hdr.Linkname), "/")]
			}
		}
		if !restarted {
			return chain, files[cur]
		}
	}
	return chain, nil
}
