package config_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/record"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/vm"
)

// metadataNet is the guest's user network on a cloud: the metadata service
// is at 169.254.169.254, which QEMU forwards to a fake on the host.
const metadataNet = "169.254.169.0/24"

// cloud is a platform as the guest sees it: the SMBIOS strings its
// hypervisor sets, and a fake of its metadata service that behaves as the
// real one does, requests without the platform's header refused.
type cloud struct {
	name   string
	smbios []string
	// serve answers one request; userData "" means the platform has none.
	serve func(w http.ResponseWriter, r *http.Request, userData string) bool
	facts record.Platform
}

var (
	ec2 = cloud{
		name:   "ec2",
		smbios: []string{"type=1,manufacturer=Amazon EC2,product=m6i.large", "type=0,vendor=Amazon EC2"},
		facts: record.Platform{Name: "ec2", InstanceID: "i-0123456789abcdef0", Region: "eu-west-3", Zone: "eu-west-3a", InstanceType: "m6i.large",
			Hostname: "ip-172-31-5-6.eu-west-3.compute.internal"},
		serve: func(w http.ResponseWriter, r *http.Request, userData string) bool {
			// IMDSv2: a session token first; a request without it is refused.
			if r.URL.Path == "/latest/api/token" {
				if r.Method != http.MethodPut || r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
					http.Error(w, "", http.StatusBadRequest)
					return false
				}
				fmt.Fprint(w, "ec2-token-1")
				return true
			}
			if r.Header.Get("X-aws-ec2-metadata-token") != "ec2-token-1" {
				http.Error(w, "", http.StatusUnauthorized)
				return false
			}
			return answer(w, r.URL.Path, map[string]string{
				"/latest/user-data":                             userData,
				"/latest/meta-data/instance-id":                 "i-0123456789abcdef0",
				"/latest/meta-data/placement/region":            "eu-west-3",
				"/latest/meta-data/placement/availability-zone": "eu-west-3a",
				"/latest/meta-data/instance-type":               "m6i.large",
				"/latest/meta-data/local-hostname":              "ip-172-31-5-6.eu-west-3.compute.internal",
			})
		},
	}
	gce = cloud{
		name:   "gce",
		smbios: []string{"type=1,manufacturer=Google,product=Google Compute Engine"},
		facts:  record.Platform{Name: "gce", InstanceID: "4567890123456789012", Region: "europe-west1", Zone: "europe-west1-b", InstanceType: "e2-medium", Hostname: "node-gce.c.slate-test.internal"},
		serve: func(w http.ResponseWriter, r *http.Request, userData string) bool {
			if r.Header.Get("Metadata-Flavor") != "Google" {
				http.Error(w, "", http.StatusForbidden)
				return false
			}
			const p = "/computeMetadata/v1/instance/"
			return answer(w, r.URL.Path, map[string]string{
				p + "attributes/slate-config": userData,
				p + "id":                      "4567890123456789012",
				p + "zone":                    "projects/123456/zones/europe-west1-b",
				p + "machine-type":            "projects/123456/machineTypes/e2-medium",
				p + "hostname":                "node-gce.c.slate-test.internal",
			})
		},
	}
	azure = cloud{
		name:   "azure",
		smbios: []string{"type=1,manufacturer=Microsoft Corporation,product=Virtual Machine", "type=3,asset=7783-7084-3265-9085-8269-3286-77"},
		facts:  record.Platform{Name: "azure", InstanceID: "5c08b38e-4d57-4c23-ac45-aca61037f084", Region: "westeurope", Zone: "2", InstanceType: "Standard_D2s_v5", Hostname: "node-azure"},
		serve: func(w http.ResponseWriter, r *http.Request, userData string) bool {
			if r.Header.Get("Metadata") != "true" {
				http.Error(w, "", http.StatusBadRequest)
				return false
			}
			if r.URL.Path != "/metadata/instance" || r.URL.Query().Get("api-version") == "" {
				http.NotFound(w, r)
				return false
			}
			json.NewEncoder(w).Encode(map[string]any{"compute": map[string]any{
				"vmId": "5c08b38e-4d57-4c23-ac45-aca61037f084", "location": "westeurope", "zone": "2",
				"vmSize": "Standard_D2s_v5", "name": "node-azure", "userData": base64.StdEncoding.EncodeToString([]byte(userData)),
			}})
			return true
		},
	}
	openstack = cloud{
		name:   "openstack",
		smbios: []string{"type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova"},
		facts:  record.Platform{Name: "openstack", InstanceID: "83679162-1378-4288-a2d4-70e13ec132aa", Zone: "nova", Hostname: "node-os.novalocal"},
		serve: func(w http.ResponseWriter, r *http.Request, userData string) bool {
			return answer(w, r.URL.Path, map[string]string{
				"/openstack/latest/user_data":      userData,
				"/openstack/latest/meta_data.json": `{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "availability_zone": "nova", "hostname": "node-os.novalocal", "name": "node-os"}`,
			})
		},
	}
)

