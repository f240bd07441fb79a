package configsrc

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slate-os/slate/boot/record"
)

// fakeAzureIMDS behaves as Azure's IMDS: a request without Metadata: true,
// or without an api-version, is refused with 400; through a proxy
// (X-Forwarded-For) too. The first gone requests are answered 410, as
// IMDS does while the VM is being provisioned. userData is the plain
// user data ("" for none).
func fakeAzureIMDS(userData string, gone int32) http.HandlerFunc {
	var n atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		bad := func(msg string) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error": %q}`, msg)
		}
		switch {
		case r.Header.Get("Metadata") != "true":
			bad("Bad request. Required metadata header not specified")
			return
		case r.Header.Get("X-Forwarded-For") != "":
			bad("Bad request. Request contains X-Forwarded-For header")
			return
		case r.URL.Query().Get("api-version") == "":
			bad("Bad request. api-version was not specified in the request")
			return
		case r.URL.Path != "/metadata/instance":
			http.NotFound(w, r)
			return
		case n.Add(1) <= gone:
			w.WriteHeader(http.StatusGone)
			return
		}
		doc := map[string]any{
			"compute": map[string]any{
				"azEnvironment": "AzurePublicCloud",
				"location":      "westeurope",
				"name":          "node-1",
				"osProfile":     map[string]any{"adminUsername": "azureuser", "computerName": "node-1-computer"},
				"userData":      base64.StdEncoding.EncodeToString([]byte(userData)),
				"vmId":          "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
				"vmSize":        "Standard_D2s_v5",
				"zone":          "2",
			},
			"network": map[string]any{"interface": []any{}},
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(doc)
	}
}

// ovfEnv is an ovf-env.xml as Azure writes it, with customData ("" for
// none).
func ovfEnv(customData string) string {
	custom := ""
	if customData != "" {
		custom = "<ns1:CustomData>" + base64.StdEncoding.EncodeToString([]byte(customData)) + "</ns1:CustomData>"
	}
	return `<?xml version="1.0" encoding="utf-8"?>
<ns0:Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:ns0="http://schemas.dmtf.org/ovf/environment/1" xmlns:ns1="http://schemas.microsoft.com/windowsazure" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <ns1:ProvisioningSection>
    <ns1:Version>1.0</ns1:Version>
    <ns1:LinuxProvisioningConfigurationSet>
      <ns1:ConfigurationSetType>LinuxProvisioningConfiguration</ns1:ConfigurationSetType>
      <ns1:HostName>node-1-ovf</ns1:HostName>
      <ns1:UserName>azureuser</ns1:UserName>
      <ns1:UserPassword>` + secret + `</ns1:UserPassword>
      <ns1:DisableSshPasswordAuthentication>false</ns1:DisableSshPasswordAuthentication>
      ` + custom + `
    </ns1:LinuxProvisioningConfigurationSet>
  </ns1:ProvisioningSection>
  <ns1:PlatformSettingsSection>
    <ns1:Version>1.0</ns1:Version>
    <ns1:PlatformSettings>
      <ns1:ProvisionGuestAgent>false</ns1:ProvisionGuestAgent>
    </ns1:PlatformSettings>
  </ns1:PlatformSettingsSection>
</ns0:Environment>
`
}

var azureFacts = record.Platform{
	Name: "azure", InstanceID: "02aab8a4-74ef-476e-8182-f6d2ba4166a6", Region: "westeurope", Zone: "2",
	InstanceType: "Standard_D2s_v5",
}

