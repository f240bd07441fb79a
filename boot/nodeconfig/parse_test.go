package nodeconfig

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/internal/strictyaml"
)

const head = "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\n"

const (
	testEd25519  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZHevMbNSut2xwXKGkBI63rDMJ2KjYN1s/bHrYoM0VY admin@example"
	testYescrypt = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7"
)

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, doc)
	}
	return c
}

func TestParseEveryField(t *testing.T) {
	c := mustParse(t, head+`
hostname: node-1.example
timezone: Europe/Paris
files:
  - path: /etc/app/app.conf
    mode: "0640"
    owner: app:app
    contents:
      text: |
        level=debug
    overwrite: true
  - path: /run/app/blob
    mode: 0o600
    owner: "1000"
    contents:
      base64: aGVsbG8=
  - path: /etc/app/empty
    mode: 420
directories:
  - path: /etc/app
    mode: 0750
    owner: root:app
links:
  - path: /etc/resolv.conf
    target: /run/systemd/resolve/resolv.conf
    overwrite: true
systemd:
  units:
    - name: hello.service
      contents: |
        [Unit]
        Description=Hello
        [Service]
        ExecStart=/bin/echo hello
        [Install]
        WantedBy=multi-user.target
      dropins:
        - name: 10-env.conf
          contents: |
            [Service]
            Environment=A=1
      enabled: true
    - name: getty@tty1.service
      enabled: false
    - name: apt-daily.timer
      masked: true
sysctl:
  net.ipv4.ip_forward: 1
  net.ipv4.ip_local_port_range: "32768 60999"
  vm.swappiness: 10.5
kernelModules: [br_netfilter, overlay]
network:
  - name: 10-en.network
    contents: |
      [Match]
      Name=en*
      [Network]
      DHCP=yes
extensions: [docker, tools-1.2]
update:
  source: 10.0.2.2:5000/slate/node:2
  insecure: true
  publicKey: |
    -----BEGIN PUBLIC KEY-----
    MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
    -----END PUBLIC KEY-----
health:
  requiredUnits: [hello.service, systemd-networkd.service]
  timeout: 90s
access:
  breakGlass: true
  rootPasswordHash: "`+testYescrypt+`"
  sshAuthorizedKeys:
    - `+testEd25519+`
`)
	if c.Hostname != "node-1.example" || c.Timezone != "Europe/Paris" {
		t.Errorf("hostname, timezone: %q %q", c.Hostname, c.Timezone)
	}
	if len(c.Files) != 3 || *c.Files[0].Mode != 0o640 || *c.Files[1].Mode != 0o600 || *c.Files[2].Mode != 0o644 {
		t.Fatalf("files: %+v", c.Files)
	}
	if d, _ := c.Files[1].Contents.Data(); string(d) != "hello" {
		t.Errorf("base64 contents: %q", d)
	}
	if d, _ := c.Files[2].Contents.Data(); d == nil || len(d) != 0 {
		t.Errorf("no contents should be an empty file: %q", d)
	}
	if !c.Files[0].Overwrite || c.Files[0].Owner != "app:app" {
		t.Errorf("files[0]: %+v", c.Files[0])
	}
	if *c.Directories[0].Mode != 0o750 || c.Links[0].Target != "/run/systemd/resolve/resolv.conf" {
		t.Errorf("directories, links: %+v %+v", c.Directories, c.Links)
	}
	u := c.Systemd.Units
	if len(u) != 3 || !*u[0].Enabled || *u[1].Enabled || !u[2].Masked || u[0].Dropins[0].Name != "10-env.conf" {
		t.Errorf("units: %+v", u)
	}
	if c.Sysctl["net.ipv4.ip_forward"] != "1" || c.Sysctl["vm.swappiness"] != "10.5" || c.Sysctl["net.ipv4.ip_local_port_range"] != "32768 60999" {
		t.Errorf("sysctl: %v", c.Sysctl)
	}
	if !reflect.DeepEqual(c.KernelModules, []string{"br_netfilter", "overlay"}) || c.Network[0].Name != "10-en.network" {
		t.Errorf("modules, network: %v %v", c.KernelModules, c.Network)
	}
	if c.Update.Source != "10.0.2.2:5000/slate/node:2" || !c.Update.Insecure || c.Health.Timeout != Duration(90*time.Second) {
		t.Errorf("update, health: %+v %+v", c.Update, c.Health)
	}
	if !c.Access.BreakGlass || c.Access.RootPasswordHash != testYescrypt || len(c.Access.SSHAuthorizedKeys) != 1 {
		t.Errorf("access: %+v", c.Access)
	}
	roundTrip(t, c, true)
}