// answer serves the value for path; a missing or empty one is a 404.
func answer(w http.ResponseWriter, path string, values map[string]string) bool {
	v, ok := values[path]
	if !ok || v == "" {
		http.NotFound(w, nil)
		return ok
	}
	fmt.Fprint(w, v)
	return true
}

// metadataServer is a platform's fake on the host's loopback; it counts
// the requests it refused for want of the platform's header or token.
type metadataServer struct {
	*httptest.Server
	mu      sync.Mutex
	refused []string
	served  []string
}

func startMetadata(t *testing.T, c cloud, userData string) *metadataServer {
	t.Helper()
	s := &metadataServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok := c.serve(w, r, userData)
		s.mu.Lock()
		defer s.mu.Unlock()
		if ok {
			s.served = append(s.served, r.Method+" "+r.URL.Path)
		} else {
			s.refused = append(s.refused, r.Method+" "+r.URL.Path)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *metadataServer) log() (served, refused []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.served...), append([]string(nil), s.refused...)
}

// onCloud is a machine config on platform c, whose metadata service is at
// to (host:port; "" for none).
func onCloud(c cloud, to string) func(*vm.Config) {
	return func(cfg *vm.Config) {
		cfg.SMBIOS = c.smbios
		cfg.GuestNet = metadataNet
		if to != "" {
			cfg.GuestForwards = []vm.GuestForward{{Addr: "169.254.169.254:80", To: to}}
		}
	}
}

// cloudDisk builds a test disk in the format a cloud imports.
func cloudDisk(t *testing.T, format string) string {
	t.Helper()
	ext := map[string]string{"vhd": ".vhd", "vmdk": ".vmdk"}[format]
	return testnode.Disk(t, "cloud-"+format, func(s *spec.Spec) {
		s.Outputs.Format = format
		s.Outputs.Disk = strings.TrimSuffix(s.Outputs.Disk, ".raw") + ext
		s.Outputs.Artifact = ""
	}).Disk
}

// initLines boots m up to the switch to the image's init, which is as far
// as a config source matters: the config is applied by then (the same
// Apply as every source's, which the rest of this package proves all the
// way to systemd), the facts recorded and the network down. It cuts the
// power there, to keep the suite's time, and returns the init's lines.
func initLines(t *testing.T, m *vm.Machine) []string {
	t.Helper()
	if _, err := m.Expect(regexp.MustCompile(`slate-init: switching root to \S+ after \d+ ms`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	lines, err := m.BootLines()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range lines {
		if _, rest, ok := strings.Cut(l, "slate-init: "); ok {
			out = append(out, rest)
		}
	}
	return out
}

// need fails the test unless one of the init's lines matches each pattern.
func need(t *testing.T, what string, lines []string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		re := regexp.MustCompile(p)
		if !slices.ContainsFunc(lines, re.MatchString) {
			t.Errorf("%s: no init line matches %q; the init said:\n\t%s", what, p, strings.Join(lines, "\n\t"))
		}
	}
}

// factsLine is the init's line for platform facts: "platform ec2: instance ...".
func factsLine(p record.Platform) string {
	return regexp.QuoteMeta("platform " + p.String())
}

// TestCloudMetadata boots a node on each cloud the init knows by its SMBIOS
// strings, with a fake of the cloud's metadata service on the host: the
// platform is detected, the network comes up by DHCP and goes down again,
// the node config in the user data is applied, the platform's facts are
// recorded, and the platform's header or IMDSv2 token is sent (the fakes
// refuse requests without them, as the clouds do). On GCE the config sets
// no hostname and the node takes the platform's. Azure boots the fixed VHD
// that slate build makes for it.
func TestCloudMetadata(t *testing.T) {
	testnode.Reference(t)
	for _, c := range []cloud{ec2, gce, azure, openstack} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			disk, format := testnode.Disk(t, "plain", nil).Disk, "raw"
			if c.name == "azure" {
				disk, format = cloudDisk(t, "vhd"), "vpc"
			}
			userData, host := nodeConfig(c.name), "node-"+c.name
			if c.name == "gce" {
				userData, host = strings.Replace(userData, "hostname: node-gce\n", "", 1), "" // the platform's
			}
			srv := startMetadata(t, c, userData)
			m := testnode.Boot(t, disk, "true\n", func(cfg *vm.Config) {
				cfg.DiskFormat = format
				onCloud(c, srv.Listener.Addr().String())(cfg)
			})
			lines := initLines(t, m)
			facts := c.facts
			facts.UserData = "slate node config"
			applied := `^config from ` + c.name + ` .*applied: hostname ` + regexp.QuoteMeta(host) + `,`
			if host == "" {
				applied = `^config from gce .*applied: \d+ files`
			}
			need(t, c.name, lines,
				`^platform: `+c.name+` \(`,
				`^network: \S+ up: 169\.254\.169\.\d+/24`,
				applied,
				`^`+factsLine(facts)+`$`,
				`^network: \S+ down`)
			if c.name == "gce" {
				need(t, c.name, lines, `^hostname `+regexp.QuoteMeta(c.facts.Hostname)+` from gce \(the config sets none\)`)
			}
			served, refused := srv.log()
			t.Logf("%s: %d requests answered (%v), %d refused", c.name, len(served), served, len(refused))
			if len(refused) > 0 {
				t.Errorf("%s: the fake refused %v: the source does not speak the platform's protocol", c.name, refused)
			}
		})
	}
}

