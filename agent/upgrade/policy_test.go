package upgrade

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/signature"
)

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemOf(t testing.TB, k crypto.PublicKey) string {
	t.Helper()
	b, err := signature.MarshalPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// imageRoot is a running root whose image trusts keys (update-keys/NN.pub)
// and, with allowUnsigned, unsigned artifacts (image.json).
func imageRoot(t testing.TB, allowUnsigned bool, keys ...crypto.PublicKey) (string, *boot.ImageInfo) {
	t.Helper()
	root := t.TempDir()
	info := boot.ImageInfo{Version: "1.0", Source: "sha256:abc", Created: testCreated, AllowUnsigned: allowUnsigned}
	put(t, root, boot.ImageInfoFile, string(info.Marshal()))
	for i, k := range keys {
		put(t, root, boot.UpdateKeysDir+"/0"+string(rune('1'+i))+".pub", pemOf(t, k))
	}
	return root, &info
}

// TestAccepted: what the policy lets in, and what the upgrade says about it.
func TestAccepted(t *testing.T) {
	configKey := newKey(t)
	otherImageKey := newKey(t)
	byConfigKey := makeArtifact(t, art{version: "2.1", unsigned: true})
	if _, err := artifact.Sign(byConfigKey.ref, configKey, ""); err != nil {
		t.Fatal(err)
	}
	unsigned := makeArtifact(t, art{version: "2.2", unsigned: true})
	signed := makeArtifact(t, art{version: "2.3"})
	older := makeArtifact(t, art{version: "0.9", created: testCreated.Add(-24 * time.Hour)})
	newer := makeArtifact(t, art{version: "3.0", created: testCreated.Add(24 * time.Hour)})
	imageID, configID := signature.KeyID(imageKey.Public()), signature.KeyID(configKey.Public())

	for _, c := range []struct {
		name          string
		ref           string
		allowUnsigned bool               // the image's update.allowUnsigned
		imageKeys     []crypto.PublicKey // the image's update keys
		config        nodeconfig.Update
		downgrade     bool
		signedBy      string
		log           string // a line logged
	}{
		{"image key, signed by it", signed.ref, false, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{}, false,
			imageID, "upgrade: 2.3 (DIGEST) is signed by key " + imageID + " (image /usr/lib/slate/update-keys/01.pub)"},
		{"the second image key", signed.ref, false, []crypto.PublicKey{otherImageKey.Public(), imageKey.Public()}, nodeconfig.Update{}, false,
			imageID, "upgrade: 2.3 (DIGEST) is signed by key " + imageID + " (image /usr/lib/slate/update-keys/02.pub)"},
		{"a key the node config adds", byConfigKey.ref, false, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{PublicKey: pemOf(t, configKey.Public())}, false,
			configID, "upgrade: 2.1 (DIGEST) is signed by key " + configID + " (node config update.publicKey)"},
		{"a key the node config adds, no image keys", byConfigKey.ref, false, nil, nodeconfig.Update{PublicKeys: []string{pemOf(t, otherImageKey.Public()), pemOf(t, configKey.Public())}}, false,
			configID, "upgrade: 2.1 (DIGEST) is signed by key " + configID + " (node config update.publicKeys[1])"},
		{"the image's key still counts beside the config's", signed.ref, false, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{PublicKey: pemOf(t, configKey.Public())}, false,
			imageID, "upgrade: 2.3 (DIGEST) is signed by key " + imageID + " (image /usr/lib/slate/update-keys/01.pub)"},
		{"unsigned, allowed by the image", unsigned.ref, true, nil, nodeconfig.Update{}, false,
			"", "upgrade: WARNING: 2.2 (DIGEST) is not verified: no key is trusted to check its signature; installed because update.allowUnsigned is set (image)"},
		{"unsigned, allowed by the image that has keys", unsigned.ref, true, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{}, false,
			"", "upgrade: WARNING: 2.2 (DIGEST) is not verified: " + unsigned.ref + ": not signed"},
		{"unsigned, allowed by the node config", unsigned.ref, false, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{AllowUnsigned: true}, false,
			"", "upgrade: WARNING: 2.2 (DIGEST) is not verified: " + unsigned.ref + ": not signed"},
		{"signed while unsigned is allowed: the signature is recorded", signed.ref, true, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{}, false,
			imageID, "upgrade: 2.3 (DIGEST) is signed by key " + imageID},
		{"older, with --allow-downgrade", older.ref, false, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{}, true,
			imageID, "upgrade: WARNING: artifact " + older.ref + " (0.9) is a downgrade: its image was created 2024-05-31T12:00:00Z, before the running image (created 2024-06-01T12:00:00Z, by /usr/lib/slate/image.json); installed because of --allow-downgrade"},
		{"created as the running image (a rebuild)", signed.ref, false, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{}, false,
			imageID, "upgrade: 2.3 (DIGEST) is signed by key"},
		{"newer", newer.ref, false, []crypto.PublicKey{imageKey.Public()}, nodeconfig.Update{}, false,
			imageID, "upgrade: 3.0 (DIGEST) is signed by key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			root, info := imageRoot(t, c.allowUnsigned, c.imageKeys...)
			pol, err := LoadPolicy(root, info, &nodeconfig.Config{Update: c.config})
			if err != nil {
				t.Fatal(err)
			}
			n := newNode(t, "slate-a.conf")
			o := n.options(c.ref)
			o.Policy, o.Image, o.AllowDowngrade = *pol, info, c.downgrade
			res, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if res.SignedBy != c.signedBy {
				t.Errorf("signed by %q, want %q", res.SignedBy, c.signedBy)
			}
			want := strings.ReplaceAll(c.log, "DIGEST", res.Digest)
			if !slices.ContainsFunc(n.log, func(l string) bool { return strings.HasPrefix(l, want) }) {
				t.Errorf("logged:\n%s\nwant a line starting with\n%s", strings.Join(n.log, "\n"), want)
			}
			infos, err := n.esp.Read()
			if err != nil {
				t.Fatal(err)
			}
			if r := infos[boot.SlotB].Release; r == nil || r.SignedBy != c.signedBy || infos[boot.SlotB].State != "trying" {
				t.Errorf("slot b: %+v, release %+v", infos[boot.SlotB], r)
			}
		})
	}
}

