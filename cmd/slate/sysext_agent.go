package main

// slate sysext's node-side commands: activate (slate-sysext.service, early
// at boot), fetch (slate-sysext-fetch.service, once the network is up) and
// status.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/upgrade"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/internal/progress"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
)

// sysextLockPath serializes activations: the boot's, a fetch's, one by hand.
const sysextLockPath = boot.RunDir + "/sysext.lock"

func sysextNodeCommands() []*cobra.Command {
	return []*cobra.Command{sysextActivateCmd(), sysextFetchCmd(), sysextStatusCmd()}
}

func sysextActivateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "activate",
		Short: "Verify and merge the node config's extensions (run by slate-sysext.service at boot)",
		Long: `activate takes each entry of the node config's extensions (a name or a
registry reference) and picks the newest matching extension from the image's
store (` + store.ImageDir + `) and the node's (` + store.NodeDir + `, whose
extensions must be signed as updates are, checked at every boot). The
extension must match this image's os-release as systemd-sysext decides it.
Its image goes on a read-only loop device under a dm-verity device checked
against the root hash in its signed config, is read once from end to end (a
changed block refuses it), and is mounted read-only at /run/extensions/NAME;
extensions no longer named are taken down, and systemd-sysext refresh
merges. Anything in /var/lib/extensions is hidden: only verified extensions
are merged.

It never fails: each entry gets one line (merged, refused or missing, and
why) and the report ` + extensions.ReportPath + `, which slate status shows and
health.requiredExtensions is judged by.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			activateExtensions(cmd.Context(), os.Stdout)
			return nil
		},
	}
}

func sysextFetchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fetch",
		Short: "Fetch the node config's extension references, and activate what arrived (run by slate-sysext-fetch.service)",
		Long: `fetch resolves each registry reference among the node config's extensions for
this image's os-release (from a tag holding extensions for several OS
releases, the one that matches), checks its signature with the update policy
before reading any of its image, and adds it to the node's store
(` + store.NodeDir + `), its whole dm-verity tree checked. A reference the
store has a match for already is not asked for again. When anything new
arrived, it activates the extensions again (slate sysext activate).

With no reference in the node config it does nothing. It fails when a
reference could not be fetched; slate-sysext-fetch.service ignores that, so
that an unreachable registry leaves the extension missing rather than a
failed unit (health.requiredExtensions makes a missing extension a bad boot).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := nodeConfig()
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(cfg.Extensions, nodeconfig.IsExtensionRef) {
				fmt.Println("slate sysext fetch: the node config names no extension reference: nothing to fetch")
				return nil
			}
			pol, _, err := updatePolicy(cfg)
			if err != nil {
				return err
			}
			host, err := extensions.HostRelease("/")
			if err != nil {
				return err
			}
			prog := fetchProgress(progress.New(os.Stderr))
			fo := fetchOptions(cfg, pol, func(format string, args ...any) { fmt.Printf("slate sysext fetch: "+format+"\n", args...) })
			fo.Host, fo.Progress = host, prog
			results, err := extensions.Fetch(cmd.Context(), fo)
			var failed []string
			fetched := false
			for _, r := range results {
				fetched = fetched || r.State == extensions.Fetched
				if !r.OK() {
					failed = append(failed, r.Entry)
				}
			}
			if werr := extensions.WriteFetchResults(extensions.FetchResultsPath, results); werr != nil {
				fmt.Printf("slate sysext fetch: writing %s: %v\n", extensions.FetchResultsPath, werr)
			}
			if fetched || len(failed) > 0 {
				// Activated even when another reference failed: what
				// arrived is usable now, and the report (slate status)
				// says why the others are not.
				fmt.Println("slate sysext fetch: activating again")
				activateExtensions(cmd.Context(), os.Stdout)
			}
			if err != nil {
				return err
			}
			if len(failed) > 0 {
				return fmt.Errorf("sysext fetch: %d of the node config's extension references could not be had: %s", len(failed), strings.Join(failed, ", "))
			}
			return nil
		},
	}
}

