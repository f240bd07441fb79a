// Package upgrade writes an update artifact into the slot that is not
// running: its root partition (squashfs and dm-verity tree), its kernel and
// initramfs on the ESP, the image's systemd-boot as the ESP's loader when it
// is newer than the one there (loader.go), and last its boot entry, counted
// (+3 tries) and of the next generation, so the next boot tries it and
// systemd-boot falls back to the running slot if it never becomes good.
//
// Everything that can refuse the artifact is checked before anything is
// changed: among it the update policy (policy.go: whom the image and the
// node config trust to sign artifacts, failing closed), downgrades (an
// artifact whose image was created before the running one, by the time in
// the signed config and the running root's /usr/lib/slate/image.json) and
// slate.* arguments on the artifact's command line (slate.config would
// replace the node's config, its keys included). From the first change on,
// the target slot has no boot entry until every file it needs is written
// and checked, so a failure or a power cut at any point leaves the running
// slot the one that boots.
package upgrade

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/verity"
	"github.com/slate-os/slate/builder/artifact"
	"github.com/slate-os/slate/internal/progress"
)

// ErrUpToDate is returned, wrapped, when the running slot already holds the
// artifact's image: nothing is written and nothing should reboot, so a
// timer that runs `slate upgrade` does not reboot the node again and again.
var ErrUpToDate = errors.New("already up to date")

// Tries is how many boots a freshly written slot gets to become good.
const Tries = 3

// NodeArch is the only architecture slate nodes have: the partitions are
// typed root-x86-64 and the ESP boots BOOTX64.EFI.
const NodeArch = "amd64"

// Target is the slot an upgrade writes.
type Target struct {
	Slot          boot.Slot
	Device        string // block device of the slot's partition (a regular file in tests)
	Size          int64  // partition size in bytes
	PartUUID      string // lowercase
	StatePartUUID string
}

// Options says what to write where.
type Options struct {
	// Ref is the artifact: a registry reference or oci:DIR.
	Ref string
	// Artifact options for artifact.Open (insecure, keychain...); Run adds
	// its context first.
	Artifact []artifact.Option
	// Running is the slot the node booted from; it must be good.
	Running boot.Slot
	Target  Target
	ESP     *slots.ESP
	// Log gets one line before each step (texts in Run's documentation);
	// nil logs nothing.
	Log func(format string, args ...any)
	// Progress shows the bytes of the root write; nil is quiet.
	Progress *progress.Reporter
	// Now stamps release.json; nil is time.Now.
	Now func() time.Time
	// Policy says whose signatures the artifact needs (see Policy): the
	// zero Policy trusts nothing and refuses every artifact.
	Policy Policy
	// Image is the running image's image.json (ReadImageInfo), the
	// trustworthy age of the running image; nil: the image has none, and
	// the running slot's release.json on the ESP stands in.
	Image *boot.ImageInfo
	// AllowDowngrade installs an artifact created before the running image.
	AllowDowngrade bool
}

// Result describes a finished upgrade.
type Result struct {
	Slot       boot.Slot
	Version    string
	Digest     string // artifact manifest digest
	SignedBy   string // signature.KeyID of the trusted key that verified it; "" none did (update.allowUnsigned)
	RootHash   string
	Entry      string // entry file name, slate-b+3.conf
	Generation int
	// SystemdBoot is the systemd-boot version installed on the ESP; empty
	// when the ESP's loader was kept (as new, newer, unreadable, or none in
	// the artifact).
	SystemdBoot string
	RootBytes   int64
	RootWrite   time.Duration // stream, write and fdatasync of the root
	Verify      time.Duration // read-back and dm-verity check
	Total       time.Duration
}

// Root write tuning, measured with BenchmarkRootWrite (see writeRoot):
// bufCount buffers of bufSize let the artifact stream (network, sha256) run
// ahead of the device writes; 4 MiB buffers were no faster than 1 MiB ones.
// Flushing in the background, kicked every flushWindow bytes, took the write
// from 0.6 to 0.75-0.85 of a plain copy; the rest is sha256, which the
// artifact stream cannot skip (stream-MB/s in the benchmark is that ceiling).
const (
	bufSize     = 1 << 20
	bufCount    = 4
	flushWindow = 8 << 20
)

