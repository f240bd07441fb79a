// Package builder turns an OCI image into slate's outputs: a bootable A/B GPT
// disk and an update artifact. Data flows one way: image → flattened tar
// stream → squashfs + boot files → verity tree → initramfs → disk and
// artifact. Outputs are written under temporary names and renamed only when
// the whole build succeeded, so a failed build leaves nothing half-written
// where the user asked for output.
package builder

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/builder/disk"
	"github.com/slate-os/slate/builder/esp"
	"github.com/slate-os/slate/builder/flatten"
	"github.com/slate-os/slate/builder/format"
	"github.com/slate-os/slate/builder/nodefiles"
	"github.com/slate-os/slate/builder/rootfs"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/initramfs"
	"github.com/slate-os/slate/initramfs/initbin"
	"github.com/slate-os/slate/internal/jsonduration"
	"github.com/slate-os/slate/internal/progress"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
)

// Options is one build.
type Options struct {
	Spec spec.Spec
	// Source overrides the spec's source with an already opened image (tests).
	Image v1.Image
	// SourceOptions reach registries.
	SourceOptions source.Options
	// InitBinary replaces the embedded init (development).
	InitBinary string
	// AgentBinary is the slate agent the root image gets as /usr/bin/slate,
	// with its units (package nodefiles): a static x86-64 executable.
	// Required; the slate CLI passes itself.
	AgentBinary string
	// Progress reports long steps; nil is quiet.
	Progress *progress.Reporter
	// ExtensionOptions reach the registries of the spec's extensions.
	ExtensionOptions []artifact.Option
}

// Result says what was built.
type Result struct {
	Version       string        `json:"version"`
	Source        string        `json:"source"`
	KernelRelease string        `json:"kernelRelease"`
	RootHash      string        `json:"rootHash"`
	RootSize      int64         `json:"rootSize"`
	InitramfsSize int64         `json:"initramfsSize"`
	Initramfs     []string      `json:"initramfsModules"`
	Disk          string        `json:"disk,omitempty"`
	Format        string        `json:"format,omitempty"` // the disk's: raw, vhd... (package format)
	Artifact      string        `json:"artifact,omitempty"`
	Plan          disk.Plan     `json:"plan"`
	Steps         []StepTiming  `json:"steps"`
	Total         time.Duration `json:"total"`

	// State says how big the state partition is and why.
	State StateSizing `json:"state"`

	// UpdateKeys are the keys (signature.KeyID) the image trusts for
	// updates, baked into its root; AllowUnsigned is the spec's
	// update.allowUnsigned. With neither, the image's agent refuses every
	// upgrade unless a node config adds a key or allows unsigned ones.
	UpdateKeys    []string `json:"updateKeys"`
	AllowUnsigned bool     `json:"allowUnsigned,omitempty"`
	// Extensions are the system extensions the image carries.
	Extensions []Extension `json:"extensions,omitempty"`
	// SecureBoot says what a Secure Boot build signed; nil otherwise.
	SecureBoot *SecureBootResult `json:"secureBoot,omitempty"`

	// InitramfsSkipped are the optional modules the kernel lacks;
	// InitramfsUnresolved the soft dependencies that name nothing it has.
	InitramfsSkipped    []string `json:"initramfsSkipped,omitempty"`
	InitramfsUnresolved []string `json:"initramfsUnresolvedSoftdeps,omitempty"`
}

// MarshalJSON writes Total as a string ("12.345s", see internal/jsonduration).
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		Total jsonduration.Duration `json:"total"`
	}{plain(r), jsonduration.Duration(r.Total)})
}

// StepTiming is one step's wall time.
type StepTiming struct {
	Name    string        `json:"name"`
	Elapsed time.Duration `json:"elapsed"`
}

// MarshalJSON writes Elapsed as a string ("1.523s", see internal/jsonduration).
func (t StepTiming) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name    string                `json:"name"`
		Elapsed jsonduration.Duration `json:"elapsed"`
	}{t.Name, jsonduration.Duration(t.Elapsed)})
}

