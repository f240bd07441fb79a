// Package nodeconfig is the node config: the versioned document injected at
// boot (kernel command line, QEMU fw_cfg, a config drive) that gives one node
// its identity and per-environment settings, afresh on every boot.
//
// Parse decodes a YAML or JSON document strictly and validates everything that
// can be checked without the target tree; errors name the field's path
// (files[2].path) and, when known, its line. Apply writes the config into the
// target root's /etc and /run, all or nothing: it plans and checks every write
// against the tree first (paths, symlinks, owners, the time zone, units'
// [Install] sections), then writes, and undoes what it wrote if a write fails.
//
// The init (PID 1 in the initramfs) and the agent both link this package, so it
// imports only the standard library, gopkg.in/yaml.v3 and internal/strictyaml.
// The document is described field by field in configs/node/README.md.
package nodeconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/strictyaml"
)

const (
	APIVersion = "slate.dev/v1alpha1"
	Kind       = "NodeConfig"

	// RecordPath is where Apply writes the config it applied, as JSON, for
	// the agent (update source, health requirements, extensions). Mode 0600:
	// it may hold secrets.
	RecordPath = boot.RunDir + "/config.json"

	// MaxSize bounds a document: the config lands on tmpfs, in memory.
	MaxSize = 8 << 20
)

// Config is one node config document. Every field is optional except
// apiVersion and kind; the zero value of a field means "leave the image's
// default alone".
type Config struct {
	// APIVersion must be slate.dev/v1alpha1.
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	// Kind must be NodeConfig.
	Kind string `yaml:"kind" json:"kind"`

	// Hostname is written to /etc/hostname: one or more RFC 1123 labels
	// separated by dots, at most 64 characters in all.
	Hostname string `yaml:"hostname,omitempty" json:"hostname,omitempty"`
	// Timezone is an IANA time zone name (Europe/Paris, UTC). Apply checks
	// that the image has /usr/share/zoneinfo/NAME, points /etc/localtime at
	// it and writes /etc/timezone.
	Timezone string `yaml:"timezone,omitempty" json:"timezone,omitempty"`

	// Files are regular files to write under /etc or /run.
	Files []File `yaml:"files,omitempty" json:"files,omitempty"`
	// Directories are directories to create under /etc or /run.
	Directories []Directory `yaml:"directories,omitempty" json:"directories,omitempty"`
	// Links are symbolic links to create under /etc or /run.
	Links []Link `yaml:"links,omitempty" json:"links,omitempty"`

	// Systemd holds units and drop-ins, written to /etc/systemd/system.
	Systemd Systemd `yaml:"systemd,omitempty" json:"systemd,omitzero"`
	// Sysctl maps kernel parameters (net.ipv4.ip_forward) to values; written
	// to /etc/sysctl.d/90-slate.conf for systemd-sysctl.
	Sysctl map[string]SysctlValue `yaml:"sysctl,omitempty" json:"sysctl,omitempty"`
	// KernelModules are loaded at boot by systemd-modules-load
	// (/etc/modules-load.d/slate.conf).
	KernelModules []string `yaml:"kernelModules,omitempty" json:"kernelModules,omitempty"`
	// Network are systemd-networkd files (.network, .netdev, .link),
	// written to /etc/systemd/network.
	Network []NetworkFile `yaml:"network,omitempty" json:"network,omitempty"`

	// Extensions are the system extensions (sysext) to merge: each a name
	// (an extension the image carries, or one the node fetched before) or
	// a registry reference the agent fetches (IsExtensionRef). Recorded for
	// the agent, which verifies and activates them; Apply writes nothing.
	Extensions []string `yaml:"extensions,omitempty" json:"extensions,omitempty"`
	// Update is where the agent looks for the next image. Recorded only.
	Update Update `yaml:"update,omitempty" json:"update,omitzero"`
	// Health is what makes a boot good. Recorded only.
	Health Health `yaml:"health,omitempty" json:"health,omitzero"`
	// Access is emergency access; none unless breakGlass is true.
	Access Access `yaml:"access,omitempty" json:"access,omitzero"`
	// Logging ships the node's journal off the node. Recorded only: the
	// agent's slate-logship.service, enabled when a collector is given.
	Logging Logging `yaml:"logging,omitempty" json:"logging,omitzero"`
	// Metrics exposes the node's state to Prometheus. Recorded only: the
	// agent's slate-metrics.service, enabled when either field is set.
	Metrics Metrics `yaml:"metrics,omitempty" json:"metrics,omitzero"`
}

