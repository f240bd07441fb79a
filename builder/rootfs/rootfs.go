// Package rootfs turns the flattened tar stream of an OCI image into the
// slot's squashfs in one pass, and on the way picks out what the boot needs:
// the kernel, its config, the kernel modules with modules.dep, systemd-boot
// and os-release.
//
// The squashfs is written by tar2sqfs reading the stream on stdin (package
// builder/squashfs, which system extensions share). The image is never
// unpacked to disk; only the kernel, systemd-boot and the module files are
// copied out, because the module closure is known only once modules.dep has
// gone by.
package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/slate-os/slate/builder/squashfs"
)

// Options tune the squashfs.
type Options struct {
	// Compression is a tar2sqfs compressor name (zstd, xz, gzip, lz4, lzo, lzma).
	Compression string
	// Level is the compressor's level; 0 leaves tar2sqfs's default.
	Level int
	// ModTime stamps directories the stream does not list (e.g. the root).
	ModTime time.Time
	// WorkDir receives the files copied out of the stream; it must exist.
	WorkDir string
	// Progress, if set, is called with the bytes of tar stream consumed so far.
	Progress func(n int64)
}

// Boot is what the boot needs from the image, copied out of the stream.
type Boot struct {
	KernelRelease string
	// Kernel and SystemdBoot are files under Options.WorkDir.
	Kernel      string
	SystemdBoot string
	// Stub is the image's systemd-stub (a file under Options.WorkDir), ""
	// when the image has none: a Secure Boot build needs it to make a
	// Unified Kernel Image.
	Stub string
	// KernelConfig is /boot/config-<kver> (or the modules dir's config), nil if absent.
	KernelConfig []byte
	// ModulesDep and ModulesBuiltin come from the kernel's modules directory.
	ModulesDep, ModulesBuiltin []byte
	// ModulesSoftdep, ModulesWeakdep, ModulesAlias and ModulesBuiltinModinfo
	// too, nil where absent: the initramfs's closure follows them as
	// modprobe would (ext4's crc32c is a soft dependency, through an alias).
	ModulesSoftdep, ModulesWeakdep, ModulesAlias, ModulesBuiltinModinfo []byte
	// ModulesDir holds the kernel's module files at the paths modules.dep uses.
	ModulesDir string
	// OSRelease is the image's os-release, nil if absent.
	OSRelease []byte
	// StreamSize is the size of the tar stream.
	StreamSize int64
	// DroppedXattrs counts extended attributes squashfs cannot hold
	// (system.*, e.g. POSIX ACLs), dropped from the root.
	DroppedXattrs int
	// Var is what the image's /var takes: the first boot copies it onto
	// the state partition, which the builder sizes to hold it.
	Var VarUsage
}

// Kernel and bootloader locations, as the error for a missing one lists them.
const (
	SystemdBootPath = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
	StubPath        = "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
	kernelPlaces    = "/usr/lib/modules/<kver>/vmlinuz or /boot/vmlinuz-<kver>"
)