func TestParseJSON(t *testing.T) {
	c := mustParse(t, `{
  "apiVersion": "slate.dev/v1alpha1", "kind": "NodeConfig",
  "hostname": "n1",
  "files": [{"path": "/etc/motd", "mode": 420, "contents": {"text": "hi\n"}, "overwrite": true}],
  "sysctl": {"net.ipv4.ip_forward": 1, "kernel.panic": "10"},
  "systemd": {"units": [{"name": "a.service", "masked": true}]},
  "health": {"timeout": "5m"}
}`)
	if *c.Files[0].Mode != 0o644 || c.Sysctl["net.ipv4.ip_forward"] != "1" || c.Health.Timeout != Duration(5*time.Minute) {
		t.Errorf("%+v", c)
	}
	roundTrip(t, c, true)
}

func TestModeForms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mode
		err  string
	}{
		{`"0644"`, 0o644, ""},
		{`"644"`, 0o644, ""},
		{`"0o755"`, 0o755, ""},
		{`0644`, 0o644, ""},
		{`0o4755`, 0o4755, ""},
		{`420`, 0o644, ""},
		{`0`, 0, ""},
		{`"07777"`, 0o7777, ""},
		{`644`, 0, "decimal number above 511"},
		{`"0888"`, 0, "not an octal mode"},
		{`"17777"`, 0, "more than 07777"},
		{`"0017777"`, 0, "not an octal mode"},
		{`0x1a4`, 0, "not a mode"},
		{`-1`, 0, "not a mode"},
		{`"rw-r--r--"`, 0, "not an octal mode"},
		{`true`, 0, "want a mode"},
		{`[1]`, 0, "want a mode"},
		{`6.5`, 0, "want a mode"},
	} {
		// breakGlass: a set-user-ID or set-group-ID file needs it.
		c, err := Parse([]byte(head + "access: {breakGlass: true}\nfiles:\n  - path: /etc/x\n    mode: " + tc.in + "\n"))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "files[0].mode") {
				t.Errorf("mode %s: got %v, want an error about files[0].mode with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("mode %s: %v", tc.in, err)
			continue
		}
		if got := *c.Files[0].Mode; got != tc.want {
			t.Errorf("mode %s: got %o, want %o", tc.in, got, tc.want)
		}
	}
}

