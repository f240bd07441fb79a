package upgrade

import (
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/signature"
)

// Where trust comes from.
const (
	// FromImage is the running image: its spec's update.publicKeys and
	// update.allowUnsigned, baked into the verity-protected root
	// (/usr/lib/slate/update-keys, image.json) by the builder.
	FromImage = "image"
	// FromConfig is the node config this boot applied (update.publicKey,
	// update.publicKeys, update.allowUnsigned).
	FromConfig = "node config"
)

// Policy is whom an upgrade trusts. It fails closed: an artifact is
// installed only when one of Keys signed it, or when AllowUnsigned names
// something that allows unsigned artifacts; with neither, every upgrade is
// refused (Usable says how to fix that).
//
// The image's keys always count; a node config may add keys (to rotate from
// the fleet's config to a key the images in the field do not know) and may
// allow unsigned artifacts, but it cannot remove the image's keys: it is
// root-equivalent anyway (it runs units as root), so letting it widen the
// trust costs nothing, while a policy it could narrow would only make the
// image's own promise depend on every node's config.
type Policy struct {
	Keys []TrustedKey
	// AllowUnsigned lists what allows artifacts no trusted key signed:
	// FromImage, FromConfig, or both; empty: signatures are required.
	AllowUnsigned []string
}

// TrustedKey is one key an artifact may be signed by.
type TrustedKey struct {
	Key crypto.PublicKey
	// ID is signature.KeyID(Key): sha256:<16 hex>.
	ID string
	// From is FromImage or FromConfig; Where the key file in the image
	// (/usr/lib/slate/update-keys/01.pub) or the config's field
	// (update.publicKey, update.publicKeys[0]).
	From, Where string
}

// String is "sha256:0123456789abcdef (image /usr/lib/slate/update-keys/01.pub)".
func (k TrustedKey) String() string { return fmt.Sprintf("%s (%s %s)", k.ID, k.From, k.Where) }

// ErrNoTrust is returned, wrapped, when the policy trusts nothing: no key and
// no allowUnsigned. Every upgrade is refused.
var ErrNoTrust = errors.New("no update is trusted")

// Usable says whether the policy can let any artifact in; the error says
// how to make it.
func (p *Policy) Usable() error {
	if len(p.Keys) > 0 || len(p.AllowUnsigned) > 0 {
		return nil
	}
	return fmt.Errorf("%w: this image was built without update keys, and the node config adds none: "+
		"build the image with update.publicKeys in its spec (or slate build --update-key FILE), or add update.publicKey to the node config; "+
		"for development, update.allowUnsigned: true in the image spec or the node config lets unsigned artifacts in", ErrNoTrust)
}

// Describe is the policy in one line, for status and messages.
func (p *Policy) Describe() string {
	var ids []string
	for _, k := range p.Keys {
		ids = append(ids, k.String())
	}
	switch {
	case len(p.AllowUnsigned) > 0 && len(p.Keys) > 0:
		return fmt.Sprintf("unsigned artifacts allowed (update.allowUnsigned in the %s); signatures by %s are checked and recorded",
			strings.Join(p.AllowUnsigned, " and the "), strings.Join(ids, ", "))
	case len(p.AllowUnsigned) > 0:
		return fmt.Sprintf("unsigned artifacts allowed (update.allowUnsigned in the %s)", strings.Join(p.AllowUnsigned, " and the "))
	case len(p.Keys) > 0:
		return "only artifacts signed by " + strings.Join(ids, " or ")
	}
	return "every upgrade refused: " + p.Usable().Error()
}

// verdict is what the policy made of an artifact.
type verdict struct {
	// signedBy is the trusted key that verified the signature; nil when none did.
	signedBy *TrustedKey
	// unverified says why no trusted key verified it, when AllowUnsigned
	// let it in anyway.
	unverified error
	// downgrade says why the artifact is a downgrade (or cannot be told
	// from one), when Options.AllowDowngrade let it in anyway.
	downgrade string
}