// Build reads the tar stream r to its end, writes the squashfs to out and
// returns the boot files it found. out is created (or truncated). It may run
// again on the same WorkDir (builder/flatten streams some images twice):
// module files an earlier run copied out are removed first, as only this
// run's stream may reach the initramfs.
func Build(ctx context.Context, r io.Reader, out string, opt Options) (*Boot, error) {
	if opt.WorkDir == "" {
		return nil, errors.New("rootfs: no work directory")
	}
	if err := os.RemoveAll(filepath.Join(opt.WorkDir, "modules")); err != nil {
		return nil, err
	}
	s := &scanner{opt: opt, kernels: map[string]string{}, configs: map[string][]byte{}, deps: map[string][]byte{}, builtin: map[string][]byte{}}
	n, err := squashfs.Write(ctx, out, squashfs.Options{
		Compression: opt.Compression, Level: opt.Level, ModTime: opt.ModTime, Progress: opt.Progress,
	}, func(tw *tar.Writer) error {
		if err := s.scan(r, tw); err != nil {
			return fmt.Errorf("reading image stream: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b, err := s.boot()
	if err != nil {
		return nil, err
	}
	b.StreamSize = n
	b.Var = s.vars.u
	return b, nil
}

type scanner struct {
	opt           Options
	kernels       map[string]string // kver -> spilled file
	configs       map[string][]byte
	deps          map[string][]byte
	builtin       map[string][]byte
	sdboot        string
	stub          string
	droppedXattrs int
	osRelease     []byte
	usrRelease    []byte
	spilled       map[string]string // tar path -> spilled file, for hard links
	vars          varCounter        // what lands under var/
	moduleRoots   map[string]string // kver -> spill dir

	// kver -> modules.softdep, .weakdep, .alias and .builtin.modinfo
	modMeta map[string]map[string][]byte
}

// clean makes a tar entry name relative to the root: "./usr/x" -> "usr/x".
func clean(name string) string {
	n := path.Clean("/" + name)
	return strings.TrimPrefix(n, "/")
}

// modulesPath splits "usr/lib/modules/<kver>/<rest>" (or lib/modules/...).
func modulesPath(p string) (kver, rest string, ok bool) {
	for _, pre := range []string{"usr/lib/modules/", "lib/modules/"} {
		if strings.HasPrefix(p, pre) {
			kver, rest, _ = strings.Cut(strings.TrimPrefix(p, pre), "/")
			return kver, rest, kver != "" && rest != ""
		}
	}
	return "", "", false
}

func isModule(rest string) bool {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(rest, ext) {
			return true
		}
	}
	return false
}

// scan copies the stream entry by entry into tw (re-encoding headers, so
// attributes squashfs cannot hold are dropped rather than failing tar2sqfs)
// and copies out the boot files on the way.
func (s *scanner) scan(r io.Reader, tw *tar.Writer) error {
	s.spilled = map[string]string{}
	s.moduleRoots = map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		s.droppedXattrs += squashfs.DropXattrs(h)
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("/%s: %w", clean(h.Name), err)
		}
		p := clean(h.Name)
		s.vars.add(p, h)
		if h.Typeflag == tar.TypeReg {
			// The entry's data goes to tar2sqfs and, for boot files, to disk.
			if err := s.entry(p, io.TeeReader(tr, tw)); err != nil {
				return fmt.Errorf("/%s: %w", p, err)
			}
			if _, err := io.Copy(tw, tr); err != nil { // what entry did not read
				return fmt.Errorf("/%s: %w", p, err)
			}
			continue
		}
		var src io.Reader
		if h.Typeflag == tar.TypeLink {
			// A hard link to a file we copied out: copy it again.
			f, ok := s.spilled[clean(h.Linkname)]
			if !ok {
				continue
			}
			rf, err := os.Open(f)
			if err != nil {
				return err
			}
			defer rf.Close()
			src = rf
		} else {
			continue
		}
		if err := s.entry(p, src); err != nil {
			return fmt.Errorf("/%s: %w", p, err)
		}
	}
}

func (s *scanner) entry(p string, r io.Reader) error {
	switch {
	case p == SystemdBootPath || p == "lib/systemd/boot/efi/systemd-bootx64.efi":
		f, err := s.spill(p, filepath.Join(s.opt.WorkDir, "systemd-bootx64.efi"), r)
		s.sdboot = f
		return err
	case p == StubPath || p == "lib/systemd/boot/efi/linuxx64.efi.stub":
		f, err := s.spill(p, filepath.Join(s.opt.WorkDir, "linuxx64.efi.stub"), r)
		s.stub = f
		return err
	case strings.HasPrefix(p, "boot/vmlinuz-"):
		kver := strings.TrimPrefix(p, "boot/vmlinuz-")
		if _, ok := s.kernels[kver]; ok {
			return nil // the modules dir's copy wins
		}
		f, err := s.spill(p, filepath.Join(s.opt.WorkDir, "vmlinuz-"+kver), r)
		s.kernels[kver] = f
		return err
	case strings.HasPrefix(p, "boot/config-"):
		kver := strings.TrimPrefix(p, "boot/config-")
		return readSmall(r, func(b []byte) { s.configs[kver] = b })
	case p == "usr/lib/os-release":
		return readSmall(r, func(b []byte) { s.usrRelease = b })
	case p == "etc/os-release":
		return readSmall(r, func(b []byte) { s.osRelease = b })
	}
	kver, rest, ok := modulesPath(p)
	if !ok {
		return nil
	}
	switch {
	case rest == "vmlinuz":
		f, err := s.spill(p, filepath.Join(s.opt.WorkDir, "vmlinuz-"+kver), r)
		s.kernels[kver] = f
		return err
	case rest == "config":
		if _, ok := s.configs[kver]; !ok {
			return readSmall(r, func(b []byte) { s.configs[kver] = b })
		}
	case rest == "modules.dep":
		return readSmall(r, func(b []byte) { s.deps[kver] = b })
	case rest == "modules.builtin":
		return readSmall(r, func(b []byte) { s.builtin[kver] = b })
	case rest == "modules.softdep" || rest == "modules.weakdep" || rest == "modules.alias" || rest == "modules.builtin.modinfo":
		return readSmall(r, func(b []byte) {
			if s.modMeta == nil {
				s.modMeta = map[string]map[string][]byte{}
			}
			if s.modMeta[kver] == nil {
				s.modMeta[kver] = map[string][]byte{}
			}
			s.modMeta[kver][rest] = b
		})
	case isModule(rest):
		root := filepath.Join(s.opt.WorkDir, "modules", kver)
		s.moduleRoots[kver] = root
		dst := filepath.Join(root, filepath.FromSlash(rest))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		_, err := s.spill(p, dst, r)
		return err
	}
	return nil
}

func (s *scanner) spill(p, dst string, r io.Reader) (string, error) {
	f, err := os.Create(dst)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return "", err
	}
	s.spilled[p] = dst
	return dst, f.Close()
}