// statESP returns the ESP's free bytes and its allocation unit (the FAT
// cluster). Tests replace it to play a full ESP.
var statESP = func(dir string) (free, cluster int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, st.Bsize, nil
}

// Run writes the artifact o.Ref into o.Target. Before each step it logs:
//
//	upgrade: <version> (<digest>) is signed by key <id> (<from> <where>)   (a trusted key verified it)
//	upgrade: WARNING: <version> (<digest>) is not verified: <why>; installed because update.allowUnsigned is set (<from>)
//	upgrade: WARNING: <version> ... is a downgrade ...; installed because of --allow-downgrade
//	upgrade: retiring slot b's boot entry
//	upgrade: writing root of slot b (<size>)
//	upgrade: verifying slot b
//	upgrade: writing kernel and initramfs of slot b
//	upgrade: systemd-boot <old> → <new> on the ESP (<path>)   (for each loader it replaces)
//	upgrade: <why a loader is kept>                          (for each it does not)
//	upgrade: writing boot entry of slot b
//	upgrade: slot b holds <version> (generation N, 3 tries); reboot to use it
//
// No line is logged when the artifact is refused: then nothing was changed.
func Run(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	s := o.Target.Slot

	// 1. Everything that can refuse, before any change.
	a, loader, dev, v, err := check(ctx, &o)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	var signedBy string
	cfg := a.Config
	switch {
	case v.signedBy != nil:
		signedBy = v.signedBy.ID
		logf("upgrade: %s (%s) is signed by key %s (%s %s)", cfg.Version, a.Digest, signedBy, v.signedBy.From, v.signedBy.Where)
	case v.unverified != nil:
		logf("upgrade: WARNING: %s (%s) is not verified: %v; installed because update.allowUnsigned is set (%s)",
			cfg.Version, a.Digest, v.unverified, strings.Join(o.Policy.AllowUnsigned, ", "))
	}
	if v.downgrade != "" {
		logf("upgrade: WARNING: %s; installed because of --allow-downgrade", v.downgrade)
	}
	res := &Result{Slot: s, Version: cfg.Version, Digest: a.Digest.String(), SignedBy: signedBy, RootHash: cfg.Root.RootHash, RootBytes: cfg.Root.Size}

	// From here on a failure leaves s without a boot entry; say so.
	failed := func(step string, err error) (*Result, error) {
		o.ESP.RemoveFiles(s) // best effort: free the ESP; nothing boots them
		return nil, fmt.Errorf("upgrade to %s failed %s: %w (slot %s has no boot entry now; slot %s boots as before)",
			cfg.Version, step, err, s, o.Running)
	}

	// 2. The slot stops being bootable before its contents change.
	logf("upgrade: retiring slot %s's boot entry", s)
	if err := o.ESP.Retire(s); err != nil {
		// Nothing of slot s was overwritten yet: whatever entry is left
		// still boots the image it was written for.
		return nil, fmt.Errorf("upgrade to %s: %w (slot %s's image is unchanged)", cfg.Version, err, s)
	}
	if err := o.ESP.RemoveFiles(s); err != nil {
		return failed("removing the old files", err)
	}

	// 3. The root.
	logf("upgrade: writing root of slot %s (%s)", s, humanSize(cfg.Root.Size))
	t := time.Now()
	rc, err := a.Root.Compressed()
	if err != nil {
		return failed("opening the root layer", err)
	}
	o.Progress.Step(fmt.Sprintf("writing root of slot %s", s))
	n, err := writeRoot(ctx, dev, rc, cfg.Root.Size, bufSize, o.Progress.Bytes)
	rc.Close()
	o.Progress.Done()
	if err != nil {
		return failed(fmt.Sprintf("writing the root to %s", o.Target.Device), err)
	}
	if n != cfg.Root.Size {
		// The artifact stream checks its size; this guards the guard.
		return failed("writing the root", fmt.Errorf("the root layer gave %d bytes, its config says %d", n, cfg.Root.Size))
	}
	if err := dev.Close(); err != nil {
		return failed("closing "+o.Target.Device, err)
	}
	res.RootWrite = time.Since(t)

	// 4. Read it back from the disk, as the init and dm-verity will.
	if err := ctx.Err(); err != nil {
		return failed("before verifying", err)
	}
	logf("upgrade: verifying slot %s", s)
	t = time.Now()
	if err := verifyRoot(o.Target.Device, cfg.Root); err != nil {
		return failed("verifying the written root", err)
	}
	res.Verify = time.Since(t)

	// 5. Kernel, initramfs, release.
	if err := ctx.Err(); err != nil {
		return failed("before writing the kernel", err)
	}
	logf("upgrade: writing kernel and initramfs of slot %s", s)
	if err := writeLayer(o.ESP, s.ESPDir()+"/"+boot.KernelName, a.Kernel); err != nil {
		return failed("writing the kernel", err)
	}
	if err := writeLayer(o.ESP, s.ESPDir()+"/"+boot.InitrdName, a.Initramfs); err != nil {
		return failed("writing the initramfs", err)
	}
	// The loader, once the slot is known whole and before its entry: a
	// failure or a power cut from here on leaves the ESP's old loader or
	// the new one, and both boot the running slot's entry.
	if err := ctx.Err(); err != nil {
		return failed("before installing systemd-boot", err)
	}
	if err := installLoader(&o, loader, logf); err != nil {
		return failed("installing systemd-boot", err)
	}
	if len(loader.installs) > 0 {
		res.SystemdBoot = loader.version
	}
	rel := boot.Release{
		Slot: s, Version: cfg.Version, Artifact: a.Digest.String(), SignedBy: signedBy, Source: cfg.Source,
		RootHash: cfg.Root.RootHash, RootSize: cfg.Root.Size, KernelRelease: cfg.KernelRelease, SystemdBootVersion: loader.version,
		Architecture: cfg.Architecture, Created: cfg.Created, Written: now().UTC(),
	}
	if err := o.ESP.WriteRelease(rel); err != nil {
		return failed("writing release.json", err)
	}

	// 6. The entry, last: from now on the slot boots first.
	if err := ctx.Err(); err != nil {
		return failed("before writing the boot entry", err)
	}
	logf("upgrade: writing boot entry of slot %s", s)
	gen, err := o.ESP.NextGeneration()
	if err != nil {
		return failed("reading the generations", err)
	}
	en := boot.Entry{
		Slot: s, Generation: gen, Counting: true, Left: Tries,
		Title:   fmt.Sprintf("slate %s (slot %s)", cfg.Version, strings.ToUpper(string(s))),
		Linux:   s.KernelPath(),
		Initrd:  s.InitrdPath(),
		Options: slotCmdline(cfg.Cmdline, s, o.Target.PartUUID, cfg.Root.RootHash, o.Target.StatePartUUID, cfg.Version),
	}
	if err := o.ESP.WriteEntry(en); err != nil {
		return failed("writing the boot entry", err)
	}
	if err := o.ESP.Sync(); err != nil {
		// The entry is written; only its durability is in doubt.
		return nil, fmt.Errorf("syncing the ESP after writing %s: %w", en.FileName(), err)
	}
	res.Entry, res.Generation = en.FileName(), gen
	res.Total = time.Since(start)
	logf("upgrade: slot %s holds %s (generation %d, %d tries); reboot to use it", s, cfg.Version, gen, Tries)
	return res, nil
}

