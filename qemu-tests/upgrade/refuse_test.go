package upgrade_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/signature"
)

// TestRefusals is scenario 6: in one boot of a v1 node, `slate upgrade`
// refuses a truncated artifact, one whose root does not match its digest,
// one whose root is larger than the slot and one for another architecture,
// each with a clear message; the last two before downloading the root.
// The node's image trusts the test key only: an unsigned artifact, one
// signed by another key and one under a valid signature of another
// artifact are refused too, before downloading the root; so are, signed by
// the test key, a downgrade (an artifact whose image was created before
// v1's) and an artifact whose command line carries slate.config=.
// `slate rollback` refuses too (slot B is empty). Status is unchanged and
// the next boot is still v1.
func TestRefusals(t *testing.T) {
	begin(t)
	v1img, v2 := image(t, "v1"), image(t, "v2")
	reg := testRegistry(t)
	a, err := artifact.Open(artifact.LayoutPrefix+v2.Artifact, reg.opts...)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := a.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	rootDigest := m2.Layers[0].Digest

	// The same artifact, served wrongly.
	reg.push(t, v2.Artifact, "slate/truncated")
	reg.Fault("slate/truncated", rootDigest, truncate)
	reg.push(t, v2.Artifact, "slate/corrupt")
	reg.Fault("slate/corrupt", rootDigest, corrupt)

	// A root three times the slot: only the manifest and config exist; the
	// root layer is a claim the agent must check before fetching anything.
	big := a.Config
	big.Version = "v9-big"
	big.Root.DataSize = 3 * slotSize
	big.Root.HashOffset = big.Root.DataSize
	big.Root.Size = big.Root.DataSize + 64<<20
	bigLayers := append([]v1.Descriptor(nil), m2.Layers...)
	bigLayers[0].Size = big.Root.Size
	bigLayers[0].Digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256([]byte("a root that was never uploaded")))}
	reg.putCrafted(t, "slate/big", big.Version, big, bigLayers)

	// v2's layers, but a config saying arm64.
	arm := a.Config
	arm.Architecture = "arm64"
	reg.putCrafted(t, "slate/arm64", arm.Version, arm, m2.Layers)

	// v2 unsigned, signed by another key, and under v1's signature (valid,
	// by the right key, for another digest).
	reg.pushSigned(t, v2.Artifact, "slate/unsigned", nil)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	reg.pushSigned(t, v2.Artifact, "slate/otherkey", other)
	copied := reg.pushSigned(t, v2.Artifact, "slate/copied", nil)
	ropts := []remote.Option{remote.WithAuthFromKeychain(authn.NewMultiKeychain())}
	v1sigs, err := remote.Image(mustTag(t, reg.Host+"/slate/node:"+signature.Tag(v1img.Digest)), ropts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustTag(t, reg.Host+"/slate/copied:"+signature.Tag(copied)), v1sigs, ropts...); err != nil {
		t.Fatal(err)
	}

	// Signed by the right key, v2's layers with another config: one that
	// says the image was created a day before v1's (v1 and v2 share the
	// reference image's time), and one whose command line would replace
	// the node's config.
	old := a.Config
	old.Version = "v0-old"
	old.Created = old.Created.Add(-24 * time.Hour)
	reg.putCrafted(t, "slate/old", old.Version, old, m2.Layers)
	if _, err := artifact.Sign(reg.Host+"/slate/old:"+old.Version, testKey(), "", reg.opts...); err != nil {
		t.Fatal(err)
	}
	withConfig := a.Config
	withConfig.Version = "v2-config"
	withConfig.Cmdline += " slate.config=data:;base64,YXBpVmVyc2lvbjogc2xhdGUuZGV2L3YxYWxwaGExCmtpbmQ6IE5vZGVDb25maWcK"
	reg.putCrafted(t, "slate/config", withConfig.Version, withConfig, m2.Layers)
	if _, err := artifact.Sign(reg.Host+"/slate/config:"+withConfig.Version, testKey(), "", reg.opts...); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, ref string
		msg       *regexp.Regexp
		noRoot    string // repo whose root must not be downloaded
	}{
		{"truncated", reg.GuestRef("slate/truncated:v2"), regexp.MustCompile(`(?i)EOF|truncat|short|gave \d+ bytes`), ""},
		{"corrupt", reg.GuestRef("slate/corrupt:v2"), regexp.MustCompile(`(?i)digest|sha256|checksum`), ""},
		{"too-big", reg.GuestRef("slate/big:v9-big"), regexp.MustCompile(`(?i)(larger|too (big|large)|does not fit).*slot|slot.*(larger|too (big|large)|does not fit)`), "slate/big"},
		{"arm64", reg.GuestRef("slate/arm64:v2"), regexp.MustCompile(`arm64.*amd64|amd64.*arm64`), "slate/arm64"},
		{"unsigned", reg.GuestRef("slate/unsigned:v2"), regexp.MustCompile(`not signed.*updates must be signed by a trusted key: sha256:[0-9a-f]{16} \(image /usr/lib/slate/update-keys/01.pub\)`), "slate/unsigned"},
		{"otherkey", reg.GuestRef("slate/otherkey:v2"), regexp.MustCompile(`not made by key sha256:[0-9a-f]{16}`), "slate/otherkey"},
		{"copiedsig", reg.GuestRef("slate/copied:v2"), regexp.MustCompile(`signs ` + v1img.Digest.String() + `, not this artifact`), "slate/copied"},
		{"downgrade", reg.GuestRef("slate/old:v0-old"), regexp.MustCompile(`\(v0-old\) is a downgrade: its image was created .*, before the running image \(created .*, by /usr/lib/slate/image.json\); ` +
			"`slate upgrade --allow-downgrade` installs it"), "slate/old"},
		{"cmdline", reg.GuestRef("slate/config:v2-config"), regexp.MustCompile(`its kernel command line carries "slate.config=data:;base64,YXBp[^"]*": an image may set no slate.\* argument but slate.reboot_delay`), "slate/config"},
	}
	script := probe + "waitnet\nstatus BEFORE\n"
	for _, c := range cases {
		script += fmt.Sprintf("try %s slate upgrade --no-reboot %s\n", c.name, c.ref)
	}
	// The image the node runs: nothing to do, and no reboot (without
	// --no-reboot: a wrong reboot would cut the script short).
	script += "try uptodate slate upgrade " + v1img.Ref + "\n"
	script += "try rollback slate rollback --no-reboot\nstatus AFTER\n" + testnode.ThenReboot

	m := freshV1(t, "refusals", script)
	b := waitBoot(t, m, exitTimeout)
	if b.Script == nil || !b.Ended {
		t.Fatalf("the script did not finish: %s; console:\n%s", b, tail(b.Lines, 80))
	}
	r := b.Script
	for _, c := range append(cases, struct {
		name, ref string
		msg       *regexp.Regexp
		noRoot    string
	}{"rollback", "", regexp.MustCompile(`(?i)empty|no image|nothing`), ""}) {
		out, _ := base64.StdEncoding.DecodeString(r.Get("OUT-" + c.name))
		msg := strings.TrimSpace(string(out))
		t.Logf("%s: exit %s: %s", c.name, r.Get("EXIT-"+c.name), msg)
		if r.Get("EXIT-"+c.name) == "0" {
			t.Errorf("%s: the agent did not refuse", c.name)
		} else if !c.msg.MatchString(msg) {
			t.Errorf("%s: message %q does not say why (want %s)", c.name, msg, c.msg)
		}
		if c.noRoot != "" {
			root := rootDigest
			if c.name == "too-big" {
				root = bigLayers[0].Digest
			}
			if n := reg.Gets(c.noRoot, root); n > 0 {
				t.Errorf("%s: the agent fetched the root layer (%d GETs) before refusing", c.name, n)
			}
		}
	}
	if out, _ := base64.StdEncoding.DecodeString(r.Get("OUT-uptodate")); r.Get("EXIT-uptodate") != "0" || !strings.Contains(string(out), "already up to date") {
		t.Errorf("upgrade to the running image: exit %s, %q; want exit 0 and \"already up to date\"", r.Get("EXIT-uptodate"), out)
	} else {
		t.Logf("uptodate: %s", strings.TrimSpace(string(out)))
	}
	if n := reg.Gets("slate/truncated", rootDigest) + reg.Gets("slate/corrupt", rootDigest); n < 2 {
		t.Errorf("the truncated and corrupt roots were fetched %d times, want at least once each", n)
	}

	before, after := getStatusKey(t, r, "BEFORE"), getStatusKey(t, r, "AFTER")
	logStatus(t, "after the refusals", r)
	if !reflect.DeepEqual(before.Slots, after.Slots) || after.LastRollback != nil {
		t.Errorf("the refusals changed the slots:\nbefore %v\nafter  %v (last rollback %+v)", before.Slots, after.Slots, after.LastRollback)
	}
	checkSlot(t, "after the refusals", after, "a", "good", "v1")
	if s := after.Slot("b"); s.State != "empty" {
		t.Errorf("after the refusals: %v, want slot b empty", s)
	}
	if b.Exit.Reason != "guest-reset" {
		t.Fatalf("the refusals' boot ended with %s, want the script's reboot", b.Exit)
	}

	nextBoot(t, m, probe+"status\n"+testnode.ThenPoweroff)
	b = waitBoot(t, m, exitTimeout)
	if b.Script == nil || b.Slot != "a" || b.Script.Get("VERSION") != "v1" {
		t.Fatalf("the boot after the refusals: %s; want slot a (v1)", b)
	}
	if st := getStatus(t, b.Script); !reflect.DeepEqual(before.Slots, st.Slots) {
		t.Errorf("the slots after a reboot: %v, before the refusals %v", st.Slots, before.Slots)
	}
}

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}
