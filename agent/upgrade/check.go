package upgrade

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/verity"
)

// check does step 1: it opens the artifact and the target device and
// refuses anything that cannot work or is not trusted, changing nothing.
func check(ctx context.Context, o *Options) (*artifact.Artifact, *loaderPlan, *ukiPlan, *os.File, verdict, error) {
	var none verdict
	t := o.Target
	s := t.Slot
	switch {
	case o.ESP == nil:
		return nil, nil, nil, nil, none, errors.New("upgrade: no ESP given")
	case t.Device == "":
		return nil, nil, nil, nil, none, fmt.Errorf("upgrade: no device for slot %s", s)
	case t.Size <= 0:
		return nil, nil, nil, nil, none, fmt.Errorf("upgrade: slot %s's partition size %d", s, t.Size)
	case t.PartUUID == "" || t.StatePartUUID == "":
		return nil, nil, nil, nil, none, fmt.Errorf("upgrade: slot %s's partition UUID or the state partition's UUID is missing", s)
	}
	// A policy that trusts nothing refuses before the registry is asked.
	if err := o.Policy.Usable(); err != nil {
		return nil, nil, nil, nil, none, refused(err)
	}
	if _, err := boot.ParseSlot(string(s)); err != nil {
		return nil, nil, nil, nil, none, fmt.Errorf("upgrade: target: %w", err)
	}
	if _, err := boot.ParseSlot(string(o.Running)); err != nil {
		return nil, nil, nil, nil, none, fmt.Errorf("upgrade: running slot: %w", err)
	}
	if s == o.Running {
		return nil, nil, nil, nil, none, fmt.Errorf("slot %s is the running slot; an upgrade writes the other one", s)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, nil, none, err
	}

	// The running slot is the fallback while the new one is tried: it
	// must be known good.
	infos, err := o.ESP.Read()
	if err != nil {
		return nil, nil, nil, nil, none, err
	}
	switch run := infos[o.Running]; run.State {
	case slots.Trying:
		return nil, nil, nil, nil, none, refused(fmt.Errorf("slot %s is still on trial (%s): an upgrade must wait until its boot has been marked good, or it would be left without a fallback",
			o.Running, run.EntryFile))
	case slots.Bad:
		return nil, nil, nil, nil, none, refused(fmt.Errorf("slot %s, the running slot, is marked bad (%s): it is no fallback for an upgrade", o.Running, run.EntryFile))
	case slots.Empty:
		return nil, nil, nil, nil, none, refused(fmt.Errorf("slot %s, the running slot, has no boot entry: it is no fallback for an upgrade", o.Running))
	}

	a, err := artifact.Open(o.Ref, append([]artifact.Option{artifact.WithContext(ctx)}, o.Artifact...)...)
	if err != nil {
		return nil, nil, nil, nil, none, err
	}
	c := a.Config
	if o.Offered != nil {
		o.Offered(c.Version, a.Digest.String())
	}
	if c.Architecture != boot.Arch {
		return nil, nil, nil, nil, none, refused(fmt.Errorf("artifact %s is for %s; this node is %s", o.Ref, c.Architecture, boot.Arch))
	}
	// slate's dm-verity and init fix these; Validate allows what
	// veritysetup allows.
	r := c.Root
	if r.DataBlockSize != verity.BlockSize || r.HashBlockSize != verity.BlockSize || r.Algorithm != verity.Algorithm || r.HashOffset != r.DataSize {
		return nil, nil, nil, nil, none, refused(fmt.Errorf("artifact %s: root with %d/%d-byte %s blocks and the hash tree at byte %d of %d: slate nodes need %d-byte sha256 blocks and the tree right after the data",
			o.Ref, r.DataBlockSize, r.HashBlockSize, r.Algorithm, r.HashOffset, r.DataSize, verity.BlockSize))
	}
	if _, err := hex.DecodeString(r.RootHash); err != nil || r.RootHash == "" {
		return nil, nil, nil, nil, none, refused(fmt.Errorf("artifact %s: config.root.rootHash %q is not a hex hash", o.Ref, r.RootHash))
	}
	if runningRootHash(infos[o.Running]) == r.RootHash {
		return nil, nil, nil, nil, none, fmt.Errorf("%w: slot %s already runs %s (root hash %s)", ErrUpToDate, o.Running, c.Version, r.RootHash)
	}
	if r.Size > t.Size {
		return nil, nil, nil, nil, none, refused(fmt.Errorf("artifact %s: the root with its hash tree is %s (%d bytes), larger than slot %s's partition (%s, %d bytes)",
			o.Ref, humanSize(r.Size), r.Size, s, humanSize(t.Size), t.Size))
	}
	// After the cheap refusals, before any byte of a layer: a node reads
	// nothing of a root no trusted key signed.
	v, err := o.Policy.check(a)
	if err != nil {
		return nil, nil, nil, nil, none, refused(err)
	}
	// What the signature covers (the config) is checked once it is known
	// to be signed: no downgrade, no slate.* argument of the node's.
	if v.downgrade, err = checkDowngrade(o, infos[o.Running], a); err != nil {
		return nil, nil, nil, nil, none, refused(err)
	}
	if arg := boot.ReservedCmdlineArg(c.Cmdline); arg != "" {
		return nil, nil, nil, nil, none, refused(fmt.Errorf("artifact %s: its kernel command line carries %q: an image may set no slate.* argument but %s (slate.config would replace this node's config, its update keys included)",
			o.Ref, arg, strings.Join(boot.ImageCmdlineArgs, ", ")))
	}
	// The systemd-boot layer is small: read it (and check its digest) now,
	// so a bad one refuses the artifact before anything changes, and the
	// space check knows whether it goes onto the ESP.
	lp, err := planLoader(o, a)
	if err != nil {
		return nil, nil, nil, nil, none, err
	}
	up, err := planUKI(o, a, lp)
	if err != nil {
		return nil, nil, nil, nil, none, err
	}
	if err := checkESPSpace(o, a, lp, up); err != nil {
		return nil, nil, nil, nil, none, err
	}

	// O_EXCL on a block device fails while it is mounted or held by
	// device-mapper: a guard against writing the wrong partition. No
	// O_TRUNC: in tests the device is a file of the partition's size.
	dev, err := os.OpenFile(t.Device, os.O_WRONLY|os.O_EXCL, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, nil, nil, nil, none, fmt.Errorf("slot %s's partition %s is in use (mounted or mapped)", s, t.Device)
		}
		return nil, nil, nil, nil, none, fmt.Errorf("slot %s: %w", s, err)
	}
	devSize, err := dev.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = dev.Seek(0, io.SeekStart)
	}
	if err != nil {
		dev.Close()
		return nil, nil, nil, nil, none, fmt.Errorf("slot %s: %s: %w", s, t.Device, err)
	}
	if r.Size > devSize {
		dev.Close()
		return nil, nil, nil, nil, none, refused(fmt.Errorf("artifact %s: the root with its hash tree is %d bytes, larger than %s (%d bytes)", o.Ref, r.Size, t.Device, devSize))
	}
	return a, lp, up, dev, v, nil
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
func checkESPSpace(o *Options, a *artifact.Artifact, lp *loaderPlan, up *ukiPlan) error {
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
	switch {
	case up != nil && len(lp.installs) > 0:
		what = "the unified kernel image and systemd-boot need"
	case up != nil:
		what = "the unified kernel image needs"
	case len(lp.installs) > 0:
		what = "the kernel, initramfs and systemd-boot need"
	}
	if up != nil {
		need = round(int64(len(up.blob))) + 2*cluster + lp.espBytes(round)
	}
	old, err := filesSize(filepath.Join(o.ESP.Dir, filepath.FromSlash(o.Target.Slot.ESPDir())), round)
	if err != nil {
		return err
	}
	if need > free+old {
		return refused(fmt.Errorf("artifact %s: the ESP has %s free (%s once slot %s's old files are removed); %s %s",
			o.Ref, humanSize(free), humanSize(free+old), o.Target.Slot, what, humanSize(need)))
	}
	return nil
}

// statESP returns the ESP's free bytes and its allocation unit (the FAT
// cluster). Tests replace it to play a full ESP.
var statESP = func(dir string) (free, cluster int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, st.Bsize, nil
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
