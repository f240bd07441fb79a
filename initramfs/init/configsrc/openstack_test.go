package configsrc

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/record"
)

const openStackMeta = `{"uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38", "availability_zone": "nova",
 "hostname": "node-1.novalocal", "name": "node-1", "launch_index": 0,
 "public_keys": {"mykey": "ssh-ed25519 AAAA"}, "meta": {"role": "worker"}, "project_id": "f7ac731cc11f40efbc03a9f9e1d1d21f"}`

var wantOpenStack = record.Platform{
	Name: "openstack", InstanceID: "d8e02d56-2648-49a3-bf97-6be8f1204f38", Zone: "nova", Hostname: "node-1.novalocal",
}

// fakeNova behaves as OpenStack's metadata service; userData nil is none
// (404).
func fakeNova(userData *string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != "GET":
			w.WriteHeader(http.StatusMethodNotAllowed)
		case r.URL.Path == "/"+openStackMetaData:
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(openStackMeta))
		case r.URL.Path == "/"+openStackUserData && userData != nil:
			w.Write([]byte(*userData))
		default:
			http.NotFound(w, r)
		}
	}
}

func TestOpenStackConfigDrive(t *testing.T) {
	imgs := t.TempDir()
	for _, tc := range []struct {
		name   string
		img    func() string
		config bool
		kind   string
	}{
		{"iso9660", func() string {
			return mkISO(t, imgs, "c.iso", "config-2", false, map[string]string{openStackUserData: nodeConfig, openStackMetaData: openStackMeta})
		}, true, UserDataConfig},
		{"vfat, upper case", func() string {
			return mkVfat(t, imgs, "c.img", 4, 12, "CONFIG-2", map[string]string{openStackUserData: nodeConfig, openStackMetaData: openStackMeta})
		}, true, UserDataConfig},
		{"cloud-config", func() string {
			return mkISO(t, imgs, "c.iso", "config-2", false, map[string]string{openStackUserData: cloudConfig, openStackMetaData: openStackMeta})
		}, false, "not a slate node config (#cloud-config)"},
		{"no user data", func() string {
			return mkISO(t, imgs, "c.iso", "config-2", false, map[string]string{openStackMetaData: openStackMeta, "ec2/latest/meta-data.json": "{}"})
		}, false, UserDataNone},
	} {
		fb := newFakeBlock(t)
		fb.add(t, "vda", mkVfat(t, imgs, "esp.img", 4, 12, "ESP", nil))
		fb.add(t, "sr0", tc.img())
		srv := newFakeService(t, fakeNova(ptr(nodeConfig)))
		// Any platform: the drive needs no detection, and no network.
		te := newTestEnv("", srv.URL)
		b, err := OpenStack{HTTPTiming: fast, Drives: Drives(fb.source(t, time.Second))}.Fetch(te.ctx())
		if tc.config && (err != nil || string(b) != nodeConfig) || !tc.config && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Fetch = %q, %v", tc.name, b, err)
		}
		want := wantOpenStack
		want.UserData = tc.kind
		if te.Facts == nil || *te.Facts != want {
			t.Errorf("%s: facts %+v, want %+v", tc.name, te.Facts, want)
		}
		dev := filepath.Join(fb.dev, "sr0")
		if wantLoc := map[bool]string{true: dev}[tc.config]; te.Location != wantLoc {
			t.Errorf("%s: location %q", tc.name, te.Location)
		}
		if strings.Join(fb.mounted, " ") != "sr0" || fb.umounts != 1 || te.networks != 0 || len(srv.requests()) != 0 {
			t.Errorf("%s: mounted %v, %d unmounts, %d networks, requests %v", tc.name, fb.mounted, fb.umounts, te.networks, srv.requests())
		}
		if log := te.log(t); !strings.Contains(log, "openstack: config drive "+dev) {
			t.Errorf("%s: notes %q", tc.name, log)
		}
	}

	// Two config drives: refused. No meta_data.json: no facts, the config all the same.
	fb := newFakeBlock(t)
	fb.add(t, "sr0", mkISO(t, imgs, "a.iso", "config-2", false, map[string]string{openStackUserData: nodeConfig}))
	src := OpenStack{HTTPTiming: fast, Drives: Drives(fb.source(t, time.Second))}
	te := newTestEnv("openstack", "")
	if b, err := src.Fetch(te.ctx()); err != nil || string(b) != nodeConfig || *te.Facts != (record.Platform{Name: "openstack", UserData: UserDataConfig}) ||
		!strings.Contains(te.log(t), "has no openstack/latest/meta_data.json: no facts") {
		t.Errorf("no meta_data.json: %q %v, facts %+v, notes %q", b, err, te.Facts, te.log(t))
	}
	fb.add(t, "vdb", mkVfat(t, imgs, "b.img", 4, 12, "config-2", nil)) // an ISO made in the same second would be the same
	if _, err := src.Fetch(te.ctx()); err == nil || errors.Is(err, ErrNotFound) ||
		!strings.HasPrefix(err.Error(), "openstack: 2 filesystems are labelled as OpenStack config drives (config-2): ") {
		t.Errorf("two drives: %v", err)
	}
	// A drive whose user_data is a symbolic link: an error.
	fb = newFakeBlock(t)
	fb.add(t, "sr0", mkISO(t, imgs, "a.iso", "config-2", false, nil))
	src = OpenStack{HTTPTiming: fast, Drives: Drives(fb.source(t, time.Second))}
	src.Drives.Mount = func(dev, dir, fstype, data string) error {
		os.MkdirAll(filepath.Join(dir, "openstack", "latest"), 0o755)
		return os.Symlink("/etc/shadow", filepath.Join(dir, openStackUserData))
	}
	if _, err := src.Fetch(te.ctx()); err == nil || !strings.HasSuffix(err.Error(), "openstack/latest/user_data is a symbolic link") {
		t.Errorf("symlink: %v", err)
	}
}

