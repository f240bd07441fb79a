package main

// The agent's commands: they run on a booted slate node, as root, from the
// slate binary the builder put in the image.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/agent/assess"
	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/health"
	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/agent/node"
	"github.com/slate-os/slate/agent/sbat"
	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/agent/status"
	"github.com/slate-os/slate/agent/upgrade"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/builder/source"
	"github.com/slate-os/slate/internal/progress"
)

// StateDir is the agent's directory on the state partition.
const StateDir = "/var/lib/slate"

// agentNode finds the node and mounts its ESP.
func agentNode() (*node.Node, *slots.ESP, error) {
	n, err := node.Discover(node.System)
	if err != nil {
		return nil, nil, err
	}
	dir, err := n.MountESP(node.ESPDir)
	if err != nil {
		return nil, nil, err
	}
	return n, slots.Open(dir), nil
}

// lockedNode is agentNode for a command that changes the slots: it also
// keeps a second upgrade or rollback from running at once. Call unlock when
// done.
func lockedNode() (n *node.Node, esp *slots.ESP, unlock func(), err error) {
	if err := os.MkdirAll(boot.RunDir, 0o755); err != nil {
		return nil, nil, nil, err
	}
	f, err := os.OpenFile(boot.RunDir+"/agent.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, nil, nil, errors.New("another slate upgrade or rollback is running")
	}
	if n, esp, err = agentNode(); err != nil {
		f.Close()
		return nil, nil, nil, err
	}
	return n, esp, func() { f.Close() }, nil
}

// nodeConfig is the config the init applied this boot; a node without one
// gets the zero config.
func nodeConfig() (*nodeconfig.Config, error) {
	b, err := os.ReadFile(nodeconfig.RecordPath)
	if errors.Is(err, fs.ErrNotExist) {
		return &nodeconfig.Config{}, nil
	}
	if err != nil {
		return nil, err
	}
	c, err := nodeconfig.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", nodeconfig.RecordPath, err)
	}
	return c, nil
}

// updatePolicy is the update policy in force: the running image's
// (/usr/lib/slate: its keys and image.json, under dm-verity) with what the
// node config cfg adds, and the running image's image.json (nil for an
// image built before it existed).
func updatePolicy(cfg *nodeconfig.Config) (*upgrade.Policy, *boot.ImageInfo, error) {
	info, err := upgrade.ReadImageInfo("/")
	if err != nil {
		return nil, nil, err
	}
	p, err := upgrade.LoadPolicy("/", info, cfg)
	if err != nil {
		return nil, info, fmt.Errorf("update policy: %w", err)
	}
	return p, info, nil
}

// updateStatus is what status shows of the update policy.
func updateStatus(cfg *nodeconfig.Config) *status.Update {
	u := &status.Update{Source: cfg.Update.Source}
	p, info, err := updatePolicy(cfg)
	if info != nil {
		u.NotBefore = info.Created
	}
	if err != nil {
		u.Policy, u.Error = status.PolicyRefused, err.Error()
		return u
	}
	for _, k := range p.Keys {
		u.Keys = append(u.Keys, status.UpdateKey{ID: k.ID, From: k.From, Where: k.Where})
	}
	u.AllowUnsigned = p.AllowUnsigned
	switch {
	case p.Usable() != nil:
		u.Policy, u.Error = status.PolicyRefused, p.Usable().Error()
	case len(p.AllowUnsigned) > 0:
		u.Policy = status.PolicyUnsigned
	default:
		u.Policy = status.PolicySigned
	}
	return u
}

func reboot(ctx context.Context) error {
	sd, err := health.Connect(ctx)
	if err != nil {
		return fmt.Errorf("asking systemd to reboot: %w", err)
	}
	defer sd.Close()
	return sd.Reboot(ctx)
}