// fetchOptions are the node's options for fetching the config's
// extensions: its node store, the update policy, the Docker keychain, and
// plain HTTP only to the update source's registry with update.insecure.
func fetchOptions(cfg *nodeconfig.Config, pol *upgrade.Policy, logf func(string, ...any)) extensions.FetchOptions {
	return extensions.FetchOptions{
		Entries: cfg.Extensions, Arch: sysext.SystemdArch, Policy: pol, Store: store.Open(store.NodeDir),
		Artifact: []artifact.Option{artifact.WithKeychain(authn.DefaultKeychain)},
		Insecure: func(ref string) bool { return cfg.Update.Insecure && sameRegistry(ref, cfg.Update.Source) },
		Log:      logf,
	}
}

// fetchProgress shows the bytes of each extension image as it is fetched.
func fetchProgress(p *progress.Reporter) func(entry string, done, total int64) {
	cur, finished := "", map[string]bool{}
	return func(entry string, done, total int64) {
		if finished[entry] {
			return
		}
		if entry != cur {
			if cur != "" {
				p.Done()
				finished[cur] = true
			}
			cur = entry
			p.Sized("fetching "+entry, total)
		}
		p.Bytes(done)
		if total > 0 && done >= total {
			p.Done()
			finished[entry], cur = true, ""
		}
	}
}

func sysextStatusCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show this boot's extensions: merged, refused or missing, and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := extensions.ReadReport(extensions.ReportPath)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(r)
			}
			r.WriteText(os.Stdout)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

// lockSysext takes the activation lock, waiting for one that runs.
func lockSysext() (func(), error) {
	if err := os.MkdirAll(boot.RunDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(sysextLockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", sysextLockPath, err)
	}
	return func() { f.Close() }, nil
}

// activateExtensions activates the node config's extensions on this node.
// It never fails: what went wrong is on out and in the report.
func activateExtensions(ctx context.Context, out io.Writer) *extensions.Report {
	start := time.Now()
	fail := func(err error) *extensions.Report {
		r := &extensions.Report{Time: start.UTC(), Architecture: sysext.SystemdArch, Entries: []extensions.Entry{}, Error: err.Error()}
		fmt.Fprintf(out, "slate-sysext: nothing activated: %v\n", err)
		if werr := r.Write(extensions.ReportPath); werr != nil {
			fmt.Fprintf(out, "slate-sysext: writing the report: %v\n", werr)
		}
		return r
	}
	unlock, err := lockSysext()
	if err != nil {
		return fail(err)
	}
	defer unlock()
	cfg, err := nodeConfig()
	if err != nil {
		return fail(fmt.Errorf("node config: %w", err))
	}
	a := &extensions.Activator{
		Sys: extensions.NewSystem(),
		Sources: []extensions.Source{
			{From: extensions.FromImage, Dir: store.ImageDir, Store: store.Open(store.ImageDir)},
			{From: extensions.FromNode, Dir: store.NodeDir, Store: store.Open(store.NodeDir)},
		},
		Root: "/", Arch: sysext.SystemdArch, Out: out,
	}
	a.Verify, a.PolicyError = extensionVerifier(cfg)
	return a.Activate(ctx, cfg.Extensions)
}

// extensionVerifier checks a node-store extension's signature with the
// update policy in force: the same keys sign updates and extensions.
func extensionVerifier(cfg *nodeconfig.Config) (func(*artifact.Artifact) (string, error), error) {
	pol, _, err := updatePolicy(cfg)
	if err != nil {
		return nil, err
	}
	return func(a *artifact.Artifact) (string, error) {
		k, err := pol.Verify(a)
		if err != nil || k == nil { // nil: unsigned, and update.allowUnsigned lets it in
			return "", err
		}
		return k.ID, nil
	}, nil
}

// extensionsStatus is what slate status shows of the extensions: the
// report, or why there is none when the node config (cfg; nil when it is
// unreadable) names extensions.
func extensionsStatus(cfg *nodeconfig.Config) (*extensions.Report, string) {
	r, err := extensions.ReadReport(extensions.ReportPath)
	switch {
	case err == nil:
		return r, ""
	case errors.Is(err, extensions.ErrNoReport) && (cfg == nil || len(cfg.Extensions) == 0):
		return nil, "" // nothing to activate, nothing to say
	}
	return nil, err.Error()
}