func TestAzure(t *testing.T) {
	imgs := t.TempDir()
	const other = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nhostname: other\n"
	for _, tc := range []struct {
		name               string
		cd                 string // "" no CD, "none" a CD without customData, else its customData
		iso                bool   // a plain ISO 9660 CD, not UDF
		userData           string
		config, from, kind string // the config returned, "cd" or "imds", Facts.UserData
		err, note          string
	}{
		{name: "customData", cd: nodeConfig, config: nodeConfig, from: "cd", kind: UserDataConfig},
		{name: "customData on ISO 9660", cd: nodeConfig, iso: true, config: nodeConfig, from: "cd", kind: UserDataConfig},
		{name: "userData", cd: "none", userData: nodeConfig, config: nodeConfig, from: "imds", kind: UserDataConfig},
		{name: "userData, no CD", userData: nodeConfig, config: nodeConfig, from: "imds", kind: UserDataConfig,
			note: "azure: no provisioning CD (ovf-env.xml on a CD-ROM): customData not read"},
		{name: "both, the same", cd: nodeConfig, userData: nodeConfig, config: nodeConfig, from: "cd", kind: UserDataConfig},
		{name: "customData, userData cloud-config", cd: nodeConfig, userData: cloudConfig, config: nodeConfig, from: "cd", kind: UserDataConfig},
		{name: "both, different", cd: nodeConfig, userData: other, err: "customData (%s) and userData (%s) are both slate node configs, and they differ: refusing to guess"},
		{name: "cloud-config", cd: cloudConfig, kind: "not a slate node config (#cloud-config)",
			note: "azure: the customData on %s is not a slate node config (#cloud-config): ignoring it"},
		{name: "userData cloud-config", cd: "none", userData: cloudConfig, kind: "not a slate node config (#cloud-config)"},
		{name: "none", cd: "none", kind: UserDataNone, note: "azure: no customData and no userData"},
	} {
		fb := newFakeBlock(t)
		fb.add(t, "sr1", "") // an empty drive
		if tc.cd != "" {
			custom := tc.cd
			if custom == "none" {
				custom = ""
			}
			fb.add(t, "sr0", mkISOUDF(t, imgs, "cd.iso", "rd_rdfe_stable.test", false, !tc.iso, map[string]string{"ovf-env.xml": ovfEnv(custom)}))
		}
		srv := newFakeService(t, fakeAzureIMDS(tc.userData, 0))
		te := newTestEnv("azure", srv.URL)
		src := Azure{HTTPTiming: fast, Drives: Drives(fb.source(t, time.Second))}
		b, err := src.Fetch(te.ctx())
		dev, url := filepath.Join(fb.dev, "sr0"), srv.URL+azureInstance
		switch {
		case tc.err != "":
			if want := "azure: " + fmt.Sprintf(tc.err, dev, url); err == nil || err.Error() != want {
				t.Errorf("%s: %v, want %s", tc.name, err, want)
			}
		case tc.config != "":
			if err != nil || string(b) != tc.config {
				t.Errorf("%s: Fetch = %q, %v", tc.name, b, err)
			}
		default:
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: Fetch = %q, %v", tc.name, b, err)
			}
		}
		want := azureFacts
		want.UserData = tc.kind
		want.Hostname = "node-1-computer"
		if tc.cd != "" {
			want.Hostname = "node-1-ovf"
			if mounted := strings.Join(fb.mounted, " "); mounted != "sr0" || fb.umounts != 1 {
				t.Errorf("%s: mounted %q, %d unmounts", tc.name, mounted, fb.umounts)
			}
		}
		if te.Facts == nil || *te.Facts != want {
			t.Errorf("%s: facts %+v, want %+v", tc.name, te.Facts, want)
		}
		if wantLoc := map[string]string{"cd": dev, "imds": url}[tc.from]; te.Location != wantLoc {
			t.Errorf("%s: location %q, want %q", tc.name, te.Location, wantLoc)
		}
		if log := te.log(t); tc.note != "" && !strings.Contains(log, strings.ReplaceAll(tc.note, "%s", dev)) {
			t.Errorf("%s: notes %q, want %q", tc.name, log, tc.note)
		}
	}
}

