package run

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/initramfs/init/klog"
	"github.com/slate-os/slate/initramfs/init/netup"
	"github.com/slate-os/slate/initramfs/init/platform"
)

type fakeNet struct {
	lease      *netup.Lease
	err        error
	ups, downs int
	changed    bool
}

func (f *fakeNet) Up(ctx context.Context) (*netup.Lease, error) {
	f.ups++
	f.changed = true
	return f.lease, f.err
}
func (f *fakeNet) Down() error   { f.downs++; f.changed = false; return nil }
func (f *fakeNet) Changed() bool { return f.changed }

func TestNetworkOnce(t *testing.T) {
	lease := &netup.Lease{Interface: "ens5", Addr: netup.IP4{172, 31, 5, 9}, Bits: 20, Router: netup.IP4{172, 31, 0, 1},
		Server: netup.IP4{172, 31, 0, 1}, Took: 734 * time.Millisecond}
	for _, tc := range []struct {
		name  string
		net   *fakeNet
		lines []string
	}{
		{"lease", &fakeNet{lease: lease}, []string{
			"slate-init: network: ens5 up: 172.31.5.9/20 via 172.31.0.1, DHCP lease from 172.31.0.1 in 734 ms",
			"slate-init: network: ens5 down, its address and routes removed"}},
		{"no lease", &fakeNet{err: errors.New("no DHCP lease: ens5: no DHCP offer in 8s (5 DISCOVERs)")}, []string{
			"slate-init: warning: network: no DHCP lease: ens5: no DHCP offer in 8s (5 DISCOVERs)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := newNetwork
			defer func() { newNetwork = orig }()
			newNetwork = func(func(string, ...any)) network { return tc.net }
			var out bytes.Buffer
			in := &initProc{log: &klog.Logger{Console: &out}}
			in.networkDown() // before any Up: nothing
			for range 3 {
				if err := in.network(context.Background()); !errors.Is(err, tc.net.err) {
					t.Errorf("network: %v, want %v", err, tc.net.err)
				}
			}
			in.networkDown()
			in.networkDown()
			if tc.net.ups != 1 || tc.net.downs != 1 {
				t.Errorf("%d Ups, %d Downs; want 1 each", tc.net.ups, tc.net.downs)
			}
			if got := strings.Split(strings.TrimSpace(out.String()), "\n"); !reflect.DeepEqual(got, tc.lines) {
				t.Errorf("console:\n%q\nwant\n%q", got, tc.lines)
			}
			if tc.net.err != nil && len(in.rec.Warnings) != 1 {
				t.Errorf("warnings %q", in.rec.Warnings)
			}
		})
	}
}

func TestPlatformRecord(t *testing.T) {
	if p := platformRecord(platform.None, nil); p != nil {
		t.Errorf("off the clouds: %+v", p)
	}
	if p := platformRecord(platform.GCE, nil); p == nil || *p != (record.Platform{Name: "gce"}) {
		t.Errorf("no facts: %+v", p)
	}
	facts := &record.Platform{Name: "ec2", InstanceID: "i-0123", Region: "eu-west-1", Hostname: "ip-10-0-0-9.eu-west-1.compute.internal", UserData: "none"}
	p := platformRecord(platform.EC2, facts)
	if !reflect.DeepEqual(p, facts) || p == facts {
		t.Errorf("facts: %+v", p)
	}
	// A source that found its platform without detection (OpenStack's
	// config drive) names it; one that did not, gets the detected name.
	if p := platformRecord(platform.None, &record.Platform{InstanceID: "x"}); p.Name != "" {
		t.Errorf("name %q", p.Name)
	}
	path := filepath.Join(t.TempDir(), "slate", "platform.json")
	if err := writePlatform(path, p); err != nil {
		t.Fatal(err)
	}
	var back record.Platform
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &back); err != nil || back != *facts || !strings.HasSuffix(string(b), "}\n") {
		t.Errorf("%s: %s (%v)", path, b, err)
	}
}