// File is a regular file under /etc or /run.
type File struct {
	// Path is absolute and clean, strictly below /etc or /run (not
	// /run/slate). At Apply, every symlink on the way, the path itself
	// included, must lead to somewhere inside /etc or /run.
	Path string `yaml:"path" json:"path"`
	// Mode is the permission bits, 0644 when unset.
	Mode *Mode `yaml:"mode,omitempty" json:"mode,omitempty"`
	// Owner is USER[:GROUP], names or numeric ids; root:root when unset.
	Owner string `yaml:"owner,omitempty" json:"owner,omitempty"`
	// Contents is the file's contents; an empty file when unset.
	Contents *Contents `yaml:"contents,omitempty" json:"contents,omitempty"`
	// Overwrite allows replacing a file or symlink that the image already
	// has at Path. Without it, an existing path is an error.
	Overwrite bool `yaml:"overwrite,omitempty" json:"overwrite,omitempty"`
}

// Contents holds exactly one of Text and Base64.
type Contents struct {
	// Text is the contents as UTF-8 text, written as is.
	Text *string `yaml:"text,omitempty" json:"text,omitempty"`
	// Base64 is the contents in standard base64 (padding required;
	// whitespace and line breaks are ignored).
	Base64 *string `yaml:"base64,omitempty" json:"base64,omitempty"`
}

// Directory is a directory under /etc or /run. Missing parents are created
// 0755 root:root. For a directory the image already has, Mode and Owner
// are applied only when given.
type Directory struct {
	Path  string `yaml:"path" json:"path"`
	Mode  *Mode  `yaml:"mode,omitempty" json:"mode,omitempty"`   // 0755 when unset
	Owner string `yaml:"owner,omitempty" json:"owner,omitempty"` // root:root when unset
}

// Link is a symbolic link under /etc or /run. Its target is written as
// given and may point anywhere: it is never written through.
type Link struct {
	Path   string `yaml:"path" json:"path"`
	Target string `yaml:"target" json:"target"`
	// Overwrite allows replacing a file or symlink the image has at Path.
	Overwrite bool `yaml:"overwrite,omitempty" json:"overwrite,omitempty"`
}

// Systemd is the systemd section.
type Systemd struct {
	Units []Unit `yaml:"units,omitempty" json:"units,omitempty"`
}

// Unit is one systemd unit: its file, drop-ins and state.
type Unit struct {
	// Name is a unit name: foo.service, bar@.service (a template),
	// bar@x.service (an instance), baz.timer.
	Name string `yaml:"name" json:"name"`
	// Contents is a full unit file, written to /etc/systemd/system/NAME,
	// where it overrides the image's unit of that name. Unset: the image's
	// unit is used.
	Contents string `yaml:"contents,omitempty" json:"contents,omitempty"`
	// Dropins are written to /etc/systemd/system/NAME.d/.
	Dropins []Dropin `yaml:"dropins,omitempty" json:"dropins,omitempty"`
	// Enabled true creates the symlinks the unit's [Install] section asks
	// for (WantedBy=, RequiredBy=, UpheldBy=, Alias=, and the units named
	// by Also=), in /etc; false removes such symlinks from /etc; unset
	// leaves them as the image has them.
	Enabled *bool `yaml:"enabled,omitempty" json:"enabled,omitempty"`
	// Masked makes /etc/systemd/system/NAME a symlink to /dev/null.
	Masked bool `yaml:"masked,omitempty" json:"masked,omitempty"`
}

// Dropin is a unit drop-in, /etc/systemd/system/UNIT.d/NAME.
type Dropin struct {
	// Name ends in .conf (10-override.conf).
	Name     string `yaml:"name" json:"name"`
	Contents string `yaml:"contents" json:"contents"`
}

// NetworkFile is a systemd-networkd file, /etc/systemd/network/NAME.
type NetworkFile struct {
	// Name ends in .network, .netdev or .link (10-eth.network).
	Name     string `yaml:"name" json:"name"`
	Contents string `yaml:"contents" json:"contents"`
}