func TestAzureIMDS(t *testing.T) {
	// IMDS refuses a request without Metadata: true.
	srv := newFakeService(t, fakeAzureIMDS(nodeConfig, 0))
	c, _ := newClient("azure", srv.URL, fast)
	if resp, err := c.get(t.Context(), azureInstance); err != nil || resp.status != 400 {
		t.Errorf("without Metadata: true: %+v %v", resp, err)
	}
	// 410 while provisioning: retried.
	srv = newFakeService(t, fakeAzureIMDS(nodeConfig, 2))
	te := newTestEnv("azure", srv.URL)
	src := Azure{HTTPTiming: HTTPTiming{Timeout: 3 * time.Second}, Drives: Drives(newFakeBlock(t).source(t, time.Second))}
	if b, err := src.Fetch(te.ctx()); err != nil || string(b) != nodeConfig || len(srv.requests()) != 3 {
		t.Errorf("410 twice: %q %v, requests %v", b, err, srv.requests())
	}
	// Not Azure: nothing asked, no CD read.
	fb := newFakeBlock(t)
	te = newTestEnv("", srv.URL)
	src.Drives = Drives(fb.source(t, time.Second))
	if _, err := src.Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || len(srv.requests()) != 3 || len(fb.mounted) != 0 || te.networks != 0 {
		t.Errorf("not azure: %v", err)
	}
}

