package nodeconfig

import (
	"strings"
	"testing"
	"time"
)

func TestObservabilityFields(t *testing.T) {
	const head = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\n"
	for _, tc := range []struct {
		doc, err string
	}{
		{"logging:\n  collector: tls://logs.example:6514\n", ""},
		{"logging:\n  collector: tcp://10.0.0.5:514\n", ""},
		{"logging:\n  collector: udp://logs.example:514\n", "logging.collector"},
		{"logging:\n  collector: tls://logs.example\n", "logging.collector"},
		{"logging:\n  ca: x\n", "logging.collector"},
		{"logging:\n  collector: tcp://h:1\n  ca: \"-----BEGIN CERTIFICATE-----\\nAA==\\n-----END CERTIFICATE-----\\n\"\n", "plain TCP"},
		{"logging:\n  collector: tls://h:1\n  ca: not pem\n", "logging.ca"},
		{"logging:\n  collector: tls://h:1\n  clientCertificate: \"-----BEGIN CERTIFICATE-----\\nAA==\\n-----END CERTIFICATE-----\\n\"\n", "logging.clientKey"},
		{"metrics:\n  listen: \":9437\"\n", ""},
		{"metrics:\n  listen: \"[::1]:9437\"\n  textfile: /var/lib/node_exporter/slate.prom\n", ""},
		{"metrics:\n  listen: \"9437\"\n", "metrics.listen"},
		{"metrics:\n  textfile: /etc/slate.prom\n", "metrics.textfile"},
		{"access:\n  expires: 2026-12-07T10:00:00Z\n", "access.expires"},
		{"access:\n  breakGlass: true\n  expires: 2026-12-07T10:00:00Z\n  afterExpiry: poweroff\n", ""},
		{"access:\n  breakGlass: true\n  afterExpiry: reboot\n", "access.afterExpiry"},
		{"access:\n  breakGlass: true\n  expires: 2026-12-07T10:00:00Z\n  afterExpiry: halt\n", "access.afterExpiry"},
	} {
		_, err := Parse([]byte(head + tc.doc))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.doc, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error naming %s", tc.doc, err, tc.err)
		}
	}
}

func TestWithoutAccess(t *testing.T) {
	c, err := Parse([]byte(`apiVersion: slate.dev/v1alpha1
kind: NodeConfig
hostname: n1
files:
  - path: /etc/sudoers.d/admin
    contents: {text: "root ALL=(ALL) ALL\n"}
  - path: /etc/app.conf
links:
  - path: /etc/ssh/sshd_config.d/x.conf
    target: /run/x
access:
  breakGlass: true
  rootPasswordHash: "$6$slatetest$NXSu7qDk3j4.9ga/e4TBi2cdbuO0O0Um2zLydPURbdMK9duF9ZyZmAtYFNfQb31uwkm1d0LUUis0CXpuo2GRS."
  expires: 2026-12-07T10:00:00Z
`))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	if c.Access.Expired(at.Add(-time.Second)) || !c.Access.Expired(at) {
		t.Errorf("Expired around %s wrong", at)
	}
	d := c.WithoutAccess()
	if d.Access.BreakGlass || d.Access.RootPasswordHash != "" || len(d.Files) != 1 || d.Files[0].Path != "/etc/app.conf" || len(d.Links) != 0 || d.Hostname != "n1" {
		t.Errorf("WithoutAccess: %+v", d)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("the config without access is invalid: %v", err)
	}
	if len(c.Files) != 2 || !c.Access.BreakGlass {
		t.Errorf("WithoutAccess changed the config it was given")
	}
}