// Update is the agent's update source.
type Update struct {
	// Source is an OCI reference: registry.example/org/node[:tag][@digest].
	Source string `yaml:"source,omitempty" json:"source,omitempty"`
	// Insecure allows plain HTTP and unverified TLS to the registry.
	Insecure bool `yaml:"insecure,omitempty" json:"insecure,omitempty"`
	// PublicKey verifies update artifacts: a PEM block or base64. It is
	// added to the keys the image trusts (never replaces them).
	PublicKey string `yaml:"publicKey,omitempty" json:"publicKey,omitempty"`
	// PublicKeys are more keys added the same way (rotation).
	PublicKeys []string `yaml:"publicKeys,omitempty" json:"publicKeys,omitempty"`
	// AllowUnsigned lets the agent install artifacts no trusted key signed.
	AllowUnsigned bool `yaml:"allowUnsigned,omitempty" json:"allowUnsigned,omitempty"`
}

// Health is what the boot's health check requires.
type Health struct {
	// RequiredUnits must be active for the boot to count as good.
	RequiredUnits []string `yaml:"requiredUnits,omitempty" json:"requiredUnits,omitempty"`
	// RequiredExtensions must be merged (by extension name) for the boot
	// to count as good: a node that cannot use one rolls back.
	RequiredExtensions []string `yaml:"requiredExtensions,omitempty" json:"requiredExtensions,omitempty"`
	// Timeout is how long the check waits for them; 0 means the agent's default.
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitzero"`
}

// Access is emergency access to the node: none unless BreakGlass is true.
// A node booted with BreakGlass true is tainted (Applied.Tainted), and its
// status record says so.
type Access struct {
	// BreakGlass must be true for RootPasswordHash or SSHAuthorizedKeys.
	BreakGlass bool `yaml:"breakGlass,omitempty" json:"breakGlass,omitempty"`
	// RootPasswordHash is a crypt(3) hash ($y$, $gy$, $7$, $2b$, $6$, $5$)
	// set for root in /etc/shadow.
	RootPasswordHash string `yaml:"rootPasswordHash,omitempty" json:"rootPasswordHash,omitempty"`
	// SSHAuthorizedKeys are OpenSSH public key lines for root, written to
	// /etc/ssh/authorized_keys.d/root.
	SSHAuthorizedKeys []string `yaml:"sshAuthorizedKeys,omitempty" json:"sshAuthorizedKeys,omitempty"`
	// Expires ends break-glass at this time (RFC 3339): the agent then
	// does AfterExpiry, and a boot after it applies the config without
	// access (the rest of the config still applies). It needs breakGlass.
	Expires *Time `yaml:"expires,omitempty" json:"expires,omitempty"`
	// AfterExpiry is what the agent does at Expires: "reboot" (the
	// default: the node comes back on its config without access) or
	// "poweroff" (the platform replaces it).
	AfterExpiry string `yaml:"afterExpiry,omitempty" json:"afterExpiry,omitempty"`
}

// What the agent does when break-glass expires.
const (
	AfterExpiryReboot   = "reboot"
	AfterExpiryPoweroff = "poweroff"
)

// Expired says whether break-glass has expired at now: a config whose
// access expired grants none.
func (a *Access) Expired(now time.Time) bool {
	return a.BreakGlass && a.Expires != nil && !now.Before(a.Expires.Time)
}

// Logging is where the node's journal goes.
type Logging struct {
	// Collector is tls://HOST:PORT (RFC 5424 syslog over TLS, RFC 5425)
	// or tcp://HOST:PORT (over plain TCP with octet counting, RFC 6587,
	// for a private network).
	Collector string `yaml:"collector,omitempty" json:"collector,omitempty"`
	// CA is the PEM bundle the collector's certificate must chain to;
	// empty means the image's system roots.
	CA string `yaml:"ca,omitempty" json:"ca,omitempty"`
	// ClientCertificate and ClientKey (PEM) authenticate the node to the
	// collector; both or neither.
	ClientCertificate string `yaml:"clientCertificate,omitempty" json:"clientCertificate,omitempty"`
	ClientKey         string `yaml:"clientKey,omitempty" json:"clientKey,omitempty"`
	// ServerName is the name the collector's certificate must carry; empty
	// means the collector's host.
	ServerName string `yaml:"serverName,omitempty" json:"serverName,omitempty"`
}

