package configsrc

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/record"
)

// fakeIMDS behaves as EC2's IMDS with IMDSv2 required (the default for
// new instance types): a GET without a valid session token is refused
// with 401. With v1Only, the token service does not exist (405) and GETs
// need no token, as on IMDSv1-only EC2-compatible clouds. userData nil
// is an instance without user data (404).
func fakeIMDS(userData *string, v1Only bool) http.HandlerFunc {
	const token = "AQAEAFakeToken=="
	meta := map[string]string{
		"/latest/meta-data/instance-id":                 "i-0123456789abcdef0",
		"/latest/meta-data/placement/region":            "eu-west-1",
		"/latest/meta-data/placement/availability-zone": "eu-west-1b",
		"/latest/meta-data/instance-type":               "m6i.large",
		"/latest/meta-data/local-hostname":              "ip-10-0-1-23.eu-west-1.compute.internal",
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == ec2TokenPath {
			if v1Only {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			ttl, err := strconv.Atoi(r.Header.Get(ec2TokenTTL))
			switch {
			case r.Method != "PUT":
				w.WriteHeader(http.StatusMethodNotAllowed)
			case r.Header.Get("X-Forwarded-For") != "":
				w.WriteHeader(http.StatusForbidden)
			case err != nil || ttl < 1 || ttl > 21600:
				w.WriteHeader(http.StatusBadRequest)
			default:
				w.Write([]byte(token))
			}
			return
		}
		if r.Method != "GET" {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if !v1Only && r.Header.Get(ec2TokenHeader) != token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch v, ok := meta[r.URL.Path]; {
		case ok:
			w.Write([]byte(v))
		case r.URL.Path == ec2UserData && userData != nil:
			w.Write([]byte(*userData))
		default:
			http.NotFound(w, r)
		}
	}
}

func ptr(s string) *string { return &s }

var ec2Facts = record.Platform{
	Name: "ec2", InstanceID: "i-0123456789abcdef0", Region: "eu-west-1", Zone: "eu-west-1b",
	InstanceType: "m6i.large", Hostname: "ip-10-0-1-23.eu-west-1.compute.internal",
}

func TestEC2(t *testing.T) {
	for _, tc := range []struct {
		name     string
		userData *string
		v1Only   bool
		config   bool
		facts    string // Facts.UserData
		note     string
	}{
		{"node config", ptr(nodeConfig), false, true, UserDataConfig, ""},
		{"IMDSv1 only", ptr(nodeConfig), true, true, UserDataConfig, "/latest/api/token: 405 Method Not Allowed: asking without a session token (IMDSv1)"},
		{"no user data", nil, false, false, UserDataNone, "ec2: no user data"},
		{"cloud-config", ptr(cloudConfig), false, false, "not a slate node config (#cloud-config)", "/latest/user-data is not a slate node config (#cloud-config): ignoring it"},
	} {
		srv := newFakeService(t, fakeIMDS(tc.userData, tc.v1Only))
		te := newTestEnv("ec2", srv.URL)
		b, err := EC2{fast}.Fetch(te.ctx())
		if tc.config != (err == nil) || tc.config && string(b) != nodeConfig || !tc.config && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: Fetch = %q, %v", tc.name, b, err)
		}
		want := ec2Facts
		want.UserData = tc.facts
		if te.Facts == nil || *te.Facts != want {
			t.Errorf("%s: facts %+v, want %+v", tc.name, te.Facts, want)
		}
		if wantLoc := map[bool]string{true: srv.URL + "/latest/user-data"}[tc.config]; te.Location != wantLoc {
			t.Errorf("%s: location %q, want %q", tc.name, te.Location, wantLoc)
		}
		if log := te.log(t); !strings.Contains(log, tc.note) || te.networks != 1 {
			t.Errorf("%s: notes %q (want %q), %d network bring-ups", tc.name, log, tc.note, te.networks)
		}
		// The token first, then the user data, then the facts.
		if reqs := srv.requests(); len(reqs) != 7 || reqs[0] != "PUT /latest/api/token" || reqs[1] != "GET /latest/user-data" {
			t.Errorf("%s: requests %v", tc.name, reqs)
		}
	}
}

// TestEC2Refuses checks the fake: IMDSv2 refuses a GET without the token.
func TestEC2Refuses(t *testing.T) {
	srv := newFakeService(t, fakeIMDS(ptr(nodeConfig), false))
	c, _ := newClient("ec2", srv.URL, fast)
	if resp, err := c.get(context.Background(), ec2UserData); err != nil || resp.status != 401 {
		t.Errorf("GET without a token: %+v %v", resp, err)
	}
}

func TestEC2NotHere(t *testing.T) {
	srv := newFakeService(t, fakeIMDS(ptr(nodeConfig), false))
	// Another platform, or none: nothing asked, no network.
	for _, p := range []string{"", "gce", "azure", "openstack", "nocloud"} {
		te := newTestEnv(p, srv.URL)
		if _, err := (EC2{fast}).Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || te.networks != 0 || te.Facts != nil || te.log(t) != "" {
			t.Errorf("platform %q: %v, %d networks, facts %+v, notes %q", p, err, te.networks, te.Facts, te.log(t))
		}
	}
	if reqs := srv.requests(); len(reqs) != 0 {
		t.Errorf("requests on other platforms: %v", reqs)
	}
	// No network to offer, or one that fails: not found, and said.
	te := newTestEnv("ec2", srv.URL)
	te.Network = nil
	if _, err := (EC2{fast}).Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || !strings.Contains(te.log(t), "ec2: the init has no network to offer") {
		t.Errorf("no network: %v %q", err, te.log(t))
	}
	te = newTestEnv("ec2", srv.URL)
	te.Network = func(context.Context) error { return errors.New("no DHCP lease on eth0") }
	if _, err := (EC2{fast}).Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || te.log(t) != "ec2: no network for the metadata service: no DHCP lease on eth0" {
		t.Errorf("network failure: %v %q", err, te.log(t))
	}
	if te.Facts == nil || te.Facts.Name != "ec2" || te.Facts.UserData != "" {
		t.Errorf("network failure: facts %+v", te.Facts)
	}
	if reqs := srv.requests(); len(reqs) != 0 {
		t.Errorf("requests without a network: %v", reqs)
	}
}

func TestEC2NoAnswer(t *testing.T) {
	// A service that never answers, or no service: not found, within the bound.
	for name, base := range map[string]string{"silent": silentServer(t), "refused": closedPort(t)} {
		te := newTestEnv("ec2", base)
		start := time.Now()
		_, err := EC2{fast}.Fetch(te.ctx())
		if d := time.Since(start); !errors.Is(err, ErrNotFound) || d > fast.Timeout+300*time.Millisecond {
			t.Errorf("%s: %v after %s", name, err, d)
		}
		if log := te.log(t); !strings.HasPrefix(log, "ec2: no answer from the metadata service at "+base+": PUT "+base+"/latest/api/token: ") {
			t.Errorf("%s: notes %q", name, log)
		}
	}
	// A service that answers the token, then fails: an error that names the URL.
	srv := newFakeService(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == ec2TokenPath {
			w.Write([]byte("tok"))
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	})
	te := newTestEnv("ec2", srv.URL)
	_, err := EC2{fast}.Fetch(te.ctx())
	if want := "GET " + srv.URL + "/latest/user-data: 500 Internal Server Error"; err == nil || errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Errorf("500: %v, want %s", err, want)
	}
	// A token service that says something else than 200 or "not here".
	srv = newFakeService(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadRequest) })
	te = newTestEnv("ec2", srv.URL)
	if _, err := (EC2{fast}).Fetch(te.ctx()); err == nil || err.Error() != "PUT "+srv.URL+"/latest/api/token: 400 Bad Request" {
		t.Errorf("token 400: %v", err)
	}
}

// TestEC2Bound measures the real bound: a service that never answers
// costs MetadataTimeout.
func TestEC2Bound(t *testing.T) {
	if testing.Short() {
		t.Skip("takes MetadataTimeout (8 s)")
	}
	te := newTestEnv("ec2", silentServer(t))
	start := time.Now()
	_, err := EC2{}.Fetch(te.ctx())
	if d := time.Since(start); !errors.Is(err, ErrNotFound) || d < MetadataTimeout-100*time.Millisecond || d > MetadataTimeout+500*time.Millisecond {
		t.Errorf("%v after %s", err, d)
	}
}