func upgradeCmd() *cobra.Command {
	var noReboot, allowDowngrade bool
	c := &cobra.Command{
		Use:   "upgrade [REF|oci:DIR]",
		Short: "Write an update artifact into the inactive slot and reboot into it",
		Long: `upgrade resolves the artifact (REF, or update.source of the node config) to a
digest, writes its root into the inactive slot while checking the digest,
reads it back against the verity root hash, writes the slot's kernel and
initramfs on the ESP, the image's systemd-boot where it is newer than the
ESP's (never an older one), and a boot entry with 3 tries, then reboots. If the
new image does not become good, systemd-boot's counting returns to the
running slot by itself. A power cut at any step leaves the running slot
bootable.

Only an artifact signed (slate sign, or cosign) by a key the running image
trusts is installed: the keys its spec named (update.publicKeys, slate build
--update-key), baked into its root, and any the node config adds
(update.publicKey, update.publicKeys). The signature is checked before any of
the root is read. An image built with no key refuses every upgrade unless
update.allowUnsigned (image spec or node config) lets unsigned artifacts in.
An artifact whose image was created before the running one is a downgrade,
refused without --allow-downgrade (slate rollback returns to the other slot
without this check), and one whose command line carries slate.* arguments
(slate.config=) is refused. slate status shows the policy in force.

The node config's extensions must all be had for the new image before any
slot is written: each reference is fetched for the new image's os-release
(signature checked with the same policy, then its image verified) into
/var/lib/slate/extensions, and each name must be there for that release or
carried by the new image. Otherwise the upgrade is refused, naming every
entry and why. The store then keeps only what the config names, for the new
image and the running one (a rollback needs its extensions).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			// Every run is recorded, whatever its outcome (slate status and
			// slate metrics show it), and before a reboot.
			check := &upgrade.LastCheck{}
			defer func() { recordUpdateCheck(check, err) }()
			cfg, err := nodeConfig()
			if err != nil {
				return err
			}
			ref := cfg.Update.Source
			if len(args) == 1 {
				ref = args[0]
			}
			check.Ref = ref
			if ref == "" {
				return errors.New("no artifact: give REF or oci:DIR, or set update.source in the node config")
			}
			if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
				ref = artifact.LayoutPrefix + ref // a layout, as inspect and sign take it
			} else if err := source.CheckLocal(ref); err != nil {
				return err // a typo, not an image on Docker Hub
			}
			pol, info, err := updatePolicy(cfg)
			if err != nil {
				return err
			}
			opts := []artifact.Option{artifact.WithContext(cmd.Context()), artifact.WithKeychain(authn.DefaultKeychain), artifact.WithPlatform(boot.OS, boot.Arch)}
			if cfg.Update.Insecure && sameRegistry(ref, cfg.Update.Source) {
				opts = append(opts, artifact.Insecure())
			}
			n, esp, unlock, err := lockedNode()
			if err != nil {
				return err
			}
			defer unlock()
			target := n.Running.Other()
			tp := n.Slot(target)
			logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
			res, err := upgrade.Run(cmd.Context(), upgrade.Options{
				Ref: ref, Artifact: opts, Running: n.Running, ESP: esp,
				Target: upgrade.Target{Slot: target, Device: tp.Device, Size: tp.Size, PartUUID: tp.PartUUID, StatePartUUID: n.State().PartUUID},
				Log:    logf,
				// The new image's extensions, fetched before any slot is written.
				Prepare: func(ctx context.Context, a *artifact.Artifact) error {
					_, err := extensions.PrepareUpgrade(ctx, extensions.UpgradeOptions{Update: a, Root: "/", FetchOptions: fetchOptions(cfg, pol, logf)})
					return err
				},
				Progress:       progress.New(os.Stderr),
				Now:            time.Now,
				Policy:         *pol,
				Image:          info,
				AllowDowngrade: allowDowngrade,
				Offered:        func(version, digest string) { check.Version, check.Digest = version, digest },
			})
			recordUpdateCheck(check, err)
			if errors.Is(err, upgrade.ErrUpToDate) {
				fmt.Printf("upgrade: %v: nothing to do\n", err)
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Printf("upgrade: root %d MiB written in %s (%.0f MB/s), verified in %s, total %s\n",
				res.RootBytes>>20, res.RootWrite.Round(time.Millisecond), float64(res.RootBytes)/1e6/res.RootWrite.Seconds(),
				res.Verify.Round(time.Millisecond), res.Total.Round(time.Millisecond))
			if noReboot {
				fmt.Println("upgrade: not rebooting (--no-reboot): the new slot boots at the next reboot")
				return nil
			}
			fmt.Println("upgrade: rebooting")
			return reboot(cmd.Context())
		},
	}
	c.Flags().BoolVar(&noReboot, "no-reboot", false, "write the slot but do not reboot")
	c.Flags().BoolVar(&allowDowngrade, "allow-downgrade", false, "install an artifact whose image was created before the running one")
	return c
}

// updateCheckPath is where slate upgrade keeps the last update check.
var updateCheckPath = filepath.Join(StateDir, upgrade.LastCheckFileName)

// recordUpdateCheck keeps check, with the outcome err, as the last update
// check (updateCheckPath), once per run. A record that cannot be written is
// a warning: the upgrade goes on. Off a node (no StateDir: slate-health
// makes it on every boot) nothing is recorded.
func recordUpdateCheck(check *upgrade.LastCheck, err error) {
	if !check.Time.IsZero() {
		return // recorded already
	}
	check.Time = time.Now().UTC()
	check.Result = upgrade.CheckResult(err)
	if err != nil && check.Result != upgrade.CheckUpToDate {
		check.Error = err.Error()
	}
	if _, err := os.Stat(filepath.Dir(updateCheckPath)); err != nil {
		return
	}
	if err := upgrade.WriteLastCheck(updateCheckPath, *check); err != nil {
		fmt.Fprintf(os.Stderr, "slate: upgrade: warning: recording the update check: %v\n", err)
	}
}

// sameRegistry says whether ref is on the registry the node config names:
// update.insecure allows plain HTTP to that registry only.
func sameRegistry(ref, source string) bool {
	if source == "" || strings.HasPrefix(ref, "oci:") {
		return false
	}
	r, err1 := name.ParseReference(ref, name.Insecure)
	s, err2 := name.ParseReference(source, name.Insecure)
	return err1 == nil && err2 == nil && r.Context().RegistryStr() == s.Context().RegistryStr()
}

func rollbackCmd() *cobra.Command {
	var noReboot bool
	c := &cobra.Command{
		Use:   "rollback",
		Short: "Boot the other slot's image next, if it is good, and reboot",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, esp, unlock, err := lockedNode()
			if err != nil {
				return err
			}
			defer unlock()
			other := n.Running.Other()
			if err := sbat.CheckSlot(esp, other, ""); err != nil {
				return fmt.Errorf("rollback: %w", err)
			}
			e, err := esp.Promote(other)
			if err != nil {
				return fmt.Errorf("rollback: %w", err)
			}
			fmt.Printf("rollback: slot %s (%s) is generation %d and boots next\n", other, e.Version, e.Generation)
			if noReboot {
				return nil
			}
			fmt.Println("rollback: rebooting")
			return reboot(cmd.Context())
		},
	}
	c.Flags().BoolVar(&noReboot, "no-reboot", false, "change the order but do not reboot")
	return c
}

func statusCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show both slots, the running one, the last rollback, the init's last failure, the node config and its extensions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := gatherStatus()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(st)
			}
			return st.WriteText(os.Stdout)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// gatherStatus is what slate status shows and slate metrics exports: the
// node, its ESP and the state partition, with what the node config says of
// updates and extensions.
func gatherStatus() (*status.Status, error) {
	n, esp, err := agentNode()
	if err != nil {
		return nil, err
	}
	st, err := status.Gather(n, esp, &history.Store{Dir: StateDir})
	if err != nil {
		return nil, err
	}
	if cfg, err := nodeConfig(); err == nil {
		st.Update = updateStatus(cfg)
		st.Extensions, st.ExtensionsError = extensionsStatus(cfg)
	} else {
		st.Update = &status.Update{Policy: status.PolicyRefused, Error: err.Error()}
		st.Extensions, st.ExtensionsError = extensionsStatus(nil)
	}
	return st, nil
}

func healthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Assess this boot (run by slate-health.service before boot-complete.target)",
		Long: `health records this boot on the state partition, keeps the logs of boots
that rolled back, and waits until systemd reached multi-user.target with no
failed unit, the units the node config requires active and the extensions
it requires merged (health.requiredExtensions). On a counted boot
(a slot on trial) a failure or timeout reboots the node, which spends a try;
systemd-bless-boot marks a good boot after boot-complete.target.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runHealth(cmd.Context()) },
	}
}

