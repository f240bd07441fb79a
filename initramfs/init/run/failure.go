package run

// The init's failures across reboots: it mounts efivarfs, reads whether
// this boot is counted and the failure a previous boot kept; on a failure
// it asks package failpolicy whether to reboot or to stop; on a boot that
// gets the state partition mounted it moves the kept failure there.

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/initramfs/init/efivar"
	"github.com/slate-os/slate/initramfs/init/failpolicy"
	"github.com/slate-os/slate/initramfs/layout"
)

// efiSys exists when the kernel was booted by UEFI firmware.
const efiSys = "/sys/firmware/efi"

// HoldRepeat is how often a stopped init repeats why it stopped, for
// whoever attaches a console later.
const HoldRepeat = time.Minute

// efiState is what the init knows of the EFI variables.
type efiState struct {
	tried    bool // readEFI ran
	mounted  bool // efivarfs is mounted: failures can be kept
	counting failpolicy.Counting
	// countPath is LoaderBootCountPath ("" when not set).
	countPath string
	// prev is the failure a previous boot kept, as read at this boot's start.
	prev *record.InitFailure
	// kept is true once this boot's failure is in the EFI variable.
	kept bool
}

// setupEFIVars is the "efivars" step: it mounts efivarfs and reads the
// boot's counting and the kept failure. It never fails: without them the
// failure policy knows less, and says so.
func (in *initProc) setupEFIVars() error {
	in.readEFI()
	e := &in.efi
	switch {
	case !e.mounted && e.counting == failpolicy.Uncounted:
		in.log.Infof("no UEFI: a failure of this boot will stop it, not reboot it (nowhere to count failures)")
	case !e.mounted:
		in.warn("the EFI variables cannot be read: whether this boot is counted is unknown")
	case e.countPath != "":
		in.log.Infof("boot counting: %s (%s)", e.counting, e.countPath)
	default:
		in.log.Infof("boot counting: %s", e.counting)
	}
	if e.prev != nil {
		in.log.Infof("the previous boot failed: %s", e.prev)
	}
	return nil
}

// readEFI mounts efivarfs when the machine has UEFI and reads what the
// policy needs, once; fatal calls it too, for a failure before the
// "efivars" step. Best effort: what it cannot read stays unknown.
func (in *initProc) readEFI() {
	e := &in.efi
	if e.tried {
		return
	}
	e.tried = true
	e.counting = failpolicy.Unknown
	if ok, _ := isMountPoint("/sys"); !ok {
		// A failure before mount-api finished: sysfs is needed to know.
		os.MkdirAll("/sys", 0o755)
		if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return
		}
	}
	if _, err := os.Stat(efiSys); err != nil {
		e.counting = failpolicy.Uncounted // no UEFI, no systemd-boot, no counter
		return
	}
	if err := mountEFIVars(in.efiStore.Dir); err != nil {
		in.log.Warnf("efivarfs: %v", err)
		return
	}
	e.mounted = true
	p, err := in.efiStore.String("LoaderBootCountPath", efivar.LoaderGUID)
	if err != nil {
		in.log.Warnf("reading LoaderBootCountPath: %v", err)
	} else {
		e.countPath = p
		e.counting = failpolicy.CountingOf(p)
	}
	if e.countPath != "" {
		in.dropStaleCountPath(e)
	}
	if e.prev, err = failpolicy.Load(in.efiStore); err != nil {
		// A variable that cannot be read is dropped: it would block the
		// policy's count for good.
		in.log.Warnf("ignoring the kept failure: %v", err)
		failpolicy.Clear(in.efiStore)
		e.prev = nil
	}
}

