package configsrc

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/record"
)

// fakeGCE behaves as GCE's metadata server: a request without
// Metadata-Flavor: Google is refused with 403, answers carry the header
// back, a missing attribute is 404. attrs are the instance attributes.
func fakeGCE(attrs map[string]string) http.HandlerFunc {
	inst := map[string]string{
		"/computeMetadata/v1/instance/id":           "4520031799277581759",
		"/computeMetadata/v1/instance/zone":         "projects/123456789012/zones/europe-west4-a",
		"/computeMetadata/v1/instance/machine-type": "projects/123456789012/machineTypes/e2-medium",
		"/computeMetadata/v1/instance/hostname":     "node-1.europe-west4-a.c.my-project.internal",
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata-Flavor") != "Google" || r.Header.Get("X-Forwarded-For") != "" {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte("Missing Metadata-Flavor:Google header."))
			return
		}
		w.Header().Set("Metadata-Flavor", "Google")
		if v, ok := inst[r.URL.Path]; ok {
			w.Write([]byte(v))
			return
		}
		if name, ok := strings.CutPrefix(r.URL.Path, gceAttributes); ok {
			if v, ok := attrs[name]; ok {
				w.Write([]byte(v))
				return
			}
		}
		http.NotFound(w, r)
	}
}

var gceFacts = record.Platform{
	Name: "gce", InstanceID: "4520031799277581759", Region: "europe-west4", Zone: "europe-west4-a",
	InstanceType: "e2-medium", Hostname: "node-1.europe-west4-a.c.my-project.internal",
}

func TestGCE(t *testing.T) {
	for _, tc := range []struct {
		name   string
		attrs  map[string]string
		config string // the config returned, "" for none
		where  string // its attribute
		facts  string
	}{
		{"slate-config", map[string]string{"slate-config": nodeConfig, "user-data": cloudConfig}, nodeConfig, "slate-config", UserDataConfig},
		// slate-config is slate's whatever it holds: the parser says what is wrong.
		{"slate-config, not a config", map[string]string{"slate-config": "hostname: x\n"}, "hostname: x\n", "slate-config", UserDataConfig},
		{"user-data", map[string]string{"user-data": nodeConfig}, nodeConfig, "user-data", UserDataConfig},
		{"empty slate-config, user-data", map[string]string{"slate-config": "", "user-data": nodeConfig}, nodeConfig, "user-data", UserDataConfig},
		{"cloud-config", map[string]string{"user-data": cloudConfig}, "", "", "not a slate node config (#cloud-config)"},
		{"none", map[string]string{"ssh-keys": "x"}, "", "", UserDataNone},
	} {
		srv := newFakeService(t, fakeGCE(tc.attrs))
		te := newTestEnv("gce", srv.URL)
		b, err := GCE{fast}.Fetch(te.ctx())
		if tc.config != "" && (err != nil || string(b) != tc.config) || tc.config == "" && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Fetch = %q, %v", tc.name, b, err)
		}
		want := gceFacts
		want.UserData = tc.facts
		if te.Facts == nil || *te.Facts != want {
			t.Errorf("%s: facts %+v, want %+v", tc.name, te.Facts, want)
		}
		wantLoc := ""
		if tc.where != "" {
			wantLoc = srv.URL + gceAttributes + tc.where
		}
		if te.Location != wantLoc {
			t.Errorf("%s: location %q, want %q", tc.name, te.Location, wantLoc)
		}
		te.log(t)
	}
}

func TestGCERefuses(t *testing.T) {
	srv := newFakeService(t, fakeGCE(nil))
	c, _ := newClient("gce", srv.URL, fast)
	if resp, err := c.get(t.Context(), "/computeMetadata/v1/instance/id"); err != nil || resp.status != 403 {
		t.Errorf("without Metadata-Flavor: %+v %v", resp, err)
	}
	// Not GCE: nothing asked.
	te := newTestEnv("ec2", srv.URL)
	if _, err := (GCE{fast}).Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || te.networks != 0 || len(srv.requests()) != 1 {
		t.Errorf("on ec2: %v, %d networks, requests %v", err, te.networks, srv.requests())
	}
}

func TestGCEErrors(t *testing.T) {
	te := newTestEnv("gce", silentServer(t))
	start := time.Now()
	if _, err := (GCE{fast}).Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || time.Since(start) > fast.Timeout+300*time.Millisecond ||
		!strings.Contains(te.log(t), "gce: no answer from the metadata service at ") {
		t.Errorf("silent: %v after %s, notes %q", err, time.Since(start), te.log(t))
	}
	srv := newFakeService(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) })
	te = newTestEnv("gce", srv.URL)
	if _, err := (GCE{fast}).Fetch(te.ctx()); err == nil || err.Error() != "GET "+srv.URL+gceSlateConfig+": 403 Forbidden" {
		t.Errorf("403: %v", err)
	}
}

func TestGCEZone(t *testing.T) {
	for in, want := range map[string][2]string{
		"projects/1/zones/us-central1-a": {"us-central1-a", "us-central1"},
		"us-east4-c":                     {"us-east4-c", "us-east4"},
		"":                               {"", ""},
		"nodash":                         {"nodash", ""},
	} {
		if z, r := gceZone(in); z != want[0] || r != want[1] {
			t.Errorf("gceZone(%q) = %q %q, want %v", in, z, r, want)
		}
	}
}