func TestAzureFailures(t *testing.T) {
	imgs := t.TempDir()
	cd := mkISOUDF(t, imgs, "cd.iso", "rd_rdfe_stable.test", false, true, map[string]string{"ovf-env.xml": ovfEnv(nodeConfig)})

	// IMDS silent: the CD's config all the same, within the bound.
	fb := newFakeBlock(t)
	fb.add(t, "sr0", cd)
	te := newTestEnv("azure", silentServer(t))
	src := Azure{HTTPTiming: fast, Drives: Drives(fb.source(t, time.Second))}
	start := time.Now()
	b, err := src.Fetch(te.ctx())
	if d := time.Since(start); err != nil || string(b) != nodeConfig || d > fast.Timeout+time.Second || !strings.Contains(te.log(t), "azure: no answer from the metadata service") {
		t.Errorf("silent IMDS: %q %v after %s, notes %q", b, err, d, te.log(t))
	}
	// Neither: not found.
	te = newTestEnv("azure", silentServer(t))
	src.Drives = Drives(newFakeBlock(t).source(t, time.Second))
	if _, err := src.Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || te.Facts.UserData != "" {
		t.Errorf("nothing: %v, facts %+v", err, te.Facts)
	}

	// The CD does not mount (no udf module): userData all the same; with
	// none, the failure is the error, as customData may hold a config.
	fb = newFakeBlock(t)
	fb.add(t, "sr0", cd)
	src.Drives = Drives(fb.source(t, time.Second))
	src.Drives.Mount = func(dev, dir, fstype, data string) error { return errors.New("no such device") }
	for _, userData := range []string{nodeConfig, ""} {
		srv := newFakeService(t, fakeAzureIMDS(userData, 0))
		te = newTestEnv("azure", srv.URL)
		b, err := src.Fetch(te.ctx())
		want := "azure: CD " + filepath.Join(fb.dev, "sr0") + ` (udf, label ""): mounting it read-only: no such device`
		if userData != "" && (err != nil || string(b) != nodeConfig) || userData == "" && (err == nil || err.Error() != want) {
			t.Errorf("CD unmountable, userData %q: %q %v", userData, b, err)
		}
		if !strings.Contains(te.log(t), want[len("azure: "):]+": customData not read") {
			t.Errorf("CD unmountable: notes %q", te.log(t))
		}
	}

	// IMDS answers nonsense: an error, unless the CD has the config.
	srv := newFakeService(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{" + secret)) })
	te = newTestEnv("azure", srv.URL)
	src.Drives = Drives(newFakeBlock(t).source(t, time.Second))
	_, err = src.Fetch(te.ctx())
	if want := "azure: GET " + srv.URL + azureInstance + ": the answer is not the instance's JSON document"; err == nil || err.Error() != want {
		t.Errorf("nonsense: %v", err)
	}
	// A CD-ROM of another kind, and ovf-env.xml on a disk: not the provisioning CD.
	fb = newFakeBlock(t)
	fb.add(t, "sr0", mkISO(t, imgs, "other.iso", "DATA", false, map[string]string{"README": "x"}))
	fb.add(t, "vdb", mkISO(t, imgs, "disk.iso", "DATA", false, map[string]string{"ovf-env.xml": ovfEnv(nodeConfig)}))
	src.Drives = Drives(fb.source(t, time.Second))
	te = newTestEnv("azure", newFakeService(t, fakeAzureIMDS("", 0)).URL)
	if _, err := src.Fetch(te.ctx()); !errors.Is(err, ErrNotFound) || strings.Join(fb.mounted, " ") != "sr0" ||
		!strings.Contains(te.log(t), "azure: no provisioning CD") {
		t.Errorf("other CD: %v, mounted %v, notes %q", err, fb.mounted, te.log(t))
	}
}

func TestParseOVFEnv(t *testing.T) {
	custom, host, err := parseOVFEnv([]byte(ovfEnv(nodeConfig)))
	if err != nil || string(custom) != nodeConfig || host != "node-1-ovf" {
		t.Errorf("parseOVFEnv = %q %q %v", custom, host, err)
	}
	custom, host, err = parseOVFEnv([]byte(ovfEnv("")))
	if err != nil || custom != nil || host != "node-1-ovf" {
		t.Errorf("no customData: %q %q %v", custom, host, err)
	}
	// No prefixes, a wrapped base64, an empty element.
	doc := "<Environment><ProvisioningSection><LinuxProvisioningConfigurationSet><CustomData>\n  " +
		base64.StdEncoding.EncodeToString([]byte(nodeConfig))[:8] + "\n  " + base64.StdEncoding.EncodeToString([]byte(nodeConfig))[8:] +
		"\n</CustomData><HostName/></LinuxProvisioningConfigurationSet></ProvisioningSection></Environment>"
	if custom, host, err := parseOVFEnv([]byte(doc)); err != nil || string(custom) != nodeConfig || host != "" {
		t.Errorf("no prefixes = %q %q %v", custom, host, err)
	}
	for doc, want := range map[string]string{
		"<Environment/>": "ovf-env.xml has no ProvisioningSection",
		"<ProvisioningSection><CustomData>" + secret + "!</CustomData></ProvisioningSection>": "ovf-env.xml: CustomData is not base64",
	} {
		if _, _, err := parseOVFEnv([]byte(doc)); err == nil || err.Error() != want {
			t.Errorf("parseOVFEnv(%q) = %v, want %s", doc, err, want)
		}
	}
}

func TestXMLText(t *testing.T) {
	for _, tc := range []struct {
		doc, name, text string
		ok              bool
	}{
		{"<a><b>x</b></a>", "b", "x", true},
		{"<a><ns:b attr='1'>x &amp; y</ns:b></a>", "b", "x & y", true},
		{"<a><bb>no</bb><b>yes</b></a>", "b", "yes", true},
		{"<a><b/></a>", "b", "", true},
		{"<a><b><![CDATA[<x>]]></b></a>", "b", "<x>", true},
		{"<a><b>unclosed</a>", "b", "", false},
		{"<a></a>", "b", "", false},
		{"<", "b", "", false},
		{"<b", "b", "", false},
	} {
		if text, ok := xmlText(tc.doc, tc.name); text != tc.text || ok != tc.ok {
			t.Errorf("xmlText(%q, %q) = %q %v", tc.doc, tc.name, text, ok)
		}
	}
}

func TestIsUDF(t *testing.T) {
	imgs := t.TempDir()
	for _, udf := range []bool{false, true} {
		img := mkISOUDF(t, imgs, "x.iso", "X", false, udf, map[string]string{"a": "b"})
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		if got := isUDF(f); got != udf {
			t.Errorf("isUDF(udf %v) = %v", udf, got)
		}
		f.Close()
	}
	vfat := mkVfat(t, imgs, "v.img", 4, 12, "X", nil)
	f, _ := os.Open(vfat)
	defer f.Close()
	if isUDF(f) {
		t.Error("isUDF(vfat)")
	}
}