func TestPlatformHostname(t *testing.T) {
	ec2 := &record.Platform{Name: "ec2", Hostname: "ip-10-0-0-9.ec2.internal"}
	long := &record.Platform{Name: "gce", Hostname: "instance-with-a-long-name.us-central1-a.c.my-rather-long-project-id.internal"}
	applied := record.Config{Source: "ec2", Applied: true}
	for _, tc := range []struct {
		name     string
		rc       record.Config
		p        *record.Platform
		setup    func(root string)
		want     string // /etc/hostname afterwards
		line     string
		wantFile string // another file the hostname went to
	}{
		{"no config", record.Config{Source: record.ConfigNone}, ec2, nil, "ip-10-0-0-9.ec2.internal\n", "hostname ip-10-0-0-9.ec2.internal from ec2 (no node config)", ""},
		{"config without a hostname", applied, ec2, nil, "ip-10-0-0-9.ec2.internal\n", "(the config sets none)", ""},
		{"config refused", record.Config{Source: "ec2", Failed: record.ConfigFailedParse}, ec2, nil, "ip-10-0-0-9.ec2.internal\n", "(the config was not applied)", ""},
		{"config with a hostname", record.Config{Source: "ec2", Applied: true, Hostname: "node-1"}, ec2, nil, "image-default\n", "", ""},
		{"no platform hostname", applied, &record.Platform{Name: "azure"}, nil, "image-default\n", "", ""},
		{"no platform", applied, nil, nil, "image-default\n", "", ""},
		{"no platform name", applied, &record.Platform{Hostname: "node-7"}, nil, "node-7\n", "hostname node-7 from the platform (the config sets none)", ""},
		{"too long: first label", applied, long, nil, "instance-with-a-long-name\n", "hostname instance-with-a-long-name from gce", ""},
		{"invalid", applied, &record.Platform{Name: "openstack", Hostname: "-bad_name-"}, nil, "image-default\n", `warning: the hostname "-bad_name-" from openstack is not a valid hostname`, ""},
		{"no file in the image", applied, ec2, func(root string) { os.Remove(filepath.Join(root, "etc/hostname")) }, "ip-10-0-0-9.ec2.internal\n", "from ec2", ""},
		{"symlink to /run", applied, ec2, func(root string) {
			os.Remove(filepath.Join(root, "etc/hostname"))
			os.Symlink("../run/hostname", filepath.Join(root, "etc/hostname"))
		}, "ip-10-0-0-9.ec2.internal\n", "from ec2", "run/hostname"},
		{"symlink out of /etc", applied, ec2, func(root string) {
			os.Remove(filepath.Join(root, "etc/hostname"))
			os.Symlink("/usr/lib/hostname", filepath.Join(root, "etc/hostname"))
		}, "", "outside /etc and /run", ""},
		{"a directory", applied, ec2, func(root string) {
			os.Remove(filepath.Join(root, "etc/hostname"))
			os.Mkdir(filepath.Join(root, "etc/hostname"), 0o755)
		}, "", "is a directory", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := testRoot(t)
			if tc.setup != nil {
				tc.setup(root)
			}
			lines := platformHostname(root, tc.rc, tc.p)
			var got string
			for _, l := range lines {
				got += l.msg
			}
			if tc.line == "" && len(lines) != 0 || !strings.Contains(got, tc.line) {
				t.Errorf("lines %q, want one containing %q", got, tc.line)
			}
			if tc.want != "" {
				b, _ := os.ReadFile(filepath.Join(root, "etc/hostname"))
				if string(b) != tc.want {
					t.Errorf("/etc/hostname %q, want %q", b, tc.want)
				}
			}
			if tc.wantFile != "" {
				if fi, err := os.Lstat(filepath.Join(root, tc.wantFile)); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
					t.Errorf("%s: %v %v", tc.wantFile, fi, err)
				}
			}
			if fi, err := os.Stat(filepath.Join(root, "etc/hostname")); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() != 0o644 {
				t.Errorf("mode %v", fi.Mode())
			}
			if m, _ := filepath.Glob(filepath.Join(root, "*/*.slate-new")); len(m) > 0 {
				t.Errorf("left behind: %q", m)
			}
		})
	}
}