func readSmall(r io.Reader, set func([]byte)) error {
	b, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return err
	}
	set(b)
	return nil
}

func (s *scanner) boot() (*Boot, error) {
	if len(s.kernels) == 0 {
		return nil, fmt.Errorf("no kernel in the image: looked for %s", kernelPlaces)
	}
	if s.sdboot == "" {
		return nil, fmt.Errorf("no systemd-boot in the image: looked for /%s (Debian: install systemd-boot-efi)", SystemdBootPath)
	}
	kvers := make([]string, 0, len(s.kernels))
	for k := range s.kernels {
		kvers = append(kvers, k)
	}
	sort.Slice(kvers, func(i, j int) bool { return versionLess(kvers[i], kvers[j]) })
	kver := kvers[len(kvers)-1] // the newest, as a package manager's default would be
	if s.deps[kver] == nil {
		return nil, fmt.Errorf("kernel %s has no /usr/lib/modules/%s/modules.dep (run depmod in the image)", kver, kver)
	}
	osr := s.osRelease
	if osr == nil {
		osr = s.usrRelease
	}
	return &Boot{
		KernelRelease:  kver,
		Kernel:         s.kernels[kver],
		SystemdBoot:    s.sdboot,
		Stub:           s.stub,
		KernelConfig:   s.configs[kver],
		ModulesDep:     s.deps[kver],
		ModulesBuiltin: s.builtin[kver],
		ModulesDir:     s.moduleRoots[kver],
		OSRelease:      osr,
		DroppedXattrs:  s.droppedXattrs,

		ModulesSoftdep:        s.modMeta[kver]["modules.softdep"],
		ModulesWeakdep:        s.modMeta[kver]["modules.weakdep"],
		ModulesAlias:          s.modMeta[kver]["modules.alias"],
		ModulesBuiltinModinfo: s.modMeta[kver]["modules.builtin.modinfo"],
	}, nil
}

// versionLess compares kernel releases numerically where both have digits.
func versionLess(a, b string) bool {
	as, bs := splitNum(a), splitNum(b)
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] == bs[i] {
			continue
		}
		ai, aerr := strconv.Atoi(as[i])
		bi, berr := strconv.Atoi(bs[i])
		if aerr == nil && berr == nil {
			return ai < bi
		}
		return as[i] < bs[i]
	}
	return len(as) < len(bs)
}

func splitNum(s string) []string {
	var out []string
	cur := ""
	digit := false
	for i, c := range s {
		d := c >= '0' && c <= '9'
		if i > 0 && d != digit {
			out = append(out, cur)
			cur = ""
		}
		cur += string(c)
		digit = d
	}
	return append(out, cur)
}
