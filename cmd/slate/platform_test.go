package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/agent/platform"
)

func runPlatformReady(t *testing.T) (stdout, stderr string, err error) {
	t.Helper()
	c := platformCmd()
	var out, errb bytes.Buffer
	c.SetArgs([]string{"ready"})
	c.SetOut(&out)
	c.SetErr(&errb)
	err = c.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// Off Azure, or with no platform detected, there is nothing to report: one
// line, success, and no request anywhere.
func TestPlatformReadyElsewhere(t *testing.T) {
	dir := t.TempDir()
	saved := platformFile
	t.Cleanup(func() { platformFile, readyOptions = saved, platform.Options{} })
	asked := false
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { asked = true }))
	defer srv.Close()
	readyOptions = platform.Options{Base: srv.URL}

	platformFile = filepath.Join(dir, "platform.json")
	out, _, err := runPlatformReady(t)
	if err != nil || out != "platform: none detected (no "+platformFile+"): nothing to report\n" {
		t.Errorf("no platform file: %q, %v", out, err)
	}
	for _, name := range []string{"ec2", "gce", "openstack", "nocloud"} {
		os.WriteFile(platformFile, []byte(`{"name": "`+name+`", "instance_id": "x"}`), 0o644)
		out, _, err := runPlatformReady(t)
		if err != nil || out != "platform: "+name+": nothing to report\n" {
			t.Errorf("%s: %q, %v", name, out, err)
		}
	}
	if asked {
		t.Error("a node off Azure asked the wire server")
	}
	// An unreadable record is an error (the unit ignores it).
	os.WriteFile(platformFile, []byte(`{"name":`), 0o644)
	if _, _, err := runPlatformReady(t); err == nil || !strings.Contains(err.Error(), platformFile) {
		t.Errorf("a broken platform file: %v", err)
	}
}

// On Azure it reports ready and says so in one line.
func TestPlatformReadyAzure(t *testing.T) {
	dir := t.TempDir()
	saved := platformFile
	t.Cleanup(func() { platformFile, readyOptions = saved, platform.Options{} })
	platformFile = filepath.Join(dir, "platform.json")
	os.WriteFile(platformFile, []byte(`{"name": "azure", "instance_id": "0b1c", "region": "westeurope"}`), 0o644)
	var reported []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.RequestURI() {
		case "/machine/?comp=goalstate":
			io.WriteString(w, `<?xml version="1.0" encoding="utf-8"?>
<GoalState><Version>2012-11-30</Version><Incarnation>1</Incarnation>
<Container><ContainerId>c-1</ContainerId><RoleInstanceList><RoleInstance><InstanceId>i-1._node</InstanceId></RoleInstance></RoleInstanceList></Container>
</GoalState>`)
		case "/machine/?comp=health":
			b, _ := io.ReadAll(r.Body)
			reported = append(reported, string(b))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	readyOptions = platform.Options{Base: srv.URL, Client: srv.Client()}
	out, _, err := runPlatformReady(t)
	if err != nil || out != "platform: azure: reported ready to the wire server (incarnation 1, instance i-1._node)\n" {
		t.Errorf("%q, %v", out, err)
	}
	if len(reported) != 1 || !strings.Contains(reported[0], "<State>Ready</State>") {
		t.Errorf("reports: %q", reported)
	}

	// A wire server that refuses: the command fails, saying where.
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "", http.StatusForbidden)
	}))
	defer refusing.Close()
	readyOptions = platform.Options{Base: refusing.URL, Client: refusing.Client()}
	_, _, err = runPlatformReady(t)
	if want := fmt.Sprintf("GET %s/machine/?comp=goalstate: 403 Forbidden", refusing.URL); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("refused: %v, want %q", err, want)
	}
}
