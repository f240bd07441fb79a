package builder

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
)

// Extension is a system extension the image carries (slate build
// --extension, the spec's extensions), in its root's store
// (/usr/lib/slate/extensions).
type Extension struct {
	// Ref is how it was given.
	Ref string `json:"ref"`
	artifact.CarriedExtension
	// SignedBy is the update key (signature.KeyID) that verified it; ""
	// when the image has no update key, or update.allowUnsigned let an
	// extension none of them signed in (Unverified says why then).
	SignedBy   string `json:"signedBy,omitempty"`
	Unverified string `json:"unverified,omitempty"`
}

// extensionSet is what the build does with the extensions: opened,
// checked and stored before the root's one pass, which carries their store
// as a layer; matched against the image's os-release after it.
type extensionSet struct {
	exts  []Extension
	layer v1.Layer // nil: none
}

// extensions opens each of the spec's extensions, checks its signature
// with the image's update keys (when it has any: unsigned is refused
// unless update.allowUnsigned), its platform, and that no name is given
// twice, and copies it into a store in the work directory (store.Add
// checks its digest and its whole verity tree). The store is rendered as a
// layer dated created.
func (b *build) extensions(ctx context.Context, keys []crypto.PublicKey, created time.Time) (*extensionSet, error) {
	s := &b.o.Spec
	set := &extensionSet{}
	if len(s.Extensions) == 0 {
		return set, nil
	}
	b.step("extensions")
	defer b.done()
	st := store.Open(filepath.Join(b.work, "extensions"))
	opts := append([]artifact.Option{artifact.WithContext(ctx)}, b.o.ExtensionOptions...)
	names := map[string]string{}
	for i, ref := range s.Extensions {
		field := fmt.Sprintf("extensions[%d] %s", i, ref)
		a, err := artifact.OpenExtension(ref, opts...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		c := a.Extension
		field = fmt.Sprintf("%s (%s %s)", field, c.Name, c.Version)
		if c.OS != boot.OS || c.Architecture != boot.Arch {
			return nil, fmt.Errorf("%s: it is for %s/%s; slate builds %s/%s images", field, c.OS, c.Architecture, boot.OS, boot.Arch)
		}
		if prev, ok := names[c.Name]; ok {
			return nil, fmt.Errorf("%s: the extension %s is also %s; an image carries one extension of a name", field, c.Name, prev)
		}
		names[c.Name] = fmt.Sprintf("extensions[%d] %s", i, ref)
		e := Extension{Ref: ref, CarriedExtension: artifact.CarriedExtension{Name: c.Name, Version: c.Version, Release: c.Release, Digest: a.Digest.String()}}
		// Before any of its image is read, as a node would.
		if len(keys) > 0 {
			id, why := verifyExtension(a, keys)
			switch {
			case id != "":
				e.SignedBy = id
			case s.Update.AllowUnsigned:
				e.Unverified = why
			default:
				return nil, fmt.Errorf("%s: not signed by an update key of this image: %s; sign it (slate sign) with one of them, or set update.allowUnsigned (development only)", field, why)
			}
		}
		if _, err := st.Add(ctx, a, "", func(done, _ int64) { b.p.Bytes(done) }); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		set.exts = append(set.exts, e)
	}
	l, err := st.Layer(created)
	if err != nil {
		return nil, err
	}
	set.layer = l
	b.res.Extensions = set.exts
	return set, nil
}

// verifyExtension checks a's signature with keys; it returns the ID of the
// key that verified it, or why none did.
func verifyExtension(a *artifact.Artifact, keys []crypto.PublicKey) (string, string) {
	var why []string
	for _, k := range keys {
		_, err := a.VerifySignature(k)
		if err == nil {
			return signature.KeyID(k), ""
		}
		why = append(why, err.Error())
		if errors.Is(err, signature.ErrNoSignature) {
			break // nothing attached: no other key does better
		}
	}
	return "", strings.Join(why, "; ")
}

// layers is the layer to stack above the node files: none without extensions.
func (x *extensionSet) layers() []v1.Layer {
	if x.layer == nil {
		return nil
	}
	return []v1.Layer{x.layer}
}

// match checks each extension against the image's os-release (as the
// rootfs pass found it), as systemd-sysext on its nodes will: a mismatch
// would never be merged.
func (x *extensionSet) match(osRelease []byte) error {
	if len(x.exts) == 0 {
		return nil
	}
	if len(osRelease) == 0 {
		return errors.New("the image has no os-release (/etc/os-release or /usr/lib/os-release): the extensions it is to carry cannot be matched to it")
	}
	host, _, err := sysext.ParseRelease(osRelease)
	if err != nil {
		return fmt.Errorf("the image's os-release: %w", err)
	}
	var errs []error
	for _, e := range x.exts {
		if err := sysext.Match(e.Release, host, sysext.SystemdArch); err != nil {
			errs = append(errs, fmt.Errorf("extension %s %s (%s) is for %s, and this image's os-release is %s: %v; systemd-sysext would never merge it",
				e.Name, e.Version, e.Ref, e.Release, host, err))
		}
	}
	return errors.Join(errs...)
}

// carried is what the update artifact records.
func (x *extensionSet) carried() []artifact.CarriedExtension {
	var out []artifact.CarriedExtension
	for _, e := range x.exts {
		out = append(out, e.CarriedExtension)
	}
	return out
}