func TestLoadPolicy(t *testing.T) {
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	root, info := imageRoot(t, false, k1.Public(), k2.Public())
	put(t, root, boot.UpdateKeysDir+"/README", "not a key")
	cfg := &nodeconfig.Config{Update: nodeconfig.Update{PublicKey: pemOf(t, k2.Public()), PublicKeys: []string{pemOf(t, k3.Public())}, AllowUnsigned: true}}
	p, err := LoadPolicy(root, info, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range p.Keys {
		got = append(got, k.String())
	}
	// k2, in both, counts as the image's: a config adds keys and removes none.
	want := []string{
		signature.KeyID(k1.Public()) + " (image /usr/lib/slate/update-keys/01.pub)",
		signature.KeyID(k2.Public()) + " (image /usr/lib/slate/update-keys/02.pub)",
		signature.KeyID(k3.Public()) + " (node config update.publicKeys[0])",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(p.AllowUnsigned) != 1 || p.AllowUnsigned[0] != FromConfig {
		t.Errorf("policy %q, unsigned allowed by %q; want %q by the node config", got, p.AllowUnsigned, want)
	}
	if d := p.Describe(); !strings.HasPrefix(d, "unsigned artifacts allowed (update.allowUnsigned in the node config); signatures by "+want[0]) {
		t.Errorf("Describe: %s", d)
	}

	// No image keys, no config: nothing is trusted, and it says how to fix it.
	bare, _ := imageRoot(t, false)
	p, err = LoadPolicy(bare, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Usable(); !errors.Is(err, ErrNoTrust) || !strings.Contains(err.Error(), "update.publicKeys") || !strings.Contains(err.Error(), "--update-key") ||
		!strings.Contains(err.Error(), "update.allowUnsigned") {
		t.Errorf("Usable: %v", err)
	}
	if d := p.Describe(); !strings.HasPrefix(d, "every upgrade refused: no update is trusted") {
		t.Errorf("Describe: %s", d)
	}
	if p, _ := LoadPolicy(bare, &boot.ImageInfo{AllowUnsigned: true}, nil); p.Usable() != nil || p.Describe() != "unsigned artifacts allowed (update.allowUnsigned in the image)" {
		t.Errorf("allowed by the image: %q, %v", p.Describe(), p.Usable())
	}
	if p, _ := LoadPolicy(bare, nil, &nodeconfig.Config{Update: nodeconfig.Update{PublicKey: pemOf(t, k1.Public())}}); p.Describe() != "only artifacts signed by "+signature.KeyID(k1.Public())+" (node config update.publicKey)" {
		t.Errorf("a config key: %q", p.Describe())
	}

	// A key that cannot be used is an error, never skipped.
	put(t, bare, boot.UpdateKeysDir+"/01.pub", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
	if _, err := LoadPolicy(bare, nil, nil); err == nil || !strings.Contains(err.Error(), "update key /usr/lib/slate/update-keys/01.pub (image)") {
		t.Errorf("a bad image key: %v", err)
	}
	if _, err := LoadPolicy(root, nil, &nodeconfig.Config{Update: nodeconfig.Update{PublicKeys: []string{"MCowBQYDK2VwAyEA"}}}); err == nil ||
		!strings.Contains(err.Error(), "update key update.publicKeys[0] (node config)") {
		t.Errorf("a bad config key: %v", err)
	}
}

func TestReadImageInfo(t *testing.T) {
	if i, err := ReadImageInfo(t.TempDir()); i != nil || err != nil {
		t.Errorf("no image.json: %+v, %v", i, err)
	}
	root, want := imageRoot(t, true)
	if i, err := ReadImageInfo(root); err != nil || *i != *want {
		t.Errorf("image.json: %+v, %v; want %+v", i, err, want)
	}
	os.WriteFile(filepath.Join(root, filepath.FromSlash(boot.ImageInfoFile)), []byte(`{"version": "1"}`), 0o644)
	if _, err := ReadImageInfo(root); err == nil || !strings.Contains(err.Error(), "no created time") {
		t.Errorf("a broken image.json: %v", err)
	}
}