// Every refusal Parse makes, with the field's path it must name.
func TestParseRefusals(t *testing.T) {
	long := strings.Repeat("a", 63)
	for _, tc := range []struct {
		name, doc, path, msg string
		line                 int
	}{
		{"empty", "", "", "empty document", 0},
		{"not yaml", "a: [", "", "did not find expected", 0},
		{"two documents", head + "---\n" + head, "", "more than one YAML document", 3},
		{"no apiVersion", "kind: NodeConfig\n", "apiVersion", "missing", 0},
		{"bad apiVersion", "apiVersion: v2\nkind: NodeConfig\n", "apiVersion", `got "v2"`, 1},
		{"bad kind", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\n", "kind", `want "NodeConfig"`, 2},
		{"unknown top field", head + "hostName: x\n", "hostName", `unknown field (did you mean "hostname"?)`, 3},
		{"unknown nested field", head + "files:\n  - path: /etc/x\n    contents:\n      txt: a\n", "files[0].contents.txt", "unknown field", 6},
		{"unknown unit field", head + "systemd:\n  units:\n    - name: a.service\n      enable: true\n", "systemd.units[0].enable", "unknown field", 6},
		{"field twice", head + "hostname: a\nhostname: b\n", "hostname", "given twice", 4},
		{"wrong type list", head + "files: /etc/x\n", "files", "want a list", 3},
		{"wrong type bool", head + "systemd:\n  units:\n    - name: a.service\n      masked: maybe\n", "systemd.units[0].masked", "want a boolean", 6},
		{"wrong type mapping", head + "update: registry/x\n", "update", "want a mapping", 3},
		{"wrong type string", head + "hostname: [a]\n", "hostname", "want a string", 3},
		{"alias", head + "hostname: &h a\ntimezone: *h\n", "timezone", "aliases are not allowed", 4},

		{"hostname chars", head + "hostname: node_1\n", "hostname", "not a hostname", 3},
		{"hostname dash", head + "hostname: -node\n", "hostname", "not a hostname", 3},
		{"hostname empty label", head + "hostname: a..b\n", "hostname", "not a hostname", 3},
		{"hostname label too long", head + "hostname: " + long + "b\n", "hostname", "not a hostname", 3},
		{"hostname too long", head + "hostname: " + long + "." + long + "\n", "hostname", "longer than 64", 3},
		{"timezone path", head + "timezone: ../etc/passwd\n", "timezone", "not a time zone name", 3},
		{"timezone absolute", head + "timezone: /usr/share/zoneinfo/UTC\n", "timezone", "not a time zone name", 3},
		{"timezone space", head + "timezone: Europe/Saint Paul\n", "timezone", "not a time zone name", 3},

		{"path outside", head + "files:\n  - path: /etc/a\n  - path: /etc/b\n  - path: /usr/x\n", "files[2].path", "/usr/x is outside /etc and /run", 6},
		{"path dotdot", head + "files:\n  - path: /etc/../usr/x\n", "files[0].path", `contains ".."`, 4},
		{"path dotdot end", head + "files:\n  - path: /etc/a/..\n", "files[0].path", `contains ".."`, 4},
		{"path relative", head + "files:\n  - path: etc/x\n", "files[0].path", "relative", 4},
		{"path unclean", head + "files:\n  - path: /etc//x/\n", "files[0].path", "not clean: write /etc/x", 4},
		{"path dot", head + "files:\n  - path: /etc/./x\n", "files[0].path", "not clean", 4},
		{"path /etc", head + "files:\n  - path: /etc\n", "files[0].path", "/etc itself", 4},
		{"path /run", head + "directories:\n  - path: /run\n", "directories[0].path", "/run itself", 4},
		{"path etcfoo", head + "files:\n  - path: /etcfoo/x\n", "files[0].path", "outside /etc and /run", 4},
		{"path run/slate", head + "files:\n  - path: /run/slate/boot.json\n", "files[0].path", "reserved", 4},
		{"path control", head + "files:\n  - path: \"/etc/a\\nb\"\n", "files[0].path", "control character", 4},
		{"path missing", head + "files:\n  - mode: \"0644\"\n", "files[0].path", "missing", 4},
		{"link outside", head + "links:\n  - path: /var/x\n    target: /etc/x\n", "links[0].path", "outside", 4},
		{"link no target", head + "links:\n  - path: /etc/x\n", "links[0].target", "missing", 4},
		{"dir outside", head + "directories:\n  - path: /usr/local\n", "directories[0].path", "outside", 4},
		{"duplicate path", head + "files:\n  - path: /etc/a\n  - path: /etc/b\n  - path: /etc/a\n", "files[2].path", "/etc/a is also written by files[0].path", 6},
		{"duplicate file and link", head + "files:\n  - path: /etc/a\nlinks:\n  - path: /etc/a\n    target: b\n", "links[0].path", "also written by files[0].path", 6},
		{"below a file", head + "files:\n  - path: /etc/a\n  - path: /etc/a/b\n", "files[1].path", "below /etc/a, which files[0].path makes a file", 5},
		{"below a link", head + "links:\n  - path: /etc/a\n    target: /etc/b\nfiles:\n  - path: /etc/a/x\n", "files[0].path", "makes a symlink", 7},
		{"clash with hostname", head + "hostname: a\nfiles:\n  - path: /etc/hostname\n", "files[0].path", "also written by hostname", 5},
		{"clash with timezone", head + "timezone: UTC\nlinks:\n  - path: /etc/localtime\n    target: x\n", "links[0].path", "also written by timezone", 5},
		{"clash with unit", head + "systemd:\n  units:\n    - name: a.service\n      contents: \"[Unit]\\n\"\nfiles:\n  - path: /etc/systemd/system/a.service\n", "files[0].path", "also written by systemd.units[0].contents", 8},
		{"clash with record dir", head + "files:\n  - path: /run/slate\n", "files[0].path", "reserved", 4},
		{"dir twice is fine but dir and file not", head + "directories:\n  - path: /etc/d\nfiles:\n  - path: /etc/d\n", "files[0].path", "also written by directories[0].path", 6},

		{"bad mode", head + "files:\n  - path: /etc/x\n    mode: 999\n", "files[0].mode", "above 511", 5},
		{"bad owner", head + "files:\n  - path: /etc/x\n    owner: \"a b\"\n", "files[0].owner", "neither a name nor a numeric id", 5},
		{"bad owner empty group", head + "files:\n  - path: /etc/x\n    owner: \"app:\"\n", "files[0].owner", "group", 5},
		{"bad owner id", head + "files:\n  - path: /etc/x\n    owner: \"4294967295\"\n", "files[0].owner", "out of range", 5},
		{"bad dir owner", head + "directories:\n  - path: /etc/x\n    owner: \"-x\"\n", "directories[0].owner", "neither", 5},
		{"text and base64", head + "files:\n  - path: /etc/x\n    contents:\n      text: a\n      base64: YQ==\n", "files[0].contents", "not both", 6},
		{"no contents kind", head + "files:\n  - path: /etc/x\n    contents: {}\n", "files[0].contents", "give text or base64", 5},
		{"bad base64", head + "files:\n  - path: /etc/x\n    contents:\n      base64: \"YQ=?\"\n", "files[0].contents.base64", "not standard base64", 6},
		{"base64 unpadded", head + "files:\n  - path: /etc/x\n    contents:\n      base64: YQ\n", "files[0].contents.base64", "not standard base64", 6},

		{"unit name no type", head + "systemd:\n  units:\n    - name: hello\n      masked: true\n", "systemd.units[0].name", "type suffix", 5},
		{"unit name bad type", head + "systemd:\n  units:\n    - name: hello.conf\n      masked: true\n", "systemd.units[0].name", "type suffix", 5},
		{"unit name chars", head + "systemd:\n  units:\n    - name: \"he llo.service\"\n      masked: true\n", "systemd.units[0].name", "not allowed", 5},
		{"unit name slash", head + "systemd:\n  units:\n    - name: ../x.service\n      masked: true\n", "systemd.units[0].name", "not allowed", 5},
		{"unit name at start", head + "systemd:\n  units:\n    - name: \"@x.service\"\n      masked: true\n", "systemd.units[0].name", "nothing before @", 5},
		{"unit twice", head + "systemd:\n  units:\n    - name: a.service\n      masked: true\n    - name: a.service\n      enabled: false\n", "systemd.units[1].name", "also systemd.units[0]", 7},
		{"unit does nothing", head + "systemd:\n  units:\n    - name: a.service\n", "systemd.units[0]", "nothing to do", 5},
		{"masked with contents", head + "systemd:\n  units:\n    - name: a.service\n      masked: true\n      contents: \"[Unit]\\n\"\n", "systemd.units[0].masked", "cannot have contents", 6},
		{"masked and enabled", head + "systemd:\n  units:\n    - name: a.service\n      masked: true\n      enabled: true\n", "systemd.units[0].masked", "cannot be enabled", 6},
		{"masked with dropins", head + "systemd:\n  units:\n    - name: a.service\n      masked: true\n      dropins: [{name: a.conf, contents: \"\"}]\n", "systemd.units[0].masked", "drop-ins", 6},
		{"unit syntax", head + "systemd:\n  units:\n    - name: a.service\n      contents: \"[Service]\\nExecStart /bin/true\\n\"\n", "systemd.units[0].contents", "line 2", 6},
		{"unit key outside section", head + "systemd:\n  units:\n    - name: a.service\n      contents: \"ExecStart=/bin/true\\n\"\n", "systemd.units[0].contents", "before any [Section]", 6},
		{"unit bad header", head + "systemd:\n  units:\n    - name: a.service\n      contents: \"[Service\\n\"\n", "systemd.units[0].contents", "not a [Section] header", 6},
		{"enable without install", head + "systemd:\n  units:\n    - name: a.service\n      contents: \"[Service]\\nExecStart=/bin/true\\n\"\n      enabled: true\n", "systemd.units[0].enabled", "nothing to enable", 7},
		{"enable bad install target", head + "systemd:\n  units:\n    - name: a.service\n      contents: \"[Install]\\nWantedBy=multi-user\\n\"\n      enabled: true\n", "systemd.units[0].contents", "WantedBy=", 6},
		{"enable bad specifier", head + "systemd:\n  units:\n    - name: a.service\n      contents: \"[Install]\\nWantedBy=%H.target\\n\"\n      enabled: true\n", "systemd.units[0].contents", "specifier %H", 6},
		{"enable alias of other type", head + "systemd:\n  units:\n    - name: a.service\n      contents: \"[Install]\\nAlias=b.socket\\n\"\n      enabled: true\n", "systemd.units[0].contents", "the unit's type", 6},
		{"enable template", head + "systemd:\n  units:\n    - name: a@.service\n      contents: \"[Install]\\nWantedBy=multi-user.target\\n\"\n      enabled: true\n", "systemd.units[0].enabled", "is a template", 7},
		{"dropin name", head + "systemd:\n  units:\n    - name: a.service\n      dropins: [{name: override, contents: \"\"}]\n", "systemd.units[0].dropins[0].name", "must end in .conf", 6},
		{"dropin name slash", head + "systemd:\n  units:\n    - name: a.service\n      dropins: [{name: a/x.conf, contents: \"\"}]\n", "systemd.units[0].dropins[0].name", "not allowed", 6},
		{"dropin twice", head + "systemd:\n  units:\n    - name: a.service\n      dropins: [{name: a.conf, contents: \"\"}, {name: a.conf, contents: \"\"}]\n", "systemd.units[0].dropins[1].name", "also", 6},
		{"dropin syntax", head + "systemd:\n  units:\n    - name: a.service\n      dropins: [{name: a.conf, contents: \"oops\"}]\n", "systemd.units[0].dropins[0].contents", "not Key=Value", 6},

		{"sysctl key", head + "sysctl:\n  ip_forward: 1\n", "sysctl.ip_forward", "not a sysctl key", 4},
		{"sysctl key spaces", head + "sysctl:\n  \"net.ipv4 .x\": 1\n", "sysctl.net.ipv4 .x", "not a sysctl key", 4},
		{"sysctl bool", head + "sysctl:\n  net.ipv4.ip_forward: true\n", "sysctl.net.ipv4.ip_forward", "write 1 or 0", 4},
		{"sysctl list", head + "sysctl:\n  net.ipv4.ip_forward: [1]\n", "sysctl.net.ipv4.ip_forward", "want a string or number", 4},
		{"sysctl empty", head + "sysctl:\n  net.ipv4.ip_forward: \"\"\n", "sysctl.net.ipv4.ip_forward", "empty value", 4},
		{"sysctl newline", head + "sysctl:\n  kernel.x: \"1\\nkernel.y = 2\"\n", "sysctl.kernel.x", "one line", 4},
		{"sysctl same key twice", head + "sysctl:\n  net.ipv4.ip_forward: 1\n  net/ipv4/ip_forward: 0\n", "sysctl.net/ipv4/ip_forward", "same setting", 5},
		{"module name", head + "kernelModules: [\"../x\"]\n", "kernelModules[0]", "not a module name", 3},
		{"module twice", head + "kernelModules: [br-netfilter, br_netfilter]\n", "kernelModules[1]", "also kernelModules[0]", 3},
		{"network name", head + "network:\n  - name: eth0\n    contents: \"[Match]\\nName=eth0\\n\"\n", "network[0].name", "must end in .network, .netdev, .link", 4},
		{"network empty", head + "network:\n  - name: 10-a.network\n    contents: \"# nothing\\n\"\n", "network[0].contents", "no settings", 5},
		{"network twice", head + "network:\n  - name: a.network\n    contents: \"[Match]\\nName=a\\n\"\n  - name: a.network\n    contents: \"[Match]\\nName=a\\n\"\n", "network[1].name", "also network[0]", 6},
		{"extension name", head + "extensions: [\"a/b\"]\n", "extensions[0]", "neither an extension name", 3},
		{"extension twice", head + "extensions: [a, a]\n", "extensions[1]", "also extensions[0]", 3},
		{"update source", head + "update:\n  source: \"https://registry/x\"\n", "update.source", "not an OCI reference", 4},
		{"update source upper", head + "update:\n  source: registry.example/Org/node\n", "update.source", "not an OCI reference", 4},
		{"update key private", head + "update:\n  publicKey: |\n    -----BEGIN PRIVATE KEY-----\n    MC4CAQA=\n    -----END PRIVATE KEY-----\n", "update.publicKey", "private key", 4},
		{"update key junk", head + "update:\n  publicKey: not a key!\n", "update.publicKey", "neither a PEM block nor base64", 4},
		{"update keys junk", head + "update:\n  publicKeys: [MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=, \"not a key!\"]\n", "update.publicKeys[1]", "neither a PEM block nor base64", 4},
		{"update allowUnsigned type", head + "update:\n  allowUnsigned: [true]\n", "update.allowUnsigned", "", 4},
		{"health unit", head + "health:\n  requiredUnits: [sshd]\n", "health.requiredUnits[0]", "type suffix", 4},
		{"health template", head + "health:\n  requiredUnits: [getty@.service]\n", "health.requiredUnits[0]", "template", 4},
		{"health timeout", head + "health:\n  timeout: 90\n", "health.timeout", "want a duration", 4},
		{"health timeout junk", head + "health:\n  timeout: soon\n", "health.timeout", "want a duration", 4},
		{"health timeout negative", head + "health:\n  timeout: -1s\n", "health.timeout", "negative", 4},

		{"password without breakGlass", head + "access:\n  rootPasswordHash: \"" + testYescrypt + "\"\n", "access.rootPasswordHash", "needs access.breakGlass: true", 4},
		{"keys without breakGlass", head + "access:\n  breakGlass: false\n  sshAuthorizedKeys: [\"" + testEd25519 + "\"]\n", "access.sshAuthorizedKeys", "needs access.breakGlass: true", 5},
		{"plain password", head + "access:\n  breakGlass: true\n  rootPasswordHash: hunter2hunter2hunter2\n", "access.rootPasswordHash", "plain password is never accepted", 5},
		{"md5 password", head + "access:\n  breakGlass: true\n  rootPasswordHash: \"$1$abc$0123456789abcdefghij\"\n", "access.rootPasswordHash", "too weak", 5},
		{"hash with colon", head + "access:\n  breakGlass: true\n  rootPasswordHash: \"$6$salt$abc:0:::\"\n", "access.rootPasswordHash", "not a crypt(3) hash", 5},
		{"ssh key junk", head + "access:\n  breakGlass: true\n  sshAuthorizedKeys: [\"hello\"]\n", "access.sshAuthorizedKeys[0]", "not an OpenSSH public key", 5},
		{"ssh key wrong blob", head + "access:\n  breakGlass: true\n  sshAuthorizedKeys: [\"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGZHevMbNSut2xwXKGkBI63rDMJ2KjYN1s/bHrYoM0VY\"]\n", "access.sshAuthorizedKeys[0]", "not a ssh-rsa key", 5},
		{"ssh two keys in one", head + "access:\n  breakGlass: true\n  sshAuthorizedKeys: [\"" + testEd25519 + "\\n" + testEd25519 + "\"]\n", "access.sshAuthorizedKeys[0]", "one key per list item", 5},
		{"json unknown field", `{"apiVersion": "slate.dev/v1alpha1", "kind": "NodeConfig", "files": [{"path": "/etc/a", "perm": 420}]}`, "files[0].perm", "unknown field", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			var fe *strictyaml.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("not a FieldError: %T %v", err, err)
			}
			if fe.Path != tc.path || !strings.Contains(fe.Msg, tc.msg) {
				t.Errorf("got path %q msg %q (%v)\nwant path %q msg containing %q", fe.Path, fe.Msg, err, tc.path, tc.msg)
			}
			if tc.line != 0 && fe.Line != tc.line {
				t.Errorf("%v: line %d, want %d", err, fe.Line, tc.line)
			}
		})
	}
}