// TestCloudDrives: NoCloud (a cidata drive) and OpenStack's config drive
// need no network; the NoCloud node boots the streamOptimized VMDK slate
// build makes for VMware.
func TestCloudDrives(t *testing.T) {
	testnode.Reference(t)
	iso := func(t *testing.T, label string, files map[string]string) string {
		dir := t.TempDir()
		for name, body := range files {
			p := filepath.Join(dir, "root", name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(body), 0o644)
		}
		out := filepath.Join(dir, label+".iso")
		testnode.Cmd(t, "genisoimage", "-quiet", "-V", label, "-r", "-J", "-o", out, filepath.Join(dir, "root"))
		return out
	}
	for _, tc := range []struct {
		name, format string
		drive        func(t *testing.T) string
		facts        record.Platform
	}{
		{"nocloud", "vmdk", func(t *testing.T) string {
			return iso(t, "cidata", map[string]string{"user-data": nodeConfig("nocloud"), "meta-data": "instance-id: iid-slate-1\nlocal-hostname: node-nc\n"})
		}, record.Platform{Name: "nocloud", InstanceID: "iid-slate-1", Hostname: "node-nc"}},
		{"openstack", "raw", func(t *testing.T) string {
			return iso(t, "config-2", map[string]string{"openstack/latest/user_data": nodeConfig("openstack"),
				"openstack/latest/meta_data.json": `{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "availability_zone": "nova", "hostname": "node-os.novalocal"}`})
		}, record.Platform{Name: "openstack", InstanceID: "83679162-1378-4288-a2d4-70e13ec132aa", Zone: "nova", Hostname: "node-os.novalocal"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			disk, format := testnode.Disk(t, "plain", nil).Disk, "raw"
			if tc.format == "vmdk" {
				disk, format = cloudDisk(t, "vmdk"), "vmdk"
			}
			drive := tc.drive(t)
			m := testnode.Boot(t, disk, "true\n", func(cfg *vm.Config) {
				cfg.DiskFormat = format
				cfg.Disks = append(cfg.Disks, vm.Disk{Path: drive, Format: "raw"})
			})
			lines := initLines(t, m)
			facts := tc.facts
			facts.UserData = "slate node config"
			need(t, tc.name, lines, `^config from `+tc.name+` .*applied: hostname node-`+tc.name, `^`+factsLine(facts)+`$`)
			if slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "network: ") }) {
				t.Errorf("%s: the init brought the network up for a drive", tc.name)
			}
		})
	}
}

// TestCloudSilentMetadata: on EC2 with a metadata service that accepts
// connections and never answers, the node boots on its image's defaults,
// and the wait is bounded.
func TestCloudSilentMetadata(t *testing.T) {
	testnode.Reference(t)
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var held []net.Conn // accepted, never answered
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	disk := testnode.Disk(t, "plain", nil).Disk
	m := testnode.Boot(t, disk, "true\n", onCloud(ec2, l.Addr().String()))
	lines := initLines(t, m)
	need(t, "silent ec2", lines, `^platform: ec2 `, `^no node config found .*booting with the image's defaults`)
	re := regexp.MustCompile(`^config: done in (\d+) ms`)
	for _, l := range lines {
		if g := re.FindStringSubmatch(l); g != nil {
			ms, _ := strconv.Atoi(g[1])
			d := time.Duration(ms) * time.Millisecond
			t.Logf("a metadata service that never answers held the config step for %s", d)
			if d >= 30*time.Second {
				t.Errorf("the config step took %s: the init's bound on the whole search is 30s", d)
			}
		}
	}
}
