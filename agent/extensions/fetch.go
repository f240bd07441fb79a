package extensions

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/slate-os/slate/agent/upgrade"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
)

// FetchState is what Fetch (or PrepareUpgrade) made of one node-config
// entry.
type FetchState string

// States of a fetched entry.
const (
	// Fetched: resolved, signature accepted, verified and added to the
	// node's store.
	Fetched FetchState = "fetched"
	// AlreadyFetched: the node's store has an extension fetched for this
	// reference that matches the release; nothing was asked of the registry.
	AlreadyFetched FetchState = "present"
	// InImage: a name the new image carries (PrepareUpgrade only).
	InImage FetchState = "in the image"
	// FetchRefused: the extension was found but not accepted (signature,
	// a changed image, not an extension); Reason says why.
	FetchRefused FetchState = "refused"
	// NoMatch: nothing the reference offers (or, for a name, nothing in the
	// node's store or the image) matches the release; Releases lists what
	// the reference offers.
	NoMatch FetchState = "no match"
	// FetchFailed: the registry or the store could not be read or written
	// (a network error, a full disk): trying again may work.
	FetchFailed FetchState = "failed"
)

// FetchResult is what became of one node-config extensions entry.
type FetchResult struct {
	// Index is the entry's position in the node config's extensions.
	Index int
	Entry string
	State FetchState
	// Name, Version and Digest (the manifest's) say which extension it
	// is, when one was found.
	Name, Version, Digest string
	// SignedBy is the ID of the trusted key that verified it; "" when
	// update.allowUnsigned let it in unsigned, or nothing was checked.
	SignedBy string
	// Reason says why it was refused, did not match or failed, or warns
	// (an unsigned extension let in).
	Reason string
	// Releases are the OS releases a reference offers (NoMatch).
	Releases []string
}

// OK says whether the entry is usable: fetched, already fetched or in the image.
func (r FetchResult) OK() bool {
	return r.State == Fetched || r.State == AlreadyFetched || r.State == InImage
}

// String is the result on one line:
// "extensions[0] registry.example/ext/gpu:1: fetched gpu 1.0 (sha256:0123456789ab), signed by key sha256:..."
func (r FetchResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "extensions[%d] %s: %s", r.Index, r.Entry, r.State)
	if r.Name != "" {
		fmt.Fprintf(&b, " %s %s", r.Name, r.Version)
		if r.Digest != "" {
			fmt.Fprintf(&b, " (%s)", shortHash(r.Digest))
		}
	}
	if r.SignedBy != "" {
		fmt.Fprintf(&b, ", signed by key %s", r.SignedBy)
	}
	if r.Reason != "" {
		b.WriteString(": " + r.Reason)
	}
	return b.String()
}