// check verifies a's signature against the trusted keys: the first that
// verifies wins. It reads the signature image only, never a layer.
func (p *Policy) check(a *artifact.Artifact) (verdict, error) {
	if err := p.Usable(); err != nil {
		return verdict{}, err
	}
	var whys []string
	for i := range p.Keys {
		k := &p.Keys[i]
		_, err := a.VerifySignature(k.Key)
		if err == nil {
			return verdict{signedBy: k}, nil
		}
		whys = append(whys, err.Error())
		if errors.Is(err, signature.ErrNoSignature) {
			break // no signature at all: no other key will do better
		}
	}
	var why error
	if len(p.Keys) == 0 {
		why = errors.New("no key is trusted to check its signature")
	} else {
		var ids []string
		for _, k := range p.Keys {
			ids = append(ids, k.String())
		}
		why = fmt.Errorf("%s; updates must be signed by a trusted key: %s", strings.Join(whys, "; "), strings.Join(ids, ", "))
	}
	if len(p.AllowUnsigned) > 0 {
		return verdict{unverified: why}, nil
	}
	return verdict{}, why
}

// Verify checks a's signature (an update artifact's or a system
// extension's: the same keys sign both) as an upgrade does, reading the
// signatures only, never a layer. It returns the trusted key that verified
// it; nil with a nil error when no trusted key did but AllowUnsigned lets
// it in anyway. A policy that trusts nothing refuses everything (see
// Usable).
func (p *Policy) Verify(a *artifact.Artifact) (*TrustedKey, error) {
	k, _, err := p.VerifyUnsigned(a)
	return k, err
}

// VerifyUnsigned is Verify that also says, when AllowUnsigned let a in
// though no trusted key verified it, why none did (for a warning).
func (p *Policy) VerifyUnsigned(a *artifact.Artifact) (signedBy *TrustedKey, unverified, err error) {
	v, err := p.check(a)
	if err != nil {
		return nil, nil, err
	}
	return v.signedBy, v.unverified, nil
}

// ReadImageInfo reads the running image's image.json under root ("/" on a
// node). An image built before slate baked it in has none: nil, nil.
func ReadImageInfo(root string) (*boot.ImageInfo, error) {
	p := filepath.Join(root, filepath.FromSlash(boot.ImageInfoFile))
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	i, err := boot.ParseImageInfo(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return i, nil
}

// LoadPolicy is the policy in force: the running image's keys (under root,
// "/" on a node) and its update.allowUnsigned (info, its image.json; nil
// for none), with what the node config cfg adds. A key that cannot be
// read or parsed is an error, never skipped: the caller refuses upgrades.
func LoadPolicy(root string, info *boot.ImageInfo, cfg *nodeconfig.Config) (*Policy, error) {
	p := &Policy{}
	add := func(text, from, where string) error {
		k, err := signature.ParsePublicKey(text)
		if err != nil {
			return fmt.Errorf("update key %s (%s): %w", where, from, err)
		}
		id := signature.KeyID(k)
		if !slices.ContainsFunc(p.Keys, func(t TrustedKey) bool { return t.ID == id }) {
			p.Keys = append(p.Keys, TrustedKey{Key: k, ID: id, From: from, Where: where})
		}
		return nil
	}
	dir := filepath.Join(root, filepath.FromSlash(boot.UpdateKeysDir))
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, de := range des { // sorted by name: 01.pub first
		if !strings.HasSuffix(de.Name(), ".pub") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			return nil, err
		}
		if err := add(string(b), FromImage, "/"+path.Join(boot.UpdateKeysDir, de.Name())); err != nil {
			return nil, err
		}
	}
	if info != nil && info.AllowUnsigned {
		p.AllowUnsigned = append(p.AllowUnsigned, FromImage)
	}
	if cfg != nil {
		if cfg.Update.PublicKey != "" {
			if err := add(cfg.Update.PublicKey, FromConfig, "update.publicKey"); err != nil {
				return nil, err
			}
		}
		for i, k := range cfg.Update.PublicKeys {
			if err := add(k, FromConfig, fmt.Sprintf("update.publicKeys[%d]", i)); err != nil {
				return nil, err
			}
		}
		if cfg.Update.AllowUnsigned {
			p.AllowUnsigned = append(p.AllowUnsigned, FromConfig)
		}
	}
	return p, nil
}
