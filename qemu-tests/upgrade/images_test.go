package upgrade_test

import (
	"archive/tar"
	"fmt"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/builder"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testimage"
	"github.com/slate-os/slate/qemu-tests/testnode"
)

// VersionFile is the marker every test image carries: its version.
const VersionFile = "/usr/share/slate-test/version"

// The demo app is the unit the node config requires for a healthy boot.
const demoApp = "demo-app.service"

func demoUnit(execStart string) string {
	return `[Unit]
Description=slate test demo app
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=` + execStart + `
[Install]
WantedBy=multi-user.target
`
}

// appLayer is a test image's own layer: the version marker and the demo
// app, enabled in the image (the root is read-only: no systemctl enable).
func appLayer(version, execStart string) []testimage.Entry {
	return []testimage.Entry{
		testimage.Dir("usr/share/slate-test"),
		testimage.File(VersionFile[1:], version+"\n"),
		testimage.Dir("usr/lib/systemd/system"),
		testimage.File("usr/lib/systemd/system/"+demoApp, demoUnit(execStart)),
		testimage.Dir("usr/lib/systemd/system/multi-user.target.wants"),
		{Name: "usr/lib/systemd/system/multi-user.target.wants/" + demoApp, Type: tar.TypeSymlink, Link: "../" + demoApp},
	}
}

// panicInit replaces systemd: the init's switch_root execs it, it exits, and
// the kernel panics ("Attempted to kill init!"); panic=10 on the builder's
// command line makes it reboot, so the try is spent.
const panicInit = `#!/bin/sh
echo "slate-test: the /sbin/init of v3-panic exits"
exit 1
`

// variants are the test images by name.
var variants = map[string]testnode.Variant{
	"v1": {Name: "v1", Version: "v1", Entries: appLayer("v1", "/bin/true"), Disk: true, Tweak: sizes},
	"v2": {Name: "v2", Version: "v2", Entries: appLayer("v2", "/bin/true"), Tweak: sizes},
	"v3-panic": {Name: "v3-panic", Version: "v3-panic", Tweak: sizes,
		Entries: append(appLayer("v3-panic", "/bin/true"), testimage.Entry{Name: "usr/sbin/init", Mode: 0o755, Body: panicInit})},
	"v3-nobless": {Name: "v3-nobless", Version: "v3-nobless", Tweak: sizes, Entries: append(appLayer("v3-nobless", "/bin/true"),
		// Whiteouts: an image without systemd-bless-boot and its generator.
		testimage.File("usr/lib/systemd/.wh.systemd-bless-boot", ""),
		testimage.Dir("usr/lib/systemd/system-generators"),
		testimage.File("usr/lib/systemd/system-generators/.wh.systemd-bless-boot-generator", ""))},
	// Across the reference matrix: images as debootstrap leaves them, the
	// kernel, systemd and systemd-boot of another Debian release.
	"bookworm": {Name: "bookworm", Version: "bookworm", Base: "bookworm-generic", Entries: appLayer("bookworm", "/bin/true"), Disk: true, Tweak: matrixSizes},
	"trixie":   {Name: "trixie", Version: "trixie", Base: "trixie", Entries: appLayer("trixie", "/bin/true"), Tweak: matrixSizes},
}

// matrixSizes: slots that hold either release's root (the images keep
// apt's downloads); the state partition as the builder sizes it.
func matrixSizes(s *spec.Spec) { s.Disk.SlotSize = 2 << 30 }

// sizes: 1 GiB slots, whatever the root (so the too-big artifact's claim is
// plainly too big), and room on /var for the journal and kept logs.
func sizes(s *spec.Spec) {
	s.Disk.SlotSize = 1 << 30
	s.Disk.StateSize = 256 << 20
}

// slotSize is the slot partitions' size on the test disk.
const slotSize = 1 << 30

// published is a built test image whose artifact is in the test registry.
type published struct {
	*builder.Result
	// Ref is the artifact's reference as the guest sees it
	// (10.0.2.2:PORT/slate/node:VERSION).
	Ref    string
	Digest v1.Hash
}

var (
	pubMu sync.Mutex
	pubs  = map[string]*published{}
)

// image builds test image name (once) and pushes its artifact to the test
// registry's slate/node repository, signed by the test key. Every test image
// trusts that key (update.publicKeys), as a fleet's images trust its key:
// the nodes need no config to check signatures.
func image(t testing.TB, name string) *published {
	t.Helper()
	v, ok := variants[name]
	if !ok {
		t.Fatalf("no test image %q", name)
	}
	tweak := v.Tweak
	v.Tweak = func(s *spec.Spec) {
		if tweak != nil {
			tweak(s)
		}
		s.Update.PublicKeys = append(s.Update.PublicKeys, testPublicKey())
	}
	res := testnode.BuildVariant(t, v)
	pubMu.Lock()
	defer pubMu.Unlock()
	if p, ok := pubs[name]; ok {
		return p
	}
	reg := testRegistry(t)
	d := reg.push(t, res.Artifact, "slate/node")
	p := &published{Result: res, Ref: reg.GuestRef(fmt.Sprintf("slate/node:%s", res.Version)), Digest: d}
	pubs[name] = p
	return p
}