// Build runs a whole build.
func Build(ctx context.Context, o Options) (*Result, error) {
	b := &build{o: o, p: o.Progress, start: time.Now()}
	res, err := b.run(ctx)
	b.cleanup()
	return res, err
}

type build struct {
	o     Options
	p     *progress.Reporter
	work  string
	temps []string
	start time.Time
	res   Result
	t0    time.Time
	name  string
	mu    sync.Mutex
}

func (b *build) step(name string) {
	b.t0, b.name = time.Now(), name
	b.p.Step(name)
}

// stepSized starts a step of total bytes whose progress line says title.
func (b *build) stepSized(name, title string, total int64) {
	b.t0, b.name = time.Now(), name
	b.p.Sized(title, total)
}

func (b *build) done() {
	b.p.Done()
	b.res.Steps = append(b.res.Steps, StepTiming{b.name, time.Since(b.t0)})
}

// parallel runs independent steps at once and records each one's time.
// The first error (in step name order) wins.
func (b *build) parallel(title string, steps map[string]func() error) error {
	b.p.Step(title)
	names := make([]string, 0, len(steps))
	for n := range steps {
		names = append(names, n)
	}
	sort.Strings(names)
	errs := make([]error, len(names))
	took := make([]time.Duration, len(names))
	// Each step writes its own fields of b.res; tempBeside locks b.mu.
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			errs[i] = steps[n]()
			took[i] = time.Since(t0)
		}()
	}
	wg.Wait()
	b.p.Done()
	for i, n := range names {
		b.res.Steps = append(b.res.Steps, StepTiming{n, took[i]})
	}
	return errors.Join(errs...)
}

func (b *build) cleanup() {
	for _, t := range b.temps {
		os.RemoveAll(t)
	}
	if b.work != "" {
		os.RemoveAll(b.work)
	}
}

// tempBeside makes a temporary path next to final, so the last rename stays
// on one filesystem.
func (b *build) tempBeside(final string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := filepath.Join(filepath.Dir(final), "."+filepath.Base(final)+".tmp-"+fmt.Sprint(os.Getpid()))
	b.temps = append(b.temps, t)
	return t
}