func TestOpenStackMetadataService(t *testing.T) {
	for _, tc := range []struct {
		name     string
		userData *string
		config   bool
		kind     string
	}{
		{"node config", ptr(nodeConfig), true, UserDataConfig},
		{"none", nil, false, UserDataNone},
		{"cloud-config", ptr(cloudConfig), false, "not a slate node config (#cloud-config)"},
	} {
		srv := newFakeService(t, fakeNova(tc.userData))
		te := newTestEnv("openstack", srv.URL)
		b, err := OpenStack{HTTPTiming: fast, Drives: Drives(newFakeBlock(t).source(t, time.Second))}.Fetch(te.ctx())
		if tc.config && (err != nil || string(b) != nodeConfig) || !tc.config && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Fetch = %q, %v", tc.name, b, err)
		}
		want := wantOpenStack
		want.UserData = tc.kind
		if te.Facts == nil || *te.Facts != want || te.networks != 1 {
			t.Errorf("%s: facts %+v, want %+v; %d networks", tc.name, te.Facts, want, te.networks)
		}
		if wantLoc := map[bool]string{true: srv.URL + "/openstack/latest/user_data"}[tc.config]; te.Location != wantLoc {
			t.Errorf("%s: location %q", tc.name, te.Location)
		}
		te.log(t)
	}
	// Not OpenStack, and no drive: nothing asked.
	srv := newFakeService(t, fakeNova(ptr(nodeConfig)))
	te := newTestEnv("ec2", srv.URL)
	if _, err := (OpenStack{HTTPTiming: fast, Drives: Drives(newFakeBlock(t).source(t, time.Second))}).Fetch(te.ctx()); !errors.Is(err, ErrNotFound) ||
		len(srv.requests()) != 0 || te.networks != 0 || te.Facts != nil {
		t.Errorf("on ec2: %v, requests %v", err, srv.requests())
	}
	// A service that never answers: not found within the bound.
	te = newTestEnv("openstack", silentServer(t))
	start := time.Now()
	if _, err := (OpenStack{HTTPTiming: fast, Drives: Drives(newFakeBlock(t).source(t, time.Second))}).Fetch(te.ctx()); !errors.Is(err, ErrNotFound) ||
		time.Since(start) > fast.Timeout+300*time.Millisecond {
		t.Errorf("silent: %v after %s", err, time.Since(start))
	}
}