// Things that look odd but are valid.
func TestParseAccepts(t *testing.T) {
	for _, doc := range []string{
		head,
		head + "files: []\nsystemd: {units: []}\n",
		head + "---\n",
		"---\n" + head + "...\n---\n# nothing\n",
		head + "hostname: localhost\n",
		head + "hostname: 1-2-3.example.COM\n",
		head + "timezone: Etc/GMT+5\n",
		head + "timezone: America/Argentina/Buenos_Aires\n",
		head + "files:\n  - path: /run/x\n    contents: {text: \"\"}\n",
		head + "files:\n  - path: /etc/x\n    owner: \"0:0\"\n  - path: /etc/y\n    owner: systemd-network\n  - path: /etc/z\n    owner: _apt:nogroup\n",
		head + "directories:\n  - path: /etc/d\n  - path: /etc/d/e\nfiles:\n  - path: /etc/d/e/f\n",
		head + "systemd:\n  units:\n    - name: a.service\n      dropins: [{name: 10-a.conf, contents: \"\"}]\n",
		head + "systemd:\n  units:\n    - name: a@.service\n      contents: \"[Install]\\nWantedBy=multi-user.target\\nDefaultInstance=x\\n\"\n      enabled: true\n",
		head + "systemd:\n  units:\n    - name: a@.service\n      masked: true\n    - name: b@x.service\n      enabled: false\n",
		head + "systemd:\n  units:\n    - name: a.service\n      contents: \"# c\\n[Service]\\nExecStart=/bin/sh -c \\\\\\n  'echo hi'\\n[Install]\\nWantedBy=multi-user.target \\\\\\n  b.target\\n\"\n      enabled: true\n",
		head + "sysctl:\n  net/ipv4/conf/eth0.100/rp_filter: 2\n  -net.ipv6.conf.all.disable_ipv6: 1\n  kernel.core_pattern: \"|/bin/false\"\n",
		head + "update:\n  source: localhost:5000/node@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n  publicKey: MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n",
		head + "update:\n  source: node\n",
		head + "update:\n  allowUnsigned: true\n  publicKeys: [MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=]\n",
		head + "access:\n  breakGlass: true\n",
		head + "access:\n  breakGlass: true\n  rootPasswordHash: \"$6$rounds=5000$saltsalt$Zx4l5Rkj1Jd8NfC3VBz7mTz1tXH1uYVQwJ5u5C8P0dM5E2ldFJVkGm0vA9yS8Hc1pX6nKqW3eB7rT2yU4iO0.\"\n",
		head + "access:\n  breakGlass: true\n  sshAuthorizedKeys: ['from=\"10.0.0.0/8\" " + testEd25519 + "']\n",
	} {
		c, err := Parse([]byte(doc))
		if err != nil {
			t.Errorf("%v\n%s", err, doc)
			continue
		}
		roundTrip(t, c, true)
	}
}