// runHealth assesses the boot (agent/assess) on the real node.
func runHealth(ctx context.Context) error {
	return assess.Run(ctx, assess.System{
		BootCounted: node.System.BootCounted,
		Node: func() (*assess.Node, error) {
			n, esp, err := agentNode()
			if err != nil {
				return nil, err
			}
			cfg, err := nodeConfig()
			if err != nil {
				return nil, err
			}
			return &assess.Node{Running: n.Running, Version: n.Record.Version, ESP: esp, Health: cfg.Health}, nil
		},
		BootID: node.BootID,
		Connect: func(ctx context.Context) (assess.Systemd, error) {
			sd, err := health.Connect(ctx)
			if err != nil {
				return nil, err
			}
			return sd, nil
		},
		Store:     &history.Store{Dir: StateDir},
		Sources:   history.DefaultSources(),
		Journal:   history.Journalctl{},
		RaiseSBAT: func() (string, error) { return sbat.Raise("/"+boot.SBATLevelFile, "") },
	})
}

func espCmd() *cobra.Command {
	c := &cobra.Command{Use: "esp", Short: "The ESP on a node", Hidden: true}
	c.AddCommand(&cobra.Command{
		Use:   "mount",
		Short: "Mount the ESP at " + node.ESPDir + " (for systemd-bless-boot)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, _, err := agentNode()
			return err
		},
	})
	return c
}