func shortHash(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

// FetchOptions says what Fetch fetches, for which OS, and whom it trusts.
type FetchOptions struct {
	// Entries are the node config's extensions: references are fetched,
	// names never (a name is only ever what a store already holds).
	Entries []string
	// Host is the os-release the extensions must match: the running
	// image's, or the new image's for an upgrade.
	Host sysext.Release
	// Arch is the node's architecture in systemd's naming; "" is
	// sysext.SystemdArch.
	Arch string
	// Policy is the update policy: an extension needs what an update
	// artifact needs, checked before any of its image is read.
	Policy *upgrade.Policy
	// Store is the node's store (store.NodeDir).
	Store *store.Store
	// Artifact are options for reaching registries (keychain, context).
	Artifact []artifact.Option
	// Insecure says whether a reference may be read over plain HTTP
	// (update.insecure allows it for the update source's registry); nil: never.
	Insecure func(ref string) bool
	// Log gets one line per entry; nil logs nothing.
	Log func(format string, args ...any)
	// Progress, if set, gets the image bytes copied of the entry being fetched.
	Progress func(entry string, done, total int64)
}

// Fetch fetches every reference entry of o.Entries that the node's store
// has no match for: it resolves the reference for o.Host
// (artifact.ResolveExtension: from an index of extensions for several
// releases, the one whose signed config matches), checks its signature
// with the update policy before any byte of its image is read, checks the
// signed release against o.Host (sysext.Match), and adds it to the store
// (store.Add: digest and the whole verity tree checked). It returns one
// result per reference entry, in order; an entry that fails does not stop
// the others. The error is for what stops them all: a policy that trusts
// nothing, a cancelled context.
func Fetch(ctx context.Context, o FetchOptions) ([]FetchResult, error) {
	if o.Store == nil || o.Policy == nil {
		return nil, errors.New("fetch extensions: no store or no update policy")
	}
	if o.Arch == "" {
		o.Arch = sysext.SystemdArch
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var refs []int
	for i, e := range o.Entries {
		if nodeconfig.IsExtensionRef(e) {
			refs = append(refs, i)
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	// A policy that trusts nothing refuses before a registry is asked.
	if err := o.Policy.Usable(); err != nil {
		return nil, fmt.Errorf("fetch extensions: %w", err)
	}
	entries, listErr := o.Store.List()
	if listErr != nil {
		// What can be read still counts; the rest is fetched again.
		logf("extensions: %v", listErr)
	}
	var out []FetchResult
	for _, i := range refs {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		ref := o.Entries[i]
		if e, _, ok := store.Select(entries, ref, o.Host, o.Arch); ok {
			r := FetchResult{Index: i, Entry: ref, State: AlreadyFetched, Name: e.Config.Name, Version: e.Config.Version, Digest: e.Digest.String()}
			logf("extensions: %s", r)
			out = append(out, r)
			continue
		}
		r, e := fetchOne(ctx, &o, i, ref)
		if err := ctx.Err(); err != nil && !r.OK() {
			return out, err
		}
		if r.State == Fetched {
			entries = append(entries, e)
		}
		logf("extensions: %s", r)
		out = append(out, r)
	}
	return out, nil
}

// fetchOne fetches the reference entry i.
func fetchOne(ctx context.Context, o *FetchOptions, i int, ref string) (FetchResult, store.Entry) {
	r := FetchResult{Index: i, Entry: ref}
	fail := func(s FetchState, format string, args ...any) (FetchResult, store.Entry) {
		r.State, r.Reason = s, fmt.Sprintf(format, args...)
		return r, store.Entry{}
	}
	opts := append([]artifact.Option{artifact.WithContext(ctx)}, o.Artifact...)
	if o.Insecure != nil && o.Insecure(ref) {
		opts = append(opts, artifact.Insecure())
	}
	a, err := artifact.ResolveExtension(ref, o.Host, o.Arch, opts...)
	var nm *artifact.NoMatchError
	var ve *artifact.ValidationError
	switch {
	case errors.As(err, &nm):
		r.Releases = nm.Releases()
		return fail(NoMatch, "nothing it offers is for %s: %s", o.Host, offers(nm))
	case errors.Is(err, artifact.ErrIsUpdate), errors.As(err, &ve):
		return fail(FetchRefused, "%v", err)
	case err != nil:
		return fail(FetchFailed, "%v", err)
	}
	c := a.Extension
	r.Name, r.Version, r.Digest = c.Name, c.Version, a.Digest.String()
	// Trust first: nothing of an image no trusted key signed is read.
	key, unverified, err := o.Policy.VerifyUnsigned(a)
	if err != nil {
		return fail(FetchRefused, "%v", err)
	}
	if key != nil {
		r.SignedBy = key.ID
	}
	// ResolveExtension picked it by this very config; checked here again
	// because it is what the node will be judged by.
	if err := sysext.Match(c.Release, o.Host, o.Arch); err != nil {
		r.Releases = []string{c.Release.String()}
		return fail(NoMatch, "%s", err)
	}
	var progress func(done, total int64)
	if o.Progress != nil {
		progress = func(done, total int64) { o.Progress(ref, done, total) }
	}
	e, err := o.Store.Add(ctx, a, ref, progress)
	switch {
	case errors.Is(err, store.ErrCorrupt):
		return fail(FetchRefused, "%v", err)
	case err != nil:
		return fail(FetchFailed, "%v", err)
	}
	r.State = Fetched
	if unverified != nil {
		r.Reason = fmt.Sprintf("WARNING: not verified (%v); fetched because update.allowUnsigned is set (%s)",
			unverified, strings.Join(o.Policy.AllowUnsigned, ", "))
	}
	return r, e
}

// offers is what a reference offers, for a no-match message.
func offers(nm *artifact.NoMatchError) string {
	if len(nm.Offered) == 0 {
		return "it offers no extension"
	}
	var s []string
	for _, of := range nm.Offered {
		s = append(s, fmt.Sprintf("%s %s for %s (%s)", of.Config.Name, of.Config.Version, of.Config.Release, of.Why))
	}
	return "it offers " + strings.Join(s, "; ")
}