// Metrics is how the node's state reaches Prometheus.
type Metrics struct {
	// Listen is the address the agent serves /metrics on, HOST:PORT
	// (":9437" for every address); empty: not served.
	Listen string `yaml:"listen,omitempty" json:"listen,omitempty"`
	// Textfile is a file the agent keeps the metrics in, for
	// node_exporter's textfile collector: an absolute path under /var or
	// /run ending in .prom.
	Textfile string `yaml:"textfile,omitempty" json:"textfile,omitempty"`
}

// Parse decodes and validates a node config, YAML or JSON. Errors are
// *strictyaml.FieldError naming the field's path.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, &strictyaml.FieldError{Msg: fmt.Sprintf("%d bytes is too large (at most %d)", len(data), MaxSize)}
	}
	if err := singleDocument(data); err != nil {
		return nil, err
	}
	var c Config
	if err := strictyaml.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	c.normalize()
	if err := c.Validate(); err != nil {
		return nil, withLine(data, err)
	}
	return &c, nil
}

// Load reads and parses a config file; errors name the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// JSON is the config as indented JSON, as Apply records it at RecordPath;
// Parse reads it back to the same Config.
func (c *Config) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// singleDocument refuses a stream of several YAML documents: yaml.v3 would
// quietly read only the first. Empty documents (a trailing ---) are fine.
func singleDocument(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	seen := false
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if !seen {
				return nil // strictyaml reports it
			}
			return &strictyaml.FieldError{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		empty := len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null" && n.Content[0].Value == "")
		if empty {
			continue
		}
		if seen {
			return &strictyaml.FieldError{Line: n.Line, Msg: "more than one YAML document"}
		}
		seen = true
	}
}

// normalize makes empty lists and maps nil, so that a config re-marshalled
// (which omits them) parses back to the same value.
func (c *Config) normalize() {
	if len(c.Files) == 0 {
		c.Files = nil
	}
	if len(c.Directories) == 0 {
		c.Directories = nil
	}
	if len(c.Links) == 0 {
		c.Links = nil
	}
	if len(c.Systemd.Units) == 0 {
		c.Systemd.Units = nil
	}
	for i := range c.Systemd.Units {
		if len(c.Systemd.Units[i].Dropins) == 0 {
			c.Systemd.Units[i].Dropins = nil
		}
	}
	if len(c.Sysctl) == 0 {
		c.Sysctl = nil
	}
	if len(c.KernelModules) == 0 {
		c.KernelModules = nil
	}
	if len(c.Network) == 0 {
		c.Network = nil
	}
	if len(c.Extensions) == 0 {
		c.Extensions = nil
	}
	if len(c.Health.RequiredUnits) == 0 {
		c.Health.RequiredUnits = nil
	}
	if len(c.Access.SSHAuthorizedKeys) == 0 {
		c.Access.SSHAuthorizedKeys = nil
	}
}

// WithLine adds to a *strictyaml.FieldError without a line (such as one
// from Apply) the line in data, the document, of the field it names. Other
// errors are returned as they are.
func WithLine(data []byte, err error) error { return withLine(data, err) }

func withLine(data []byte, err error) error {
	var fe *strictyaml.FieldError
	if !errors.As(err, &fe) || fe.Line != 0 || fe.Path == "" {
		return err
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return err
	}
	if n := lookup(doc.Content[0], fe.Path); n != nil {
		fe.Line = n.Line
	}
	return err
}

// lookup finds the node at a field path (files[2].path, sysctl.net.ipv4.ip_forward);
// map keys may themselves hold dots, so the longest matching key wins.
func lookup(n *yaml.Node, path string) *yaml.Node {
	for path != "" {
		switch {
		case strings.HasPrefix(path, "["):
			end := strings.IndexByte(path, ']')
			if end < 0 || n.Kind != yaml.SequenceNode {
				return n
			}
			i, err := strconv.Atoi(path[1:end])
			if err != nil || i < 0 || i >= len(n.Content) {
				return n
			}
			n, path = n.Content[i], path[end+1:]
		case strings.HasPrefix(path, "."):
			path = path[1:]
		default:
			if n.Kind != yaml.MappingNode {
				return n
			}
			best := -1
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if k == path || strings.HasPrefix(path, k+".") || strings.HasPrefix(path, k+"[") {
					if best < 0 || len(k) > len(n.Content[best].Value) {
						best = i
					}
				}
			}
			if best < 0 {
				return n
			}
			path = path[len(n.Content[best].Value):]
			n = n.Content[best+1]
		}
	}
	return n
}
