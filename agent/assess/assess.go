// Package assess is the agent's boot policy, what `slate health` does from
// slate-health.service before boot-complete.target: it counts a boot the
// loader should have counted and did not, hands over to the other slot when
// the running one was booted with no tries left, records the boot and the
// rollbacks it finds (agent/history), runs the health check (agent/health),
// blesses a good boot where the image has no systemd-bless-boot, and decides
// whether a bad boot reboots: only a counted one (a slot on trial) does, so
// the try is spent and systemd-boot's counting can roll back, while a good
// slot never reboots in a loop.
//
// Everything it reads or changes on the node comes through System, so every
// branch is tested here with fakes; cmd/slate fills System with the real
// node.
package assess

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/health"
	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/nodeconfig"
)

// BlessBoot is systemd's own blesser; where the image lacks it, the agent
// renames the entry itself.
const BlessBoot = "/usr/lib/systemd/systemd-bless-boot"

// MaxTimeout stays under slate-health.service's TimeoutStartSec (20min),
// so the agent, not systemd's kill, decides.
const MaxTimeout = 15 * time.Minute

// ESP is what the assessment reads and changes on the ESP; *slots.ESP is
// the node's.
type ESP interface {
	Read() (map[boot.Slot]*slots.Info, error)
	Count(s boot.Slot) (*boot.Entry, error)
	Promote(s boot.Slot) (*boot.Entry, error)
	Bless(s boot.Slot) error
}

var _ ESP = (*slots.ESP)(nil)

// Systemd is a connection to systemd (*health.Conn).
type Systemd interface {
	health.Systemd
	Close()
}

// Node is the running node as the assessment needs it.
type Node struct {
	Running boot.Slot
	// Version is the running image's version (the init's boot record).
	Version string
	ESP     ESP
	// Health is the node config's health section.
	Health nodeconfig.Health
}

// System is what the assessment works on. The functions are called in this
// order, each only when the steps before it succeeded, so a failure at any
// step leaves the later ones undone.
type System struct {
	// BootCounted says whether systemd-boot counted this boot (it set
	// LoaderBootCountPath); read first, so even a failure to find the node
	// knows whether it may reboot. An error counts as not counted.
	BootCounted func() (bool, error)
	// Node finds the node, mounts its ESP and reads its node config.
	Node func() (*Node, error)
	// BootID is the kernel's id of this boot, as journald writes it.
	BootID func() (string, error)
	// Connect connects to systemd, to check the boot and to reboot.
	Connect func(context.Context) (Systemd, error)
	// Store keeps the boot's record and the rollbacks found.
	Store *history.Store
	// Sources are where the logs of the boots that rolled back are found.
	Sources history.Sources
	// Journal gives a bad boot's journal, kept next to its record.
	Journal history.Journal
	// Extensions reads slate-sysext's report, which the check judges
	// health.requiredExtensions by (extensions.ReadReport of
	// extensions.ReportPath when nil).
	Extensions func() (*extensions.Report, error)
	// RaiseSBAT, if set, runs once a boot is judged good: a Secure Boot
	// image of a higher SBAT generation raises the node's revocation level
	// (secureboot.WriteSBATLevel) only then, so that a new image that does
	// not work can still roll back. It returns what to report ("" none).
	RaiseSBAT func() (string, error)
	// BlessBoot is systemd-bless-boot's path (BlessBoot when empty): when
	// it does not exist, a good counted boot is blessed by the agent.
	BlessBoot string
	// Now is the clock (time.Now when nil); Poll the health check's time
	// between looks (a second when zero).
	Now  func() time.Time
	Poll time.Duration
	// Out gets the messages (os.Stdout when nil), Err the failures to
	// keep history (os.Stderr when nil).
	Out, Err io.Writer
}

// Run assesses this boot and applies the policy on its outcome: an error on
// a boot on trial is returned (slate-health.service's FailureAction then
// reboots, spending a try), on a boot that is not on trial it is reported
// and nil returned: a good slot must not reboot in a loop because the agent
// cannot do its work.
func Run(ctx context.Context, sys System) error {
	sys.defaults()
	counted, err := assess(ctx, sys)
	if err != nil && !counted {
		fmt.Fprintf(sys.Out, "slate health: %v\nslate health: this boot is not on trial: not rebooting\n", err)
		return nil
	}
	return err
}

func (sys *System) defaults() {
	if sys.BlessBoot == "" {
		sys.BlessBoot = BlessBoot
	}
	if sys.Now == nil {
		sys.Now = time.Now
	}
	if sys.Poll == 0 {
		sys.Poll = time.Second
	}
	if sys.Out == nil {
		sys.Out = os.Stdout
	}
	if sys.Err == nil {
		sys.Err = os.Stderr
	}
}