func (b *build) run(ctx context.Context) (*Result, error) {
	s := &b.o.Spec
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if s.Outputs.Disk == "" && s.Outputs.Artifact == "" {
		return nil, errors.New("nothing to build: give --output (a disk) or --artifact, or outputs in the spec")
	}
	for _, out := range []string{s.Outputs.Disk, s.Outputs.Artifact} {
		if out == "" {
			continue
		}
		if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("output %s: directory %s does not exist", out, filepath.Dir(out))
		}
	}
	if b.o.AgentBinary == "" {
		return nil, errors.New("no agent binary: every root image carries slate's agent as /usr/bin/slate; give --agent PATH (a static slate binary)")
	}
	// Checked before the source is read: a dynamic agent fails the build at once.
	if err := nodefiles.CheckAgent(b.o.AgentBinary); err != nil {
		return nil, err
	}
	// So is the tool the disk's format is written with.
	if s.Outputs.Disk != "" {
		if err := format.Check(s.Outputs.Format); err != nil {
			return nil, fmt.Errorf("outputs.format %s: %w", s.Outputs.Format, err)
		}
	}
	// So are the update keys: read, parsed, and written back in one form.
	keys, err := s.UpdatePublicKeys()
	if err != nil {
		return nil, err
	}
	var keyPEMs [][]byte
	b.res.UpdateKeys = []string{}
	for _, k := range keys {
		id := signature.KeyID(k)
		if slices.Contains(b.res.UpdateKeys, id) {
			continue // named twice (the spec and --update-key): once is enough
		}
		pem, err := signature.MarshalPublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("update key %s: %w", id, err)
		}
		keyPEMs = append(keyPEMs, pem)
		b.res.UpdateKeys = append(b.res.UpdateKeys, id)
	}
	b.res.AllowUnsigned = s.Update.AllowUnsigned
	img := b.o.Image
	if img == nil {
		if s.Source == "" {
			return nil, errors.New("no source image: give --source or source in the spec")
		}
		var err error
		if img, err = source.Open(s.Source, b.o.SourceOptions); err != nil {
			return nil, err
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", s.Source, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("source %s: reading its config: %w", s.Source, err)
	}
	if cf.Architecture != "" && cf.Architecture != boot.Arch {
		return nil, fmt.Errorf("source %s is for %s; slate builds %s nodes", s.Source, cf.Architecture, boot.Arch)
	}
	created := cf.Created.Time.UTC()
	if created.IsZero() || created.Before(time.Unix(0, 0)) {
		created = time.Unix(0, 0).UTC()
	}
	version := s.Version
	if version == "" {
		version = cf.Config.Labels["org.opencontainers.image.version"]
	}
	if version == "" {
		version = "sha256-" + digest.Hex[:12]
	}
	s.Version = version
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("source %s: label org.opencontainers.image.version: %w (set --version)", s.Source, err)
	}
	b.res.Version, b.res.Source = version, digest.String()
	// Everything random-looking in the outputs (GUIDs, the verity salt, the
	// FAT serial) is derived from this seed: same image and spec, same bytes.
	seed := sha256.Sum256([]byte(digest.String() + "\x00" + version))

	if b.work, err = os.MkdirTemp("", "slate-build-"); err != nil {
		return nil, err
	}
	// Extensions are checked and stored before the root's one pass, which
	// carries them in a layer above the node files.
	exts, err := b.extensions(ctx, keys, created)
	if err != nil {
		return nil, err
	}

	// 1. One pass over the flattened image, slate's node files on top (an
	// image's own /usr/bin/slate loses): squashfs and boot files.
	b.step("rootfs")
	// Secure Boot's key and files are read before the slow steps.
	var sb *sbFiles
	if s.SecureBoot.Enabled() {
		if sb, err = prepareSecureBoot(s.SecureBoot); err != nil {
			return nil, err
		}
	}
	nodeLayer, err := nodefiles.Layer(b.o.AgentBinary, created, nodefiles.Image{
		Info:       boot.ImageInfo{Version: version, Source: digest.String(), Created: created, AllowUnsigned: s.Update.AllowUnsigned},
		UpdateKeys: keyPEMs,
		SBATLevel:  sb.sbatLevelPayload(),
	})
	if err != nil {
		return nil, err
	}
	sqfs := filepath.Join(b.work, "root.img")
	// The image checked against its digests and flattened by the OCI layer
	// rules (package flatten); rootfs.Build may run twice, see there.
	var bootFiles *rootfs.Boot
	err = flatten.Stream(ctx, img, flatten.Options{Upper: append([]v1.Layer{nodeLayer}, exts.layers()...), SlotSize: int64(s.Disk.SlotSize), WorkDir: b.work, ModTime: created},
		func(ctx context.Context, stream io.Reader) (err error) {
			bootFiles, err = rootfs.Build(ctx, stream, sqfs, rootfs.Options{
				Compression: s.CompressionOrDefault(), Level: s.CompressionLevelOrDefault(), ModTime: created, WorkDir: b.work, Progress: b.p.Bytes,
			})
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", s.Source, err)
	}
	b.res.KernelRelease = bootFiles.KernelRelease
	if err := exts.match(bootFiles.OSRelease); err != nil {
		return nil, err
	}
	// Checked now, before the slower steps: an explicit disk.stateSize
	// too small for the first boot's copy of /var fails a disk's build (an
	// artifact lands on nodes whose /var is already there).
	state, err := StateSize(bootFiles.Var, int64(s.Disk.StateSize))
	if err != nil && s.Outputs.Disk != "" {
		return nil, err
	}
	b.res.State = state
	b.done()

	// 2 and 3, side by side: tar2sqfs had both cores; these are one core each.
	// The dm-verity tree, appended to the squashfs in the same file; the
	// initramfs: the init and the module closure it needs.
	var rootInfo artifact.RootInfo
	initrd := filepath.Join(b.work, "initramfs")
	err = b.parallel("verity and initramfs", map[string]func() error{
		"verity": func() error {
			info, tree, err := verity.Append(sqfs, seed[:])
			if err == nil {
				rootInfo = info
				b.res.RootHash, b.res.RootSize = tree.RootHashHex(), info.Size
			}
			return err
		},
		"initramfs": func() error {
			info, err := b.initramfs(initrd, bootFiles)
			if err == nil {
				b.res.InitramfsSize, b.res.Initramfs = info.Size, info.Modules
			}
			return err
		},
	})
	if err != nil {
		return nil, err
	}

	// 4. The disk.
	layout := disk.Layout{ESPSize: int64(s.Disk.ESPSize), SlotSize: int64(s.Disk.SlotSize), StateSize: int64(s.Disk.StateSize)}
	if layout.ESPSize == 0 {
		layout.ESPSize = int64(spec.DefaultESPSize)
	}
	layout.StateSize = state.Size
	if layout.SlotSize == 0 {
		layout.SlotSize = DefaultSlotSize(rootInfo.Size)
	}
	if rootInfo.Size > layout.SlotSize {
		return nil, fmt.Errorf("disk.slotSize: the root image with its hash tree is %s, larger than the slot (%s); raise disk.slotSize (or --slot-size)",
			spec.Size(rootInfo.Size), spec.Size(layout.SlotSize))
	}
	plan := disk.NewPlan(layout, seed[:])
	b.res.Plan = plan
	cmdline := s.Cmdline()
	if sb != nil {
		b.step("uki")
		if err := b.secureBoot(sb, bootFiles, initrd, cmdline, b.res.RootHash, version); err != nil {
			return nil, err
		}
		b.done()
	}
	diskTemp := ""
	jobs := map[string]func() error{}
	// 4 and 5, side by side: the disk and the update artifact.
	if s.Outputs.Disk != "" {
		jobs["disk"] = func() error {
			raw := b.tempBeside(s.Outputs.Disk)
			release := boot.Release{
				Slot: boot.SlotA, Version: version, Source: digest.String(), RootHash: rootInfo.RootHash, RootSize: rootInfo.Size,
				KernelRelease: bootFiles.KernelRelease, Architecture: boot.Arch, Created: created,
			}
			// What the ESP's systemd-boot is; "" when it has no readable LoaderInfo.
			release.SystemdBootVersion, _ = boot.SystemdBootFileVersion(bootFiles.SystemdBoot)
			if err := writeDisk(raw, plan, seed[:], created, cmdline, release, sqfs, bootFiles, initrd, sb); err != nil {
				return err
			}
			diskTemp = raw
			return nil
		}
	}
	if s.Outputs.Artifact != "" {
		jobs["artifact"] = func() error {
			cfg := artifact.Config{
				Version: version, Architecture: boot.Arch, OS: boot.OS, Source: digest.String(),
				KernelRelease: bootFiles.KernelRelease, Cmdline: cmdline, Root: rootInfo, Created: created,
			}
			// An upgrade fetches the extensions that match this os-release
			// before it writes a slot (none: nil, a zero release).
			osRelease, _, err := sysext.ParseRelease(bootFiles.OSRelease)
			if err != nil {
				return fmt.Errorf("artifact %s: the image's os-release: %w", s.Outputs.Artifact, err)
			}
			cfg.OSRelease = osRelease
			cfg.Extensions = exts.carried()
			// The image's systemd-boot goes along, so that an upgrade can bring
			// the node's boot loader up to the image's (see agent/upgrade);
			// Write puts its version in the config.
			blobs := artifact.Blobs{
				Root: artifact.Blob{Path: sqfs}, Kernel: artifact.Blob{Path: bootFiles.Kernel}, Initramfs: artifact.Blob{Path: initrd},
				SystemdBoot: artifact.Blob{Path: bootFiles.SystemdBoot},
			}
			if sb != nil {
				blobs.SystemdBoot, blobs.UKI = artifact.Blob{Path: sb.systemdBoot}, artifact.Blob{Path: sb.uki}
			}
			if _, err := artifact.Write(s.Outputs.Artifact, cfg, blobs); err != nil {
				return fmt.Errorf("artifact %s: %w", s.Outputs.Artifact, err)
			}
			b.res.Artifact = s.Outputs.Artifact
			return nil
		}
	}
	if err := b.parallel("disk and artifact", jobs); err != nil {
		return nil, err
	}
	// 6. The disk in the format asked for, from the raw one (package
	// format), beside the output like the raw disk.
	if f := s.Outputs.Format; diskTemp != "" && f != "" && f != format.Raw {
		conv := b.tempBeside(s.Outputs.Disk + ".conv")
		b.stepSized("convert", "convert to "+f, plan.Size)
		err := format.Write(ctx, f, diskTemp, conv, format.Options{
			Seed: seed[:], ModTime: created, Name: filepath.Base(s.Outputs.Disk), Progress: b.p.Bytes,
		})
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", s.Outputs.Disk, err)
		}
		b.done()
		diskTemp = conv
	}
	// The disk goes in place last, so a failed artifact leaves no disk either.
	if diskTemp != "" {
		if err := os.Rename(diskTemp, s.Outputs.Disk); err != nil {
			return nil, err
		}
		b.res.Disk, b.res.Format = s.Outputs.Disk, cmp.Or(s.Outputs.Format, format.Raw)
	}
	b.res.Total = time.Since(b.start)
	return &b.res, nil
}