// writeLayer streams l to rel on the ESP; WriteFile keeps nothing of a
// stream that fails its digest check at the end.
func writeLayer(e *slots.ESP, rel string, l v1.Layer) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = e.WriteFile(rel, rc)
	return err
}

// slotCmdline is a slot's kernel command line, in the order of
// builder.SlotCmdline, which writes slot A's on a new disk.
func slotCmdline(base string, s boot.Slot, partUUID, rootHash, statePartUUID, version string) string {
	return strings.TrimSpace(strings.Join([]string{base,
		boot.ArgSlot + "=" + string(s),
		boot.ArgRoot + "=" + strings.ToLower(partUUID),
		boot.ArgRootHash + "=" + rootHash,
		boot.ArgState + "=" + strings.ToLower(statePartUUID),
		boot.ArgVersion + "=" + version,
	}, " "))
}

// check does step 1: it opens the artifact and the target device and
// refuses anything that cannot work or is not trusted, changing nothing.
func check(ctx context.Context, o *Options) (*artifact.Artifact, *loaderPlan, *os.File, verdict, error) {
	var none verdict
	t := o.Target
	s := t.Slot
	switch {
	case o.ESP == nil:
		return nil, nil, nil, none, errors.New("upgrade: no ESP given")
	case t.Device == "":
		return nil, nil, nil, none, fmt.Errorf("upgrade: no device for slot %s", s)
	case t.Size <= 0:
		return nil, nil, nil, none, fmt.Errorf("upgrade: slot %s's partition size %d", s, t.Size)
	case t.PartUUID == "" || t.StatePartUUID == "":
		return nil, nil, nil, none, fmt.Errorf("upgrade: slot %s's partition UUID or the state partition's UUID is missing", s)
	}
	// A policy that trusts nothing refuses before the registry is asked.
	if err := o.Policy.Usable(); err != nil {
		return nil, nil, nil, none, err
	}
	if _, err := boot.ParseSlot(string(s)); err != nil {
		return nil, nil, nil, none, fmt.Errorf("upgrade: target: %w", err)
	}
	if _, err := boot.ParseSlot(string(o.Running)); err != nil {
		return nil, nil, nil, none, fmt.Errorf("upgrade: running slot: %w", err)
	}
	if s == o.Running {
		return nil, nil, nil, none, fmt.Errorf("slot %s is the running slot; an upgrade writes the other one", s)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, none, err
	}

	// The running slot is the fallback while the new one is tried: it
	// must be known good.
	infos, err := o.ESP.Read()
	if err != nil {
		return nil, nil, nil, none, err
	}
	switch run := infos[o.Running]; run.State {
	case slots.Trying:
		return nil, nil, nil, none, fmt.Errorf("slot %s is still on trial (%s): an upgrade must wait until its boot has been marked good, or it would be left without a fallback",
			o.Running, run.EntryFile)
	case slots.Bad:
		return nil, nil, nil, none, fmt.Errorf("slot %s, the running slot, is marked bad (%s): it is no fallback for an upgrade", o.Running, run.EntryFile)
	case slots.Empty:
		return nil, nil, nil, none, fmt.Errorf("slot %s, the running slot, has no boot entry: it is no fallback for an upgrade", o.Running)
	}

	a, err := artifact.Open(o.Ref, append([]artifact.Option{artifact.WithContext(ctx)}, o.Artifact...)...)
	if err != nil {
		return nil, nil, nil, none, err
	}
	c := a.Config
	if c.Architecture != NodeArch {
		return nil, nil, nil, none, fmt.Errorf("artifact %s is for %s; this node is %s", o.Ref, c.Architecture, NodeArch)
	}
	// slate's dm-verity and init fix these; Validate allows what
	// veritysetup allows.
	r := c.Root
	if r.DataBlockSize != verity.BlockSize || r.HashBlockSize != verity.BlockSize || r.Algorithm != verity.Algorithm || r.HashOffset != r.DataSize {
		return nil, nil, nil, none, fmt.Errorf("artifact %s: root with %d/%d-byte %s blocks and the hash tree at byte %d of %d: slate nodes need %d-byte sha256 blocks and the tree right after the data",
			o.Ref, r.DataBlockSize, r.HashBlockSize, r.Algorithm, r.HashOffset, r.DataSize, verity.BlockSize)
	}
	if _, err := hex.DecodeString(r.RootHash); err != nil || r.RootHash == "" {
		return nil, nil, nil, none, fmt.Errorf("artifact %s: config.root.rootHash %q is not a hex hash", o.Ref, r.RootHash)
	}
	if runningRootHash(infos[o.Running]) == r.RootHash {
		return nil, nil, nil, none, fmt.Errorf("%w: slot %s already runs %s (root hash %s)", ErrUpToDate, o.Running, c.Version, r.RootHash)
	}
	if r.Size > t.Size {
		return nil, nil, nil, none, fmt.Errorf("artifact %s: the root with its hash tree is %s (%d bytes), larger than slot %s's partition (%s, %d bytes)",
			o.Ref, humanSize(r.Size), r.Size, s, humanSize(t.Size), t.Size)
	}
	// After the cheap refusals, before any byte of a layer: a node reads
	// nothing of a root no trusted key signed.
	v, err := o.Policy.check(a)
	if err != nil {
		return nil, nil, nil, none, err
	}
	// What the signature covers (the config) is checked once it is known
	// to be signed: no downgrade, no slate.* argument of the node's.
	if v.downgrade, err = checkDowngrade(o, infos[o.Running], a); err != nil {
		return nil, nil, nil, none, err
	}
	if arg := boot.ReservedCmdlineArg(c.Cmdline); arg != "" {
		return nil, nil, nil, none, fmt.Errorf("artifact %s: its kernel command line carries %q: an image may set no slate.* argument but %s (slate.config would replace this node's config, its update keys included)",
			o.Ref, arg, strings.Join(boot.ImageCmdlineArgs, ", "))
	}
	// The systemd-boot layer is small: read it (and check its digest) now,
	// so a bad one refuses the artifact before anything changes, and the
	// space check knows whether it goes onto the ESP.
	lp, err := planLoader(o, a)
	if err != nil {
		return nil, nil, nil, none, err
	}
	if err := checkESPSpace(o, a, lp); err != nil {
		return nil, nil, nil, none, err
	}

	// O_EXCL on a block device fails while it is mounted or held by
	// device-mapper: a guard against writing the wrong partition. No
	// O_TRUNC: in tests the device is a file of the partition's size.
	dev, err := os.OpenFile(t.Device, os.O_WRONLY|os.O_EXCL, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, nil, nil, none, fmt.Errorf("slot %s's partition %s is in use (mounted or mapped)", s, t.Device)
		}
		return nil, nil, nil, none, fmt.Errorf("slot %s: %w", s, err)
	}
	devSize, err := dev.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = dev.Seek(0, io.SeekStart)
	}
	if err != nil {
		dev.Close()
		return nil, nil, nil, none, fmt.Errorf("slot %s: %s: %w", s, t.Device, err)
	}
	if r.Size > devSize {
		dev.Close()
		return nil, nil, nil, none, fmt.Errorf("artifact %s: the root with its hash tree is %d bytes, larger than %s (%d bytes)", o.Ref, r.Size, t.Device, devSize)
	}
	return a, lp, dev, v, nil
}