func TestLoad(t *testing.T) {
	if _, err := Load(t.TempDir() + "/none.yaml"); err == nil {
		t.Error("missing file loaded")
	}
}

func TestExtensionEntries(t *testing.T) {
	for _, c := range []struct {
		e   string
		ref bool
	}{
		{"tools", false},
		{"registry.example/extensions/tools:1.0", true},
		{"localhost:5000/ext/tools", true},
		{"127.0.0.1:5000/ext/tools@sha256:" + strings.Repeat("a", 64), true},
		{"ghcr.io/org/tools:v1@sha256:" + strings.Repeat("0", 64), true},
		{"a/b", false},
		{"Registry.example/Tools", false},
	} {
		if got := IsExtensionRef(c.e); got != c.ref {
			t.Errorf("IsExtensionRef(%q) = %v, want %v", c.e, got, c.ref)
		}
	}
	doc := "apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\nextensions: [tools, registry.example/ext/gpu:1]\nhealth:\n  requiredExtensions: [gpu]\n"
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Extensions) != 2 || len(c.Health.RequiredExtensions) != 1 {
		t.Fatalf("got %+v", c)
	}
	for doc, want := range map[string]string{
		"health:\n  requiredExtensions: [registry.example/ext/gpu]\n": "health.requiredExtensions[0]",
		"files:\n- path: /run/extensions/x/usr/bin/y\n":               "files[0].path",
	} {
		_, err := Parse([]byte("apiVersion: slate.dev/v1alpha1\nkind: NodeConfig\n" + doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %s", doc, err, want)
		}
	}
}
