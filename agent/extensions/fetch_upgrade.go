package extensions

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
)

// UpgradeOptions is what PrepareUpgrade needs: Fetch's options (their Host
// is ignored: the new image's release is the artifact's), the artifact and
// the running root.
type UpgradeOptions struct {
	FetchOptions
	// Update is the update artifact about to be written, already trusted
	// (its signature checked): its config's OSRelease is the release the
	// extensions must match, its Extensions what the new image carries.
	Update *artifact.Artifact
	// Root is the running root ("/"; a directory in tests): the running
	// os-release, which Prune keeps the extensions of, is read under it.
	Root string
}

// UpgradeError refuses an upgrade because the node config's extensions
// cannot all be had for the new image. Nothing was written.
type UpgradeError struct {
	// Version is the update artifact's version.
	Version string
	// Release is the new image's os-release; zero when the artifact
	// predates extensions.
	Release sysext.Release
	// Problems are the entries that cannot be had, each with why.
	Problems []FetchResult
	// Predates: the artifact has no os-release to match against.
	Predates bool
	Entries  []string
}

func (e *UpgradeError) Error() string {
	if e.Predates {
		return fmt.Sprintf("upgrade to %s refused: the artifact predates system extensions (its config has no osRelease to match them against), "+
			"and the node config names extensions (%s): rebuild the image with a slate that records its os-release, or remove the extensions from the node config",
			e.Version, strings.Join(e.Entries, ", "))
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("upgrade to %s refused, no slot written: %d of the node config's extensions cannot be had for its os-release %s:\n  %s",
		e.Version, len(e.Problems), e.Release, strings.Join(lines, "\n  "))
}

// PrepareUpgrade makes sure that every extension the node config names
// can be had for the image an upgrade is about to write, before any slot
// is written: a reference is fetched for the new image's release into the
// node's store (Fetch), or is there already; a name must be in the node's
// store for that release or carried by the new image
// (artifact.Config.Extensions). When any cannot, the error (an
// *UpgradeError) names each entry and why, and the upgrade must be refused.
// Then the node's store is pruned to what the config names, for the new
// release and for the running one (a rollback needs its extensions).
// It returns the result of every entry.
func PrepareUpgrade(ctx context.Context, o UpgradeOptions) ([]FetchResult, error) {
	if o.Update == nil || o.Store == nil || o.Policy == nil {
		return nil, errors.New("prepare upgrade: no artifact, store or policy")
	}
	if o.Arch == "" {
		o.Arch = sysext.SystemdArch
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	c := o.Update.Config
	rel := c.OSRelease
	var results []FetchResult
	if rel == (sysext.Release{}) {
		if len(o.Entries) > 0 {
			return nil, &UpgradeError{Version: c.Version, Predates: true, Entries: o.Entries}
		}
	} else {
		var err error
		if results, err = resolveForUpgrade(ctx, &o, rel, logf); err != nil {
			return results, err
		}
		var problems []FetchResult
		for _, r := range results {
			if !r.OK() {
				problems = append(problems, r)
			}
		}
		if len(problems) > 0 {
			return results, &UpgradeError{Version: c.Version, Release: rel, Problems: problems}
		}
	}
	prune(&o, rel, logf)
	return results, nil
}

// resolveForUpgrade has every entry resolved for rel: references fetched,
// names looked up.
func resolveForUpgrade(ctx context.Context, o *UpgradeOptions, rel sysext.Release, logf func(string, ...any)) ([]FetchResult, error) {
	fo := o.FetchOptions
	fo.Host = rel
	fetched, err := Fetch(ctx, fo)
	if err != nil {
		return fetched, err
	}
	byIndex := map[int]FetchResult{}
	for _, r := range fetched {
		byIndex[r.Index] = r
	}
	entries, listErr := o.Store.List()
	if listErr != nil {
		logf("extensions: %v", listErr)
	}
	var out []FetchResult
	for i, e := range o.Entries {
		if nodeconfig.IsExtensionRef(e) {
			out = append(out, byIndex[i])
			continue
		}
		r := lookUpName(o, i, e, entries, rel)
		logf("extensions: %s", r)
		out = append(out, r)
	}
	return out, nil
}

// lookUpName finds a name entry in the node's store for rel, or among the
// extensions the new image carries.
func lookUpName(o *UpgradeOptions, i int, name string, entries []store.Entry, rel sysext.Release) FetchResult {
	r := FetchResult{Index: i, Entry: name}
	e, whyNot, ok := store.Select(entries, name, rel, o.Arch)
	if ok {
		r.State, r.Name, r.Version, r.Digest = AlreadyFetched, e.Config.Name, e.Config.Version, e.Digest.String()
		return r
	}
	var carried []string
	for _, c := range o.Update.Config.Extensions {
		carried = append(carried, c.Name+" "+c.Version)
		if c.Name != name {
			continue
		}
		if err := sysext.Match(c.Release, rel, o.Arch); err != nil {
			whyNot = append(whyNot, fmt.Sprintf("the image's %s %s: %v", c.Name, c.Version, err))
			continue
		}
		r.State, r.Name, r.Version, r.Digest = InImage, c.Name, c.Version, c.Digest
		return r
	}
	if len(carried) == 0 {
		carried = []string{"none"}
	}
	r.State = NoMatch
	r.Reason = fmt.Sprintf("neither in the node's store (%s) nor carried by the image %s (it carries %s)",
		o.Store.Dir, o.Update.Config.Version, strings.Join(carried, ", "))
	if len(whyNot) > 0 {
		r.Reason += "; " + strings.Join(whyNot, "; ")
	}
	return r
}

// prune removes from the node's store what the config no longer names:
// it keeps, for each entry, the extension Select picks for the new
// release and the one it picks for the running release. Without a running
// release to judge by, nothing is removed. Failures are only logged: the
// upgrade does not depend on them.
func prune(o *UpgradeOptions, rel sysext.Release, logf func(string, ...any)) {
	running, err := (&Activator{Root: o.Root}).hostRelease()
	if err != nil {
		logf("extensions: not pruning %s: %v", o.Store.Dir, err)
		return
	}
	// Decided under Prune's lock, on what the store holds then: an
	// extension a concurrent fetch adds is judged too.
	var keep map[string]bool
	decide := func() {
		entries, err := o.Store.List() // what cannot be read, Prune keeps anyway
		if err != nil {
			logf("extensions: %v", err)
		}
		keep = map[string]bool{}
		for _, e := range o.Entries {
			for _, r := range []sysext.Release{running, rel} {
				if r == (sysext.Release{}) {
					continue
				}
				if s, _, ok := store.Select(entries, e, r, o.Arch); ok {
					keep[s.Digest.String()] = true
				}
			}
		}
	}
	gone, err := o.Store.Prune(func(e store.Entry) bool {
		if keep == nil {
			decide()
		}
		return keep[e.Digest.String()]
	})
	for _, e := range gone {
		logf("extensions: removed %s from %s: the node config no longer names it", e, o.Store.Dir)
	}
	if err != nil {
		logf("extensions: pruning %s: %v", o.Store.Dir, err)
	}
}