// checkDowngrade refuses an artifact whose image was created before the
// running one, unless o.AllowDowngrade; then it returns what to warn about.
// An equal time (a rebuild of the same image) is no downgrade. The running
// image's time is its image.json's, from the verity-protected root; only an
// image without one falls back on its slot's release.json on the ESP.
func checkDowngrade(o *Options, run *slots.Info, a *artifact.Artifact) (string, error) {
	var running time.Time
	from := "/" + boot.ImageInfoFile
	if o.Image != nil {
		running = o.Image.Created
	} else if run != nil && run.Release != nil {
		running, from = run.Release.Created, fmt.Sprintf("slot %s's %s on the ESP (the running image has no /%s)", o.Running, boot.ReleaseName, boot.ImageInfoFile)
	}
	c := a.Config
	var why string
	switch {
	case running.IsZero():
		why = fmt.Sprintf("artifact %s (%s, created %s) cannot be checked for a downgrade: the running image's creation time is unknown (no /%s, no created time in slot %s's %s)",
			o.Ref, c.Version, stamp(c.Created), boot.ImageInfoFile, o.Running, boot.ReleaseName)
	case c.Created.Before(running):
		why = fmt.Sprintf("artifact %s (%s) is a downgrade: its image was created %s, before the running image (created %s, by %s)",
			o.Ref, c.Version, stamp(c.Created), stamp(running), from)
	default:
		return "", nil
	}
	if o.AllowDowngrade {
		return why, nil
	}
	return "", fmt.Errorf("%s; `slate upgrade --allow-downgrade` installs it, and `slate rollback` boots the other slot's image again", why)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// runningRootHash is the verity root hash the running slot booted with.
func runningRootHash(in *slots.Info) string {
	if in.Release != nil && in.Release.RootHash != "" {
		return in.Release.RootHash
	}
	if in.Entry != nil {
		return boot.CmdlineValue(in.Entry.Options, boot.ArgRootHash)
	}
	return ""
}

// checkESPSpace refuses an artifact whose kernel and initramfs, and the
// systemd-boot the plan installs, would not fit on the ESP once the target
// slot's old files are removed.
func checkESPSpace(o *Options, a *artifact.Artifact, lp *loaderPlan) error {
	free, cluster, err := statESP(o.ESP.Dir)
	if err != nil {
		return err
	}
	cluster = max(cluster, 512)
	round := func(n int64) int64 { return (n + cluster - 1) / cluster * cluster }
	ks, err := a.Kernel.Size()
	if err != nil {
		return err
	}
	is, err := a.Initramfs.Size()
	if err != nil {
		return err
	}
	// The release and the entry take a cluster each.
	need := round(ks) + round(is) + 2*cluster + lp.espBytes(round)
	what := "the kernel and initramfs need"
	if len(lp.installs) > 0 {
		what = "the kernel, initramfs and systemd-boot need"
	}
	old, err := filesSize(filepath.Join(o.ESP.Dir, filepath.FromSlash(o.Target.Slot.ESPDir())), round)
	if err != nil {
		return err
	}
	if need > free+old {
		return fmt.Errorf("artifact %s: the ESP has %s free (%s once slot %s's old files are removed); %s %s",
			o.Ref, humanSize(free), humanSize(free+old), o.Target.Slot, what, humanSize(need))
	}
	return nil
}

// filesSize is the space the files under dir take, each rounded up to whole
// clusters: what ESP.RemoveFiles frees.
func filesSize(dir string, round func(int64) int64) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if de.Type().IsRegular() {
			fi, err := de.Info()
			if err != nil {
				return err
			}
			total += round(fi.Size())
		}
		return nil
	})
	return total, err
}

