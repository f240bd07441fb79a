// Package upgrade writes an update artifact into the slot that is not
// running: its root partition (squashfs and dm-verity tree), its kernel and
// initramfs on the ESP, the image's systemd-boot as the ESP's loader when it
// is newer than the one there (loader.go), and last its boot entry, counted
// (+3 tries) and of the next generation, so the next boot tries it and
// systemd-boot falls back to the running slot if it never becomes good.
//
// Everything that can refuse the artifact is checked before anything is
// changed (check.go; the root's write and read-back are write.go): among it the update policy (policy.go: whom the image and the
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
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/progress"
)

// ErrUpToDate is returned, wrapped, when the running slot already holds the
// artifact's image: nothing is written and nothing should reboot, so a
// timer that runs `slate upgrade` does not reboot the node again and again.
var ErrUpToDate = errors.New("already up to date")

// Tries is how many boots a freshly written slot gets to become good.
const Tries = 3

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
	// Prepare, if set, runs once every check has passed (the artifact is
	// trusted) and before the first change; its error refuses the upgrade
	// with nothing written. slate upgrade fetches the node config's
	// extensions for the new image there.
	Prepare func(ctx context.Context, a *artifact.Artifact) error
	// EFIVars is where efivarfs is mounted (Secure Boot's state and the
	// enrolled db); "" is /sys/firmware/efi/efivars. Without it Secure
	// Boot counts as off.
	EFIVars string
	// Offered, if set, is called once the artifact is opened, before it
	// is checked, with the version and manifest digest it offers: slate
	// upgrade records what it was offered whatever the outcome.
	Offered func(version, digest string)
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

// Run writes the artifact o.Ref into o.Target. Before each step it logs:
//
//	upgrade: <version> (<digest>) is signed by key <id> (<from> <where>)   (a trusted key verified it)
//	upgrade: WARNING: <version> (<digest>) is not verified: <why>; installed because update.allowUnsigned is set (<from>)
//	upgrade: WARNING: <version> ... is a downgrade ...; installed because of --allow-downgrade
//	upgrade: retiring slot b's boot entry
//	upgrade: writing root of slot b (<size>)
//	upgrade: verifying slot b
//	upgrade: writing kernel and initramfs of slot b
//	upgrade: writing unified kernel image of slot b (signed by <subject>, in this node's db)   (in place of the line above, for an artifact that has one)
//	upgrade: systemd-boot <old> → <new> on the ESP (<path>)   (for each loader it replaces)
//	upgrade: <why a loader is kept>                          (for each it does not)
//	upgrade: writing boot entry of slot b
//	upgrade: slot b holds <version> (generation N, 3 tries); reboot to use it
//
// No line is logged when a check refuses the artifact; Options.Prepare runs
// after the first lines and may refuse it too. Either way nothing was
// changed, and the error wraps ErrRefused (or ErrUpToDate).
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
	a, loader, up, dev, v, err := check(ctx, &o)
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
	if o.Prepare != nil {
		if err := o.Prepare(ctx, a); err != nil {
			return nil, refused(err)
		}
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
	o.Progress.Sized(fmt.Sprintf("writing root of slot %s", s), cfg.Root.Size)
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
	if up != nil {
		if up.signedBy != "" {
			logf("upgrade: writing unified kernel image of slot %s (signed by %s, in this node's db)", s, up.signedBy)
		} else {
			logf("upgrade: writing unified kernel image of slot %s (Secure Boot is off here: its signature was not checked)", s)
		}
		if _, err := o.ESP.WriteFile(s.ESPDir()+"/"+boot.UKIName, bytes.NewReader(up.blob)); err != nil {
			return failed("writing the unified kernel image", err)
		}
	} else {
		logf("upgrade: writing kernel and initramfs of slot %s", s)
		if err := writeLayer(o.ESP, s.ESPDir()+"/"+boot.KernelName, a.Kernel); err != nil {
			return failed("writing the kernel", err)
		}
		if err := writeLayer(o.ESP, s.ESPDir()+"/"+boot.InitrdName, a.Initramfs); err != nil {
			return failed("writing the initramfs", err)
		}
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
		Title:  fmt.Sprintf("slate %s (slot %s)", cfg.Version, strings.ToUpper(string(s))),
		Linux:  s.KernelPath(),
		Initrd: s.InitrdPath(),
		Options: boot.SlotCmdline(cfg.Cmdline, boot.SlotArgs{Slot: s, RootPartUUID: o.Target.PartUUID,
			RootHash: cfg.Root.RootHash, StatePartUUID: o.Target.StatePartUUID, Version: cfg.Version}),
	}
	if up != nil {
		en.Linux, en.Initrd, en.EFI = "", "", s.UKIPath()
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
