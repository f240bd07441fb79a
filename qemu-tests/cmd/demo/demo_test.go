package main

import (
	"strings"
	"testing"

	"github.com/slate-os/slate/boot/nodeconfig"
)

// The demo's node config must pass the init's validation, or the demo node
// would boot without its script and the demo would wait in vain.
func TestNodeConfigValid(t *testing.T) {
	pub := "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n"
	c, err := nodeconfig.Parse([]byte(nodeConfig("10.0.2.2:5000/slate/demo:demo-2", "10.0.2.2:5000/slate/extensions:1", "demo-2", pub)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Update.Source != "10.0.2.2:5000/slate/demo:demo-2" || !c.Update.Insecure || c.Update.PublicKey != pub {
		t.Errorf("update = %+v", c.Update)
	}
	if len(c.Extensions) != 1 || !nodeconfig.IsExtensionRef(c.Extensions[0]) {
		t.Errorf("extensions = %q, want the one reference", c.Extensions)
	}
	if len(c.Files) != 1 || c.Files[0].Contents.Text == nil || !strings.Contains(*c.Files[0].Contents.Text, `if [ "$v" != "demo-2" ]`) {
		t.Errorf("files = %+v", c.Files)
	}
	// The node upgrades itself: the image's timer, enabled.
	timer := false
	for _, u := range c.Systemd.Units {
		if u.Name == "slate-upgrade.timer" && u.Enabled != nil && *u.Enabled {
			timer = true
		}
	}
	if !timer {
		t.Errorf("the demo config does not enable slate-upgrade.timer: %+v", c.Systemd.Units)
	}
}