// writeRoot copies r to the start of dev through bufCount buffers of size
// bytes each: one goroutine reads (and so hashes: the artifact stream checks
// its digest) while this one writes, so the slower of the two sets the pace.
// A third flushes what was written so far whenever it is idle (and kicked
// every flushWindow bytes), so the disk writes while the stream is still
// hashed; that leaves the last flush only the tail, and keeps the dirty
// pages few on a small node. At the end it flushes dev and drops its cached
// pages, so that the verification reads the disk, not memory.
//
// r must end with io.EOF; any other error, from the stream's digest check
// at its end included, fails the write. It refuses to write more than limit
// bytes.
func writeRoot(ctx context.Context, dev *os.File, r io.Reader, limit int64, size int, progress func(int64)) (int64, error) {
	type chunk struct {
		b   []byte
		err error // io.EOF at the end
	}
	free := make(chan []byte, bufCount)
	full := make(chan chunk, bufCount+1) // never blocks: at most bufCount buffers and one end
	done := make(chan struct{})
	for range bufCount {
		free <- make([]byte, size)
	}
	go func() {
		for {
			var b []byte
			select {
			case b = <-free:
			case <-done:
				return
			}
			n, err := io.ReadFull(r, b)
			if n > 0 {
				full <- chunk{b: b[:n]}
			}
			switch err {
			case nil:
				continue
			case io.EOF, io.ErrUnexpectedEOF:
				err = io.EOF
			}
			full <- chunk{err: err}
			return
		}
	}()

	fd := int(dev.Fd())
	kick := make(chan struct{})
	var flushErr error // the flusher's first error: a write-back error is reported to one fsync only
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-kick:
				if err := unix.Fdatasync(fd); err != nil && flushErr == nil {
					flushErr = err
				}
			case <-done:
				return
			}
		}
	}()
	// stop ends both goroutines; after it the flusher no longer uses fd.
	stop := func() error {
		close(done)
		<-flushed
		if flushErr != nil {
			return fmt.Errorf("fdatasync: %w", flushErr)
		}
		return nil
	}

	var written, kicked int64
	for {
		var c chunk
		select {
		case c = <-full:
		case <-ctx.Done():
			stop()
			return written, ctx.Err()
		}
		if c.err == io.EOF {
			break
		}
		if c.err == nil && written+int64(len(c.b)) > limit {
			c.err = fmt.Errorf("the root layer is longer than %d bytes", limit)
		}
		if c.err != nil {
			stop()
			return written, c.err
		}
		n, err := dev.Write(c.b)
		written += int64(n)
		if err != nil {
			stop()
			return written, err
		}
		if written-kicked >= flushWindow {
			select {
			case kick <- struct{}{}:
			default: // a flush is running; the next kick catches up
			}
			kicked = written
		}
		if progress != nil {
			progress(written)
		}
		free <- c.b[:cap(c.b)]
	}
	if err := stop(); err != nil {
		return written, err
	}
	if err := unix.Fdatasync(fd); err != nil {
		return written, fmt.Errorf("fdatasync: %w", err)
	}
	// Clean pages only now: after fdatasync DONTNEED can drop them all.
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return written, fmt.Errorf("fadvise: %w", err)
	}
	return written, nil
}