// assess assesses this boot and says whether it is counted (on trial, or
// counted by the agent itself): see Run for what is done with an error. A
// bad counted boot asks systemd to reboot and returns an error.
func assess(ctx context.Context, sys System) (counted bool, err error) {
	out, errw := sys.Out, sys.Err
	counted, _ = sys.BootCounted()
	n, err := sys.Node()
	if err != nil {
		return counted, err
	}
	esp := n.ESP
	info, err := esp.Read()
	if err != nil {
		return counted, err
	}
	run := info[n.Running]
	if !counted && run.Counting {
		// The loader booted a counted entry without counting it: slate
		// checks rather than trusts (see ARCHITECTURE.md, "Boot and slot choice").
		if run.TriesLeft > 0 {
			e, err := esp.Count(n.Running)
			if err != nil {
				return counted, err
			}
			fmt.Fprintf(out, "slate health: the boot loader did not count this boot of slot %s; slate counted it (%s)\n", n.Running, e.FileName())
			if info, err = esp.Read(); err != nil {
				return counted, err
			}
			run, counted = info[n.Running], true
		} else if other := info[n.Running.Other()]; other.State == slots.Good {
			fmt.Fprintf(out, "slate health: the boot loader booted slot %s with no tries left; slot %s boots next\n", n.Running, other.Slot)
			if _, err := esp.Promote(other.Slot); err != nil {
				return counted, err
			}
			return counted, reboot(ctx, sys)
		}
	}
	id, err := sys.BootID()
	if err != nil {
		return counted, err
	}
	store := sys.Store
	b := history.Boot{
		ID: id, Slot: n.Running, Version: n.Version, Generation: run.Generation,
		Entry: run.EntryFile, Counting: counted, TriesLeft: run.TriesLeft, Started: sys.Now().UTC(),
	}
	if err := store.BeginBoot(b); err != nil {
		fmt.Fprintln(errw, "slate health: recording the boot:", err)
	}
	if rbs, err := store.NoteRollbacks(info, n.Running, sys.Sources); err != nil {
		fmt.Fprintln(errw, "slate health: recording rollbacks:", err)
	} else {
		for _, rb := range rbs {
			fmt.Fprintf(out, "slate health: slot %s (%s) rolled back to slot %s: %s; logs kept in %s\n",
				rb.FromSlot, rb.FromVersion, rb.ToSlot, rb.Cause, store.RollbackDir(rb))
		}
	}
	sd, err := sys.Connect(ctx)
	if err != nil {
		return counted, err
	}
	defer sd.Close()
	timeout := time.Duration(n.Health.Timeout)
	if timeout == 0 {
		timeout = health.DefaultTimeout
	}
	if timeout > MaxTimeout {
		fmt.Fprintf(out, "slate health: health.timeout %s is longer than %s: waiting %s\n", timeout, MaxTimeout, MaxTimeout)
		timeout = MaxTimeout
	}
	v := health.Check{RequiredUnits: n.Health.RequiredUnits, RequiredExtensions: n.Health.RequiredExtensions, Extensions: sys.Extensions,
		Target: "multi-user.target", Timeout: timeout, Poll: sys.Poll}.Run(ctx, sd)
	if v.Good {
		if err := store.FinishBoot(id, history.ResultGood, ""); err != nil {
			fmt.Fprintln(errw, "slate health: recording the result:", err)
		}
		fmt.Fprintf(out, "slate health: slot %s (%s) is healthy after %s\n", n.Running, n.Version, v.Waited.Round(time.Second/10))
		if counted {
			if _, err := os.Stat(sys.BlessBoot); err != nil {
				if err := esp.Bless(n.Running); err != nil {
					return counted, fmt.Errorf("marking slot %s good: %w", n.Running, err)
				}
				fmt.Fprintf(out, "slate health: slot %s marked good (no systemd-bless-boot in this image)\n", n.Running)
			}
		}
		if sys.RaiseSBAT != nil {
			// A failure is reported, never a reason to reboot a good boot.
			if msg, err := sys.RaiseSBAT(); err != nil {
				fmt.Fprintln(errw, "slate health: raising the SBAT level:", err)
			} else if msg != "" {
				fmt.Fprintln(out, "slate health:", msg)
			}
		}
		return counted, nil
	}
	fmt.Fprintf(out, "slate health: slot %s (%s) is NOT healthy: %s\n", n.Running, n.Version, v.Reason)
	if err := store.FinishBoot(id, history.ResultBad, v.Reason); err != nil {
		fmt.Fprintln(errw, "slate health: recording the result:", err)
	}
	if sys.Journal != nil {
		if j, err := sys.Journal.BootLog(ctx, id); err == nil {
			if err := store.SaveJournal(id, j); err != nil {
				fmt.Fprintln(errw, "slate health: keeping the journal:", err)
			}
		}
	}
	if !counted {
		// A blessed slot has nothing to fall back to by counting; a reboot
		// would only loop. Report and stay up.
		fmt.Fprintln(out, "slate health: this boot is not on trial (slot already good): not rebooting")
		return counted, nil
	}
	fmt.Fprintln(out, "slate health: rebooting; this spends one of the slot's tries")
	if err := sd.Reboot(ctx); err != nil {
		return counted, err
	}
	return counted, errors.New("unhealthy boot")
}

// reboot asks systemd to reboot, on a connection of its own.
func reboot(ctx context.Context, sys System) error {
	sd, err := sys.Connect(ctx)
	if err != nil {
		return fmt.Errorf("asking systemd to reboot: %w", err)
	}
	defer sd.Close()
	return sd.Reboot(ctx)
}