// DefaultSlotSize leaves room for the image to double, at least 1 GiB, in
// whole 256 MiB steps: an upgrade must fit in the slot the first build sized.
func DefaultSlotSize(root int64) int64 {
	const step = 256 << 20
	s := (2*root + step - 1) / step * step
	return max(s, int64(spec.MinSlotSize))
}

func (b *build) initramfs(out string, bf *rootfs.Boot) (*initramfs.Info, error) {
	var initBin []byte
	var err error
	if b.o.InitBinary != "" {
		initBin, err = os.ReadFile(b.o.InitBinary)
	} else {
		initBin, err = initbin.Binary()
	}
	if err != nil {
		return nil, fmt.Errorf("init binary: %w", err)
	}
	f, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mods := append([]initramfs.Module{}, initramfs.DefaultModules...)
	for _, m := range b.o.Spec.Initramfs.Modules {
		mods = append(mods, initramfs.Module{Name: m, Why: "the image spec lists it (initramfs.modules)"})
	}
	info, err := initramfs.Build(f, initramfs.Input{
		Init: initBin, KernelRelease: bf.KernelRelease, KernelConfig: bf.KernelConfig,
		ModulesDep: bf.ModulesDep, ModulesBuiltin: bf.ModulesBuiltin, ModulesBuiltinModinfo: bf.ModulesBuiltinModinfo,
		ModulesSoftdep: bf.ModulesSoftdep, ModulesWeakdep: bf.ModulesWeakdep, ModulesAlias: bf.ModulesAlias,
		Modules: mods,
		OpenModule: func(rel string) (io.ReadCloser, error) {
			if bf.ModulesDir == "" {
				return nil, fmt.Errorf("module %s: the image has no module files", rel)
			}
			return os.Open(filepath.Join(bf.ModulesDir, filepath.FromSlash(rel)))
		},
	})
	if err != nil {
		return nil, err // initramfs.Build's errors say "initramfs:"
	}
	// Written here, by the initramfs step alone (see parallel).
	b.res.InitramfsSkipped, b.res.InitramfsUnresolved = info.Skipped, info.Unresolved
	return info, f.Close()
}