// squashfs superblock: magic, and the filesystem's length at byte 40.
const (
	squashfsMagic     = "hsqs"
	squashfsBytesUsed = 40
)

// verifyRoot reads the slot back as the init does: a squashfs whose end,
// rounded up to 4 KiB, is where the verity superblock is, that superblock
// agreeing with the artifact's config, and every block under the root hash.
func verifyRoot(device string, r artifact.RootInfo) error {
	f, err := os.Open(device)
	if err != nil {
		return err
	}
	defer f.Close()
	// Drop cached pages once more: another opener may have read some.
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)

	head := make([]byte, squashfsBytesUsed+8)
	if _, err := f.ReadAt(head, 0); err != nil {
		return fmt.Errorf("reading %s: %w", device, err)
	}
	if string(head[:4]) != squashfsMagic {
		return fmt.Errorf("%s does not start with a squashfs (it starts with %q); the init could not mount it", device, head[:4])
	}
	used := int64(binary.LittleEndian.Uint64(head[squashfsBytesUsed:]))
	if end := (used + verity.BlockSize - 1) / verity.BlockSize * verity.BlockSize; used <= 0 || end != r.DataSize {
		return fmt.Errorf("%s: the squashfs says it is %d bytes, so the init would look for the hash tree at byte %d, but it is at %d",
			device, used, end, r.DataSize)
	}
	sb, err := verity.ReadSuperblock(f, r.DataSize)
	if err != nil {
		return err
	}
	if want := uint64(r.DataSize / verity.BlockSize); sb.DataBlocks != want {
		return fmt.Errorf("verity superblock: %d data blocks, the artifact's config says %d", sb.DataBlocks, want)
	}
	if salt := strings.TrimPrefix(sb.SaltHex(), "-"); salt != r.Salt {
		return fmt.Errorf("verity superblock: salt %q, the artifact's config says %q", salt, r.Salt)
	}
	root, err := hex.DecodeString(r.RootHash)
	if err != nil {
		return err
	}
	return verity.Verify(f, r.DataSize, root)
}

// humanSize prints n bytes for a log line: "12.3 MiB".
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