// mountEFIVars mounts efivarfs on dir (systemd then finds it mounted and
// leaves it, and it moves into the new root with /sys). Where efivarfs is
// a module that is not loaded yet (a failure before the modules step), it
// loads it from the initramfs first.
func mountEFIVars(dir string) error {
	if ok, _ := isMountPoint(dir); ok {
		return nil
	}
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("%s: %w (no EFI runtime services?)", dir, err)
	}
	mnt := func() error {
		return unix.Mount("efivarfs", dir, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	err := mnt()
	if errors.Is(err, unix.ENODEV) { // no such filesystem type: the module is not loaded
		if lerr := loadEFIVarsModule(); lerr != nil {
			return fmt.Errorf("mounting %s: %w; loading the module: %v", dir, err, lerr)
		}
		err = mnt()
	}
	if err != nil {
		return fmt.Errorf("mounting %s: %w", dir, err)
	}
	return nil
}

// loadEFIVarsModule loads efivarfs.ko as the load list names it.
func loadEFIVarsModule() error {
	f, err := os.Open(layout.LoadList)
	if err != nil {
		return err
	}
	mods, _, err := ReadLoadList(f)
	f.Close()
	if err != nil {
		return err
	}
	for _, m := range mods {
		if path.Base(m) == "efivarfs.ko" {
			_, err := loadModule(m)
			return err
		}
	}
	return errors.New("efivarfs.ko is not in the initramfs")
}

// keepPreviousFailure moves the failure a previous boot kept from the EFI
// variable to the state partition (mounted on /sysroot/var) and names it
// in the boot record. It never fails the boot. The policy keeps using what
// was read at the start (efi.prev): a failure later in this boot still
// counts the ones before it.
func (in *initProc) keepPreviousFailure() {
	f := in.efi.prev
	if f == nil {
		return
	}
	in.rec.PreviousFailure = f
	p, err := record.WriteInitFailure(filepath.Join(sysroot, record.InitFailureDir), *f, record.KeepInitFailures)
	if err != nil {
		in.warn("keeping the previous boot's failure on the state partition: %v", err)
		return // the variable stays: the next boot tries again
	}
	if err := failpolicy.Clear(in.efiStore); err != nil {
		in.warn("deleting EFI variable %s: %v", failpolicy.VarName, err)
	}
	in.log.Infof("the previous boot's failure is kept in %s", strings.TrimPrefix(p, sysroot))
}

// failureVerdict decides, for a failure of step, whether to reboot, and
// keeps the failure in the EFI variable. It must not panic: fatal calls it.
func (in *initProc) failureVerdict(step, msg string) (v failpolicy.Verdict) {
	defer func() {
		if r := recover(); r != nil {
			// The safe side: a counted boot reboots, any other stops.
			c := in.efi.counting
			v = failpolicy.Verdict{Reboot: c != failpolicy.Uncounted, Why: fmt.Sprintf("the failure policy failed (%v)", r)}
		}
	}()
	in.readEFI()
	this := record.InitFailure{Step: step, Error: msg, Time: time.Now().UTC()}
	if in.params != nil {
		this.Slot = string(in.params.Slot)
	} else {
		this.Slot = boot.CmdlineValue(in.cmdline, boot.ArgSlot)
	}
	if this.Slot == "" && in.efi.mounted { // a UKI's command line names no slot
		if s, _, err := selectedSlot(in.efiStore); err == nil {
			this.Slot = string(s)
		}
	}
	input := failpolicy.Input{Counting: in.efi.counting, Persist: in.efi.mounted, Prev: in.efi.prev, This: this}
	v = failpolicy.Decide(input)
	if in.efi.mounted {
		if err := failpolicy.Save(in.efiStore, v.Keep); err != nil {
			in.log.Warnf("keeping the failure in EFI variable %s: %v", failpolicy.VarName, err)
			if v.Reboot && input.Counting == failpolicy.Uncounted {
				input.Persist = false
				v = failpolicy.Decide(input)
			}
		} else {
			in.efi.kept = true
		}
	}
	return v
}

// hold is the end of an init that will not reboot: it repeats lines on the
// console every HoldRepeat and never returns. The kernel's own setting for
// a panic comes back: a stopped init is not to be rebooted behind its back.
func (in *initProc) hold(lines ...string) {
	in.disarmPanicReboot()
	for {
		for _, l := range lines {
			in.log.Critf("%s", l)
		}
		time.Sleep(HoldRepeat)
	}
}

// dropStaleCountPath ignores a LoaderBootCountPath that names another
// slot's entry than the one systemd-boot booted (LoaderEntrySelected).
// systemd-boot sets it when it starts a counted entry and does not clear
// it when that image fails to load (a UKI the firmware refused under
// Secure Boot) and the firmware runs systemd-boot again, which then boots
// the other slot uncounted. The variable is volatile, so nothing can
// delete it after the firmware's boot services end: this boot counts as
// uncounted, and systemd-bless-boot, which would mark the refused entry
// good, is masked for this boot (the agent reads the same two variables,
// agent/node).
func (in *initProc) dropStaleCountPath(e *efiState) {
	selected, err := in.efiStore.String(VarEntrySelected, efivar.LoaderGUID)
	if err != nil || !boot.StaleCountPath(e.countPath, selected) {
		return
	}
	in.log.Warnf("LoaderBootCountPath %s names another slot's entry than the one systemd-boot booted, %s: left from an image that failed to load; this boot is not counted", e.countPath, selected)
	if err := maskUnit(blessUnitMask); err != nil {
		in.log.Warnf("masking systemd-bless-boot.service for this boot: %v", err)
	}
	e.countPath, e.counting = "", failpolicy.Uncounted
}

// blessUnitMask masks systemd-bless-boot.service for this boot only (/run).
var blessUnitMask = "/run/systemd/system/systemd-bless-boot.service"

func maskUnit(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.Symlink("/dev/null", path)
}