// loaderConfText is the ESP's loader.conf (boot.LoaderConf). It has no
// default line: a default would override boot counting.
const loaderConfText = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n"

// enrollConfLine makes systemd-boot enroll the keys under EnrollDir when
// the firmware is in Setup Mode, without asking: the disk was built for
// that (secureBoot.enrollKeys). In User Mode it does nothing.
const enrollConfLine = "secure-boot-enroll force\n"

// writeDisk writes a new disk: slot A holds the root (its release on the
// ESP says what it holds), slot B is empty.
func writeDisk(path string, plan disk.Plan, seed []byte, created time.Time, cmdline string,
	release boot.Release, rootImg string, bf *rootfs.Boot, initrd string, sb *sbFiles) error {
	if err := disk.Create(path, plan); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()

	slotA := plan.Part(boot.NumRootA)
	src, err := os.Open(rootImg)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := io.Copy(io.NewOffsetWriter(f, slotA.Start), src); err != nil {
		return fmt.Errorf("writing %s: %w", slotA.Name, err)
	}
	state := plan.Part(boot.NumState)
	if _, err := f.WriteAt([]byte(boot.StateUnformatted), state.Start); err != nil {
		return fmt.Errorf("writing %s: %w", state.Name, err)
	}

	entry := boot.Entry{
		Slot: boot.SlotA, Generation: 1,
		Title:  fmt.Sprintf("slate %s (slot A)", release.Version),
		Linux:  boot.SlotA.KernelPath(),
		Initrd: boot.SlotA.InitrdPath(),
		Options: boot.SlotCmdline(cmdline, boot.SlotArgs{Slot: boot.SlotA, RootPartUUID: slotA.GUID,
			RootHash: release.RootHash, StatePartUUID: state.GUID, Version: release.Version}),
	}
	var files []esp.File
	if sb == nil {
		files = []esp.File{
			fileFrom(boot.FallbackEFI, bf.SystemdBoot),
			bytesFile(boot.LoaderConf, []byte(loaderConfText)),
			fileFrom(boot.SlotA.ESPDir()+"/"+boot.KernelName, bf.Kernel),
			fileFrom(boot.SlotA.ESPDir()+"/"+boot.InitrdName, initrd),
		}
	} else {
		// The signed loader and one signed UKI; the entry's options stay
		// for the record and for firmware with Secure Boot off.
		entry.Linux, entry.Initrd, entry.EFI = "", "", boot.SlotA.UKIPath()
		conf := loaderConfText
		if sb.enroll != nil {
			conf += enrollConfLine
		}
		files = []esp.File{
			fileFrom(boot.FallbackEFI, sb.systemdBoot),
			bytesFile(boot.LoaderConf, []byte(conf)),
			fileFrom(boot.SlotA.ESPDir()+"/"+boot.UKIName, sb.uki),
		}
		for p, data := range sb.enroll {
			files = append(files, bytesFile(p, data))
		}
	}
	files = append(files,
		bytesFile(boot.EntriesDir+"/"+entry.FileName(), entry.Marshal()),
		bytesFile(boot.SlotA.ESPDir()+"/"+boot.ReleaseName, release.Marshal()))
	espPart := plan.Part(boot.NumESP)
	err = esp.Write(f, espPart.Start, files, esp.Options{
		Size: espPart.Size, Label: "ESP", VolumeID: binary.LittleEndian.Uint32(seed[:4]), ModTime: created,
	})
	if err != nil {
		return fmt.Errorf("ESP: %w", err)
	}
	return f.Sync()
}

func fileFrom(espPath, local string) esp.File {
	var size int64
	if fi, err := os.Stat(local); err == nil {
		size = fi.Size()
	}
	return esp.File{Path: espPath, Size: size, Open: func() (io.ReadCloser, error) { return os.Open(local) }}
}

func bytesFile(espPath string, b []byte) esp.File {
	return esp.File{Path: espPath, Size: int64(len(b)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(string(b))), nil
	}}
}
