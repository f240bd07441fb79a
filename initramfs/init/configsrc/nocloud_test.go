package configsrc

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/record"
)

const noCloudMetaData = "instance-id: iid-node-1\nlocal-hostname: node-1\n"

func TestNoCloud(t *testing.T) {
	imgs := t.TempDir()
	for _, tc := range []struct {
		name   string
		img    func() string
		config bool
		kind   string
	}{
		{"vfat CIDATA", func() string {
			return mkVfat(t, imgs, "c.img", 4, 12, "CIDATA", map[string]string{"user-data": nodeConfig, "meta-data": noCloudMetaData})
		}, true, UserDataConfig},
		{"iso9660 cidata", func() string {
			return mkISO(t, imgs, "c.iso", "cidata", false, map[string]string{"user-data": nodeConfig, "meta-data": noCloudMetaData, "network-config": "version: 2\n"})
		}, true, UserDataConfig},
		{"cloud-config", func() string {
			return mkISO(t, imgs, "c.iso", "cidata", false, map[string]string{"user-data": cloudConfig, "meta-data": noCloudMetaData})
		}, false, "not a slate node config (#cloud-config)"},
		{"no user-data", func() string {
			return mkISO(t, imgs, "c.iso", "cidata", false, map[string]string{"meta-data": noCloudMetaData})
		}, false, UserDataNone},
	} {
		fb := newFakeBlock(t)
		fb.add(t, "vdb", tc.img())
		fb.add(t, "vdc", mkISO(t, imgs, "o.iso", "SLATE-CONFIG", false, map[string]string{"slate.yaml": driveConfig}))
		te := newTestEnv("", "")
		te.Network = nil
		b, err := NoCloud{Drives: Drives(fb.source(t, time.Second))}.Fetch(te.ctx())
		if tc.config && (err != nil || string(b) != nodeConfig) || !tc.config && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Fetch = %q, %v", tc.name, b, err)
		}
		want := record.Platform{Name: "nocloud", InstanceID: "iid-node-1", Hostname: "node-1", UserData: tc.kind}
		if te.Facts == nil || *te.Facts != want {
			t.Errorf("%s: facts %+v, want %+v", tc.name, te.Facts, want)
		}
		dev := filepath.Join(fb.dev, "vdb")
		if wantLoc := map[bool]string{true: dev}[tc.config]; te.Location != wantLoc {
			t.Errorf("%s: location %q", tc.name, te.Location)
		}
		if strings.Join(fb.mounted, " ") != "vdb" || fb.umounts != 1 {
			t.Errorf("%s: mounted %v, %d unmounts", tc.name, fb.mounted, fb.umounts)
		}
		if log := te.log(t); !strings.Contains(log, "nocloud: drive "+dev) {
			t.Errorf("%s: notes %q", tc.name, log)
		}
	}
	// No drive: not found, no facts, no wait (the devices are long loaded).
	fb := newFakeBlock(t)
	fb.add(t, "vda", mkVfat(t, imgs, "esp.img", 4, 12, "ESP", nil))
	te := newTestEnv("", "")
	start := time.Now()
	if _, err := (NoCloud{Drives: Drives(fb.source(t, 5*time.Second))}).Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || te.Facts != nil ||
		len(fb.mounted) != 0 || time.Since(start) > time.Second {
		t.Errorf("no drive: %v, facts %+v, mounted %v", err, te.Facts, fb.mounted)
	}
	// Two: refused.
	fb.add(t, "vdb", mkISO(t, imgs, "a.iso", "cidata", false, nil))
	fb.add(t, "vdc", mkVfat(t, imgs, "b.img", 4, 12, "cidata", nil))
	if _, err := (NoCloud{Drives: Drives(fb.source(t, time.Second))}).Fetch(te.ctx()); err == nil || errors.Is(err, ErrNotFound) ||
		!strings.HasPrefix(err.Error(), "nocloud: 2 filesystems are labelled as NoCloud drives (cidata): ") {
		t.Errorf("two drives: %v", err)
	}
}

func TestNoCloudMeta(t *testing.T) {
	for in, want := range map[string]map[string]string{
		noCloudMetaData: {"instance-id": "iid-node-1", "local-hostname": "node-1"},
		"instance-id: \"iid: quoted\"\nlocal-hostname: 'h' \n": {"instance-id": "iid: quoted", "local-hostname": "h"},
		"# comment\ninstance-id: i-1 # trailing\npublic-keys:\n  - ssh-ed25519 AAAA\nnetwork-interfaces: |\n  iface eth0 inet dhcp\n": {
			"instance-id": "i-1", "public-keys": "", "network-interfaces": "|"},
		`{"instance-id": "iid-json", "local-hostname": "j", "n": 1}`: {"instance-id": "iid-json", "local-hostname": "j"},
		"instance-id: a\ninstance-id: b\n":                           {"instance-id": "a"},
		"":                                                           {},
	} {
		if got := noCloudMeta([]byte(in)); !reflect.DeepEqual(got, want) {
			t.Errorf("noCloudMeta(%q) = %v, want %v", in, got, want)
		}
	}
}
